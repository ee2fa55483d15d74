"""The impersonation rule file (kind = "impersonation"): what each finding does, and the lists officers keep.

```
kind = "impersonation"
protected = ["gdt.gov.vn", "chinhphu.vn"]        # state bodies beside [domains] local and government
state_names = ["Cục Thuế", "UBND tỉnh"]          # display names of state bodies
shorteners = ["bit.ly"]                           # URL shorteners
[[allow]]                                         # an outside sender allowed to use a protected name
id = "newsletter"
domains = ["sotttt.bacninh.gov.vn"]
networks = ["198.51.100.0/24"]
[[rule]]
id = "lookalike-prefix"
finding = "lookalike-prefix"
action = "reject"                                 # or "score" with score = 4.0
```
Every list is read at load: a name that is not a domain, a network that is not one, a
finding that does not exist is an error with its file and line.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from govmilter.domains import normalize_domain
from govmilter.model import Mode
from govmilter.ruleset import RuleErrors, RuleFile, RuleProblem
from govmilter.ruleset.entries import entries
from govmilter.ruleset.schema import REQUIRED, Key, Schema, id_problem
from govmilter.text.normalize import join_spaced_letters, normalize, strip_diacritics

RULE_KIND = "impersonation"

# the kinds of finding, each with what it means (the rule file's `finding`, the metric's `kind`)
FINDINGS: dict[str, str] = {
    "spoofed-local": "From is a local domain; the mail comes from outside and is not authenticated for it",
    "spoofed-government": "From is a government or protected domain that failed DMARC (or, without DMARC, "
    "had no aligned SPF or DKIM pass)",
    "lookalike-prefix": "a name holds a protected name and goes on (bacninh.gov.vn.com)",
    "lookalike-confusable": "a name that reads as a protected or gov.vn name through look-alike letters (gdt.gоv.vn)",
    "lookalike-gov-join": "a registered domain outside gov.vn joining a protected body's name to gov (bacninh-gov.vn), "
    "or a name holding the body's name, gov and vn (bacninh.gov-vn.com)",
    "lookalike-near": "a registered domain within a small edit distance of a protected body's name (bacnlnh.com)",
    "display-name": "a display name naming a state body or a government address, on a non-government address",
    "link-text-government": "a link showing a government domain (its text, or its user part: https://gov.vn@x/) "
    "and going outside the government",
    "link-text-mismatch": "an HTML link whose text shows a domain and whose target is another registered domain",
    "link-ip": "a link to an IP address",
    "link-shortener": "a link to a URL shortener of the list",
    "link-data": "an HTML link to a data: URL",
    "reply-diversion": "From is a government address, Reply-To is not",
    "past-limit": "more than is judged: a From, Reply-To or Sender field past its characters or distinct "
    "domains (the rest of it was not read)",
    "links-past-limit": "more distinct links than [impersonation] max_links (the rest were not judged)",
}
LOOKALIKE_PLACES = ("from", "reply-to", "sender", "envelope", "link")

SCHEMA = Schema(
    RULE_KIND,
    "rule",
    (
        Key("id", "text", REQUIRED, "unique name: the metric label (govmilter_rule_hits_total{rule=...}) and the log"),
        Key("description", "text", '""', "what the rule is, for people"),
        Key("finding", "text", REQUIRED, "the finding this rule acts on, one of:\n" + ", ".join(FINDINGS)),
        Key(
            "places",
            "list of text",
            '["from", "reply-to", "sender", "envelope", "link"]',
            "for lookalike-* findings: where the name stood (From, Reply-To, Sender, MAIL FROM, a link)",
        ),
        Key(
            "action",
            "reject | score",
            '"score"',
            "reject: refuse (550 5.7.1, [impersonation] reply_text) - never when the message passed DMARC for a "
            "government domain, then it scores; score: add score to the spam score",
        ),
        Key("score", "number", "0.0", "added to the spam score ([content] tag_threshold / reject_threshold)"),
        Key("mode", "enforce | monitor", '"enforce"', "monitor: counted and logged, never refuses, adds no score"),
    ),
    file_keys=(
        Key(
            "protected",
            "list of text",
            "[]",
            "domains of state bodies the province deals with, protected beside [domains] local and government",
        ),
        Key(
            "state_names",
            "list of text",
            "[]",
            "names of state bodies (Cục Thuế, UBND tỉnh): a display name holding one, on a non-government "
            "address, is a display-name finding; matched with and without diacritics, any case",
        ),
        Key("shorteners", "list of text", "[]", "URL shortener domains: a link to one (or a name under it) scores"),
        Key(
            "near_distance",
            "integer",
            "2",
            "edit distance of a near miss for body names of 8 letters or more (1 below 8; none below 5); 0 turns "
            "near misses off",
        ),
        Key(
            "allow",
            "[[allow]] tables",
            "none",
            "outside senders allowed to use a protected name: id, description, domains (From domains, and every "
            "name under them), networks (the sending addresses, CIDR), dkim (optional: a DKIM pass of one of these "
            "domains is needed too). Their mail is not judged by this check",
        ),
    ),
)


@dataclass(frozen=True)
class ImpersonationRule:
    id: str
    finding: str
    places: frozenset[str]
    action: str  # reject | score
    score: float
    mode: Mode
    description: str


@dataclass(frozen=True)
class AllowEntry:
    id: str
    domains: tuple[str, ...]
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    dkim: tuple[str, ...]

    def allows(self, domain: str, client_ip: str, dkim_passes: Sequence[str]) -> bool:
        if not any(domain == d or domain.endswith("." + d) for d in self.domains):
            return False
        try:
            address = ipaddress.ip_address(client_ip.removeprefix("IPv6:"))
        except ValueError:
            return False
        if not any(address in network for network in self.networks):
            return False
        return not self.dkim or any(d in self.dkim for d in dkim_passes)


Word = tuple[str, str]  # a word of a name: (lower case with its diacritics, lower case without)


@dataclass(frozen=True)
class ImpersonationRules:
    rules: tuple[ImpersonationRule, ...] = ()
    protected: tuple[str, ...] = ()
    state_names: tuple[tuple[tuple[Word, ...], str], ...] = ()  # (its words, as written)
    shorteners: tuple[str, ...] = ()
    near_distance: int = 2
    allow: tuple[AllowEntry, ...] = ()

    def matching(self, finding: str, place: str = "") -> list[ImpersonationRule]:
        return [r for r in self.rules if r.finding == finding and (not place or place in r.places)]

    def state_name_in(self, text: str) -> str:
        """The state name (as written in the file) a display name holds as whole words; "" when none.

        A word of the display name matches a word of a state name when it is the same word, or the
        same word written without any diacritics: `Cuc Thue` and `Cục Thuế` name the tax office,
        `Hồ sơ y tế` (health records) does not name `Sở Y tế`, whose `Sở` carries another tone."""
        shown = name_words(text)
        firsts = self._firsts
        for start, (_, plain) in enumerate(shown):
            for words, written in firsts.get(plain, ()):
                found = shown[start : start + len(words)]
                if len(found) == len(words) and all(_same_word(w, k) for w, k in zip(found, words, strict=True)):
                    return written
        return ""

    @functools.cached_property
    def _firsts(self) -> dict[str, list[tuple[tuple[Word, ...], str]]]:
        index: dict[str, list[tuple[tuple[Word, ...], str]]] = {}
        for words, written in self.state_names:
            index.setdefault(words[0][1], []).append((words, written))
        return index


def _same_word(shown: Word, key: Word) -> bool:
    return shown[1] == key[1] and (shown[0] == shown[1] or shown[0] == key[0])


def name_words(text: str) -> tuple[Word, ...]:
    """The words of a name as display names are compared: look-alike letters read as Latin, spaced
    letters joined (`U.B.N.D`), words run together split at a capital (`CụcThuế`, `UBNDtỉnh`)."""
    words: list[Word] = []
    for word in "".join(c if c.isalnum() else " " for c in join_spaced_letters(normalize(text))).split():
        for part in _camel_parts(word):
            lower = part.lower()
            words.append((lower, strip_diacritics(lower)))
    return tuple(words)


def _camel_parts(word: str) -> list[str]:
    """`CụcThuế` -> [Cục, Thuế]; `UBNDtỉnh` -> [UBND, tỉnh]; a word in one case stays whole."""
    if word.islower() or word.isupper() or len(word) < 3:
        return [word]
    parts, start = [], 0
    for i in range(1, len(word)):
        before, here = word[i - 1], word[i]
        if (before.islower() and here.isupper()) or (before.isupper() and here.islower() and i - start >= 2
                                                     and word[i - 2].isupper()):  # fmt: skip
            parts.append(word[start:i])
            start = i
    parts.append(word[start:])
    return parts


def name_form(text: str) -> str:
    """A name as one line of its words without diacritics (what the log shows of a state name)."""
    return " ".join(plain for _, plain in name_words(text))


def compile_rules(files: Sequence[RuleFile]) -> ImpersonationRules:
    problems: list[RuleProblem] = []
    rules: list[ImpersonationRule] = []
    for entry in entries(files, SCHEMA, problems):
        before = len(problems)
        finding = entry.text("finding", required=True)
        if finding and finding not in FINDINGS:
            entry.problem(f"finding = {finding!r}: expected one of {', '.join(FINDINGS)}", "finding")
        places = entry.strings("places") if "places" in entry.data else LOOKALIKE_PLACES
        for place in places:
            if place not in LOOKALIKE_PLACES:
                entry.problem(f"places: {place!r}: expected some of {', '.join(LOOKALIKE_PLACES)}", "places")
        if "places" in entry.data and not finding.startswith("lookalike-"):
            entry.problem("places is for lookalike-* findings only", "places")
        action = entry.choice("action", ("reject", "score"), "score")
        score = entry.number("score", 0.0)
        if action == "score" and score == 0 and len(problems) == before:
            entry.problem("a rule with action = 'score' needs a non-zero score", "score")
        rule = ImpersonationRule(entry.id, finding, frozenset(places), action, score, entry.mode(),
                                 entry.text("description"))  # fmt: skip
        if len(problems) == before:
            rules.append(rule)
    settings: dict[str, tuple[RuleFile, Any]] = {}
    for rule_file in files:
        for key in ("protected", "state_names", "shorteners", "near_distance", "allow"):
            if key in rule_file.data:
                if key in settings:
                    message = f"{key} is already set in {settings[key][0].path}"
                    problems.append(RuleProblem(rule_file.path, rule_file.key_line(key), "", message))
                    continue
                settings[key] = (rule_file, rule_file.data[key])
    protected = _domains(settings.get("protected"), "protected", problems)
    shorteners = _domains(settings.get("shorteners"), "shorteners", problems)
    state_names = tuple((name_words(n), n) for n in _texts(settings.get("state_names"), "state_names", problems))
    near = 2
    if "near_distance" in settings:
        rule_file, value = settings["near_distance"]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 3:
            problems.append(RuleProblem(rule_file.path, rule_file.key_line("near_distance"), "",
                                        f"near_distance = {value!r}: expected a whole number from 0 to 3"))  # fmt: skip
        else:
            near = value
    allow = _allow(settings.get("allow"), problems)
    if problems:
        raise RuleErrors(problems)
    return ImpersonationRules(tuple(rules), protected, tuple(n for n in state_names if n[0]), shorteners, near, allow)


def _texts(setting: tuple[RuleFile, Any] | None, key: str, problems: list[RuleProblem]) -> tuple[str, ...]:
    if setting is None:
        return ()
    rule_file, value = setting
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        problems.append(RuleProblem(rule_file.path, rule_file.key_line(key), "", f"{key}: expected a list of text"))
        return ()
    return tuple(value)


def _domains(setting: tuple[RuleFile, Any] | None, key: str, problems: list[RuleProblem]) -> tuple[str, ...]:
    found: list[str] = []
    for value in _texts(setting, key, problems):
        name = normalize_domain(value.lstrip("@").lstrip("*").lstrip("."))
        if not name or "." not in name:
            assert setting is not None
            rule_file = setting[0]
            message = f"{key}: {value!r} is not a domain name"
            problems.append(RuleProblem(rule_file.path, rule_file.key_line(key), "", message))
            continue
        found.append(name)
    return tuple(dict.fromkeys(found))


def _allow(setting: tuple[RuleFile, Any] | None, problems: list[RuleProblem]) -> tuple[AllowEntry, ...]:
    if setting is None or setting[1] is None:
        return ()
    rule_file, items = setting
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        problems.append(RuleProblem(rule_file.path, rule_file.key_line("allow"), "", "allow must be [[allow]] tables"))
        return ()
    allowed: list[AllowEntry] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        raw_id = item.get("id")
        entry_id = raw_id if isinstance(raw_id, str) else ""

        def problem(message: str, key: str = "", index: int = index, entry_id: str = entry_id) -> None:
            problems.append(rule_file.entry_problem("allow", index, entry_id, message, key))

        bad_id = id_problem(raw_id)
        if bad_id:
            problem(bad_id, "id")
            continue
        if entry_id in seen:
            problem("duplicate allow id", "id")
            continue
        seen.add(entry_id)
        before = len(problems)
        for key in sorted(set(item) - {"id", "description", "domains", "networks", "dkim"}):
            problem(f"unknown key {key!r}; expected id, description, domains, networks, dkim", key)
        lists: dict[str, list[str]] = {}
        for key in ("domains", "networks", "dkim"):
            value = item.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                problem(f"{key}: expected a list of text", key)
                value = []
            lists[key] = value
        if not lists["domains"] or not lists["networks"]:
            problem("an allow entry needs domains and networks (the sending addresses)")
        domains = []
        for value in lists["domains"] + lists["dkim"]:
            if not normalize_domain(value):
                problem(f"{value!r} is not a domain name", "domains" if value in lists["domains"] else "dkim")
            else:
                domains.append(normalize_domain(value))
        networks = []
        for value in lists["networks"]:
            try:
                networks.append(ipaddress.ip_network(value, strict=False))
            except ValueError:
                problem(f"networks: {value!r} is not an address or network (203.0.113.0/24)", "networks")
        if len(problems) == before:
            names = tuple(normalize_domain(v) for v in lists["domains"])
            signers = tuple(normalize_domain(v) for v in lists["dkim"])
            allowed.append(AllowEntry(entry_id, names, tuple(networks), signers))
    return tuple(allowed)
