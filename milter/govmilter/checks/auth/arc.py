"""ARC (RFC 8617): the chain's validation, its sealers, and whether it recorded a pass.

A mailing list or a partner's relay that changes a message breaks its DKIM
signatures and sends it from an address the From domain's SPF does not list, so
DMARC fails here; if that hop sealed the message with ARC after checking it, its
ARC-Authentication-Results says what it saw. A valid chain whose every sealer is
in `[auth] trusted_arc_sealers` and whose newest ARC-Authentication-Results
records a DMARC, DKIM or SPF pass may override the DMARC failure (check.py).
It never touches the forwarding check: an automatic forward is refused whatever ARC says.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import dkim

from govmilter.checks.auth.dkim import _quiet
from govmilter.checks.auth.resolver import KeyLookups
from govmilter.checks.auth.results import FAIL, NONE, PASS, TEMPERROR, MethodResult
from govmilter.clients.dns import Budget, Resolver

_PASSED = re.compile(r"\b(?:dmarc|dkim|spf)\s*=\s*pass\b", re.I)
_INSTANCE = re.compile(r"(?:^|;)\s*i\s*=\s*(\d+)", re.I)
MAX_INSTANCES = 50  # RFC 8617 4.2.1: a chain longer than 50 is invalid


@dataclass(frozen=True)
class ArcResult:
    result: str  # pass | fail | none | temperror
    sealers: tuple[str, ...] = ()  # the d= of each ARC-Seal, oldest first
    recorded_pass: bool = False  # the newest ARC-Authentication-Results records a dmarc, dkim or spf pass
    reason: str = ""

    def method_result(self) -> MethodResult:
        return MethodResult("arc", self.result, (), self.reason)

    def trusted(self, sealers: Sequence[str]) -> bool:
        """A valid chain, sealed only by trusted sealers, that recorded a pass."""
        allowed = {s.lower().rstrip(".") for s in sealers}
        return self.result == PASS and self.recorded_pass and bool(self.sealers) and set(self.sealers) <= allowed


def has_chain(headers: Sequence[tuple[str, str]]) -> bool:
    return any(name.lower() == "arc-seal" for name, _ in headers)


def verify_chain(message: bytes, headers: Sequence[tuple[str, str]], resolver: Resolver, budget: Budget) -> ArcResult:
    if not has_chain(headers):
        return ArcResult(NONE)
    keys = KeyLookups(resolver, budget, "arc")
    try:
        verdict, instances, reason = dkim.arc_verify(message, logger=_quiet, dnsfunc=keys)
    except Exception as exc:  # dkimpy's own defects on odd input: a broken chain, not our failure
        return ArcResult(FAIL, reason=f"dkimpy: {type(exc).__name__}")
    sealers = tuple(
        str(i.get("as-domain", b"").decode("ascii", "replace") if isinstance(i.get("as-domain"), bytes) else "")
        .lower()
        .rstrip(".")
        for i in sorted(instances, key=lambda i: int(i.get("instance", 0)))
    )
    if verdict == dkim.CV_Pass:
        return ArcResult(PASS, sealers, _newest_recorded_pass(headers), "")
    if any(keys.failed(name) for name in keys.status):
        return ArcResult(TEMPERROR, sealers, reason="key lookup failed")
    if verdict == dkim.CV_None:
        return ArcResult(NONE)
    text = reason.decode("ascii", "replace") if isinstance(reason, bytes) else str(reason)
    return ArcResult(FAIL, sealers, reason=text[:100])


def _newest_recorded_pass(headers: Sequence[tuple[str, str]]) -> bool:
    newest, text = -1, ""
    for name, value in headers:
        if name.lower() == "arc-authentication-results":
            match = _INSTANCE.search(value)
            if match and int(match.group(1)) > newest:
                newest, text = int(match.group(1)), value
    return bool(_PASSED.search(text))
