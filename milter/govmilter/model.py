"""Plain values shared by the adapter, the pipeline and the checks.

Nothing here knows about the milter protocol: checks receive an Envelope, the
headers and the MessageFacts of the MIME walk, and return Verdicts.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

# The floor of the house: this module imports nothing from govmilter. What it needs of the
# spool (spool.py) and of the text store (mime/textstore.py) it names as Protocols below.


class RawMessage(Protocol):
    """The raw message as the adapter spools it (spool.Spool): header block, empty line, body."""

    body_offset: int | None

    def add_header(self, name: str, value: str) -> None: ...
    def write_fields(self, fields: Sequence[tuple[str, str]]) -> None: ...
    def end_headers(self) -> None: ...
    def write(self, data: bytes) -> None: ...
    def chunks(self) -> Iterator[bytes]: ...
    def body_chunks(self) -> Iterator[bytes]: ...
    def close(self) -> None: ...


class TextSpill(Protocol):
    """Where the texts of one message spill past memory (mime.textstore.TextStore)."""

    def text(self, start: int, end: int, size: int) -> Iterator[str]: ...
    def close(self) -> None: ...


class TextSegments(Protocol):
    """One part's text as written (mime.textstore.TextWriter): memory, then a range of the spill."""

    length: int
    memory: list[str]
    disk: tuple[int, int] | None

    @property
    def store(self) -> TextSpill: ...


def header_line(name: str, value: str) -> bytes:
    """One field as it stood on the wire: `Name: value` CRLF, every fold a CRLF."""
    if "\n" in value:
        # every LF of a value is a fold (Postfix hands folds as LF); a CR before it is the sender's own
        value = value.replace("\n", "\r\n")
    return f"{name}: {value}\r\n".encode("utf-8", "surrogateescape")


def header_block(headers: Sequence[tuple[str, str]]) -> bytes:
    """Headers as they stood on the wire: `Name: value` CRLF each, then the empty line."""
    return b"".join([*(header_line(name, value) for name, value in headers), b"\r\n"])


class Stage(enum.Enum):
    """Points of the SMTP transaction at which checks run."""

    CONNECT = "connect"
    MAIL = "mail"  # MAIL FROM (ESMTP args such as SIZE= are known)
    RCPT = "rcpt"  # after each RCPT TO
    HEADERS = "headers"  # end of headers
    BODY = "body"  # after each body chunk (streaming size limits)
    EOM = "eom"  # end of message: the whole body is spooled


class Action(enum.Enum):
    CONTINUE = "continue"  # no decision: a recorded hit (score, header, monitor)
    ACCEPT = "accept"
    REJECT = "reject"
    TEMPFAIL = "tempfail"
    DISCARD = "discard"


class Mode(enum.Enum):
    ENFORCE = "enforce"
    MONITOR = "monitor"  # log, count and tag, but never refuse


@dataclass(frozen=True)
class Verdict:
    """One check's finding, with the reason that shows in the log, header and metric."""

    action: Action
    check: str
    rule: str = ""
    code: str = ""  # SMTP reply code, "550"
    enhanced: str = ""  # enhanced status code, "5.7.520"
    text: str = ""  # SMTP reply text (ASCII)
    mode: Mode = Mode.ENFORCE
    score: float = 0.0  # content scoring: rules record, one threshold decides
    reason: str = ""  # short explanation for people (scan output, log)
    headers: tuple[tuple[str, str], ...] = ()  # headers to add if the message is accepted

    @property
    def refuses(self) -> bool:
        """True when this verdict ends the transaction (an enforced refusal)."""
        return self.mode is Mode.ENFORCE and self.action in (
            Action.REJECT,
            Action.TEMPFAIL,
            Action.DISCARD,
        )

    def smtp_reply(self) -> str:
        return " ".join(p for p in (self.code, self.enhanced, self.text) if p)


INTERNAL_ERROR = "internal-error"  # the rule of our own failures: they answer 451 even in monitor mode


def tempfail(check: str, reason: str, rule: str = INTERNAL_ERROR) -> Verdict:
    """The catch-all answer for our own failures: the sender retries, nothing is lost."""
    return Verdict(
        Action.TEMPFAIL,
        check,
        rule=rule,
        code="451",
        enhanced="4.3.0",
        text="Loi tam thoi, vui long gui lai sau - temporary error, please try again later",
        reason=reason,
    )


