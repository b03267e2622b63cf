"""The password policy: 12 to 256 characters, and none of the 1,000 most common."""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from agentmesh.identity.errors import WeakPassword


@cache
def common_passwords() -> frozenset[str]:
    text = files("agentmesh.identity").joinpath("data/common-passwords.txt").read_text()
    return frozenset(
        line.strip().lower() for line in text.splitlines() if line and not line.startswith("#")
    )


def check_password_policy(password: str, *, email: str | None = None) -> None:
    """Raise ``WeakPassword`` (422) for a common or trivially guessable password.

    Length is checked by the request schema (12 to 256)."""
    lowered = password.lower()
    if lowered in common_passwords():
        raise WeakPassword("This password is one of the most common passwords; choose another.")
    if email and lowered == email.lower():
        raise WeakPassword("The password must not be your email address.")
    if len(set(password)) < 4:
        raise WeakPassword("The password repeats too few distinct characters.")
