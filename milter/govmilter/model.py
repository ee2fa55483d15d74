"""Plain values shared by the adapter, the pipeline and the checks.

Nothing here knows about the milter protocol: checks receive an Envelope, the
headers and the MessageFacts of the MIME walk, and return Verdicts.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from govmilter.spool import header_block

if TYPE_CHECKING:
    from govmilter.rules import RuleSet


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


def tempfail(check: str, reason: str, rule: str = "internal-error") -> Verdict:
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
    archive_names: tuple[str, ...] = ()  # names in a zip central directory
    archive_encrypted: bool = False
    depth: int = 0


@dataclass(frozen=True)
class TextPart:
    content_type: str  # "text/plain" or "text/html"
    text: str  # decoded, capped


@dataclass(frozen=True)
class MessageFacts:
    """The result of the single MIME walk of a message, shared by every check."""

    parts: tuple[Part, ...] = ()
    attachment_bytes: int = 0
    texts: tuple[TextPart, ...] = ()
    defects: tuple[str, ...] = ()  # bounded names such as "unterminated-multipart"


@dataclass
class Transaction:
    """One message in flight: the state every check of every stage reads."""

    envelope: Envelope
    ruleset: RuleSet
    headers: list[tuple[str, str]] = field(default_factory=list)
    header_bytes: int = 0
    body_bytes: int = 0
    hits: list[Verdict] = field(default_factory=list)
    scratch: dict[str, Any] = field(default_factory=dict)  # per-check per-message state
    facts_loader: Callable[[], MessageFacts] | None = None
    body_loader: Callable[[], Iterator[bytes]] | None = None  # -> the body from its start, in chunks
    _facts: MessageFacts | None = None

    @property
    def raw_size(self) -> int:
        return self.header_bytes + self.body_bytes

    def header(self, name: str) -> list[str]:
        """All values of a header field, case-insensitive, in order."""
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
        if self.body_loader is None:
            return iter(())
        return self.body_loader()

    def raw_chunks(self) -> Iterator[bytes]:
        """The raw message (headers, then body) as bytes chunks."""
        yield header_block(self.headers)
        yield from self.body_chunks()
