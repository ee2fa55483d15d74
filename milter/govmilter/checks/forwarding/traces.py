"""The traces automatic forwarders leave, read from an envelope and its headers.

Pure functions, no configuration: each returns what it found (the trace name,
its strength and the forwarding mailbox it names) and the forwarding check
decides what the forwarder's class means for the message. The table of traces
and where each comes from is in the README section on forwarding.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.utils import getaddresses

from govmilter.domains import is_under, normalize_address, normalize_domain, split_address


class Strength(enum.IntEnum):
    """How much a trace says. INFERENCE and above decide; below only score."""

    WEAK = 1
    MEDIUM = 2
    INFERENCE = 3
    STRONG = 4
    DECISIVE = 5

    @property
    def decides(self) -> bool:
        return self >= Strength.INFERENCE


@dataclass(frozen=True)
class Trace:
    name: str  # bounded: it is a metric label and part of the rule id
    strength: Strength
    forwarder: str = ""  # the forwarding mailbox or domain the trace names; "" when none
    detail: str = ""  # where it was seen, for people (scan output, log)
    # index of the header field it was read from (0 = the topmost, the newest); -1 for the
    # envelope and the inferences, which describe this transaction, not the message's past
    position: int = -1


@dataclass(frozen=True)
class Rewrite:
    """An envelope sender rewritten by a forwarder (SRS, Gmail caf) or signed (BATV)."""

    kind: str  # srs | exchange-srs | gmail-caf | batv
    forwarder: str  # mailbox or domain that did the rewriting
    original: str  # the address before the rewrite, "" if it cannot be recovered


# Header names, lower case.
SIEVE_REDIRECTED = "x-sieve-redirected-from"
ZIMBRA_FORWARDED = "x-zimbra-forwarded"
EXCHANGE_RULES_LOOP = "x-ms-exchange-inbox-rules-loop"
EXCHANGE_AUTOFORWARDED = "x-ms-exchange-organization-autoforwarded"

_ADDRESS = re.compile(r"[^\s<>,;:()\"'\[\]]+@[^\s<>,;:()\"'\[\]]+")
_RECEIVED_FOR = re.compile(r"\bfor\s+<?([^\s<>;()]+@[^\s<>;()]+?)>?(?=[\s;(]|$)", re.I)
_SRS_PREFIX = re.compile(r"^srs([01])[=+-]", re.I)
_BATV = re.compile(r"^(?:prvs|msprvs1|btv1)=([^=]+)=(.+)$", re.I)
_BATV_REVERSED = re.compile(r"^(.+)=(?:prvs|msprvs1|btv1)=([^=]+)$", re.I)  # older Exim form


def _one_line(value: str) -> str:
    return " ".join(value.split())


def _addresses(value: str) -> list[str]:
    """Address-shaped tokens of a header value, in order (display names ignored)."""
    return _ADDRESS.findall(_one_line(value))


def _mailbox_of(value: str) -> str:
    """The first address of a header such as From (display name and comments removed)."""
    pairs = getaddresses([_one_line(value)])
    for _, address in pairs:
        if "@" in address:
            return address
    found = _addresses(value)
    return found[0] if found else ""


def same_mailbox(a: str, b: str) -> bool:
    """Compare addresses case-insensitively, ignoring a `+extension` subaddress."""

    def core(address: str) -> str:
        local, at, domain = normalize_address(address).rpartition("@")
        return f"{local.split('+', 1)[0]}{at}{domain}"

    return bool(a) and bool(b) and core(a) == core(b)


def _among(address: str, rcpts: Iterable[str]) -> bool:
    return any(same_mailbox(address, rcpt) for rcpt in rcpts)


# --- envelope sender rewrites ------------------------------------------------------------


def parse_srs(address: str) -> Rewrite | None:
    """SRS0/SRS1 as postsrsd and libsrs2 write them; the separator after the tag may be = + or -.

    SRS0=HHHH=TT=origdomain=origlocal@forwarder
    SRS1=HHHH=firsthop==HHHH=TT=origdomain=origlocal@lastforwarder
    """
    local, domain = split_address(address)
    match = _SRS_PREFIX.match(local)
    if not match or not domain:
        return None
    rest = local[match.end() :]
    original = ""
    if match.group(1) == "0":
        fields = rest.split("=", 3)
        if len(fields) != 4 or not all(fields):
            return None
        original = f"{fields[3]}@{fields[2]}"
    else:
        fields = rest.split("=", 2)  # hash, first hop, then the SRS0 remainder with its separator
        if len(fields) != 3 or not fields[0] or not fields[1]:
            return None
        inner = fields[2].lstrip("=+-").split("=", 3)
        if len(inner) == 4 and all(inner):
            original = f"{inner[3]}@{inner[2]}"
    return Rewrite("srs", domain, original)


def parse_exchange_srs(address: str) -> Rewrite | None:
    """Exchange Online: mailbox+SRS=hash=ts=origdomain=origlocal@domain, bounces+SRS=...@domain."""
    local, domain = split_address(address)
    user, sep, rest = local.partition("+")
    if not sep or rest[:4].lower() != "srs=" or not user or not domain:
        return None
    fields = rest[4:].split("=", 3)
    original = f"{fields[3]}@{fields[2]}" if len(fields) == 4 and all(fields) else ""
    # bounces+SRS= is written for distribution groups and rules: the forwarder is the domain
    forwarder = domain if user.lower() == "bounces" else f"{user}@{domain}"
    return Rewrite("exchange-srs", forwarder, original)


def parse_gmail_caf(address: str) -> Rewrite | None:
    """Gmail auto-forward: user+caf_=destlocal=destdomain@forwarderdomain."""
    local, domain = split_address(address)
    index = local.lower().find("+caf_=")
    if index < 0:
        return None
    user, rest = local[:index], local[index + len("+caf_=") :]
    if not user or not domain or "=" not in rest:
        return None
    return Rewrite("gmail-caf", f"{user}@{domain}", "")


def parse_batv(address: str) -> Rewrite | None:
    """BATV signed return path: prvs=TAG=user@domain (and the older user=prvs=TAG form)."""
    local, domain = split_address(address)
    if not domain:
        return None
    match = _BATV.match(local)
    if match:
        return Rewrite("batv", domain, f"{match.group(2)}@{domain}")
    match = _BATV_REVERSED.match(local)
    if match:
        return Rewrite("batv", domain, f"{match.group(1)}@{domain}")
    return None


def envelope_rewrite(mail_from: str) -> Rewrite | None:
    """What the MAIL FROM address says about who rewrote it, if anything."""
    if not mail_from:
        return None
    for parse in (parse_srs, parse_exchange_srs, parse_gmail_caf, parse_batv):
        found = parse(mail_from)
        if found:
            return found
    return None


def envelope_traces(mail_from: str) -> list[Trace]:
    """Rewrites that mean a forward (BATV is a signature, not a forward)."""
    found = envelope_rewrite(mail_from)
    if found is None or found.kind == "batv":
        return []
    strength = Strength.STRONG if found.kind == "exchange-srs" else Strength.DECISIVE
    return [Trace(found.kind, strength, found.forwarder, f"MAIL FROM {mail_from}")]


# --- header traces ---------------------------------------------------------------------------


class HeaderIndex:
    """The stored header fields by lower-case name, each with its position (0 = topmost).

    Built once per message in one pass; every lookup after that is a dict access, so
    the many names the check asks for cost nothing on a message that has none of them.
    """

    __slots__ = ("_by_name", "count")

    def __init__(self, headers: Iterable[tuple[str, str]]):
        by_name: dict[str, list[tuple[int, str]]] = {}
        count = 0
        for count, (name, value) in enumerate(headers, 1):
            key = name.lower()
            found = by_name.get(key)
            if found is None:
                by_name[key] = [(count - 1, value)]
            else:
                found.append((count - 1, value))
        self._by_name = by_name
        self.count = count

    def get(self, name: str) -> Sequence[tuple[int, str]]:
        """(position, value) of every field of that lower-case name, topmost first."""
        return self._by_name.get(name, ())

    def __contains__(self, name: str) -> bool:
        return name in self._by_name


Headers = Sequence[tuple[str, str]] | HeaderIndex


def index_headers(headers: Headers) -> HeaderIndex:
    return headers if isinstance(headers, HeaderIndex) else HeaderIndex(headers)


def _values(headers: Headers, name: str) -> list[str]:
    return [value for _, value in index_headers(headers).get(name)]


def _first(headers: Headers, name: str) -> str:
    found = index_headers(headers).get(name)
    return found[0][1] if found else ""


def auto_submitted(headers: Headers) -> str:
    """The Auto-Submitted keyword (RFC 3834), lower case; "no" when absent."""
    value = re.sub(r"\([^()]*\)", " ", _first(headers, "auto-submitted"))  # comments are allowed
    words = value.split(";", 1)[0].split()
    return words[0].lower() if words else "no"


def header_traces(headers: Headers, mail_from: str, trusted_relay: bool) -> list[Trace]:
    """Traces written by a forwarder into the header, each naming the forwarder when it can."""
    fields = index_headers(headers)
    found: list[Trace] = []
    for index, value in fields.get(SIEVE_REDIRECTED):
        for address in _addresses(value)[:1]:
            found.append(
                Trace("sieve-redirect", Strength.DECISIVE, address, f"X-Sieve-Redirected-From: {address}", index)
            )
    for index, value in fields.get(ZIMBRA_FORWARDED):
        for address in _addresses(value)[:1]:
            found.append(Trace("zimbra-forwarded", Strength.DECISIVE, address, f"X-Zimbra-Forwarded: {address}", index))
    if EXCHANGE_RULES_LOOP in fields:
        sender = header_from(fields)
        is_reply = "in-reply-to" in fields
        for index, value in fields.get(EXCHANGE_RULES_LOOP):
            for address in _addresses(value)[:1]:
                # an inbox rule's auto-reply carries the header too: it goes from the mailbox back
                if is_reply and same_mailbox(sender, address):
                    continue
                found.append(
                    Trace(
                        "exchange-rules-loop",
                        Strength.DECISIVE,
                        address,
                        f"X-MS-Exchange-Inbox-Rules-Loop: {address}",
                        index,
                    )
                )
    for index, value in fields.get(EXCHANGE_AUTOFORWARDED):
        if value.strip().lower() == "true":
            # an Organization header is stripped at Exchange's boundary: from outside it is forged
            strength = Strength.STRONG if trusted_relay else Strength.WEAK
            found.append(
                Trace("exchange-autoforwarded", strength, "", "X-MS-Exchange-Organization-AutoForwarded", index)
            )
            break
    found.extend(_gmail_traces(fields, mail_from))
    return found


def _gmail_traces(fields: HeaderIndex, mail_from: str) -> list[Trace]:
    """X-Forwarded-For: <forwarder> <destination>, X-Forwarded-To: <destination>.

    Web front ends also use X-Forwarded-For for a client IP: only addresses count.
    """
    for index, value in fields.get("x-forwarded-for"):
        found = _addresses(value)
        if found:
            return [Trace("gmail-forwarded", Strength.STRONG, found[0], f"X-Forwarded-For: {' '.join(found)}", index)]
    for index, value in fields.get("x-forwarded-to"):
        found = _addresses(value)
        if found:
            rewrite = envelope_rewrite(mail_from)
            forwarder = rewrite.forwarder if rewrite and rewrite.kind != "batv" else mail_from
            return [Trace("gmail-forwarded", Strength.STRONG, forwarder, f"X-Forwarded-To: {' '.join(found)}", index)]
    return []


def delivered_to_traces(headers: Headers, rcpts: Sequence[str]) -> list[Trace]:
    """Delivered-To of a mailbox that is not a recipient of this transaction: local(8), .forward."""
    found = []
    for index, value in index_headers(headers).get("delivered-to"):
        for address in _addresses(value)[:1]:
            if not _among(address, rcpts):
                found.append(Trace("delivered-to", Strength.STRONG, address, f"Delivered-To: {address}", index))
    return found


def _received_for(value: str) -> list[str]:
    return _RECEIVED_FOR.findall(_one_line(value)) if "for" in value.lower() else []


def received_for_traces(headers: Headers, rcpts: Sequence[str]) -> list[Trace]:
    """`Received: ... for <mailbox>` naming a mailbox that is not a recipient now."""
    found = []
    seen: set[str] = set()
    for index, value in index_headers(headers).get("received"):
        for address in _received_for(value):
            key = normalize_address(address)
            if key in seen or _among(address, rcpts):
                continue
            seen.add(key)
            found.append(Trace("received-for", Strength.MEDIUM, address, f"Received: for <{address}>", index))
    return found


def weak_traces(headers: Headers) -> list[Trace]:
    """Evidence that only scores: a person's redirect, machine-made mail, an ARC chain."""
    fields = index_headers(headers)
    found = []
    if any(name in fields for name in ("resent-from", "resent-to", "resent-date", "resent-sender")):
        found.append(Trace("resent", Strength.WEAK, "", "Resent-* fields"))
    if auto_submitted(fields) == "auto-generated":
        found.append(Trace("auto-generated", Strength.WEAK, "", "Auto-Submitted: auto-generated"))
    if "arc-seal" in fields:
        found.append(Trace("arc", Strength.WEAK, "", "ARC-Seal"))
    return found


