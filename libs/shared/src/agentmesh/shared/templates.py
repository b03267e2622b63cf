"""Agent instructions as templates: ``{{user.name}}``, ``{{date}}``, ``{{station}}``.

One set of rules for both sides: the agents service checks instructions when an agent is
saved (``check``), chat renders them for each run (``render``). Jinja2 parses them in its
sandboxed environment, and the parsed tree may hold only text and variables:

- ``user.name``, ``user.email``, ``workspace.name``, ``conversation.title`` (the known
  prefixes, with their known attributes only: ``{{user.nmae}}`` is refused);
- ``date`` and ``datetime`` (ISO 8601, in the conversation's time zone);
- any other bare name, a variable of the conversation, rendered empty when it has none.

Everything else (attribute access elsewhere, item access, calls, filters, tests,
operators, literals, ``{% %}`` tags such as loops and conditions) is a ``TemplateError``
naming the offending expression. Comments (``{# #}``) are allowed and render as nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

from jinja2 import Template as Compiled
from jinja2 import TemplateSyntaxError, nodes
from jinja2.sandbox import SandboxedEnvironment

#: The known prefixes and the attributes each one has.
KNOWN: dict[str, frozenset[str]] = {
    "user": frozenset({"name", "email"}),
    "workspace": frozenset({"name"}),
    "conversation": frozenset({"title"}),
}
#: Bare names that are not conversation variables.
BUILTINS = frozenset({"date", "datetime"})
#: Names a conversation variable may not take (they mean something else in a template).
RESERVED = frozenset(KNOWN) | BUILTINS

_ENV = SandboxedEnvironment(autoescape=False, keep_trailing_newline=True)
_KINDS: dict[type[nodes.Node], str] = {
    nodes.Getattr: "attribute access",
    nodes.Getitem: "item access",
    nodes.Call: "a call",
    nodes.Filter: "a filter",
    nodes.Test: "a test",
    nodes.For: "a loop",
    nodes.If: "a condition",
    nodes.CondExpr: "a condition",
    nodes.Const: "a literal",
}


class TemplateError(ValueError):
    """Instructions that are not a valid template: ``expression`` is what is wrong."""

    def __init__(self, message: str, expression: str) -> None:
        super().__init__(message)
        self.expression = expression


@dataclass(frozen=True)
class Template:
    """Checked instructions and what they name."""

    source: str
    #: Known prefixes used (``user``, ``workspace``, ``conversation``).
    prefixes: frozenset[str] = frozenset()
    #: Conversation variables named.
    variables: frozenset[str] = frozenset()
    #: Whether there is anything to render (a ``{{``, ``{%`` or ``{#``).
    tags: bool = False

    def render(self, values: Mapping[str, object]) -> str:
        """The text with ``values`` (see ``context``) filled in."""
        return _compiled(self.source).render(values) if self.tags else self.source


@functools.lru_cache(maxsize=256)  # the templates of the agents in use
def _compiled(source: str) -> Compiled:
    return _ENV.from_string(source)


def _blocks(source: str) -> Iterator[tuple[str, str]]:
    """The ``{{ }}`` and ``{% %}`` blocks of ``source`` in order, as (kind, raw text)."""
    kind, parts = "", []
    for _, token, value in _ENV.lex(source):
        if token in ("variable_begin", "block_begin"):
            kind, parts = token.split("_")[0], [value]
        elif token in ("variable_end", "block_end"):
            parts.append(value)
            yield kind, "".join(parts)
            kind, parts = "", []
        elif kind:
            parts.append(value)


def _kind(node: nodes.Node) -> str:
    for cls in type(node).__mro__:
        if cls in _KINDS:
            return _KINDS[cls]
    return "an expression"


def _variable(node: nodes.Node, prefixes: set[str], variables: set[str]) -> str | None:
    """Record the variable ``node`` names, or say why it is not one."""
    if isinstance(node, nodes.Name):
        if node.name in KNOWN:
            return f"{node.name!r} needs one of its attributes: " + ", ".join(
                f"{node.name}.{attr}" for attr in sorted(KNOWN[node.name])
            )
        if node.name not in BUILTINS:
            variables.add(node.name)
        return None
    if isinstance(node, nodes.Getattr) and isinstance(node.node, nodes.Name):
        prefix = node.node.name
        if prefix in KNOWN:
            if node.attr in KNOWN[prefix]:
                prefixes.add(prefix)
                return None
            known = ", ".join(f"{prefix}.{attr}" for attr in sorted(KNOWN[prefix]))
            return f"{prefix} has no {node.attr!r} (known: {known})"
    return f"{_kind(node)} is not allowed, only variables"


@functools.lru_cache(maxsize=1024)
def check(source: str) -> Template:
    """Parse and check ``source``; ``TemplateError`` names the first offending block."""
    if not any(mark in source for mark in ("{{", "{%", "{#")):
        return Template(source)
    try:
        tree = _ENV.parse(source)
    except TemplateSyntaxError as exc:
        line = (source.splitlines() or [""])[max((exc.lineno or 1) - 1, 0)].strip()[:200]
        raise TemplateError(
            f"{line}: not a valid template (line {exc.lineno}): {exc.message}", line
        ) from None
    prefixes: set[str] = set()
    variables: set[str] = set()
    seen = 0  # expressions passed so far: the next one's text is the block after them
    for statement in tree.body:
        if not isinstance(statement, nodes.Output):  # a {% %} tag: the first one in order
            text = next((text for kind, text in _blocks(source) if kind == "block"), "{% %}")
            raise TemplateError(f"{text}: {_kind(statement)} is not allowed, only variables", text)
        for node in statement.nodes:
            if isinstance(node, nodes.TemplateData):
                continue
            reason = _variable(node, prefixes, variables)
            if reason is not None:  # the source is lexed again only to quote the block
                found = [text for kind, text in _blocks(source) if kind == "variable"]
                text = found[seen] if seen < len(found) else "{{ }}"
                raise TemplateError(f"{text}: {reason}", text)
            seen += 1
    return Template(source, frozenset(prefixes), frozenset(variables), tags=True)


def context(
    *,
    user: Mapping[str, str | None] | None = None,
    workspace: Mapping[str, str | None] | None = None,
    conversation: Mapping[str, str | None] | None = None,
    variables: Mapping[str, str] | None = None,
    timezone: tzinfo | None = None,
    now: datetime | None = None,
) -> dict[str, object]:
    """What ``render`` fills the variables with. Missing values render empty."""
    moment = (now or datetime.now(UTC)).astimezone(timezone or UTC)
    values: dict[str, object] = {
        key: value for key, value in (variables or {}).items() if key not in RESERVED
    }
    values.update(
        user={key: value or "" for key, value in (user or {}).items()},
        workspace={key: value or "" for key, value in (workspace or {}).items()},
        conversation={key: value or "" for key, value in (conversation or {}).items()},
        date=moment.date().isoformat(),
        datetime=moment.isoformat(timespec="seconds"),
    )
    return values


def render(source: str, values: Mapping[str, object]) -> str:
    """``source`` with its variables filled in. Instructions that do not pass ``check``
    (saved before templates were checked) are returned as they are."""
    try:
        return check(source).render(values)
    except TemplateError:
        return source
