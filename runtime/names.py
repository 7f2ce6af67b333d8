"""File names as the OS has them: any bytes but ``/`` and NUL.

Python holds a name that is not valid UTF-8 as a ``str`` with lone surrogates
(``surrogateescape``: byte 0xff is ``"\\udcff"``), and ``os.fsencode`` gives the bytes
back. fcnx keeps names that way end to end, so a name with any bytes, a newline, U+2028
or a control character is processed (or fails alone) like any other:

- in files fcnx writes (``summary.json``, ``failures.jsonl``, the outputs list) names
  go through ``json.dumps`` with ASCII escapes, which round-trips every such ``str``
  (``\\udcff`` stays ``\\udcff``) and puts no raw newline or separator in a line;
- on the terminal, ``shown(name)`` escapes what is not printable, so one name is one
  line and no byte of it reaches the terminal as a control sequence.
"""

from __future__ import annotations

import os

_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def shown(name: object) -> str:
    """``name`` (a str or path) printable on one line: undecodable bytes as ``\\xNN``,
    control and separator characters (newline, U+2028, U+0085, ESC, ...) as escapes,
    a backslash doubled, so two different names never show the same."""
    text = os.fspath(name) if isinstance(name, os.PathLike) else str(name)
    out = []
    for ch in text:
        code = ord(ch)
        if ch in _SHORT:
            out.append(_SHORT[ch])
        elif 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch.isprintable():
            out.append(ch)
        elif code <= 0xFF:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "".join(out)


def is_os_name(text: str) -> bool:
    """Whether ``text`` is a path the OS can be given (its lone surrogates, if any, are
    bytes that ``surrogateescape`` made; no NUL)."""
    try:
        return b"\0" not in os.fsencode(text)
    except UnicodeEncodeError:
        return False
