"""Passwords out of what is printed, logged or stored: ``scheme://user:secret@host`` -> ``user:***@``."""

from __future__ import annotations

import re

_URI_PASSWORD = re.compile(
    r"(?P<head>[a-z][\w+.\-]*://[^:/@\s]*:)(?P<secret>[^@\s]*)(?P<tail>@)", re.IGNORECASE
)


def redact_password(text: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db`` (anywhere in ``text``)."""
    return _URI_PASSWORD.sub(lambda m: f"{m['head']}***{m['tail']}", text)
