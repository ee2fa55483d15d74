"""ARC (RFC 8617): the chain's validation, its sealers, and whether it recorded a pass for the author.

A mailing list or a partner's relay that changes a message breaks its DKIM
signatures and sends it from an address the From domain's SPF does not list, so
DMARC fails here; if that hop sealed the message with ARC after checking it, its
ARC-Authentication-Results (AAR) says what it saw. check.py lets such a chain
override the DMARC failure only when all of this holds (`ArcResult.trusted`):

- dkimpy validated the chain (cv=pass: every ARC-Seal verifies, the newest
  ARC-Message-Signature verifies, i=1 says cv=none and no later seal says fail);
  a chain with any failing or tampered seal never overrides;
- EVERY sealer of the chain (the d= of each ARC-Seal) is in
  `[auth] trusted_arc_sealers`, not only the newest one. The AAR that matters is
  the oldest hop's (it saw the message before anyone changed it), and it reaches
  us only through every later hop: each of them could have replaced the older
  sets before sealing, so a chain is only as trustworthy as its least trusted
  sealer. Trusting only the newest sealer would also trust whatever that sealer
  chose to accept from hops we know nothing of. On a government gateway a
  missed override costs a DMARC refusal that the sender's list can fix; a wrong
  one delivers a forgery of a p=reject domain;
- an AAR of the chain records a pass FOR THE FROM DOMAIN: dmarc=pass with
  header.from the author's domain, or dkim=pass / spf=pass for a domain aligned
  with it (relaxed). A sealer that recorded only "dkim=pass header.d=list.example"
  authenticated the list, not the author: no override.

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
from govmilter.domains import registered_domain

_COMMENT = re.compile(r"\([^()]*\)")
_METHOD = re.compile(r"^\s*(dmarc|dkim|spf)\s*=\s*pass\b(.*)$", re.I | re.S)
# the identifier each method's pass is about (RFC 8601 2.7, RFC 7489 11.2)
_IDENTIFIERS = {"dmarc": ("header.from",), "dkim": ("header.d", "header.i"), "spf": ("smtp.mailfrom",)}
_PROPERTY = re.compile(r"\b(header\.from|header\.d|header\.i|smtp\.mailfrom)\s*=\s*\"?([^\s;\"]+)", re.I)


@dataclass(frozen=True)
class ArcResult:
    result: str  # pass | fail | none | temperror
    sealers: tuple[str, ...] = ()  # the d= of each ARC-Seal, oldest first
    recorded: tuple[str, ...] = ()  # each set's ARC-Authentication-Results value, oldest first
    reason: str = ""

    def method_result(self) -> MethodResult:
        reason = self.reason or (f"sealed by {', '.join(dict.fromkeys(self.sealers))}" if self.sealers else "")
        return MethodResult("arc", self.result, (), reason)

    def trusted(self, sealers: Sequence[str], author: str | None) -> bool:
        """A valid chain, sealed only by trusted sealers, one of which recorded a pass for `author`."""
        allowed = {s.lower().rstrip(".") for s in sealers}
        if self.result != PASS or not self.sealers or not set(self.sealers) <= allowed or not author:
            return False
        return any(recorded_pass(value, author) for value in self.recorded)


def recorded_pass(aar: str, author: str) -> bool:
    """True when an ARC-Authentication-Results value records a DMARC, DKIM or SPF pass aligned with `author`."""
    org = registered_domain(author.lower().rstrip("."))
    for part in _COMMENT.sub(" ", aar).split(";")[2:]:  # after "i=N" and the sealer's authserv-id
        found = _METHOD.match(part)
        if not found:
            continue
        wanted = _IDENTIFIERS[found.group(1).lower()]
        for name, value in _PROPERTY.findall(found.group(2)):
            domain = value.rpartition("@")[2].lower().rstrip(".")
            if name.lower() in wanted and domain and registered_domain(domain) == org:
                return True
    return False


def has_chain(headers: Sequence[tuple[str, str]]) -> bool:
    return any(name.lower() == "arc-seal" for name, _ in headers)


def verify_chain(message: bytes, resolver: Resolver, budget: Budget) -> ArcResult:
    keys = KeyLookups(resolver, budget, "arc")
    try:
        verdict, instances, reason = dkim.arc_verify(message, logger=_quiet, dnsfunc=keys)
    except Exception as exc:  # dkimpy's own defects on odd input: a broken chain, not our failure
        return ArcResult(FAIL, reason=f"dkimpy: {type(exc).__name__}")
    ordered = sorted(instances, key=lambda i: int(i.get("instance", 0)))
    sealers = tuple(_text(i.get("as-domain")).lower().rstrip(".") for i in ordered)
    if verdict == dkim.CV_Pass:
        return ArcResult(PASS, sealers, tuple(_text(i.get("aar-value")) for i in ordered))
    if any(keys.failed(name) for name in keys.status):
        return ArcResult(TEMPERROR, sealers, reason="key lookup failed")
    if verdict == dkim.CV_None:
        return ArcResult(NONE)
    return ArcResult(FAIL, sealers, reason=_text(reason)[:100])


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    return "" if value is None else str(value)
