"""Text that reaches a terminal: control characters escaped, Rich markup escaped.

File names and header values are attacker-controlled: an ESC sequence in a file name can clear
the screen or set the window title, and ``[/x]`` in a path is Rich markup that raises when
printed with ``markup=True``. Everything medvol prints about inputs goes through
:func:`sanitize` (and :func:`escape_markup` where Rich markup is on).
"""
from __future__ import annotations

import re

__all__ = ["sanitize", "escape_markup", "one_line"]

# C0 controls except TAB, DEL, C1 controls, and Unicode bidi overrides / isolates
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def sanitize(text: object, *, keep_newlines: bool = True) -> str:
    """``text`` with control characters shown as ``\\xNN`` / ``\\uNNNN`` escapes."""
    s = str(text)

    def rep(m: re.Match) -> str:
        c = m.group(0)
        return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"

    if not keep_newlines:
        s = s.replace("\r", "\\r").replace("\n", "\\n")
    else:
        s = s.replace("\r", "\\r")
    return _CONTROL.sub(rep, s)


def one_line(text: object) -> str:
    """:func:`sanitize` with line breaks escaped too: guaranteed to print as one line."""
    return sanitize(text, keep_newlines=False)


def escape_markup(text: object) -> str:
    """Sanitised text safe inside a Rich ``markup=True`` string."""
    from rich.markup import escape

    return escape(sanitize(text))
