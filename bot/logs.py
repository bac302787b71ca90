"""Log lines that a request cannot forge: control characters in logged values are escaped.

A path like `/x%0A2099-01-01 ... INFO vcc: admin U1 unlinked acme` arrives decoded, and
written as is it would add a line to the log that reads like the bot's own.
"""

from __future__ import annotations

import logging

# C0 and C1 controls and DEL, plus the Unicode line and paragraph separators, which some
# log viewers (and str.splitlines) also break lines at.
_CONTROLS = [*range(0x00, 0x20), *range(0x7F, 0xA0), 0x2028, 0x2029]
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_ESCAPES = {
    code: _NAMED.get(chr(code)) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
    for code in _CONTROLS
}


def escape_controls(text: str) -> str:
    """`text` on one line, with every control character written as its escape (`\\n`, `\\x1b`)."""
    return text.translate(_ESCAPES)


class EscapingFormatter(logging.Formatter):
    """Escapes control characters in each record's formatted line (a message built from a
    request, say). The traceback that `exc_info` appends below it is left as it is."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_controls(super().formatMessage(record))
