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

from govmilter.domains import normalize_address, split_address


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
    if not sep or not rest[:4].lower() == "srs=" or not user or not domain:
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

Headers = Sequence[tuple[str, str]]


def _values(headers: Headers, name: str) -> list[str]:
    size = len(name)  # compared first: most fields differ in length, and lower() costs more
    return [value for key, value in headers if len(key) == size and key.lower() == name]


def _first(headers: Headers, name: str) -> str:
    values = _values(headers, name)
    return values[0] if values else ""


def auto_submitted(headers: Headers) -> str:
    """The Auto-Submitted keyword (RFC 3834), lower case; "no" when absent."""
    value = re.sub(r"\([^()]*\)", " ", _first(headers, "auto-submitted"))  # comments are allowed
    words = value.split(";", 1)[0].split()
    return words[0].lower() if words else "no"


def header_traces(headers: Headers, mail_from: str, trusted_relay: bool) -> list[Trace]:
    """Traces written by a forwarder into the header, each naming the forwarder when it can."""
    found: list[Trace] = []
    for value in _values(headers, SIEVE_REDIRECTED):
        for address in _addresses(value)[:1]:
            found.append(Trace("sieve-redirect", Strength.DECISIVE, address, f"X-Sieve-Redirected-From: {address}"))
    for value in _values(headers, ZIMBRA_FORWARDED):
        for address in _addresses(value)[:1]:
            found.append(Trace("zimbra-forwarded", Strength.DECISIVE, address, f"X-Zimbra-Forwarded: {address}"))
    sender = _mailbox_of(_first(headers, "from"))
    is_reply = bool(_first(headers, "in-reply-to"))
    for value in _values(headers, EXCHANGE_RULES_LOOP):
        for address in _addresses(value)[:1]:
            # an inbox rule's auto-reply carries the header too: it goes from the mailbox back
            if is_reply and same_mailbox(sender, address):
                continue
            found.append(
                Trace("exchange-rules-loop", Strength.DECISIVE, address, f"X-MS-Exchange-Inbox-Rules-Loop: {address}")
            )
    for value in _values(headers, EXCHANGE_AUTOFORWARDED):
        if value.strip().lower() == "true":
            # an Organization header is stripped at Exchange's boundary: from outside it is forged
            strength = Strength.STRONG if trusted_relay else Strength.WEAK
            found.append(Trace("exchange-autoforwarded", strength, "", "X-MS-Exchange-Organization-AutoForwarded"))
            break
    found.extend(_gmail_traces(headers, mail_from))
    return found


def _gmail_traces(headers: Headers, mail_from: str) -> list[Trace]:
    """X-Forwarded-For: <forwarder> <destination>, X-Forwarded-To: <destination>.

    Web front ends also use X-Forwarded-For for a client IP: only addresses count.
    """
    for value in _values(headers, "x-forwarded-for"):
        found = _addresses(value)
        if found:
            return [Trace("gmail-forwarded", Strength.STRONG, found[0], f"X-Forwarded-For: {' '.join(found)}")]
    for value in _values(headers, "x-forwarded-to"):
        found = _addresses(value)
        if found:
            rewrite = envelope_rewrite(mail_from)
            forwarder = rewrite.forwarder if rewrite and rewrite.kind != "batv" else mail_from
            return [Trace("gmail-forwarded", Strength.STRONG, forwarder, f"X-Forwarded-To: {' '.join(found)}")]
    return []


def delivered_to_traces(headers: Headers, rcpts: Sequence[str]) -> list[Trace]:
    """Delivered-To of a mailbox that is not a recipient of this transaction: local(8), .forward."""
    found = []
    for value in _values(headers, "delivered-to"):
        for address in _addresses(value)[:1]:
            if not _among(address, rcpts):
                found.append(Trace("delivered-to", Strength.STRONG, address, f"Delivered-To: {address}"))
    return found


def received_for_traces(headers: Headers, rcpts: Sequence[str]) -> list[Trace]:
    """`Received: ... for <mailbox>` naming a mailbox that is not a recipient now."""
    found = []
    seen: set[str] = set()
    for value in _values(headers, "received"):
        for address in _RECEIVED_FOR.findall(_one_line(value)):
            key = normalize_address(address)
            if key in seen or _among(address, rcpts):
                continue
            seen.add(key)
            found.append(Trace("received-for", Strength.MEDIUM, address, f"Received: for <{address}>"))
    return found


def weak_traces(headers: Headers) -> list[Trace]:
    """Evidence that only scores: a person's redirect, machine-made mail, an ARC chain."""
    found = []
    if any(_values(headers, name) for name in ("resent-from", "resent-to", "resent-date", "resent-sender")):
        found.append(Trace("resent", Strength.WEAK, "", "Resent-* fields"))
    if auto_submitted(headers) == "auto-generated":
        found.append(Trace("auto-generated", Strength.WEAK, "", "Auto-Submitted: auto-generated"))
    if _values(headers, "arc-seal"):
        found.append(Trace("arc", Strength.WEAK, "", "ARC-Seal"))
    return found


# --- what is not a forward -----------------------------------------------------------------

LIST_HEADERS = ("list-id", "list-post", "x-mailman-version")
_BOUNCES = re.compile(r"-bounces(?:\+[^@]*)?$", re.I)  # Mailman, also its VERP form


def exemption(mail_from: str, headers: Headers) -> str:
    """The kind of mail that is not a forward however it looks; "" for none.

    null-sender, dsn (multipart/report), auto-reply (Auto-Submitted auto-replied or
    auto-notified), mailing-list (List-Id, List-Post, Precedence list/bulk,
    X-Mailman-Version, a *-bounces@ sender).
    """
    if not mail_from:
        return "null-sender"
    if _first(headers, "content-type").strip().lower().startswith("multipart/report"):
        return "dsn"
    if auto_submitted(headers) in ("auto-replied", "auto-notified"):
        return "auto-reply"
    if any(_values(headers, name) for name in LIST_HEADERS):
        return "mailing-list"
    if _first(headers, "precedence").strip().lower() in ("list", "bulk"):
        return "mailing-list"
    local, _ = split_address(mail_from)
    if _BOUNCES.search(local):
        return "mailing-list"
    return ""


def message_id(headers: Headers) -> str:
    """The Message-ID as written, angle brackets removed; "" when absent or unusable."""
    value = _one_line(_first(headers, "message-id"))
    match = re.search(r"<([^<>\s]+)>", value)
    if match:
        return match.group(1)
    return value if value and " " not in value and len(value) <= 998 else ""


def header_from(headers: Headers) -> str:
    return _mailbox_of(_first(headers, "from"))