@dataclass
class Envelope:
    """What the SMTP transaction told us, filled in stage by stage."""

    client_ip: str = ""
    client_host: str = ""
    helo: str = ""
    mail_from: str = ""  # without angle brackets; "" is the null sender
    mail_params: dict[str, str] = field(default_factory=dict)  # ESMTP args, keys upper-case
    rcpts: list[str] = field(default_factory=list)
    auth_user: str = ""  # {auth_authen}
    queue_id: str = ""  # the "i" macro
    trusted_relay: bool = False  # client_ip is inside network.trusted_relays

    @property
    def internal(self) -> bool:
        """A trusted internal relay or an authenticated user: the outbound side."""
        return self.trusted_relay or bool(self.auth_user)

    @property
    def declared_size(self) -> int | None:
        value = self.mail_params.get("SIZE", "")
        # ASCII digits only: "²" is a digit to str.isdigit but not to int(), which also refuses 4300+ digits
        if not (value.isascii() and value.isdigit()):
            return None
        value = value.lstrip("0") or "0"
        return int(value) if len(value) <= 20 else 10**20


@dataclass(frozen=True)
class Part:
    """One MIME leaf part as the streaming walk saw it."""

    path: str  # position in the tree, "1.2"
    content_type: str  # lower-case, "application/pdf"
    filename: str  # decoded file name, "" if none
    disposition: str  # "attachment", "inline" or ""
    transfer_encoding: str  # lower-case, "base64"
    decoded_size: int
    is_attachment: bool  # counts toward the attachment cap
    head: bytes = b""  # first bytes of the decoded content (true type detection)
    # true types deeper than the head (mime/walker.py PROBES, END): the few bytes where an ISO 9660
    # or UDF volume descriptor stands (offset, bytes), and the last 512 bytes (a VHD footer)
    probes: tuple[tuple[int, bytes], ...] = ()
    end: bytes = b""
    archive_names: tuple[str, ...] = ()  # names in a zip central directory
    archive_encrypted: bool = False
    depth: int = 0
    archive_expanded: int = 0  # a zip's entries' uncompressed sizes, summed (its central directory)
    archive_ratio: float = 0.0  # the largest uncompressed/compressed ratio of an entry of meaningful size
    archive_unreadable: str = ""  # a zip whose directory could not be read: the defect name
    # members of a zip (at any depth) sampled for their true type as the bytes pass (mime/archives.py)
    archive_members: tuple[ArchiveMember, ...] = ()


@dataclass(frozen=True)
class ArchiveMember:
    """A zip member's bytes that its true type needs: head, the ISO/UDF probes, the end if read."""

    name: str
    head: bytes
    probes: tuple[tuple[int, bytes], ...] = ()
    end: bytes = b""  # the last 512 bytes, when the member was read to its end


class TextPart:
    """The decoded text of one body-text part, whole, from memory or the message's spill file.

    `TextPart(content_type, text)` builds one from a string (tests, small values);
    the MIME walk builds them over its TextStore. Read large texts with `pieces()`.
    """

    __slots__ = ("_disk", "_memory", "_store", "content_type", "length")

    def __init__(self, content_type: str, text: str = ""):
        self.content_type = content_type  # "text/plain" or "text/html"
        self.length = len(text)  # characters
        self._memory: list[str] = [text] if text else []
        self._store: TextSpill | None = None
        self._disk: tuple[int, int] | None = None

    @classmethod
    def stored(cls, content_type: str, writer: TextSegments) -> TextPart:
        part = cls(content_type)
        part.length = writer.length
        part._memory = writer.memory
        part._store = writer.store
        part._disk = writer.disk
        return part

    def pieces(self, size: int = 65536) -> Iterator[str]:
        """The part's text, in order, at most `size` characters at a time."""
        size = max(1, size)
        for text in self._memory:
            if len(text) <= size:
                yield text
            else:
                for i in range(0, len(text), size):
                    yield text[i : i + size]
        if self._disk is not None and self._store is not None:
            yield from self._store.text(self._disk[0], self._disk[1], size)

    @property
    def text(self) -> str:
        """The whole text at once: for small parts and tests; large ones are read in pieces."""
        if self._disk is None and len(self._memory) == 1:
            return self._memory[0]
        return "".join(self.pieces())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TextPart):
            return NotImplemented
        return (self.content_type, self.length) == (other.content_type, other.length) and self.text == other.text

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"TextPart({self.content_type!r}, length={self.length})"


