"""One log record, one line: the daemon's log format, and logfmt fields.

A decision line is logfmt (`key=value key="quoted value"`): fields() writes every
value from the wire as a bare token only when it is one (letters, digits and
`._@:/+,<>-`), and otherwise in double quotes with `"` and `\\` escaped and every
control, line-break and invisible format character written as a JSON escape
(`\\n`, `\\u001b`), so no MAIL FROM, recipient, rule or reply can add a field
that a logfmt parser reads as ours.

An exception's message can carry wire data too (a header value in a ValueError),
and a traceback spans many lines. journald and syslog make each line an entry of
its own, so a forged "queue_id=... action=accept" could pass for ours. The
formatter escapes every line break and control character of the whole record,
traceback included, and bounds its length.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterable, Mapping
from typing import IO, Any

# a value written bare: no space, `=`, `"`, backslash, control or non-ASCII character
_TOKEN = re.compile(r"[A-Za-z0-9._@:/+,<>-]+")
# escaped inside quotes: the quote and backslash, C0/C1 controls, Unicode line breaks, invisible
# format characters (bidi overrides and isolates, zero-width ones, BOM) and lone surrogates
_QUOTED_UNSAFE = re.compile(
    r'["\\\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f'
    r"\ufeff\ufff9-\ufffb\ud800-\udfff]"
)
_JSON_NAMED = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _json_escape(match: re.Match[str]) -> str:
    char = match.group()
    return _JSON_NAMED.get(char) or f"\\u{ord(char):04x}"


def quote(value: str, limit: int = 200) -> str:
    """One logfmt value: bare when it is a safe token, else quoted and escaped.

    At most `limit` characters are written, escapes included (a control character is six),
    then "..." when the value was cut; an escape is never cut in two.
    """
    if len(value) > limit:
        value = value[:limit] + "..."
    if _TOKEN.fullmatch(value):
        return value
    escaped = _QUOTED_UNSAFE.sub(_json_escape, value)
    if len(escaped) > limit + 3:  # escapes made it longer (rare): keep the characters that fit whole
        pieces: list[str] = []
        size = 0
        for char in value[:limit]:
            piece = _QUOTED_UNSAFE.sub(_json_escape, char)
            if size + len(piece) > limit:
                break
            pieces.append(piece)
            size += len(piece)
        escaped = "".join(pieces) + "..."
    return '"' + escaped + '"'


def fields(pairs: Iterable[tuple[str, str] | tuple[str, str, int]], limit: int = 200) -> str:
    """`key=value` pairs of a logfmt line; the keys are ours, every value is quoted as needed.

    A pair may carry its own limit as a third item.
    """
    return " ".join(f"{pair[0]}={quote(pair[1], pair[2] if len(pair) > 2 else limit)}" for pair in pairs)

FORMAT = "%(asctime)s govmilter[%(process)d] %(levelname)s %(name)s: %(message)s"
# stderr is the journal (the unit): journald stamps the time, SyslogIdentifier and the pid itself
JOURNAL_FORMAT = "%(levelname)s %(name)s: %(message)s"
# sd-daemon(3) priority prefixes, which journald reads (SyslogLevelPrefix=) to file the line at
# its level in the journal and in syslog's mail facility (otherwise every line is "info")
_PRIORITY = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))
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
    def __init__(self, fmt: str = FORMAT, *, journal: bool = False):
        super().__init__(fmt)
        self.journal = journal  # prefix each line with its sd-daemon priority, <3> for an error

    def format(self, record: logging.LogRecord) -> str:
        if record.process is None:  # logging.logProcesses is off (it costs a lookup per record)
            record.process = _PID
        line = one_line(super().format(record))
        if self.journal:
            priority = next((code for level, code in _PRIORITY if record.levelno >= level), 7)
            return f"<{priority}>{line}"
        return line


def stderr_is_journal(stream: IO[Any] | None = None, environ: Mapping[str, str] | None = None) -> bool:
    """Whether stderr is the journal stream systemd connected (sd_journal_stream_fd(3)).

    systemd sets JOURNAL_STREAM=DEVICE:INODE for a unit whose output goes to the journal; the
    descriptor must still be that stream (a child whose stderr was redirected inherits the
    variable, not the stream).
    """
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    target = sys.stderr if stream is None else stream
    try:
        stat = os.fstat(target.fileno())
    except (AttributeError, OSError, ValueError):  # no stderr, or one without a descriptor
        return False
    return (stat.st_dev, stat.st_ino) == (int(device), int(inode))


def daemon_formatter(stream: IO[Any] | None = None, environ: Mapping[str, str] | None = None) -> OneLineFormatter:
    """The formatter of the daemon's stderr: without our timestamp and name under journald,
    which adds its own (they would be doubled), with them anywhere else."""
    if stderr_is_journal(stream, environ):
        return OneLineFormatter(JOURNAL_FORMAT, journal=True)
    return OneLineFormatter(FORMAT)


_PID = os.getpid()  # the daemon does not fork
