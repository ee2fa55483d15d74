"""pyspf and dkimpy asking the shared DNS layer (clients/dns.py) within the message's budget.

dkimpy calls `dnsfunc(name, timeout)` for a key record and turns any failure into a
plain "signature invalid" (its verify_sig catches DnsTimeoutError and returns False).
So the dnsfunc here records what DNS said: a verification that fails after a timeout,
SERVFAIL or a spent budget is reported `temperror`, never `fail` (RFC 6376 6.1.2).

pyspf has one module-level lookup function; it is pointed once at a dispatcher that
asks the resolver of the SPF evaluation running in the calling thread.
"""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dkim
import dkim.crypto
import dkim.util
import spf

from govmilter.clients.dns import FAILED, Budget, Records, Resolver

_local = threading.local()


class KeyLookups:
    """The dnsfunc of dkimpy, for one purpose (dkim or arc), remembering the status of each lookup."""

    def __init__(self, resolver: Resolver, budget: Budget, purpose: str):
        self.resolver = resolver
        self.budget = budget
        self.purpose = purpose
        self.status: dict[str, str] = {}  # name -> found | nxdomain | nodata | timeout | error | skipped

    def __call__(self, name: bytes | str, timeout: float = 5.0) -> bytes | None:
        text = name.decode("ascii", "replace") if isinstance(name, bytes) else name
        text = text.rstrip(".").lower()
        records = self.resolver.query(text, "TXT", self.budget, self.purpose)
        self.status[text] = records.status
        if not records.values:
            return None
        record = records.values[0].encode("utf-8", "replace")
        if too_large(record):
            self.status[text] = TOO_LARGE
            return None
        return record

    def too_large(self, name: str) -> bool:
        return self.status.get(name.rstrip(".").lower(), "") == TOO_LARGE

    def failed(self, name: str) -> bool:
        return self.status.get(name.rstrip(".").lower(), "") in FAILED

    def missing(self, name: str) -> bool:
        return self.status.get(name.rstrip(".").lower(), "") in ("nxdomain", "nodata")


TOO_LARGE = "too large"  # KeyLookups.status of a key record refused by too_large()
MAX_KEY_RECORD = 2048  # octets: an RSA-4096 key record is ~740, RFC 8301 asks verifiers for 1024-4096 bits
MAX_RSA_BITS = 8192
MAX_EXPONENT_BITS = 64  # OpenSSL's own bound for the public exponent of large keys


def too_large(record: bytes) -> bool:
    """A key record whose size or RSA key would cost more than any real key: refused before dkimpy.

    dkimpy verifies RSA in pure Python (pow(signature, e, n)): a record of a few kB with
    a modulus and an exponent of 16 000 bits each takes seconds per signature, one of
    64 kB (TCP) hours. The sender chooses the key's name (d=, s=), so the bound is stated
    here: a record over MAX_KEY_RECORD octets, a modulus over MAX_RSA_BITS bits or an
    exponent over MAX_EXPONENT_BITS bits is `permerror` ("key too large").
    """
    if len(record) > MAX_KEY_RECORD:
        return True
    try:
        tags = dkim.util.parse_tag_value(record)
        if tags.get(b"k", b"rsa").strip().lower() != b"rsa" or not tags.get(b"p"):
            return False
        key = dkim.crypto.parse_public_key(base64.b64decode(re.sub(rb"\s+", b"", tags[b"p"])))
    except Exception:  # unreadable: dkimpy says so itself
        return False
    modulus, exponent = int(key["modulus"]), int(key["publicExponent"])
    return modulus.bit_length() > MAX_RSA_BITS or exponent.bit_length() > MAX_EXPONENT_BITS


def _spf_lookup(name: str, qtype: str, strict: Any = True, timeout: float = 20) -> list[tuple[tuple[str, str], Any]]:
    """pyspf's DNSLookup, answered by the resolver of the SPF evaluation running in this thread."""
    ask: tuple[Resolver, Budget] | None = getattr(_local, "spf", None)
    if ask is None:  # pyspf called outside spf_lookups(): never the system resolver
        raise spf.TempError("DNS: no resolver")
    resolver, budget = ask
    records: Records = resolver.query(name, qtype, budget, "spf")
    if records.failed:
        raise spf.TempError(f"DNS {records.status}")
    found: list[tuple[tuple[str, str], Any]] = []
    for value in records.values:
        if qtype in ("TXT", "SPF"):
            found.append(((name, qtype), (value.encode("utf-8", "replace"),)))
        elif qtype == "MX":
            preference, _, host = value.partition(" ")
            found.append(((name, qtype), (int(preference) if preference.isdigit() else 0, host.rstrip("."))))
        elif qtype == "PTR":
            found.append(((name, qtype), value.rstrip(".")))
        else:
            found.append(((name, qtype), value))
    return found


spf.DNSLookup = _spf_lookup


@contextmanager
def spf_lookups(resolver: Resolver, budget: Budget) -> Iterator[None]:
    """Within this block pyspf, in this thread, asks `resolver` within `budget`."""
    _local.spf = (resolver, budget)
    try:
        yield
    finally:
        _local.spf = None
