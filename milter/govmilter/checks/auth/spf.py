"""SPF (RFC 7208) of the MAIL FROM domain, or of the HELO name for the null sender, by pyspf.

pyspf keeps the RFC's limits (10 lookups that cost DNS queries, 2 void lookups,
10 MX and PTR names) and asks DNS only through resolver.spf_lookups: the shared
resolver, its cache and what is left of the message's budget.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import spf

from govmilter.checks.auth.resolver import spf_lookups
from govmilter.checks.auth.results import NONE, PERMERROR, TEMPERROR, MethodResult
from govmilter.clients.dns import Budget, Resolver

RESULTS = ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror")


@dataclass(frozen=True)
class SpfResult:
    result: str  # pass | fail | softfail | neutral | none | temperror | permerror
    domain: str  # the domain checked: MAIL FROM's, or the HELO name's for the null sender
    scope: str  # mailfrom | helo
    reason: str = ""

    def method_result(self) -> MethodResult:
        prop = "smtp.mailfrom" if self.scope == "mailfrom" else "smtp.helo"
        return MethodResult("spf", self.result, ((prop, self.domain),), self.reason)


def check_spf(client_ip: str, mail_from: str, helo: str, resolver: Resolver, budget: Budget) -> SpfResult:
    """The SPF result for a client IP and the envelope sender (or the HELO name when it is null)."""
    helo = helo.strip().rstrip(".").lower()
    if mail_from:
        local, at, domain = mail_from.rpartition("@")
        domain = domain.strip().rstrip(".").lower()
        scope, sender = "mailfrom", f"{local or 'postmaster'}@{domain}" if at else f"postmaster@{mail_from}"
        if not at:
            domain = mail_from.lower()
    else:
        scope, domain, sender = "helo", helo, f"postmaster@{helo}"
    if not domain or "." not in domain or _is_literal(domain):
        return SpfResult(NONE, domain, scope, "no domain to check")
    try:
        ip = str(ipaddress.ip_address(client_ip.removeprefix("IPv6:").strip("[]").partition("%")[0]))
    except ValueError:
        return SpfResult(PERMERROR if client_ip else NONE, domain, scope, "no client address")
    if budget.left() <= 0:
        return SpfResult(TEMPERROR, domain, scope, "DNS budget spent")
    query = spf.query(i=ip, s=sender, h=helo or domain, querytime=max(budget.left(), 0.01))
    with spf_lookups(resolver, budget):
        try:
            result, _code, explanation = query.check()
        except Exception as exc:  # pyspf's own defects on odd input: an error of the record, not ours
            return SpfResult(PERMERROR, domain, scope, f"pyspf: {type(exc).__name__}")
    result = str(result).lower()
    if result not in RESULTS:  # pyspf's legacy spellings ("error", "unknown") of older RFCs
        result = {"error": TEMPERROR, "unknown": PERMERROR}.get(result, PERMERROR)
    return SpfResult(result, domain, scope, str(explanation)[:120] if result != "pass" else "")


def _is_literal(domain: str) -> bool:
    try:
        ipaddress.ip_address(domain.strip("[]"))
    except ValueError:
        return False
    return True
