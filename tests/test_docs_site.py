"""The documentation site (mkdocs.yml, docs/) stays complete and self-contained.

Fast and offline: it reads the files, it does not build the site (CI runs
``mkdocs build --strict`` for broken links and anchors). What it holds:

- every page under docs/ is in the nav, or excluded on purpose in mkdocs.yml
  (``not_in_nav`` / ``exclude_docs``), and every nav entry is a page that exists;
- no page links outside the repository: a relative link stays inside docs/ and names a
  file there; a web link goes only to a third-party project's public site (``WEB_HOSTS``);
  nothing points at a local path, a file URL or another checkout.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CONFIG = ROOT / "mkdocs.yml"

#: Public websites of third-party tools the pages may link to. A new one is a deliberate
#: addition here, never a link to something a reader of the repository cannot see.
WEB_HOSTS = frozenset(
    {
        "docs.astral.sh",  # uv
        "github.com/scalar",  # Scalar, the API reference renderer
        "www.mkdocs.org",
        "squidfunk.github.io",  # Material for MkDocs
        "pypi.org/project",  # package pages (the test OpenID Connect provider)
    }
)

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.M)
AUTOLINK = re.compile(r"<((?:https?|file|ftp)://[^>\s]+)>")
HTML_LINK = re.compile(r"""(?:href|src)\s*=\s*["']([^"']+)["']""", re.I)


def config() -> dict:
    # mkdocs.yml must stay plain YAML (no !!python tags), so any tool can read it.
    return yaml.safe_load(CONFIG.read_text())


def pages() -> list[str]:
    return sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))


def nav_pages(nav: object) -> list[str]:
    """Every local page the nav names (web links in a nav are not pages)."""
    found: list[str] = []
    if isinstance(nav, str):
        if "://" not in nav:
            found.append(nav)
    elif isinstance(nav, list):
        for item in nav:
            found += nav_pages(item)
    elif isinstance(nav, dict):
        for value in nav.values():
            found += nav_pages(value)
    return found


def excluded(page: str, patterns: str | list[str] | None) -> bool:
    """Whether a gitignore-style pattern of ``not_in_nav``/``exclude_docs`` names ``page``
    (the simple forms: ``name.md``, ``dir/*``, ``/name.md``)."""
    if not patterns:
        return False
    lines = patterns.splitlines() if isinstance(patterns, str) else patterns
    for raw in lines:
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        anchored = pattern.startswith("/")
        pattern = pattern.lstrip("/")
        if fnmatch.fnmatch(page, pattern) or (
            not anchored and fnmatch.fnmatch(page.rsplit("/", 1)[-1], pattern)
        ):
            return True
    return False


def links(text: str) -> list[str]:
    """Link targets of a Markdown page, outside code blocks and code spans."""
    prose = INLINE_CODE.sub("", FENCE.sub("", text))
    return [
        m.group(1)
        for pattern in (INLINE_LINK, REFERENCE, AUTOLINK, HTML_LINK)
        for m in pattern.finditer(prose)
    ]


def problem(page: str, target: str) -> str | None:
    """Why ``target``, linked from ``page``, points outside the repository (None: fine)."""
    parts = urlsplit(target)
    if target.startswith("#") or parts.scheme == "mailto":
        return None
    if parts.scheme in ("http", "https"):
        host = (parts.hostname or "").lower()
        first = parts.path.strip("/").split("/")[0].lower()
        if host in WEB_HOSTS or f"{host}/{first}" in WEB_HOSTS:
            return None
        return f"a web link to {host or target!r}, which is not a listed third-party project site"
    if parts.scheme or parts.netloc:
        return f"a {parts.scheme or 'network'} link"
    path = unquote(parts.path)
    if path.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", path):
        return "an absolute path"
    resolved = (DOCS / page).parent.joinpath(path).resolve()
    if not resolved.is_relative_to(DOCS):
        return "a relative path that leaves docs/ (the site has only what docs/ holds)"
    if not resolved.exists():
        return "a path to nothing under docs/"
    return None


def test_the_config_builds_offline_and_strictly():
    cfg = config()
    assert cfg["strict"] is True
    assert cfg["theme"]["name"] == "material"
    # Web fonts would be fetched by every reader's browser.
    assert cfg["theme"]["font"] is False
    plugins = [p if isinstance(p, str) else next(iter(p)) for p in cfg.get("plugins", [])]
    assert plugins == ["search"], "a plugin may need the network while building"


def test_every_page_is_in_the_nav_and_every_nav_entry_exists():
    cfg = config()
    in_nav = nav_pages(cfg["nav"])
    missing = sorted(set(in_nav) - set(pages()))
    assert not missing, f"the nav names pages that do not exist: {missing}"
    assert len(in_nav) == len(set(in_nav)), "a page is in the nav twice"
    left_out = [
        page
        for page in pages()
        if page not in in_nav
        and not excluded(page, cfg.get("not_in_nav"))
        and not excluded(page, cfg.get("exclude_docs"))
    ]
    assert not left_out, f"pages neither in the nav nor excluded in mkdocs.yml: {left_out}"


@pytest.mark.parametrize("page", pages())
def test_no_page_links_outside_the_repository(page: str):
    text = (DOCS / page).read_text()
    bad = [(t, why) for t in links(text) if (why := problem(page, t))]
    assert not bad, f"docs/{page} links outside the repository: {bad}"
    # A path on the machine that wrote the page, or a sibling checkout, is never readable
    # by someone who has only the repository, linked or not.
    for marker in ("/work/", "../shared/", "file://"):
        assert marker not in text, f"docs/{page} mentions {marker!r}"


@pytest.mark.parametrize(
    ("target", "refused"),
    [
        ("../shared/ARCHITECTURE.md", True),
        ("../../README.md", True),
        ("/work/shared/ARCHITECTURE.md", True),
        ("file:///etc/passwd", True),
        ("https://example.com/private", True),
        ("https://github.com/someone/else", True),
        ("nope.md", True),
        ("security.md#outbound-calls-and-ssrf", False),
        ("api/gateway.md", False),
        ("#the-two-commands", False),
        ("https://docs.astral.sh/uv/", False),
        ("https://github.com/scalar/scalar", False),
    ],
)
def test_the_link_check_refuses_what_leaves_the_repository(target: str, refused: bool):
    # The check itself must be able to fail: each kind of outside link is caught.
    assert (problem("index.md", target) is not None) is refused
    assert links(f"see [this]({target}) and `[not this](../x)`\n") == [target]


def test_a_page_left_out_of_the_nav_is_caught():
    assert not excluded("oidc.md", None)
    assert excluded("oidc.md", "oidc.md\n")
    assert excluded("drafts/x.md", ["drafts/*"])
    in_nav = nav_pages([{"Home": "index.md"}, {"API": [{"Chat": "api/chat.md"}]}])
    assert in_nav == ["index.md", "api/chat.md"]