# --- what is not a forward -----------------------------------------------------------------
#
# An exemption rests only on what a sender cannot forge cheaply. The null sender is the
# envelope of a delivery report or an automatic reply (RFC 3464, RFC 3834): nothing can be
# answered or bounced to it, and the forwarders we know keep the sender they were given, they
# never choose <>. A header label (Content-Type: multipart/report, Auto-Submitted, List-Id,
# Precedence) is one line anyone writes: it never exempts a message by itself. It only says
# which traces are not this message's forward: an auto-reply's own filter header naming its
# author (AUTO_REPLY_TRACES), a list copy's traces carried inside the post (see ListCopy).


def is_report(headers: Headers) -> bool:
    """Content-Type multipart/report (RFC 6522: DSN, MDN, ARF): a label, judged with the envelope."""
    return _first(headers, "content-type").strip().lower().startswith("multipart/report")


def exemption(mail_from: str, headers: Headers) -> str:
    """Whether the whole message is exempt: only with the null sender. "" for none.

    "dsn" is a null-sender multipart/report (a delivery or read report as an MTA or the
    mailbox server sends it), "null-sender" any other message with MAIL FROM:<>. A
    multipart/report from a non-null sender is judged like any other message: its
    Content-Type is a label its sender chose.
    """
    if mail_from:
        return ""
    return "dsn" if is_report(headers) else "null-sender"


