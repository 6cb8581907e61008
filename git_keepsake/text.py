"""Text from untrusted places made safe to print: a terminal obeys what it is sent."""

from __future__ import annotations

import re

# Never sent to the terminal as they are, from values an untrusted repository holds: C0 and
# C1 controls and DEL (escape sequences, CR, LF, BS...), line and paragraph separators,
# bidirectional embeddings, overrides and isolates (they reorder what follows them), and lone
# surrogates (JSON can carry them; UTF-8 cannot print them).
UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")
_UNPRINTABLE_IN_LINES = re.compile(  # the same but tabs and newlines
    r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028-\u202e\u2066-\u2069\ud800-\udfff]"
)
_NAMED_ESCAPES = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    code = ord(ch)
    return _NAMED_ESCAPES.get(ch) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def printable(text: str, lines: bool = False) -> str:
    """`text` safe to print in a table or a field: control characters and escape sequences
    as Python writes them (`\\x1b[31m`, `\\n`), the rest as it is. With `lines` (messages,
    code diffs), newlines and tabs stay. Everything the CLI prints that came from a
    repository or a remote goes through here: a terminal obeys what it is sent (clear the
    screen, set the window title, overwrite a line with `\\r`), and click strips only some
    escape sequences when the output is piped."""
    if text.isprintable():  # the common case; nothing it accepts needs escaping
        return text
    return (_UNPRINTABLE_IN_LINES if lines else UNPRINTABLE).sub(_escape, text)
