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

import random
import re
from collections.abc import Mapping, Sequence
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


MAX_AUTHORS = 10  # author domains judged per message; more is a permerror (RFC 7489 6.6.1 lets us refuse)
_AT_DOMAIN = re.compile(r"@\s*([^\s<>@,;:\\\"()\[\]]*)")  # obs-domain: white space may follow the @


def from_domains(values: Sequence[str]) -> tuple[list[str], bool]:
    """Every author domain of the From field(s), in order, and whether some address had no usable one.

    RFC 7489 6.6.1: a message with several From fields, or several addresses in one,
    may be refused or judged for each domain; here each distinct domain is judged and
    the strictest result applies (check.py). Quoted strings and comments are set aside
    first (a display name "x@bacninh.gov.vn" is no author), then every `@domain` counts,
    also in an unquoted display name (`thue@alpha.com <a@evil.example>`: a reader sees
    thue@alpha.com, so its domain is judged too). The same answer on every Python (the
    standard library's address parser changed its mind between releases).
    """
    domains: list[str] = []
    unusable = False
    for value in values:
        text = _plain(value)
        found = _AT_DOMAIN.findall(text)
        if not found:
            unusable = True
        for raw in found:
            domain = normalize_domain(raw.strip().rstrip("."))
            if not domain or not _HOST.match(domain):
                unusable = True
            elif domain not in domains:
                domains.append(domain)
    return domains, unusable


def from_domain(values: Sequence[str]) -> str | None:
    """The domain of the single author in the From header(s); None when there is not exactly one domain."""
    domains, unusable = from_domains(values)
    return domains[0] if len(domains) == 1 and not unusable else None


def _plain(value: str) -> str:
    """A From value without its quoted strings and comments (nested, with quoted-pairs)."""
    out: list[str] = []
    depth, quoted, index = 0, False, 0
    while index < len(value):
        char = value[index]
        if char == "\\" and (quoted or depth):
            index += 2
            continue
        if quoted:
            quoted = char != '"'
            if not quoted:
                out.append(" ")
        elif char == "(":
            depth += 1
        elif char == ")" and depth:
            depth -= 1  # a comment is CFWS: it may stand inside an address (thue@(x)alpha.com)
        elif depth:
            pass
        elif char == '"':
            quoted = True
        else:
            out.append(char)
        index += 1
    return "".join(out)


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


Lookup = tuple["Record | None", bool, str]


def policies(values: Sequence[str], resolver: Resolver, budget: Budget) -> dict[str, Lookup]:
    """The DMARC records of the author domains, looked up before anything the sender controls.

    DKIM key lookups go to names the sender chooses (d= and s= of up to max_signatures
    signatures) and share the message's DNS budget: a sender whose names never answer
    could spend it all, and a DMARC lookup made after them would be a temperror, which
    never refuses. So the policy is fetched first, right after SPF.
    """
    domains, _ = from_domains(values)
    return {domain: lookup(domain, resolver, budget) for domain in domains[:MAX_AUTHORS]}


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
    known: Mapping[str, Lookup] | None = None,
) -> DmarcResult:
    """The DMARC result of a message whose From domain is `author` (its record from `known` when there)."""
    if author is None:
        return DmarcResult(NONE, "", reason="no single From domain")
    record, at_org, error = known[author] if known and author in known else lookup(author, resolver, budget)
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


_SEVERITY = {"reject": 0, "quarantine": 1, "none": 2}


def evaluate_authors(
    values: Sequence[str],
    spf: tuple[str, str],
    dkim: Sequence[tuple[str, str]],
    resolver: Resolver,
    budget: Budget,
    known: Mapping[str, Lookup] | None = None,
) -> DmarcResult:
    """The DMARC result of a message whose From field(s) are `values`: the strictest of its authors'.

    No usable author domain (no From, no address, an address without a domain, an
    encoded-word in place of the address) is a permerror: no policy can apply, rules
    score it. Of several author domains, a fail under the strictest policy wins, then
    temperror, none, pass: a second author never dilutes the first one's policy.
    """
    domains, _ = from_domains(values)
    if not domains:
        return permerror("", "no author domain in From" if values else "no From field")
    if len(domains) > MAX_AUTHORS:
        return permerror(domains[0], f"more than {MAX_AUTHORS} author domains in From")
    results = [evaluate(domain, spf, dkim, resolver, budget, known=known) for domain in domains]
    failed = [r for r in results if r.result == FAIL]
    if failed:
        return min(failed, key=lambda r: _SEVERITY.get(r.policy, 3))
    for wanted in (TEMPERROR, NONE, PERMERROR):
        for result in results:
            if result.result == wanted:
                return result
    return results[0]