def auto_replied(headers: Headers) -> bool:
    """Auto-Submitted: auto-replied or auto-notified (vacation replies, notifications)."""
    return auto_submitted(headers) in ("auto-replied", "auto-notified")


# Traces a mailbox's own automatic reply or notification carries: Zimbra writes its
# X-Zimbra-Forwarded on out-of-office replies, Exchange its rules loop on inbox-rule replies, a
# notification keeps the mailbox's Delivered-To. A Sieve redirect trace, an X-Forwarded-*
# pair, the envelope and the inferences are never on an auto-reply: there a label excuses nothing.
AUTO_REPLY_TRACES = frozenset({"zimbra-forwarded", "exchange-rules-loop", "delivered-to"})


def authored_by(trace: Trace, authors: Iterable[str]) -> bool:
    """Whether an auto-reply's trace names the message's own author: a mailbox speaking for itself.

    Only the kinds of AUTO_REPLY_TRACES, and only a mailbox (not a domain). A forward keeps
    the original author's From, so the forwarder the trace names is someone else.
    """
    return (
        trace.name in AUTO_REPLY_TRACES
        and "@" in trace.forwarder
        and any(same_mailbox(trace.forwarder, a) for a in authors)
    )


# Header fields a list server writes (RFC 2369, RFC 2919, Mailman, ezmlm, Google Groups).
LIST_FIELDS = frozenset(
    {
        "list-id",
        "list-post",
        "list-help",
        "list-subscribe",
        "list-unsubscribe",
        "list-owner",
        "list-archive",
        "x-mailman-version",
        "x-beenthere",
        "mailing-list",
    }
)
# Fields the author's program writes: a list keeps them in place (or moves them down when it
# rewrites one), and every forwarder prepends its trace above them.
ORIGINATOR_FIELDS = ("from", "to", "subject", "date", "message-id")
# Envelope senders of list servers; group "list" is the list's name when the form gives it.
_LIST_SENDERS = (
    re.compile(r"^(?P<list>.+?)-bounces(?:[+=].*)?$", re.I | re.S),  # Mailman 2/3, also VERP
    re.compile(r"^owner-(?P<list>.+)$", re.I | re.S),  # Majordomo, LISTSERV, Sympa
    re.compile(r"^(?P<list>.+?)-(?:owner|request)(?:[+=].*)?$", re.I | re.S),  # Sympa, Majordomo
    re.compile(r"^(?P<list>.+?)-return-.*$", re.I | re.S),  # ezmlm VERP: list-return-12-user=dom
    re.compile(r"^(?P<list>.+?)\+(?:bounces-|bnc).*$", re.I | re.S),  # mlmmj, Google Groups
    re.compile(r"^bounces?[-+=.]", re.I),  # VERP bounce addresses of list and bulk services
)


