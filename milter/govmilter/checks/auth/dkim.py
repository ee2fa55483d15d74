"""DKIM (RFC 6376) verification of every signature of a message, RSA and Ed25519, by dkimpy.

Each DKIM-Signature field is verified on its own (dkimpy verifies only the first
unless asked for each). Key records come from the shared resolver through
resolver.KeyLookups, which remembers what DNS said: a signature whose key could
not be fetched (timeout, SERVFAIL, budget spent) is `temperror`, a key that does
not exist `permerror`, a signature that does not verify `fail`.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import dkim

from govmilter.checks.auth import bodyhash
from govmilter.checks.auth.resolver import MAX_EXPONENT_BITS, MAX_KEY_RECORD, MAX_RSA_BITS, KeyLookups
from govmilter.checks.auth.results import FAIL, NEUTRAL, PASS, PERMERROR, POLICY, TEMPERROR, MethodResult
from govmilter.clients.dns import Budget, Resolver

# dkimpy logs every failed signature at error level: a forged message is no error of ours
_quiet = logging.getLogger("govmilter.auth.dkimpy")
_quiet.setLevel(logging.CRITICAL)


UNCHECKED = "not checked: past [auth] max_signatures"
TOO_LARGE_REASON = (f"key too large: a record over {MAX_KEY_RECORD} octets, an RSA key over {MAX_RSA_BITS} bits "
                    f"or an exponent over {MAX_EXPONENT_BITS} bits")  # fmt: skip


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


class StreamedDKIM(dkim.DKIM):
    """dkimpy given only the header block: each body hash comes from bodyhash.digests, streamed.

    dkimpy checks bh= in verify_sig_process when the tags carry it; here it is checked
    against the streamed hash (the same octets, the same exception), and dkimpy goes on
    with the tags without bh=: the header hash and b= as dkimpy makes them.
    """

    def __init__(self, header: bytes, body_hashes: dict[bodyhash.BodyKey, bytes], **kwargs: Any):
        super().__init__(header + b"\r\n", **kwargs)
        self.body_hashes = body_hashes
        self.body_lengths: dict[bytes, int] = {}  # the whole canonical body's length, by canonicalization

    def verify_sig_process(self, sig: dict[bytes, bytes], include_headers: Any, sig_header: Any, dnsfunc: Any) -> Any:
        if b"bh" in sig:
            digest = self.body_hashes.get(bodyhash.body_key(sig))
            if digest is None:  # a signature past max_signatures, or an unknown a=: dkimpy refuses it too
                raise dkim.ValidationError("body not hashed")
            expected = base64.b64decode(re.sub(rb"\s+", b"", sig[b"bh"]))
            if digest != expected:
                raise dkim.ValidationError(
                    f"body hash mismatch (got {base64.b64encode(digest)!r}, expected {sig[b'bh']!r})"
                )
            sig = {name: value for name, value in sig.items() if name != b"bh"}
        return super().verify_sig_process(sig, include_headers, sig_header, dnsfunc)


def verify_all(chunks: Iterable[bytes] | bytes, resolver: Resolver, budget: Budget, limit: int,
               *, crlf: bool = False) -> list[DkimResult]:  # fmt: skip
    """One result per DKIM-Signature field, top first, at most `limit` verified (the rest `neutral`).

    The raw message is read once, in chunks: the header block is kept (dkimpy parses it),
    the body is only hashed as it streams (memory does not grow with its size). `crlf`:
    every line already ends in CRLF (bodyhash.split).
    """
    header, body = bodyhash.split([chunks] if isinstance(chunks, bytes) else chunks, crlf=crlf)
    try:
        verifier = StreamedDKIM(header, {}, logger=_quiet, minkey=1024)
    except Exception as exc:  # a message dkimpy cannot parse at all
        return [DkimResult(PERMERROR, "", "", f"unparsable message: {type(exc).__name__}")]
    signatures = [value for name, value in verifier.headers if name.lower() == b"dkim-signature"]
    wanted: list[bodyhash.BodyKey] = []
    for raw in signatures[:limit]:
        try:
            wanted.append(bodyhash.body_key(dkim.util.parse_tag_value(raw)))
        except Exception:  # noqa: S112 - a malformed signature: dkimpy says so when it is verified
            continue
    verifier.body_hashes = bodyhash.digests(body, wanted, verifier.body_lengths)
    results: list[DkimResult] = []
    for index, raw in enumerate(signatures):
        domain, selector = _tags(raw)
        if index >= limit:
            results.append(DkimResult(NEUTRAL, domain, selector, UNCHECKED))
            continue
        results.append(_verify_one(verifier, index, domain, selector, KeyLookups(resolver, budget, "dkim")))
    return results


def _verify_one(verifier: dkim.DKIM, index: int, domain: str, selector: str, keys: KeyLookups) -> DkimResult:
    key_name = f"{selector}._domainkey.{domain}"
    try:  # keys.too_large first: dkimpy reads a refused record as no record, or as a bad one
        valid = verifier.verify(idx=index, dnsfunc=keys)
    except dkim.KeyFormatError as exc:
        if keys.too_large(key_name):
            return DkimResult(PERMERROR, domain, selector, TOO_LARGE_REASON)
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
    if keys.too_large(key_name):
        return DkimResult(PERMERROR, domain, selector, TOO_LARGE_REASON)
    if valid:
        unsigned = _unsigned(verifier)
        if unsigned:  # RFC 6376 8.2: content added after l= passes; here it is not accepted as a pass
            return DkimResult(POLICY, domain, selector, f"l= leaves {unsigned} octets of the body unsigned")
        return DkimResult(PASS, domain, selector)
    if keys.failed(key_name):  # dkimpy swallows a failed key lookup into False: temperror (RFC 6376 6.1.2)
        return DkimResult(TEMPERROR, domain, selector, "key lookup failed")
    if keys.missing(key_name):
        return DkimResult(PERMERROR, domain, selector, "no key for signature")
    return DkimResult(FAIL, domain, selector, "signature did not verify")


def _unsigned(verifier: StreamedDKIM) -> int:
    """How many octets of the canonical body the signature just verified left out by its l= (0: none)."""
    tags = verifier.signature_fields
    if b"l" not in tags:
        return 0
    name, _, limit = bodyhash.body_key(tags)
    return max(verifier.body_lengths.get(name, 0) - (limit or 0), 0)


def _tags(raw: bytes) -> tuple[str, str]:
    """d= and s= of a signature field, lower-case ("" when absent or unreadable)."""
    try:
        tags = dkim.util.parse_tag_value(raw)
    except Exception:
        return "", ""
    domain = tags.get(b"d", b"").decode("ascii", "replace").strip().rstrip(".").lower()
    selector = tags.get(b"s", b"").decode("ascii", "replace").strip().lower()
    return domain, selector
