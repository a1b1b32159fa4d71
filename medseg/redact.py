"""Credentials never leave the process: the one helper every exit (prints, logs, MLflow params and artifacts,
checkpoints, error messages) passes URIs and configs through."""

from __future__ import annotations

import re
from typing import Any

# user:password@host (keep the user), or a bare token@host (hide it all): both in URIs and inside longer text.
_USERINFO = re.compile(r"(//)([^/@\s'\"]+)@")
_QUERY_SECRET = re.compile(
    r"(?i)\b([\w.-]*(?:pass(?:word)?|pwd|token|secret|key|sig(?:nature)?|auth|credential)[\w.-]*)=([^&#\s'\"]+)"
)


def _userinfo(m: re.Match) -> str:
    info = m.group(2)
    user, sep, _ = info.partition(":")
    return f"{m.group(1)}{user}:***@" if sep else f"{m.group(1)}***@"


def redact_secrets(text: str) -> str:
    """`text` with passwords and tokens of any URI in it replaced by ***."""
    return _QUERY_SECRET.sub(r"\1=***", _USERINFO.sub(_userinfo, text))


def redact_tree(value: Any) -> Any:
    """A copy of nested dicts/lists/strings (a config dump) with every string redacted."""
    if isinstance(value, str):
        return redact_secrets(value)
    if isinstance(value, dict):
        return {k: redact_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_tree(v) for v in value)
    return value
