"""One log record, one line: the daemon's log format.

Values from the wire are cleaned where they are logged (decision.clean), but an
exception's message can carry them too (a header value in a ValueError), and a
traceback spans many lines. journald and syslog make each line an entry of its
own, so a forged "queue_id=... action=accept" could pass for ours. This
formatter escapes every line break and control character of the whole record,
traceback included, and bounds its length.
"""

from __future__ import annotations

import logging
import os
import re

FORMAT = "%(asctime)s govmilter[%(process)d] %(levelname)s %(name)s: %(message)s"
MAX_RECORD = 16384  # characters; a traceback fits, a flood does not

# control characters, Unicode line breaks, and lone surrogates (undecodable bytes from the wire)
_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def one_line(text: str, limit: int = MAX_RECORD) -> str:
    """Escape line breaks and control characters; cut past `limit` characters."""
    text = _CONTROL.sub(_escape, text)
    return text if len(text) <= limit else text[:limit] + "...(cut)"


class OneLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        if record.process is None:  # logging.logProcesses is off (it costs a lookup per record)
            record.process = _PID
        return one_line(super().format(record))


_PID = os.getpid()  # the daemon does not fork