@dataclass(frozen=True)
class ListSender:
    address: str  # the list's posting address when the form gives it, else ""
    domain: str  # the list server's domain (the envelope's)


def list_sender(mail_from: str) -> ListSender | None:
    """The list an envelope sender belongs to (a BATV signature removed first); None for none."""
    address = mail_from
    signed = parse_batv(mail_from) if "=" in mail_from else None
    if signed and signed.original:
        address = signed.original
    local, domain = split_address(address)
    if not local or not domain or local.startswith('"'):
        return None
    for pattern in _LIST_SENDERS:
        match = pattern.match(local)
        if match:
            name = match.groupdict().get("list") or ""
            return ListSender(f"{name}@{domain}" if name else "", domain)
    return None


def list_marker(headers: Headers) -> tuple[int, str]:
    """(position, name) of the topmost field a list server writes; (-1, "") when none."""
    fields = index_headers(headers)
    best = (-1, "")
    for name in LIST_FIELDS:
        for index, _ in fields.get(name)[:1]:
            if best[0] < 0 or index < best[0]:
                best = (index, name)
    for index, value in fields.get("precedence"):
        if value.strip().lower() in ("list", "bulk") and (best[0] < 0 or index < best[0]):
            best = (index, "precedence")
        break
    return best


def _by_host(value: str) -> str:
    match = _RECEIVED_BY.search(_one_line(value))
    return match.group(1) if match else ""


