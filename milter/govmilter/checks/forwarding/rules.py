"""The forwarding rule file (kind = "forwarding"): mode, scoring and the allow-list.

```
kind = "forwarding"
mode = "enforce"            # or "monitor": accept, tag, log and count
score_threshold = 5.0       # weak evidence adding up to this decides; 0 = never
[scores]                    # weights of the evidence that only scores
received-for = 3.0
[[allow]]                   # a legitimate application that forwards on purpose
id = "journal-archive"
description = "..."
recipients = ["archive.example.com"]
```

An allow entry matches when every list it gives matches: `senders` (MAIL FROM,
the sender an SRS address carries, or header From), `recipients` (every
recipient on the forbidden side) and `forwarders` (the mailbox or domain the
trace names). `user@domain` is one mailbox; a bare `domain` is that domain and
every name under it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from govmilter.checks.forwarding.traces import same_mailbox
from govmilter.domains import domain_of, is_under, normalize_address, normalize_domain, split_address
from govmilter.model import Mode
from govmilter.ruleset import RuleErrors, RuleFile, RuleProblem, parse_mode
from govmilter.ruleset.schema import REQUIRED, Key, Schema, id_problem

# Evidence that only scores, and its default weight.
DEFAULT_SCORES: Mapping[str, float] = MappingProxyType(
    {
        "received-for": 3.0,
        "exchange-autoforwarded": 1.0,  # the Organization header seen from outside (forgeable)
        "resent": 1.0,
        "auto-generated": 1.0,
        "arc": 1.0,
    }
)
DEFAULT_THRESHOLD = 5.0

_PATTERNS = '"user@domain" is one mailbox; a bare "domain" is that domain and every name under it'
SCHEMA = Schema(
    "forwarding",
    "allow",
    (
        Key("id", "text", REQUIRED, "unique name: the log and the metric label (action=\"allowed\")"),
        Key("description", "text", '""', "the application and the agreement it forwards under, for people"),
        Key(
            "senders", "list of text", "[]", f"MAIL FROM, the sender inside an SRS address or header From. {_PATTERNS}"
        ),
        Key("recipients", "list of text", "[]", "every recipient on the forbidden side"),
        Key("forwarders", "list of text", "[]", "the mailbox or domain the forwarding trace names"),
    ),
    file_keys=(
        Key("description", "text", '""', "what the file is for, for people"),
        Key(
            "mode",
            "enforce | monitor",
            '"enforce"',
            "enforce: refuse with the [forwarding] reply of the configuration (550 5.7.520 by default); "
            "monitor: accept, add an X-Govmilter-Forwarding header, log and count (a trial period)",
        ),
        Key(
            "score_threshold",
            "number",
            str(DEFAULT_THRESHOLD),
            "evidence that alone proves nothing only scores; when the scores of one message add up to this it "
            "decides like a strong trace. 0 turns this off",
        ),
        Key(
            "scores",
            "table of evidence = number",
            ", ".join(f"{name} = {weight}" for name, weight in DEFAULT_SCORES.items()),
            "the weight of each kind of weak evidence, beside its value below",
        ),
    ),
)


@dataclass(frozen=True)
class Pattern:
    """`user@domain` (one mailbox) or `domain` (it and everything under it)."""

    text: str
    mailbox: str = ""
    domain: str = ""

    @classmethod
    def parse(cls, text: str) -> Pattern:
        value = text.strip()
        if "@" in value and not value.startswith("@"):
            local, domain = split_address(value)
            norm = normalize_domain(domain)
            if not local or not norm:
                raise ValueError(f"{text!r} is not an address")
            return cls(text, mailbox=normalize_address(value))
        norm = normalize_domain(value.lstrip("@"))
        if not norm:
            raise ValueError(f"{text!r} is neither an address nor a domain")
        return cls(text, domain=norm)

    def matches(self, address: str) -> bool:
        if not address:
            return False
        if self.mailbox:
            return same_mailbox(self.mailbox, address)
        return is_under(domain_of(address), self.domain)


@dataclass(frozen=True)
class AllowEntry:
    id: str
    description: str
    senders: tuple[Pattern, ...] = ()
    recipients: tuple[Pattern, ...] = ()
    forwarders: tuple[Pattern, ...] = ()

    def matches(self, senders: Iterable[str], recipients: Sequence[str], forwarder: str) -> bool:
        if self.senders and not any(p.matches(s) for p in self.senders for s in senders):
            return False
        if self.recipients and not (recipients and all(any(p.matches(r) for p in self.recipients) for r in recipients)):
            return False
        return not self.forwarders or any(p.matches(forwarder) for p in self.forwarders)


@dataclass(frozen=True)
class ForwardingRules:
    mode: Mode = Mode.ENFORCE
    score_threshold: float = DEFAULT_THRESHOLD
    scores: Mapping[str, float] = field(default_factory=lambda: DEFAULT_SCORES)
    allow: tuple[AllowEntry, ...] = ()

    def allowed(self, senders: Iterable[str], recipients: Sequence[str], forwarder: str) -> AllowEntry | None:
        wanted = tuple(senders)
        for entry in self.allow:
            if entry.matches(wanted, recipients, forwarder):
                return entry
        return None


DEFAULT_RULES = ForwardingRules()


def compile_rules(files: Sequence[RuleFile]) -> ForwardingRules:
    """Merge every forwarding rule file: settings from at most one file, allow entries from all."""
    problems: list[RuleProblem] = []
    settings: dict[str, Any] = {}
    where: dict[str, str] = {}
    allow: list[AllowEntry] = []
    seen_ids: dict[str, str] = {}
    for rule_file in files:
        data = rule_file.data
        for key in sorted(set(data) - SCHEMA.file_names):
            known = ", ".join(sorted(SCHEMA.file_names))
            problems.append(rule_file.problem("", f"unknown key {key!r}; expected one of {known}"))
        for key in ("mode", "score_threshold", "scores"):
            if key in data:
                if key in where:
                    problems.append(rule_file.problem("", f"{key} is already set in {where[key]}"))
                    continue
                where[key] = rule_file.path
                settings[key] = data[key]
                if key == "mode":
                    settings[key] = parse_mode(data[key], rule_file, "", problems)
        entries = data.get("allow", [])
        if not isinstance(entries, list):
            problems.append(rule_file.problem("", "allow must be an array of tables: [[allow]]"))
            continue
        for entry in entries:
            compiled = _compile_allow(entry, rule_file, problems)
            if compiled is None:
                continue
            if compiled.id in seen_ids:
                problems.append(rule_file.problem(compiled.id, f"duplicate allow id, first in {seen_ids[compiled.id]}"))
                continue
            seen_ids[compiled.id] = rule_file.path
            allow.append(compiled)
    threshold = _threshold(settings.get("score_threshold", DEFAULT_THRESHOLD), files, where, problems)
    scores = _scores(settings.get("scores", {}), files, where, problems)
    if problems:
        raise RuleErrors(problems)
    return ForwardingRules(
        mode=settings.get("mode", Mode.ENFORCE),
        score_threshold=threshold,
        scores=scores,
        allow=tuple(allow),
    )


def _file_of(files: Sequence[RuleFile], where: Mapping[str, str], key: str) -> RuleFile | None:
    return next((f for f in files if f.path == where.get(key)), None)


def _threshold(value: Any, files: Sequence[RuleFile], where: Mapping[str, str], problems: list[RuleProblem]) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    rule_file = _file_of(files, where, "score_threshold")
    path = rule_file.path if rule_file else "<forwarding>"
    problems.append(RuleProblem(path, 1, "", f"score_threshold = {value!r}: expected a number >= 0 (0 = never)"))
    return DEFAULT_THRESHOLD


def _scores(
    value: Any, files: Sequence[RuleFile], where: Mapping[str, str], problems: list[RuleProblem]
) -> Mapping[str, float]:
    rule_file = _file_of(files, where, "scores")
    path = rule_file.path if rule_file else "<forwarding>"
    if not isinstance(value, dict):
        problems.append(RuleProblem(path, 1, "", "scores must be a table of evidence = weight"))
        return DEFAULT_SCORES
    merged = dict(DEFAULT_SCORES)
    for name, weight in value.items():
        if name not in DEFAULT_SCORES:
            problems.append(
                RuleProblem(path, 1, "", f"scores: unknown evidence {name!r}; known: {', '.join(DEFAULT_SCORES)}")
            )
        elif not isinstance(weight, (int, float)) or isinstance(weight, bool) or weight < 0:
            problems.append(RuleProblem(path, 1, "", f"scores: {name} = {weight!r}: expected a number >= 0"))
        else:
            merged[name] = float(weight)
    return MappingProxyType(merged)


def _compile_allow(entry: Any, rule_file: RuleFile, problems: list[RuleProblem]) -> AllowEntry | None:
    if not isinstance(entry, dict):
        problems.append(rule_file.problem("", "each [[allow]] entry must be a table"))
        return None
    rule_id = entry.get("id")
    problem = id_problem(rule_id)
    if problem or not isinstance(rule_id, str):
        problems.append(rule_file.problem("", f"[[allow]] {problem}"))
        return None
    ok = True
    for key in sorted(set(entry) - SCHEMA.names):
        known = ", ".join(sorted(SCHEMA.names))
        problems.append(rule_file.problem(rule_id, f"unknown key {key!r}; expected one of {known}"))
        ok = False
    description = entry.get("description", "")
    if not isinstance(description, str):
        problems.append(rule_file.problem(rule_id, "description must be a string"))
        ok = False
    lists: dict[str, tuple[Pattern, ...]] = {}
    for key in ("senders", "recipients", "forwarders"):
        values = entry.get(key, [])
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            problems.append(rule_file.problem(rule_id, f"{key} must be a list of addresses or domains"))
            ok = False
            continue
        patterns = []
        for value in values:
            try:
                patterns.append(Pattern.parse(value))
            except ValueError as exc:
                problems.append(rule_file.problem(rule_id, f"{key}: {exc}"))
                ok = False
        lists[key] = tuple(patterns)
    if ok and not any(lists.values()):
        problems.append(rule_file.problem(rule_id, "an allow entry needs senders, recipients or forwarders"))
        ok = False
    if not ok:
        return None
    return AllowEntry(rule_id, description, lists["senders"], lists["recipients"], lists["forwarders"])