@dataclass(frozen=True)
class MessageFacts:
    """The result of the single MIME walk of a message, shared by every check."""

    parts: tuple[Part, ...] = ()
    attachment_bytes: int = 0
    texts: tuple[TextPart, ...] = ()  # the body-text leaves, in order
    defects: tuple[str, ...] = ()  # bounded names such as "unterminated-multipart"
    # the Subject of each attached message, decoded: readers see it with the content
    subjects: tuple[TextPart, ...] = ()
    store: TextSpill | None = field(default=None, compare=False, repr=False)  # where texts spill

    def close(self) -> None:
        """Release the texts' spill file (idempotent); past it, only texts held in memory are readable."""
        if self.store is not None:
            self.store.close()


@dataclass(frozen=True)
class RuleSet:
    """The compiled rule files, immutable: what one message is judged by (see ruleset/)."""

    version: str  # short hash of the rule files' names and contents
    compiled: Mapping[str, Any] = field(default_factory=dict)

    def get(self, kind: str) -> Any:
        return self.compiled.get(kind)


EMPTY_RULESET = RuleSet(version="none")


# Headers whose meaning downstream depends on their having been set by this gateway: any copy
# that arrives with the message is forged (a spammer's "X-Spam-Flag: NO") and is removed.
AUTH_SUMMARY_KEY = "auth"  # Transaction.scratch: the AuthSummary the auth check leaves for later checks


@dataclass(frozen=True)
class AuthSummary:
    """What the auth check found, in plain values, for the checks after it (impersonation, rules).

    No check imports another: the auth check writes this into tx.scratch[AUTH_SUMMARY_KEY];
    it is absent when the auth check did not run (disabled, or mail from a trusted relay).
    """

    spf: str  # pass | fail | softfail | neutral | none | temperror | permerror
    spf_domain: str  # the MAIL FROM domain (or the HELO name for the null sender)
    dkim: tuple[tuple[str, str], ...]  # (result, d= domain) of each signature checked
    dmarc: str  # pass | fail | none | temperror | permerror; "pass" also when a trusted ARC chain overrode a fail
    dmarc_domain: str  # the From header domain DMARC judged ("" when none could be read)
    dmarc_policy: str = ""  # the policy that applied to a failure: none | quarantine | reject
    arc_override: bool = False  # a DMARC failure overridden by a trusted ARC chain


OWN_HEADER_PREFIXES = ("x-govmilter", "x-spam-", "x-virus-scanned", "x-virus-status")
MAX_HEADER_FIELDS = 2000  # fields kept in Transaction.headers ([milter] max_header_fields)
MAX_HEADER_BYTES = 4 * 1024 * 1024  # bytes of fields kept there ([milter] max_header_bytes)


