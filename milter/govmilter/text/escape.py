"""Values from the wire made safe for each place they are written: one function per destination.

A MAIL FROM, a recipient, a Subject or an attachment name may carry anything: CR and LF,
escape sequences, quotes, `=`, Unicode line separators (U+2028/2029, NEL), bidi overrides,
undecodable bytes (lone surrogates from surrogateescape). Each destination has its own
grammar, and so its own function here; nothing else in the package escapes text.

  log_value     one logfmt value: bare token or quoted with JSON escapes, bounded
  log_record    a whole log record (traceback included): one line, bounded
  log_plain     a value inside free text of a log message: controls become `?`, bounded
  header_value  a header value for smfi_addheader: printable ASCII, folds kept
  reply_text    SMTP reply text for smfi_setreply: printable ASCII, no `%`
  reply_token   one word from the wire (a virus name) in a reply, a header and a label
  record_text   a field of the history record: what was sent, bounded, storable in SQLite
                and PostgreSQL (NUL and undecodable bytes written as `\\xNN`)
  terminal_text a stored value shown by `govmilter trace` on a terminal: no control character
                reaches the terminal (escape sequences shown as `\\x1b`)
"""

from __future__ import annotations

import re

# ---- logs -------------------------------------------------------------------------------------

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


def log_value(value: str, limit: int = 200) -> str:
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


MAX_RECORD = 16384  # characters of one log record; a traceback fits, a flood does not

# control characters, Unicode line breaks, and lone surrogates (undecodable bytes from the wire)
_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def log_record(text: str, limit: int = MAX_RECORD) -> str:
    """A whole log record as one line: line breaks and control characters escaped; cut past `limit`."""
    text = _CONTROL.sub(_escape, text)
    return text if len(text) <= limit else text[:limit] + "...(cut)"


# C0 and C1 controls, Unicode line separators, lone surrogates (undecodable bytes from the wire)
_PLAIN_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def log_plain(value: str, limit: int = 200) -> str:
    """A wire value inside the free text of a log message: no control characters, bounded."""
    value = _PLAIN_UNSAFE.sub("?", value)
    return value if len(value) <= limit else value[:limit] + "..."


# ---- SMTP: replies and headers ----------------------------------------------------------------


def reply_text(text: str) -> str:
    """SMTP reply text for smfi_setreply: printable ASCII; a `%` (libmilter silently drops a reply
    carrying a lone one) and CR/LF (they would break the reply line) become spaces."""
    return "".join(c if " " <= c < "\x7f" and c != "%" else " " for c in text)


_TOKEN_UNSAFE = re.compile(r"[^A-Za-z0-9._:/+=@\-]")


def reply_token(value: str, limit: int = 100, empty: str = "unknown") -> str:
    """One word from the wire inside an SMTP reply, a header and a metric label (a virus name):
    letters, digits and `._:/+=@-` only (every other character `_`), bounded, never empty."""
    return _TOKEN_UNSAFE.sub("_", value)[:limit] or empty


_FOLD = re.compile(r"\r?\n(?=[ \t])")


def header_value(text: str) -> str:
    """A header value for smfi_addheader: as reply_text, but a fold (newline + white space) stays a fold."""
    if "\n" not in text:
        return reply_text(text)
    return "\n".join(reply_text(part) for part in _FOLD.split(text))


# ---- the history record and the terminal -------------------------------------------------------

_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")


def _byte_escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte, as surrogateescape carries it
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def record_text(value: str, limit: int = 1000) -> str:
    """A field of the decision record: the value as sent, bounded to `limit` characters (then "...").

    Control characters stay (the store keeps what was sent; every reader escapes for its own
    destination); NUL, which PostgreSQL text refuses, and undecodable bytes (surrogateescape),
    which UTF-8 cannot hold, are written `\\xNN`.
    """
    if len(value) > limit:
        value = value[:limit] + "..."
    if _UNSTORABLE.search(value):
        value = _UNSTORABLE.sub(_byte_escape, value)
    return value


# every control character, Unicode line break and invisible format character: a terminal would act
# on an escape sequence or a bidi override in a Subject
_TERMINAL_UNSAFE = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb\ud800-\udfff]"
)


def terminal_text(value: str, limit: int = 300) -> str:
    """A stored value printed on a terminal: every control and format character shown escaped, bounded."""
    value = _TERMINAL_UNSAFE.sub(_escape, value)
    return value if len(value) <= limit else value[:limit] + "..."
