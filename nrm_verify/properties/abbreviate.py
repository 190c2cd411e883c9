"""Short forms of long texts for messages and reports: an event over a whole layer prints as
``At('input', index=[0, 1, 2, …, 3071] (3072 neurons))`` instead of 13,000 characters, a
line is cut at a length a terminal can show, a report at a size a test log can hold.

The runnable programs of counterexamples are never abbreviated (they must rebuild the
case exactly); only what a person reads is.
"""

from __future__ import annotations

import re

SHOWN = 8
"""Lists of more numbers than this are shortened to their first :data:`HEAD` entries, an
ellipsis, their last entry and their length."""
HEAD = 3
LINE = 400
"""Characters of one line at most."""
TEXT = 20_000
"""Characters of a whole message at most."""

_NUMBER = r"-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?"
_LIST = re.compile(rf"(?:(\w+)=)?\[(\s*{_NUMBER}(?:\s*,\s*{_NUMBER}){{{SHOWN},}}\s*,?\s*)\]")
_UNITS = {"index": "neurons", "channels": "channels"}


def _short_list(match: re.Match) -> str:
    keyword, body = match.group(1), match.group(2)
    items = [s.strip() for s in body.split(",") if s.strip()]
    unit = _UNITS.get(keyword or "", "entries")
    head = ", ".join(items[:HEAD])
    return f"{keyword + '=' if keyword else ''}[{head}, …, {items[-1]}] ({len(items)} {unit})"


def lists(text: str) -> str:
    """Every bracketed list of more than :data:`SHOWN` numbers written as its first entries,
    its last and its length: ``index=[0, 1, 2, …, 63] (64 neurons)``."""
    return _LIST.sub(_short_list, text)


def line(text: str, limit: int = LINE) -> str:
    """One line cut at ``limit`` characters, saying how many were left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


def text(message: str, line_limit: int = LINE, limit: int = TEXT) -> str:
    """A message with its long lists shortened, every line cut at ``line_limit`` and the
    whole at ``limit`` characters."""
    lines = [line(s, line_limit) for s in lists(message).splitlines()]
    out, size = [], 0
    for i, s in enumerate(lines):
        if size + len(s) > limit:
            out.append(f"… ({len(lines) - i} more lines)")
            break
        out.append(s)
        size += len(s) + 1
    return "\n".join(out)


__all__ = ["lists", "line", "text", "SHOWN", "HEAD", "LINE", "TEXT"]
