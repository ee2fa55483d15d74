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

import json
import logging
import os
import sys
import threading
from collections.abc import Iterable, Mapping
from typing import IO, Any

from govmilter.text import escape

# one escaping module for every destination (text/escape.py); these names are the log's
quote = escape.log_value
one_line = escape.log_record
MAX_RECORD = escape.MAX_RECORD


def fields(pairs: Iterable[tuple[str, str] | tuple[str, str, int]], limit: int = 200) -> str:
    """`key=value` pairs of a logfmt line; the keys are ours, every value is quoted as needed.

    A pair may carry its own limit as a third item.
    """
    return " ".join(f"{pair[0]}={quote(pair[1], pair[2] if len(pair) > 2 else limit)}" for pair in pairs)


Pair = tuple[str, str] | tuple[str, str, int]


class Line:
    """A decision's fields, written as logfmt when printed (str) and as JSON keys by JsonFormatter.

    Logged as `log.info("%s", line, extra={"fields": line})`: the line is written only when a
    handler prints the record, in the format the handler's formatter chooses.
    """

    __slots__ = ("limit", "pairs")

    def __init__(self, pairs: list[Pair], limit: int = 200):
        self.pairs = pairs
        self.limit = limit

    def __str__(self) -> str:
        return fields(self.pairs, self.limit)

    def items(self) -> dict[str, str]:
        """Each value bounded as in the logfmt line (not quoted: JSON escapes it)."""
        out: dict[str, str] = {}
        for pair in self.pairs:
            limit = pair[2] if len(pair) > 2 else self.limit
            value = pair[1]
            out[pair[0]] = value if len(value) <= limit else value[:limit] + "..."
        return out


# The queue id of the message the current thread serves (libmilter runs one thread per
# connection): every log line of that thread carries it, so it joins Postfix's own log.
_bound = threading.local()


def bind(queue_id: str) -> None:
    """The queue id the current thread's log lines carry from now on ("" for none)."""
    _bound.queue_id = queue_id


def bound() -> str:
    return getattr(_bound, "queue_id", "")


FORMAT = "%(asctime)s govmilter[%(process)d] %(levelname)s %(name)s: %(message)s"
# stderr is the journal (the unit): journald stamps the time, SyslogIdentifier and the pid itself
JOURNAL_FORMAT = "%(levelname)s %(name)s: %(message)s"
# sd-daemon(3) priority prefixes, which journald reads (SyslogLevelPrefix=) to file the line at
# its level in the journal and in syslog's mail facility (otherwise every line is "info")
_PRIORITY = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))


def _priority(record: logging.LogRecord) -> int:
    return next((code for level, code in _PRIORITY if record.levelno >= level), 7)


class OneLineFormatter(logging.Formatter):
    """logfmt lines: one record, one line; the bound queue id first on a line that lacks its own."""

    def __init__(self, fmt: str = FORMAT, *, journal: bool = False):
        super().__init__(fmt)
        self.journal = journal  # prefix each line with its sd-daemon priority, <3> for an error

    def formatMessage(self, record: logging.LogRecord) -> str:
        queue_id = bound()
        # a decision line, and a line written with its own queue_id first, carry it already
        if not queue_id or hasattr(record, "fields") or str(record.msg).startswith("queue_id="):
            return super().formatMessage(record)
        original = record.message  # the record is shared with other handlers: restored below
        record.message = f"queue_id={quote(queue_id, 40)} {original}"
        try:
            return super().formatMessage(record)
        finally:
            record.message = original

    def format(self, record: logging.LogRecord) -> str:
        if record.process is None:  # logging.logProcesses is off (it costs a lookup per record)
            record.process = _PID
        line = one_line(super().format(record))
        if self.journal:
            return f"<{_priority(record)}>{line}"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line ([log] format = "json"): time (unless journald stamps it), level,
    logger, queue_id of the thread's message, and either `message` or a decision's fields as keys.

    json.dumps with ensure_ascii escapes every control character, line separator and non-ASCII
    character: a value from the wire is one JSON string, whatever it carries.
    """

    def __init__(self, *, journal: bool = False):
        super().__init__()
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {}
        if not self.journal:
            out["time"] = self.formatTime(record)
            out["pid"] = record.process if record.process is not None else _PID
        out["level"] = record.levelname.lower()
        out["logger"] = record.name
        line = getattr(record, "fields", None)
        if isinstance(line, Line):
            out.update(line.items())
        else:
            queue_id = bound()
            if queue_id:
                out["queue_id"] = queue_id[:40]
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + self.formatException(record.exc_info)
            out["message"] = message[:MAX_RECORD]
        text = json.dumps(out, ensure_ascii=True)
        return f"<{_priority(record)}>{text}" if self.journal else text


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


def daemon_formatter(
    stream: IO[Any] | None = None, environ: Mapping[str, str] | None = None, fmt: str = "logfmt"
) -> logging.Formatter:
    """The formatter of the daemon's stderr: without our timestamp and name under journald,
    which adds its own (they would be doubled), with them anywhere else; JSON when asked."""
    if fmt == "json":
        return JsonFormatter(journal=stderr_is_journal(stream, environ))
    if stderr_is_journal(stream, environ):
        return OneLineFormatter(JOURNAL_FORMAT, journal=True)
    return OneLineFormatter(FORMAT)


_PID = os.getpid()  # the daemon does not fork
