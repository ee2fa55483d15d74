"""DKIM (RFC 6376) verification of every signature of a message, RSA and Ed25519, by dkimpy.

Each DKIM-Signature field is verified on its own (dkimpy verifies only the first
unless asked for each). Key records come from the shared resolver through
resolver.KeyLookups, which remembers what DNS said: a signature whose key could
not be fetched (timeout, SERVFAIL, budget spent) is `temperror`, a key that does
not exist `permerror`, a signature that does not verify `fail`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import dkim

from govmilter.checks.auth.resolver import KeyLookups
from govmilter.checks.auth.results import FAIL, NEUTRAL, PASS, PERMERROR, POLICY, TEMPERROR, MethodResult
from govmilter.clients.dns import Budget, Resolver

# dkimpy logs every failed signature at error level: a forged message is no error of ours
_quiet = logging.getLogger("govmilter.auth.dkimpy")
_quiet.setLevel(logging.CRITICAL)


@dataclass(frozen=True)
class DkimResult:
    result: str  # pass | fail | neutral | temperror | permerror | policy
    domain: str  # d=
    selector: str  # s=
    reason: str = ""

    def method_result(self) -> MethodResult:
        return MethodResult("dkim", self.result, (("header.d", self.domain), ("header.s", self.selector)), self.reason)


def signature_count(headers: list[tuple[str, str]]) -> int:
    return sum(1 for name, _ in headers if name.lower() == "dkim-signature")


def verify_all(message: bytes, resolver: Resolver, budget: Budget, limit: int) -> list[DkimResult]:
    """One result per DKIM-Signature field, top first, at most `limit` verified (the rest `neutral`)."""
    try:
        verifier = dkim.DKIM(message, logger=_quiet, minkey=1024)
    except Exception as exc:  # a message dkimpy cannot parse at all
        return [DkimResult(PERMERROR, "", "", f"unparsable message: {type(exc).__name__}")]
    signatures = [value for name, value in verifier.headers if name.lower() == b"dkim-signature"]
    results: list[DkimResult] = []
    for index, raw in enumerate(signatures):
        domain, selector = _tags(raw)
        if index >= limit:
            results.append(DkimResult(NEUTRAL, domain, selector, "not checked: past [auth] max_signatures"))
            continue
        results.append(_verify_one(verifier, index, domain, selector, KeyLookups(resolver, budget, "dkim")))
    return results


def _verify_one(verifier: dkim.DKIM, index: int, domain: str, selector: str, keys: KeyLookups) -> DkimResult:
    key_name = f"{selector}._domainkey.{domain}"
    try:
        valid = verifier.verify(idx=index, dnsfunc=keys)
    except dkim.KeyFormatError as exc:
        if "public key too small" in str(exc):  # verified, but with a key below 1024 bits
            return DkimResult(POLICY, domain, selector, "key too small")
        return DkimResult(PERMERROR, domain, selector, f"bad key: {exc}"[:100])
    except dkim.ValidationError as exc:  # the body hash or a required tag does not match
        if keys.failed(key_name):
            return DkimResult(TEMPERROR, domain, selector, "key lookup failed")
        return DkimResult(FAIL, domain, selector, str(exc)[:100])
    except dkim.DKIMException as exc:  # a malformed signature field
        return DkimResult(PERMERROR, domain, selector, str(exc)[:100])
    except Exception as exc:  # dkimpy's own defects on odd input: an error of the signature, not ours
        return DkimResult(PERMERROR, domain, selector, f"dkimpy: {type(exc).__name__}")
    if valid:
        return DkimResult(PASS, domain, selector)
    if keys.failed(key_name):  # dkimpy swallows a failed key lookup into False: temperror (RFC 6376 6.1.2)
        return DkimResult(TEMPERROR, domain, selector, "key lookup failed")
    if keys.missing(key_name):
        return DkimResult(PERMERROR, domain, selector, "no key for signature")
    return DkimResult(FAIL, domain, selector, "signature did not verify")


def _tags(raw: bytes) -> tuple[str, str]:
    """d= and s= of a signature field, lower-case ("" when absent or unreadable)."""
    try:
        tags = dkim.util.parse_tag_value(raw)
    except Exception:
        return "", ""
    domain = tags.get(b"d", b"").decode("ascii", "replace").strip().rstrip(".").lower()
    selector = tags.get(b"s", b"").decode("ascii", "replace").strip().lower()
    return domain, selector
