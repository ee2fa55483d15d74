"""DMARC (RFC 7489) of the From header domain.

The policy record is the TXT record at `_dmarc.<From domain>`, else at
`_dmarc.<organisational domain>` (the registered domain by the Public Suffix
List, domains.registered_domain: gov.vn is itself a public suffix, so each
province is its own organisational domain). A message passes when SPF or one
DKIM signature passed for a domain aligned with the From domain (relaxed: same
organisational domain; strict: the same name). A failure's policy is `p`, or
`sp` when the record was found at the organisational domain of a subdomain;
`pct` below 100 applies it to that share of failures, the others get the next
milder policy (RFC 7489 6.6.4).
"""

from __future__ import annotations

import email.utils
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from govmilter.checks.auth.results import FAIL, NONE, PASS, PERMERROR, TEMPERROR, MethodResult
from govmilter.clients.dns import FAILED, Budget, Resolver
from govmilter.domains import normalize_domain, registered_domain

POLICIES = ("none", "quarantine", "reject")
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?"
_HOST = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})+$")


@dataclass(frozen=True)
class Record:
    policy: str  # p: none | quarantine | reject
    subdomain_policy: str  # sp (p when absent)
    pct: int  # 0-100
    adkim: str  # r | s
    aspf: str  # r | s


@dataclass(frozen=True)
class DmarcResult:
    result: str  # pass | fail | none | temperror | permerror
    domain: str  # the From header domain
    policy: str = ""  # the policy that applies to a failure (after sp and pct): none | quarantine | reject
    published: str = ""  # p= as published (for the reply and the header)
    sampled_out: bool = False  # pct left this failure out: a milder policy applies
    reason: str = ""

    def method_result(self) -> MethodResult:
        props: list[tuple[str, str]] = [("header.from", self.domain)]
        if self.published:
            props.insert(0, ("policy.dmarc", self.published))
        return MethodResult("dmarc", self.result, tuple(props), self.reason)


def from_domain(values: Sequence[str]) -> str | None:
    """The domain of the single author in the From header(s); None when there is not exactly one domain."""
    if not values:
        return None
    domains = set()
    for _, address in email.utils.getaddresses(list(values)):
        _, at, domain = address.rpartition("@")
        if at and domain:
            domains.add(normalize_domain(domain.strip().rstrip(".")))
    if len(domains) != 1:
        return None
    domain = domains.pop()
    return domain if _HOST.match(domain) else None


def parse_record(text: str) -> Record | None:
    """A DMARC record's tags, or None when it is not a valid DMARC1 record."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        name, eq, value = part.partition("=")
        if eq:
            tags.setdefault(name.strip().lower(), value.strip())
    if not text.strip().lower().startswith("v=dmarc1") or tags.get("v", "").upper() != "DMARC1":
        return None
    policy = tags.get("p", "").lower()
    if policy not in POLICIES:
        if "rua" not in tags:  # RFC 7489 6.6.3: no valid p and no rua: no record at all
            return None
        policy = "none"
    subdomain = tags.get("sp", "").lower()
    if subdomain not in POLICIES:
        subdomain = policy
    pct_text = tags.get("pct", "100")
    pct = int(pct_text) if pct_text.isdigit() else 100
    adkim = "s" if tags.get("adkim", "r").lower() == "s" else "r"
    aspf = "s" if tags.get("aspf", "r").lower() == "s" else "r"
    return Record(policy, subdomain, min(pct, 100), adkim, aspf)


def aligned(domain: str, author: str, mode: str) -> bool:
    domain, author = domain.lower().rstrip("."), author.lower().rstrip(".")
    if mode == "s":
        return domain == author
    return registered_domain(domain) == registered_domain(author)


def lookup(domain: str, resolver: Resolver, budget: Budget) -> tuple[Record | None, bool, str]:
    """(record, found at the organisational domain, error): error is "temperror" when DNS failed."""
    org = registered_domain(domain)
    for name, at_org in ((domain, False), (org, True)):
        if at_org and name == domain:
            break
        records = resolver.query(f"_dmarc.{name}", "TXT", budget, "dmarc")
        if records.status in FAILED:
            return None, at_org, TEMPERROR
        found = [r for r in (parse_record(v) for v in records.values if v.lower().startswith("v=dmarc1")) if r]
        if len(found) == 1:
            return found[0], at_org, ""
        if len(found) > 1:  # several records: none applies (RFC 7489 6.6.3)
            return None, at_org, ""
    return None, False, ""


def evaluate(
    author: str | None,
    spf: tuple[str, str],  # (result, domain)
    dkim: Sequence[tuple[str, str]],  # (result, d=) of each signature
    resolver: Resolver,
    budget: Budget,
    draw: float | None = None,
) -> DmarcResult:
    """The DMARC result of a message whose From domain is `author`."""
    if author is None:
        return DmarcResult(NONE, "", reason="no single From domain")
    record, at_org, error = lookup(author, resolver, budget)
    if error:
        return DmarcResult(TEMPERROR, author, reason="policy lookup failed")
    if record is None:
        return DmarcResult(NONE, author)
    spf_ok = spf[0] == PASS and aligned(spf[1], author, record.aspf)
    dkim_ok = any(result == PASS and aligned(d, author, record.adkim) for result, d in dkim)
    published = policy = record.subdomain_policy if at_org else record.policy
    if spf_ok or dkim_ok:
        return DmarcResult(PASS, author, published=published)
    sampled_out = False
    if record.pct < 100:
        value = random.random() * 100 if draw is None else draw  # noqa: S311 - sampling, not secrecy
        if value >= record.pct:
            sampled_out = True
            policy = {"reject": "quarantine", "quarantine": "none"}.get(policy, "none")
    return DmarcResult(FAIL, author, policy, published, sampled_out, "no aligned SPF or DKIM pass")


def permerror(author: str, reason: str) -> DmarcResult:
    return DmarcResult(PERMERROR, author, reason=reason)