_RECEIVED_BY = re.compile(r"\bby\s+([A-Za-z0-9][A-Za-z0-9.-]*)", re.I)


@dataclass(frozen=True)
class ListCopy:
    """A copy a list server sent: where in its header the list took the message.

    `boundary` is the position of the topmost field that came with the post or that the
    list wrote when it took the post: a list field (inbound: List-Id, List-Post, ...,
    X-Mailman-Version, X-BeenThere, Mailing-List, Precedence: list/bulk), an originator field of the post (From,
    To, Subject, Date, Message-ID), a Delivered-To or X-Original-To of the list's address, a
    Received line `for <the list's address>`, or (when `by_host`) a Received line written `by`
    a host of the list's own domain. Fields are prepended on the way, so
    whatever lies above the boundary was added after the list, on the way from it to us (the
    list's own traces); what lies at or below it came with the post (the post's way to the
    list). The topmost anchor wins: a poster can forge anchors only inside the post, below the
    real ones, so forging one never lifts his own trace above the boundary. With no anchor
    at all the boundary is the end of the header: every header trace counts.
    """

    sender: ListSender | None
    marker: str  # what made it list mail, for people
    boundary: int

    def names_list(self, address: str) -> bool:
        return bool(self.sender and self.sender.address and same_mailbox(self.sender.address, address))

    def carried_inside(self, trace: Trace) -> bool:
        """A header trace at or below the boundary: it came with the post, not from the list."""
        return trace.position >= self.boundary

    def own_delivery(self, trace: Trace) -> bool:
        """A trace that names the list itself: the list server taking its own post."""
        return self.names_list(trace.forwarder)


def list_copy(mail_from: str, headers: Headers, *, inbound: bool, by_host: bool) -> ListCopy | None:
    """The list copy this message is, or None.

    Inbound, list mail is a message from a list's envelope sender (list_sender) or one that
    carries a list field, and list fields anchor the boundary. Outbound (`inbound` false)
    only the envelope sender makes list mail and list fields anchor nothing: our own list
    server appends them below the post, so a list field above a trace is the forwarder's
    own writing. `by_host` lets a Received line written by a host of the envelope's list
    domain anchor the boundary (for an outside list: our own hosts share the organisation's
    domain with our list server).
    """
    fields = index_headers(headers)
    sender = list_sender(mail_from) if mail_from else None
    position, name = list_marker(fields) if inbound else (-1, "")
    if sender is None and position < 0:
        return None
    marker = f"MAIL FROM {mail_from}" if sender else name
    boundary = position if position >= 0 else fields.count
    for field in ORIGINATOR_FIELDS:  # the post as its author's program wrote it
        found = fields.get(field)
        if found and found[0][0] < boundary:
            boundary = found[0][0]
    if sender is not None:
        for field in ("delivered-to", "x-original-to"):
            for index, value in fields.get(field):
                if index >= boundary:
                    break
                if sender.address and any(same_mailbox(sender.address, a) for a in _addresses(value)[:1]):
                    boundary = index
                    break
        domain = normalize_domain(sender.domain) if by_host else ""
        for index, value in fields.get("received"):
            if index >= boundary:
                break
            if sender.address and any(same_mailbox(sender.address, a) for a in _received_for(value)):
                boundary = index
                break
            host = normalize_domain(_by_host(value)) if domain else ""
            if host and is_under(host, domain):
                boundary = index
                break
    return ListCopy(sender, marker, boundary)


def message_id(headers: Headers) -> str:
    """The Message-ID as written, angle brackets removed; "" when absent or unusable."""
    value = _one_line(_first(headers, "message-id"))
    match = re.search(r"<([^<>\s]+)>", value)
    if match:
        return match.group(1)
    return value if value and " " not in value and len(value) <= 998 else ""


def header_from(headers: Headers) -> str:
    return _mailbox_of(_first(headers, "from"))