@dataclass
class Transaction:
    """One message in flight: the state every check of every stage reads.

    Every header field reaches the spool (add_header), so the MIME walk and clamd read the
    whole header block from raw_chunks(); `headers` keeps the first fields, up to
    max_header_fields and max_header_bytes, for checks to look fields up in. Past those
    bounds `headers_truncated` is set and `header_count` still counts every field: a header
    flood is judged as such (the size check's policy), never a blind spot.

    The stored fields are always the first ones (once a field is left out, every later one
    is), so they are the spool's in-memory buffer as well: they are written at the end of
    the headers, or as soon as a field past the bounds arrives, which the spool then takes
    itself (written every CHUNK characters, to disk past its threshold). The common message
    costs one append per field, as before.
    """

    envelope: Envelope
    ruleset: RuleSet
    headers: list[tuple[str, str]] = field(default_factory=list)  # the first fields, bounded
    header_bytes: int = 0  # len(name) + len(value) + 4 of every field seen, stored or not
    header_count: int = 0  # every field seen
    headers_truncated: bool = False  # a field seen was not stored in `headers`
    max_header_fields: int = MAX_HEADER_FIELDS
    max_header_bytes: int = MAX_HEADER_BYTES
    # (name, occurrence) of each field with an OWN_HEADER_PREFIXES name, among every field seen
    own_headers: list[tuple[str, int]] = field(default_factory=list)
    body_bytes: int = 0
    hits: list[Verdict] = field(default_factory=list)
    scratch: dict[str, Any] = field(default_factory=dict)  # per-check per-message state
    spool: RawMessage | None = None  # the raw message: header block, empty line, body
    facts_loader: Callable[[], MessageFacts] | None = None
    # a Transaction built without a spool (tests): the body from its start, in chunks
    body_loader: Callable[[], Iterator[bytes]] | None = None
    _facts: MessageFacts | None = None
    _own_counts: dict[str, int] = field(default_factory=dict)
    _spooled: int = 0  # fields of `headers` written to the spool

    @property
    def raw_size(self) -> int:
        return self.header_bytes + self.body_bytes

    def add_header(self, name: str, value: str) -> None:
        """One header field as it arrives: to `headers` within the bounds, else to the spool."""
        # the header callback's hot path (~20 fields a message at ~500 messages/s)
        self.header_count += 1
        self.header_bytes = total = self.header_bytes + len(name) + len(value) + 4
        headers = self.headers
        if len(headers) < self.max_header_fields and total <= self.max_header_bytes:
            headers.append((name, value))
        else:
            self.headers_truncated = True
            spool = self.spool
            if spool is not None:
                self._spool_stored()  # the first fields, before this one
                spool.add_header(name, value)
        if name[:1] in "Xx":  # cheap test first: every own prefix starts with x-
            key = name.lower()
            if key.startswith(OWN_HEADER_PREFIXES):
                # bounded: more of them than max_header_fields means a truncated header, refused
                # as a flood, so the list never outgrows the stored fields
                if len(self.own_headers) < self.max_header_fields:
                    count = self._own_counts.get(key, 0) + 1
                    self._own_counts[key] = count
                    self.own_headers.append((name, count))

    def end_headers(self) -> None:
        """The empty line after the last field (end of headers, or the first body bytes)."""
        spool = self.spool
        if spool is not None and spool.body_offset is None:
            self._spool_stored()
            spool.end_headers()

    def _spool_stored(self) -> None:
        """Write the stored fields not yet in the spool (they precede every field past the bounds)."""
        spool = self.spool
        if spool is not None and self._spooled < len(self.headers):
            spool.write_fields(self.headers[self._spooled :])
            self._spooled = len(self.headers)

    def add_body(self, chunk: bytes) -> None:
        if self.spool is not None:
            if self.spool.body_offset is None:
                self.end_headers()
            self.spool.write(chunk)
        self.body_bytes += len(chunk)

    def header(self, name: str) -> list[str]:
        """All values of a stored header field, case-insensitive, in order."""
        wanted = name.lower()
        return [value for key, value in self.headers if key.lower() == wanted]

    def first_header(self, name: str) -> str:
        values = self.header(name)
        return values[0] if values else ""

    def facts(self) -> MessageFacts:
        """The MIME walk, done once on first use."""
        if self._facts is None:
            self._facts = self.facts_loader() if self.facts_loader else MessageFacts()
        return self._facts

    def body_chunks(self) -> Iterator[bytes]:
        """The body as received, from its start, in chunks; each call starts over."""
        if self.spool is not None:
            return self.spool.body_chunks()
        if self.body_loader is None:
            return iter(())
        return self.body_loader()

    @property
    def crlf(self) -> bool:
        """Every line of raw_chunks() ends in CRLF: true of a spool, false of a Transaction built by hand.

        The spool writes header fields with CRLF, and the body as the MTA hands it over the milter
        protocol (Postfix ends every line it sends a milter with CRLF) or as iter_message_file
        makes it (bare LFs become CRLF). Readers that would look for bare LFs can skip the look.
        """
        return self.spool is not None

    def raw_chunks(self) -> Iterator[bytes]:
        """The raw message (every header field, the empty line, the body) as bytes chunks."""
        if self.spool is not None:
            self._spool_stored()
            return self.spool.chunks()
        return self._rebuilt_chunks()

    def _rebuilt_chunks(self) -> Iterator[bytes]:
        # a Transaction built by hand (tests): its stored fields are all it has
        yield header_block(self.headers)
        yield from self.body_chunks()

    def close(self) -> None:
        """End of message: release the spool and what the MIME walk holds (text spilled to disk)."""
        if self._facts is not None:
            self._facts.close()
        if self.spool is not None:
            self.spool.close()
