"""Limits in rule files of kind "ratelimit": what is counted, per what, how fast it refills.

A limit is a token bucket: `burst` tokens at most, `rate` tokens back per `period`. Each
message takes from the buckets of its subjects (the account, the client address, the sender
domain) as many tokens as it counts (recipients by default, or only the recipients outside
government domains, or one per message). A limit with `accounts` applies only to those
subjects, and with `replaces` it stands in for another limit for them (a department's
newsletter address gets a larger bucket than everyone's).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from govmilter.domains import normalize_address, normalize_domain
from govmilter.model import Mode
from govmilter.ruleset import RuleErrors, RuleFile, RuleProblem
from govmilter.ruleset.entries import Entry, entries
from govmilter.ruleset.schema import REQUIRED, Key, Schema

RULE_KIND = "ratelimit"
KEYS = ("account", "user", "sender", "ip", "domain")
COUNTS = ("recipients", "external-recipients", "messages")
PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
DIRECTIONS = ("outbound", "inbound", "any")

SCHEMA = Schema(
    RULE_KIND,
    "limit",
    (
        Key("id", "text", REQUIRED, "unique name: the metric label, the log line and the SMTP reply name it"),
        Key("description", "text", '""', "what the limit is for, for people"),
        Key(
            "key",
            "account | user | sender | ip | domain",
            '"account"',
            "what has a bucket of its own:\n"
            "account: the SMTP AUTH user, else the envelope sender of mail from a trusted relay (the mailbox "
            "servers relay without AUTH)\n"
            "user: the SMTP AUTH user only\n"
            "sender: the envelope sender of mail from trusted relays only\n"
            "ip: the client address (never a trusted relay: it carries every account's mail)\n"
            "domain: the envelope sender's domain",
        ),
        Key(
            "count",
            "recipients | external-recipients | messages",
            '"recipients"',
            "what one message takes from the bucket: its recipients, only its recipients outside government "
            "domains ([domains] local and government), or 1",
        ),
        Key("rate", "number", REQUIRED, "tokens given back per period (the long-run limit)"),
        Key("period", "second | minute | hour | day", '"hour"', "the period of rate"),
        Key(
            "burst",
            "number",
            "rate",
            "the most a subject may send at once (the bucket's size); a message that counts more than "
            "this is refused (550 5.5.3): it could never pass",
        ),
        Key(
            "accounts",
            "list of text",
            "[] (every subject)",
            "only these subjects (addresses, user names, IP addresses or domains, as key says)",
        ),
        Key(
            "replaces",
            "text",
            '""',
            "the id of a limit (same key) that this one replaces for its accounts: a per-account override",
        ),
        Key(
            "hold_after",
            "integer",
            "0 (never)",
            "while a subject is over this limit, once this many more units were deferred it is held: every "
            "further message deferred until `govmilter ratelimit release SUBJECT`",
        ),
        Key("direction", "outbound | inbound | any", '"outbound"', "outbound: from trusted relays and AUTH users"),
        Key("mode", "enforce | monitor", '"enforce"', "monitor: counted and logged as would-defer, never defers"),
    ),
)


@dataclass(frozen=True)
class Limit:
    id: str
    key: str
    count: str
    rate: float
    period: str
    burst: float
    accounts: frozenset[str]
    replaces: str
    hold_after: int
    direction: str
    mode: Mode
    description: str = ""

    @property
    def per_second(self) -> float:
        return self.rate / PERIODS[self.period]

    @property
    def enforced(self) -> bool:
        return self.mode is Mode.ENFORCE

    def applies(self, internal: bool) -> bool:
        return self.direction == "any" or (self.direction == "outbound") == internal

    def describe(self) -> tuple[str, str]:
        """The limit in words, Vietnamese without diacritics and English: "500 recipients ... per hour"."""
        vi_unit, en_unit = {
            "recipients": ("nguoi nhan", "recipients"),
            "external-recipients": ("nguoi nhan ngoai co quan nha nuoc", "recipients outside government domains"),
            "messages": ("thu", "messages"),
        }[self.count]
        vi_period = {"second": "giay", "minute": "phut", "hour": "gio", "day": "ngay"}[self.period]
        return f"{self.rate:g} {vi_unit} moi {vi_period}", f"{self.rate:g} {en_unit} per {self.period}"


@dataclass(frozen=True)
class RatelimitRules:
    limits: tuple[Limit, ...] = ()

    def by_id(self, limit_id: str) -> Limit | None:
        return next((limit for limit in self.limits if limit.id == limit_id), None)


def normal_subject(key: str, value: str) -> str:
    """The comparable form of a subject: addresses and domains lower-cased, IPs in their short form."""
    value = value.strip()
    if key == "ip":
        try:
            return str(ipaddress.ip_address(value.removeprefix("IPv6:").strip("[]")))
        except ValueError:
            return value.lower()
    if key == "domain":
        return normalize_domain(value.lstrip("@")) or value.lower()
    if key in ("sender", "account") and "@" in value:
        return normalize_address(value)
    return value.lower()


def compile_rules(files: Sequence[RuleFile]) -> RatelimitRules:
    problems: list[RuleProblem] = []
    limits: list[Limit] = []
    wanted: list[tuple[Limit, Entry]] = []
    for entry in entries(files, SCHEMA, problems):
        before = len(problems)
        key = entry.choice("key", KEYS, "account")
        rate = entry.number("rate", 0.0) if "rate" in entry.data else 0.0
        if "rate" not in entry.data:
            entry.problem("missing rate (tokens given back per period, such as rate = 500)")
        elif rate <= 0:
            entry.problem(f"rate = {rate:g}: expected a number above 0", "rate")
        burst = entry.number("burst", rate)
        if "burst" in entry.data and burst < 1:
            entry.problem(f"burst = {burst:g}: expected at least 1 (the most a subject may send at once)", "burst")
        hold_after = entry.data.get("hold_after", 0)
        if isinstance(hold_after, bool) or not isinstance(hold_after, int) or hold_after < 0:
            entry.problem(f"hold_after = {hold_after!r}: expected a whole number, 0 or more", "hold_after")
            hold_after = 0
        accounts = frozenset(normal_subject(key, value) for value in entry.strings("accounts") if value.strip())
        replaces = entry.text("replaces")
        if replaces and not accounts:
            entry.problem("replaces needs accounts: the subjects this limit replaces the other one for", "replaces")
        limit = Limit(
            id=entry.id,
            key=key,
            count=entry.choice("count", COUNTS, "recipients"),
            rate=rate,
            period=entry.choice("period", tuple(PERIODS), "hour"),
            burst=max(burst, 1.0),
            accounts=accounts,
            replaces=replaces,
            hold_after=hold_after,
            direction=entry.choice("direction", DIRECTIONS, "outbound"),
            mode=entry.mode(),
            description=entry.text("description"),
        )
        if len(problems) == before:
            limits.append(limit)
            if replaces:
                wanted.append((limit, entry))
    by_id = {limit.id: limit for limit in limits}
    for limit, entry in wanted:
        other = by_id.get(limit.replaces)
        if other is None:
            entry.problem(f"replaces = {limit.replaces!r}: no limit has this id", "replaces")
        elif other.key != limit.key:
            entry.problem(
                f"replaces = {limit.replaces!r}: that limit counts per {other.key}, this one per {limit.key}",
                "replaces",
            )
    if problems:
        raise RuleErrors(problems)
    return RatelimitRules(tuple(limits))
