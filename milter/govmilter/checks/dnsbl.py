"""The dnsbl check: DNS blocklists of client IPs, sender domains and link domains.

Zones, the return codes that count and their weights are in rule files of
kind "dnsbl". A listing records a CONTINUE hit carrying the zone's weight,
which the content check adds to the message score; a zone with
`reject = true` refuses at once. Client IPs and sender domains are looked up
at MAIL FROM (the authenticated user is known there), link domains at end of
message. The resolver, its cache and the message's time budget are the shared
DNS layer's ([dns], clients/dns.py): one budget covers every lookup of a message,
the authentication check's too; a zone that does not answer in time is skipped
and counted, it never holds mail back.
Trusted internal relays and authenticated users are not looked up.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from govmilter.checks import CheckHooks
from govmilter.clients.dns import LISTED, Answer, BlocklistResolver, message_budget, shared_client
from govmilter.config import Config, DnsblConfig
from govmilter.domains import Domains, is_under
from govmilter.metrics import Metrics
from govmilter.model import Action, Mode, Stage, Transaction, Verdict
from govmilter.ruleset import RuleErrors, RuleFile, RuleProblem
from govmilter.ruleset.entries import entries
from govmilter.ruleset.schema import REQUIRED, Key, Schema
from govmilter.text.links import Link, iter_links, message_links, normal_domain

RULE_KIND = "dnsbl"
ZONE_TYPES = ("ip", "rhsbl", "uribl")
SCHEMA = Schema(
    RULE_KIND,
    "zone",
    (
        Key("id", "text", REQUIRED, "unique name: the metric label (govmilter_rule_hits_total{rule=...}) and the log"),
        Key("description", "text", '""', "what the zone is, for people"),
        Key("zone", "DNS name", REQUIRED, 'the DNS zone asked, "zen.spamhaus.org"'),
        Key(
            "type",
            "ip | rhsbl | uribl",
            '"ip"',
            "ip: the client address (IPv4 and IPv6), asked at MAIL FROM\n"
            "rhsbl: the envelope sender's domain, asked at MAIL FROM\n"
            "uribl: the domains of links in the text and HTML body, asked at end of message",
        ),
        Key(
            "codes",
            "list of text",
            "none (give codes or mask)",
            'returned addresses that count, one address "127.0.0.2" or a range "127.0.0.2-127.0.0.9". '
            'Anything else a zone returns (such as 127.255.255.254, "query refused") is ignored',
        ),
        Key(
            "mask",
            "integer",
            "none (give codes or mask)",
            "instead of codes, for bitmask lists: a returned address with one of these bits counts",
        ),
        Key("weight", "number", "0.0", "added to the spam score ([content] tag_threshold / reject_threshold)"),
        Key("reject", "true or false", "false", "true: refuse at once (550 5.7.1), whatever the score"),
        Key("mode", "enforce | monitor", '"enforce"', "monitor: counted and logged, never refuses, adds no score"),
        Key("ipv6", "true or false", "true", "false: do not ask this zone about IPv6 clients"),
    ),
)

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})+$")


@dataclass(frozen=True)
class Zone:
    id: str
    zone: str  # "zen.spamhaus.org"
    type: str  # ip | rhsbl | uribl
    codes: tuple[tuple[int, int], ...]  # inclusive ranges of returned IPv4 addresses that count
    mask: int  # bitmask zones: a returned address with one of these bits counts (0 = use codes)
    weight: float
    mode: Mode
    reject: bool
    ipv6: bool
    description: str

    def counts(self, addresses: Iterable[str]) -> list[str]:
        """The returned addresses that mean 'listed' for this rule."""
        hits = []
        for address in addresses:
            try:
                value = int(ipaddress.IPv4Address(address))
            except ValueError:
                continue
            if self.mask:
                if value & self.mask:
                    hits.append(address)
            elif any(low <= value <= high for low, high in self.codes):
                hits.append(address)
        return hits


@dataclass(frozen=True)
class DnsblRules:
    zones: tuple[Zone, ...] = ()

    def of_type(self, kind: str) -> tuple[Zone, ...]:
        return tuple(z for z in self.zones if z.type == kind)


def compile_rules(files: Sequence[RuleFile]) -> DnsblRules:
    problems: list[RuleProblem] = []
    zones: list[Zone] = []
    for entry in entries(files, SCHEMA, problems):
        before = len(problems)
        zone_name = entry.text("zone", required=True).lower().rstrip(".")
        if zone_name and not _HOSTNAME.match(zone_name):
            entry.problem(f"zone = {zone_name!r}: expected a DNS name", "zone")
        kind = entry.choice("type", ZONE_TYPES, "ip")
        codes = _parse_codes(entry.strings("codes"), entry.problem)
        mask = entry.data.get("mask", 0)
        if isinstance(mask, bool) or not isinstance(mask, int) or not 0 <= mask < 2**32:
            entry.problem(f"mask = {mask!r}: expected an integer bitmask", "mask")
            mask = 0
        if "codes" in entry.data and "mask" in entry.data:
            entry.problem("give codes or mask, not both", "mask")
        elif "codes" not in entry.data and "mask" not in entry.data:
            entry.problem("give codes (addresses or ranges that count) or mask (bitmask zones)")
        elif not codes and not mask and len(problems) == before:
            key = "codes" if "codes" in entry.data else "mask"
            entry.problem(f"{key} must name at least one return code", key)
        weight = entry.number("weight", 0.0)
        zone = Zone(
            id=entry.id,
            zone=zone_name,
            type=kind,
            codes=codes,
            mask=mask,
            weight=weight,
            mode=entry.mode(),
            reject=entry.flag("reject", False),
            ipv6=entry.flag("ipv6", True),
            description=entry.text("description"),
        )
        if len(problems) == before:
            zones.append(zone)
    if problems:
        raise RuleErrors(problems)
    return DnsblRules(tuple(zones))


def _parse_codes(values: Sequence[str], report: Callable[[str, str], None]) -> tuple[tuple[int, int], ...]:
    ranges: list[tuple[int, int]] = []
    for value in values:
        low_text, _, high_text = value.partition("-")
        try:
            low = int(ipaddress.IPv4Address(low_text.strip()))
            high = int(ipaddress.IPv4Address(high_text.strip())) if high_text else low
        except ValueError:
            report(f"codes: {value!r}: expected an IPv4 address or a range a.b.c.d-e.f.g.h", "codes")
            continue
        if high < low:
            report(f"codes: {value!r}: the range ends before it starts", "codes")
            continue
        ranges.append((low, high))
    return tuple(ranges)


# ---- names to look up ----------------------------------------------------------------------


def reversed_ip(address: str) -> str | None:
    """`127.0.0.2` -> `2.0.0.127`; IPv6 as 32 reversed nibbles; None if not an address."""
    text = address.strip().removeprefix("IPv6:").strip("[]").partition("%")[0]  # a zone index is local
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.reverse_pointer.rsplit(".", 2)[0]  # drop in-addr.arpa / ip6.arpa


def is_ours(domain: str, suffixes: Iterable[str]) -> bool:
    """The domain is one of the (normalised) names or under one of them."""
    return any(is_under(domain, suffix) for suffix in suffixes)


def link_domains(texts: Iterable[str], skip: Sequence[str], limit: int) -> list[str]:
    """The names to ask about the links in the texts, first seen first, without ours."""
    return streamed_link_domains(([text] for text in texts), skip, limit)


def streamed_link_domains(parts: Iterable[Iterable[str]], skip: Sequence[str], limit: int) -> list[str]:
    """The names to ask about the links in texts given as pieces (TextPart.pieces), at most `limit`.

    Lists hold registered domains (`example.com.vn`) and some host names below
    them, so both are asked: the registered domain first, then the host
    without a leading `www.` when that is a different name. The links are the
    content rules' (text/links.py: HTML targets and text links, read one window
    at a time) until `limit` names are found.
    """
    return domains_of_links(iter_links(parts), skip, limit)


def domains_of_links(links: Iterable[Link], skip: Sequence[str], limit: int) -> list[str]:
    """The names to ask about the given links (streamed_link_domains), at most `limit`."""
    return names_of_links(links, skip, limit)[0]


def names_of_links(links: Iterable[Link], skip: Sequence[str], limit: int) -> tuple[list[str], bool]:
    """The names to ask about the given links, at most `limit`, and whether the links hold more."""
    found: dict[str, None] = {}
    for link in links:
        if link.ip or is_ours(link.host, skip) or is_ours(link.domain, skip):
            continue
        for name in (link.domain, link.host.removeprefix("www.")):
            if "." not in name or name in found:
                continue
            if len(found) >= limit:
                return list(found), True
            found[name] = None
    return list(found), False


# ---- the check -----------------------------------------------------------------------------


PAST_LIMIT_RULE = "too-many-link-domains"  # the finding of a message with more link names than are asked


@dataclass(frozen=True)
class Query:
    zone: Zone
    subject: str  # what is listed: the IP or the domain
    name: str  # the DNS name asked


class DnsblCheck(CheckHooks):
    name = "dnsbl"
    stages = frozenset({Stage.MAIL, Stage.EOM})

    def __init__(
        self,
        client: BlocklistResolver,
        metrics: Metrics,
        *,
        budget: float,
        own_domains: Sequence[str],
        max_uri_domains: int,
        past_limit_score: float = DnsblConfig.past_limit_score,
        reply_text: str = DnsblConfig.reply_text,
    ):
        self.reply_text = reply_text
        self.past_limit_score = past_limit_score
        self.client = client
        self.metrics = metrics
        self.budget = budget
        own = Domains.from_names(own_domains, ())
        self.own_domains = own.local
        self.max_uri_domains = max_uri_domains

    def run(self, stage: Stage, tx: Transaction) -> Sequence[Verdict]:
        rules = tx.ruleset.get(RULE_KIND)
        if not isinstance(rules, DnsblRules) or not rules.zones or tx.envelope.internal:
            return []
        if stage is Stage.MAIL:
            envelope = tx.envelope
            queries = self._ip_queries(rules, envelope.client_ip) + self._sender_queries(rules, envelope.mail_from)
        else:
            zones = rules.of_type("uribl")
            if not zones:
                return []
            links = message_links(tx.scratch, tx.facts().texts)  # the one extraction, shared with content
            domains, more = names_of_links(links, self.own_domains, self.max_uri_domains)
            queries = [Query(z, d, f"{d}.{z.zone}") for z in zones for d in domains]
            if more and self.past_limit_score and self.max_uri_domains:
                # the names past the bound are not asked: a listed domain behind max_uri_domains
                # harmless ones must still cost the message something (a stated score)
                why = f"more than {self.max_uri_domains} link domains: the rest were not asked"
                past = Verdict(Action.CONTINUE, "dnsbl", rule=PAST_LIMIT_RULE, score=self.past_limit_score, reason=why)
                return [past, *self._ask(queries, tx)]
        if not queries:
            return []
        return self._ask(queries, tx)

    def health(self) -> dict[str, object]:
        """For /health: not ok while the resolver does not answer (mail still flows, unchecked by the lists)."""
        paused = getattr(self.client, "resolver_down", lambda: False)()
        answering = getattr(self.client, "answering", lambda: True)()
        return {"ok": answering and not paused, "resolver": "paused" if paused else "in use"}

    def _ip_queries(self, rules: DnsblRules, client_ip: str) -> list[Query]:
        reversed_name = reversed_ip(client_ip)
        if reversed_name is None:
            return []
        v6 = reversed_name.count(".") > 3  # 32 nibbles, not 4 octets
        return [
            Query(z, client_ip, f"{reversed_name}.{z.zone}") for z in rules.of_type("ip") if z.ipv6 or not v6
        ]

    def _sender_queries(self, rules: DnsblRules, mail_from: str) -> list[Query]:
        _, at, host = mail_from.rpartition("@")
        domain = normal_domain(host) if at else None
        if domain is None or is_ours(domain, self.own_domains):
            return []
        return [Query(z, domain, f"{domain}.{z.zone}") for z in rules.of_type("rhsbl")]

    def _ask(self, queries: list[Query], tx: Transaction) -> list[Verdict]:
        budget = message_budget(tx.scratch, self.budget)  # shared with every DNS lookup of the message
        started = time.monotonic()
        answers = self.client.lookup([q.name for q in queries], budget.left())
        budget.spend(time.monotonic() - started)
        verdicts: list[Verdict] = []
        counted: set[tuple[str, str]] = set()
        for query in queries:
            answer = answers.get(query.name.lower(), Answer("error"))
            if (query.zone.zone, query.name) not in counted:  # one lookup, one count per zone
                counted.add((query.zone.zone, query.name))
                result = "cached" if answer.cached else answer.status
                self.metrics.dns_lookups.labels(purpose="dnsbl", zone=query.zone.zone, result=result).inc()
            if answer.status != LISTED:
                continue
            codes = query.zone.counts(answer.addresses)
            if codes:
                verdicts.append(listed_verdict(query, codes, self.reply_text))
        # score hits first: the pipeline stops at the first enforced refusal
        verdicts.sort(key=lambda v: v.action is Action.REJECT)
        return verdicts


_WHAT = {
    "ip": ("Dia chi may gui", "client"),
    "rhsbl": ("Ten mien nguoi gui", "sender domain"),
    "uribl": ("Lien ket toi ten mien", "link domain"),
}


def listed_verdict(query: Query, codes: Sequence[str], template: str = DnsblConfig.reply_text) -> Verdict:
    zone = query.zone
    vi, en = _WHAT[zone.type]
    reason = f"{en} {query.subject} listed by {zone.zone} ({', '.join(codes)})"
    if not zone.reject:
        return Verdict(Action.CONTINUE, "dnsbl", rule=zone.id, mode=zone.mode, score=zone.weight, reason=reason)
    return Verdict(
        Action.REJECT,
        "dnsbl",
        rule=zone.id,
        code="550",
        enhanced="5.7.1",
        text=template.format(what_vi=vi, what_en=en, subject=query.subject, zone=zone.zone),
        mode=zone.mode,
        score=zone.weight,
        reason=reason,
    )


def build(config: Config, metrics: Metrics) -> DnsblCheck:
    settings = config.dnsbl
    client = shared_client(config.dns, metrics)
    return DnsblCheck(
        client,
        metrics,
        budget=config.dns.budget,
        own_domains=(*config.domains.local, *config.domains.government),
        max_uri_domains=settings.max_uri_domains,
        past_limit_score=settings.past_limit_score,
        reply_text=settings.reply_text,
    )
