"""The content check: officers' regular-expression rules, GTUBE and the spam score.

Rules of kind "content" match a header, the decoded text of the body (HTML as
the reader sees it), attachment names or the text of attached documents, after
normalisation (text/normalize.py: NFKC, invisible characters removed, look-alike letters
read as Latin, spaced letters joined) and, when a rule asks, with the diacritics
removed. A rule either adds its score or, with `action = "reject"`, refuses the
message with its own reply. The score of a message is the sum of every enforced
hit so far, the dnsbl weights included: at `tag_threshold` the message gets
X-Spam-Flag, at `reject_threshold` it is refused (outbound mail, from trusted
relays and AUTH users, has its own `outbound_tag_threshold` and
`outbound_reject_threshold`). Monitor-mode hits are listed and counted but never
add to the score.

All the text is read, in bounded memory: each body part (and each document) is
read in windows of WINDOW characters, normalised per window and matched with
the last OVERLAP characters of the previous window in front, so a match that
straddles a boundary is found when it is at most OVERLAP characters long (a
longer body match may be missed across a window boundary). A rule fires at most
once per message; reading stops as soon as every rule that could still fire has.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from govmilter import mime
from govmilter.checks import CheckHooks
from govmilter.checks.content import documents as docs
from govmilter.checks.content.conditions import DOMAIN_KEYS, Conditions, DomainList, domain_list, from_domains
from govmilter.checks.content.conditions import NONE as NO_CONDITIONS
from govmilter.config import Config
from govmilter.metrics import Metrics
from govmilter.model import Action, Mode, Stage, TextPart, Transaction, Verdict
from govmilter.ruleset import RuleErrors, RuleFile, RuleProblem
from govmilter.ruleset.entries import ID_RE, Entry, entries
from govmilter.ruleset.expression import ExpressionError, Node
from govmilter.ruleset.expression import names as expression_names
from govmilter.ruleset.expression import parse as parse_expression
from govmilter.ruleset.patterns import Pattern, PatternError, PatternTimeout, compile_pattern, encode, nested_repeat
from govmilter.ruleset.schema import REQUIRED, Key, Schema
from govmilter.text.links import Link, distinct_links, message_links
from govmilter.text.normalize import (
    HtmlText,
    decode_header_value,
    normalize,
    normalize_pattern,
    strip_diacritics,
    windows,
)
from govmilter.text.prefilter import Prefilter, fold
from govmilter.text.prefilter import build as build_prefilter

RULE_KIND = "content"
TARGETS = ("header", "body", "attachment-name", "document", "link", "link-domain")
STREAMED = frozenset({"body", "document"})  # read in windows, not held whole
DIRECTIONS = ("any", "inbound", "outbound")
SCHEMA = Schema(
    RULE_KIND,
    "rule",
    (
        Key("id", "text", REQUIRED, "unique name: the metric label, the log and the name in X-Spam-Report"),
        Key("description", "text", '""', "what the rule is for, for people"),
        Key(
            "target",
            "header | body | attachment-name | document | link | link-domain, or a list of them",
            '"body"',
            "body: the decoded text parts, HTML as the reader sees it, one line per block; read in windows of 64k "
            "characters with 4096 characters of overlap, so a body match longer than 4096 characters may be "
            "missed across a window boundary\n"
            "document: the text of attached .txt, Office Open XML (.docx .xlsx .pptx) and PDF files, read only "
            "when a rule of the message's direction asks for it\n"
            "link: the full URL of each link of the text and HTML body (HTML href and src targets included), "
            "at most [content] max_links links per message\n"
            "link-domain: the registered domain of each link (\"x.y.shop.com.vn\" -> \"shop.com.vn\")",
        ),
        Key(
            "header",
            "text or list of text",
            "none",
            'for target = "header" (and only there): a field name or a list ("Subject", ["From", "Sender"])',
        ),
        Key(
            "pattern",
            "text",
            "none (a rule needs a pattern, an expression or a condition)",
            "a Python regular expression, matched against the normalised text: NFKC, invisible (format, "
            "default-ignorable) characters removed, every space a space, line and paragraph separators a line "
            "break, Cyrillic/Greek look-alike letters read as Latin, runs of spaced single letters joined "
            '("T Ố I" -> "TỐI", "M.Ậ.T" -> "MẬT"). It must not match the empty text',
        ),
        Key(
            "unless",
            "text",
            "none",
            "an exception, for header, attachment-name, link and link-domain rules: a second pattern (the same "
            "syntax, letter case and marks as pattern); the rule does not fire on a header value, file name or "
            'link that unless also matches ("tối mật" in a file name, unless the name says "hướng dẫn"). It must '
            "run on the linear-time engine: no lookaround, no backreference",
        ),
        Key(
            "expression",
            "text",
            "none",
            "a combined rule, instead of pattern and target: rule ids joined by and, or, not and parentheses "
            '("phish-link and not sender-gov"); an id check/rule is a finding of an earlier check '
            '("dnsbl/spamhaus-zen", "auth/dmarc-fail"). It fires when the expression holds, after every other '
            "content rule, with its own score; a rule it names counts whatever that rule's mode",
        ),
        Key(
            "sender_domain",
            "list of text",
            "none",
            'the envelope sender\'s domain is one of these or under one ("gov.vn" holds for bacninh.gov.vn); '
            '"=gov.vn" is that name only',
        ),
        Key("sender_domain_not", "list of text", "none", "the envelope sender's domain is none of these (nor under)"),
        Key("from_domain", "list of text", "none", "the domain of an address of the From header is one of these"),
        Key("from_domain_not", "list of text", "none", "the domain of an address of the From header is none of these"),
        Key(
            "link_domain",
            "list of text",
            "none",
            "a link's host is one of these or under one; with target = \"link\", the link the pattern matches",
        ),
        Key(
            "link_domain_not",
            "list of text",
            "none",
            'a link\'s host is none of these: ["gov.vn"] is "a link outside gov.vn"',
        ),
        Key(
            "authenticated",
            "true or false",
            "none",
            "true: only for senders logged in with SMTP AUTH; false: only for the others",
        ),
        Key("case_sensitive", "true or false", "false", "true: letter case counts"),
        Key(
            "ignore_diacritics",
            "true or false",
            "false",
            'true: the text and the pattern are both matched without Vietnamese marks ("khuyen mai" and '
            '"khuyến mãi" alike)',
        ),
        Key(
            "direction",
            "any | inbound | outbound",
            '"any"',
            "inbound: from the Internet; outbound: from trusted relays and authenticated users",
        ),
        Key(
            "action",
            "score | reject",
            '"score"',
            "score: add score to the message's spam score; reject: refuse the message with 550 5.7.1 and reply",
        ),
        Key(
            "score",
            "number",
            "0.0",
            'the number added (negative lowers the score); not 0 for action = "score", unless an expression '
            "names the rule (a part of a combined rule)",
        ),
        Key("mode", "enforce | monitor", '"enforce"', "monitor: counted, logged and tagged; never refuses or scores"),
        Key(
            "reply",
            "text",
            "[content] reply_text of the configuration",
            'SMTP reply text for action = "reject": printable ASCII, no percent sign, at most 400 characters; '
            "names the regulation",
        ),
    ),
)
log = logging.getLogger("govmilter.content")
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
GTUBE_SCORE = 1000.0
_HEADER_NAME = re.compile(r"^[!-9;-~]{1,76}$")  # RFC 5322 field name
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]+")
REPORT_LIMIT = 900  # keep the added header within one line
WINDOW = 65536  # characters of text read, normalised and matched at a time
OVERLAP = 4096  # characters of the previous window matched again in front of the next


@dataclass(frozen=True)
class ContentRule:
    id: str
    description: str
    targets: tuple[str, ...]  # header | body | attachment-name | document
    headers: tuple[str, ...]  # lower-case field names, for target = header
    regex: re.Pattern[str] | None  # Python's parse of the pattern (the prefilter's source); None: no pattern
    ignore_diacritics: bool
    direction: str  # any | inbound | outbound
    score: float
    action: str  # score | reject
    mode: Mode
    reply: str
    prefilter: Prefilter | None = None  # literals one of which every match contains
    matcher: Pattern | None = None  # what runs on mail: RE2, or the time-limited fallback
    conditions: Conditions = NO_CONDITIONS  # sender, From, link domains, authentication
    expression: Node | None = None  # a combined rule: fires when this holds over the rules that fired
    unless: Pattern | None = None  # an exception: the rule does not fire on a text (name, value, link) it matches

    def vetoed(self, text: str, encoded: bytes | None = None) -> bool:
        """The rule's exception matches this text (one header value, file name or link)."""
        return self.unless is not None and self.unless.search(text, encoded) is not None

    def applies(self, internal: bool) -> bool:
        return self.direction == "any" or (self.direction == "outbound") == internal


@dataclass(frozen=True)
class ContentRules:
    rules: tuple[ContentRule, ...] = ()
    warnings: tuple[RuleProblem, ...] = ()  # printed by `govmilter rules check`; the rules load


def compile_rules(files: Sequence[RuleFile]) -> ContentRules:
    problems: list[RuleProblem] = []
    warnings: list[RuleProblem] = []
    compiled: list[ContentRule] = []
    read: dict[str, Entry] = {}
    for entry in entries(files, SCHEMA, problems):
        read[entry.id] = entry
        before = len(problems)
        rule = _compile_rule(entry, warnings)
        if rule is not None and len(problems) == before:
            compiled.append(rule)
    ordered = _order_combined(compiled, read)
    if problems:
        raise RuleErrors(problems)
    return ContentRules(ordered, tuple(warnings))


def _order_combined(compiled: list[ContentRule], read: dict[str, Entry]) -> tuple[ContentRule, ...]:
    """The rules with the combined ones last, each after the combined rules it names.

    An id an expression names must be a content rule or check/rule; a cycle is refused; a rule
    with score 0 and action score must be named by some expression.
    """
    by_id = {rule.id: rule for rule in compiled}
    named: set[str] = set()
    for rule in compiled:
        if rule.expression is None:
            continue
        for name in expression_names(rule.expression):
            named.add(name)
            if "/" in name:
                check, _, rule_id = name.partition("/")
                if not (ID_RE.match(check) and ID_RE.match(rule_id)):
                    read[rule.id].problem(f"expression names {name!r}: expected check/rule-id", "expression")
            elif name not in read:
                read[rule.id].problem(
                    f"expression names {name!r}, which is no content rule (the ids are those of the content "
                    "rule files; a finding of another check is written check/rule)",
                    "expression",
                )
    for rule_id, entry in read.items():
        score = entry.data.get("score", 0)
        zero = score == 0 and not isinstance(score, bool) and entry.data.get("action", "score") == "score"
        if zero and rule_id not in named:
            entry.problem(
                "a rule with action = 'score' needs a non-zero score (score 0 only for a part of a combined rule)",
                "score",
            )
    combined = [rule for rule in compiled if rule.expression is not None]
    order: list[ContentRule] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(rule: ContentRule, path: list[str]) -> None:
        if state.get(rule.id) == 2:
            return
        if state.get(rule.id) == 1:
            cycle = " -> ".join([*path[path.index(rule.id) :], rule.id])
            read[rule.id].problem(f"expression is part of a cycle: {cycle}", "expression")
            return
        state[rule.id] = 1
        assert rule.expression is not None
        for name in expression_names(rule.expression):
            other = by_id.get(name)
            if other is not None and other.expression is not None:
                visit(other, [*path, rule.id])
        state[rule.id] = 2
        order.append(rule)

    for rule in combined:
        visit(rule, [])
    return (*(rule for rule in compiled if rule.expression is None), *order)


def _conditions(entry: Entry) -> Conditions:
    lists: dict[str, list[DomainList]] = {"sender": [], "from": [], "link": []}
    for key in DOMAIN_KEYS:
        values = entry.strings(key)
        if key not in entry.data:
            continue
        if not values:
            entry.problem(f"{key} is an empty list: name at least one domain", key)
            continue
        compiled, bad = domain_list(values, key.endswith("_not"))
        if bad:
            entry.problem(f"{key}: not a domain name: {', '.join(repr(b) for b in bad)}", key)
        lists[key.split("_")[0]].append(compiled)
    authenticated = None
    if "authenticated" in entry.data:
        authenticated = entry.flag("authenticated", False)
    return Conditions(tuple(lists["sender"]), tuple(lists["from"]), tuple(lists["link"]), authenticated)


def _compile_rule(entry: Entry, warnings: list[RuleProblem]) -> ContentRule | None:
    conditions = _conditions(entry)
    expression: Node | None = None
    if "expression" in entry.data:
        source = entry.text("expression", required=True)
        for key in ("pattern", "target", "header", "case_sensitive", "ignore_diacritics", "unless"):
            if key in entry.data:
                entry.problem(f"{key} is for pattern rules: a combined rule has an expression instead", key)
        try:
            expression = parse_expression(source) if source else None
        except ExpressionError as exc:
            entry.problem(f"expression {source!r}: {exc}", "expression")
            return None
        if expression is None:
            return None
        if entry.id in expression_names(expression):
            entry.problem("expression names the rule itself", "expression")
            return None
        return _patternless(entry, conditions, expression)
    if "pattern" not in entry.data and conditions.any:
        if "target" in entry.data or "header" in entry.data:
            entry.problem("target is for a pattern: a rule of conditions only has no target", "target")
        if "unless" in entry.data:
            entry.problem("unless is an exception to a pattern: a rule of conditions only has none", "unless")
        return _patternless(entry, conditions)
    targets = _targets(entry)
    headers = tuple(h.lower() for h in entry.strings("header"))
    if "header" in targets and not headers:
        entry.problem("target = 'header' needs header = \"Subject\" (or a list of field names)")
    elif "header" not in targets and headers:
        entry.problem(f"header is only for target = 'header', not {' '.join(targets)!r}", "header")
    for name in headers:
        if not _HEADER_NAME.match(name):
            entry.problem(f"header {name!r} is not a header field name", "header")
    ignore_diacritics = entry.flag("ignore_diacritics", False)
    case_sensitive = entry.flag("case_sensitive", False)
    if "pattern" not in entry.data:
        entry.problem("missing pattern (or an expression, or a condition such as link_domain_not)")
        return None
    source = entry.text("pattern", required=True)
    action = entry.choice("action", ("score", "reject"), "score")
    score = _score_of(entry)
    rule_reply = entry.reply()
    mode = entry.mode()
    direction = entry.choice("direction", DIRECTIONS, "any")
    description = entry.text("description")
    if not source:
        return None
    compiled = _compile(entry, "pattern", source, ignore_diacritics, case_sensitive)
    if compiled is None:
        return None
    pattern, matcher = compiled
    regex = matcher.python
    try:
        empty = matcher.search("", timeout=1.0) is not None
    except PatternTimeout:
        empty = False
    if empty:
        entry.problem("pattern matches the empty text, so it would fire on every message", "pattern")
        return None
    nested = nested_repeat(pattern, ignore_case=not case_sensitive)
    if not matcher.linear:
        if nested:
            entry.problem(
                f"pattern has {nested} (such as (a+)+) and {matcher.why}: on the backtracking engine this shape "
                "can take seconds on a short line; write it without the nested repetition",
                "pattern",
            )
            return None
        warnings.append(
            entry.file.entry_problem(
                entry.table,
                entry.index,
                entry.id,
                f"warning: this pattern uses {matcher.why}, which the linear-time engine (RE2) cannot run, so it "
                "runs on a backtracking engine that can be slow: it has a time limit per message "
                "([content] pattern_time_limit_ms, 100 ms by default), and when that is spent the rule is "
                "skipped for that message (a reject rule then refuses it unchecked)",
                "pattern",
            )
        )
    elif nested:
        warnings.append(
            entry.file.entry_problem(
                entry.table,
                entry.index,
                entry.id,
                f"warning: pattern has {nested} (such as (a+)+), the shape that backtracks catastrophically in "
                "most regex engines; it is safe here (it runs on the linear-time engine), but simplify it",
                "pattern",
            )
        )
    return ContentRule(
        id=entry.id,
        description=description,
        targets=targets,
        headers=headers,
        regex=regex,
        ignore_diacritics=ignore_diacritics,
        direction=direction,
        score=score,
        action=action,
        mode=mode,
        reply=rule_reply,
        prefilter=build_prefilter(regex),
        matcher=matcher,
        conditions=conditions,
        unless=_unless(entry, targets, ignore_diacritics, case_sensitive),
    )


def _compile(
    entry: Entry, key: str, source: str, ignore_diacritics: bool, case_sensitive: bool
) -> tuple[str, Pattern] | None:
    """The rule text `key` as it is matched (normalised, diacritics stripped when asked) and its
    compiled pattern; None after saying the problem."""
    pattern = normalize_pattern(source)
    if ignore_diacritics:
        pattern = strip_diacritics(pattern)
    try:
        return pattern, compile_pattern(pattern, ignore_case=not case_sensitive)
    except PatternError as exc:
        entry.problem(f"{key} is {exc}", key)
        return None


UNLESS_TARGETS = frozenset({"header", "attachment-name", "link", "link-domain"})  # one text each


def _unless(entry: Entry, targets: tuple[str, ...], ignore_diacritics: bool, case_sensitive: bool) -> Pattern | None:
    """The rule's exception pattern, compiled as its pattern is; None when it has none (or a problem)."""
    if "unless" not in entry.data:
        return None
    source = entry.text("unless", required=True)
    if not source:
        return None
    streamed = [t for t in targets if t not in UNLESS_TARGETS]
    if streamed:
        entry.problem(
            f"unless is for header, attachment-name, link and link-domain rules (one text each), not {streamed[0]!r}",
            "unless",
        )
        return None
    compiled = _compile(entry, "unless", source, ignore_diacritics, case_sensitive)
    if compiled is None:
        return None
    matcher = compiled[1]
    if not matcher.linear:
        entry.problem(
            f"unless uses {matcher.why}, which the linear-time engine cannot run: an exception must never be "
            "skipped, so write it without (list the words the exception is about)",
            "unless",
        )
        return None
    if matcher.search("") is not None:
        entry.problem("unless matches the empty text, so the rule would never fire", "unless")
        return None
    return matcher


def _patternless(entry: Entry, conditions: Conditions, expression: Node | None = None) -> ContentRule:
    """A rule with no pattern: a combined rule (an expression) or one of conditions only."""
    return ContentRule(
        id=entry.id,
        description=entry.text("description"),
        targets=(),
        headers=(),
        regex=None,
        ignore_diacritics=False,
        direction=entry.choice("direction", DIRECTIONS, "any"),
        score=_score_of(entry),
        action=entry.choice("action", ("score", "reject"), "score"),
        mode=entry.mode(),
        reply=entry.reply(),
        conditions=conditions,
        expression=expression,
    )


def _score_of(entry: Entry) -> float:
    return entry.number("score", 0.0)  # 0 with action score: checked once every expression is known


def _targets(entry: Entry) -> tuple[str, ...]:
    """`target` is one name or a list of names (default body)."""
    value = entry.data.get("target", "body")
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        entry.problem(f"target = {value!r}: expected one of {', '.join(TARGETS)} or a list of them", "target")
        return ("body",)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        entry.problem(f"target = {value!r}: expected one of {', '.join(TARGETS)} or a list of them", "target")
        return ("body",)
    return tuple(dict.fromkeys(names))


class _Fired:
    """The names an expression reads: the rules that fired, and the parts evaluated when first asked.

    A part of a combined rule with link conditions (score 0, only an expression reads it) is held
    back: `a and b` stops at a false `a`, so the message's links are read only if it gets that far.
    Its hit is recorded when it holds, as if it had been evaluated with the others.
    """

    def __init__(self, names: set[str], parts: dict[str, Callable[[], Verdict | None]], hits: list[Verdict]):
        self.names = names
        self.parts = parts
        self.hits = hits

    def __contains__(self, name: object) -> bool:
        if name in self.names:
            return True
        evaluate = self.parts.pop(name, None) if isinstance(name, str) else None
        verdict = evaluate() if evaluate is not None else None
        if verdict is None:
            return False
        self.hits.append(verdict)
        self.names.add(verdict.rule)
        return True

    def add(self, name: str) -> None:
        self.names.add(name)


class _Texts:
    """Headers and attachment names as rules see them, prepared once per message and variant."""

    def __init__(self, tx: Transaction):
        self.tx = tx
        self._cache: dict[tuple[str, str, bool], tuple[str, ...]] = {}
        self._folded: dict[tuple[str, str, bool], tuple[str, ...]] = {}

    def get(self, target: str, header: str, bare: bool) -> tuple[str, ...]:
        key = (target, header, bare)
        if key not in self._cache:
            if bare:
                texts = tuple(strip_diacritics(t) for t in self.get(target, header, False))
            else:
                texts = tuple(normalize(t) for t in self._raw(target, header))
            self._cache[key] = texts
        return self._cache[key]

    def folded(self, target: str, header: str, bare: bool) -> tuple[str, ...]:
        """The same texts case-folded, for the rules' literal prefilters."""
        key = (target, header, bare)
        if key not in self._folded:
            self._folded[key] = tuple(fold(t) for t in self.get(target, header, bare))
        return self._folded[key]

    def _raw(self, target: str, header: str) -> list[str]:
        if target == "header":
            return [decode_header_value(v) for v in self.tx.header(header)]
        names: list[str] = []
        for part in self.tx.facts().parts:
            if part.filename:
                names.append(part.filename)
            names.extend(part.archive_names)
        return names


@dataclass(frozen=True)
class Found:
    target: str
    matched: str


class _Clock:
    """One message's time left for each rule on the fallback engine; the rules whose time ran out.

    A RE2 rule needs none (its time is linear in the text). A fallback rule gets `limit` seconds
    for the whole message; when a search runs past what is left, the rule is skipped for the rest
    of the message, counted and logged: a score rule is left out, a reject rule refuses unchecked.
    """

    def __init__(self, limit: float, metrics: Metrics | None = None, queue_id: str = ""):
        self.limit = limit
        self.metrics = metrics
        self.queue_id = queue_id
        self.left: dict[str, float] = {}
        self.skipped: set[str] = set()

    def search(self, rule: ContentRule, text: str, encoded: Callable[[], bytes]) -> str | None:
        matcher = rule.matcher
        if matcher is None:  # a rule made by hand without compile_rules (tests): Python's engine
            if rule.regex is None:
                return None
            found = rule.regex.search(text)
            return None if found is None else found.group(0)
        if matcher.linear:
            return matcher.search(text, encoded())
        if rule.id in self.skipped:
            return None
        left = self.left.get(rule.id, self.limit)
        started = time.perf_counter()
        try:
            return matcher.search(text, timeout=left)
        except PatternTimeout:
            self.skipped.add(rule.id)
            if self.metrics is not None:
                self.metrics.content_rules_skipped.labels(rule=rule.id).inc()
            log.warning(
                "content rule=%s skipped: its pattern spent its time limit of %.0f ms on this message "
                "(queue_id=%s; a reject rule refuses the message unchecked, a score rule is left out)",
                rule.id,
                self.limit * 1000,
                self.queue_id or "-",
            )
            return None
        finally:
            self.left[rule.id] = left - (time.perf_counter() - started)


LINK_TARGETS = frozenset({"link", "link-domain"})


def _is_link_rule(rule: ContentRule) -> bool:
    return bool(LINK_TARGETS.intersection(rule.targets))


class _Links:
    """The message's distinct links (text/links.py), at most `limit` of them, read only as far as a rule asks.

    The extraction is the transaction's one (message_links, shared with the dnsbl check): a
    message no link rule or condition is evaluated on is never searched for links. Copies of one
    link count once: 200 copies of a harmless link must not push a different one past the bound
    (past it, the impersonation check's `too-many-links` scores the message).
    """

    def __init__(self, tx: Transaction, limit: int):
        self.tx = tx
        self.limit = limit
        self._source: Iterator[Link] | None = None
        self._read: list[Link] = []  # the distinct links read so far: each rule reads them again from here

    @property
    def all(self) -> Iterator[Link]:
        index = 0
        while index < self.limit:
            if index == len(self._read):
                if self._source is None:
                    self._source = distinct_links(message_links(self.tx.scratch, self.tx.facts().texts))
                link = next(self._source, None)
                if link is None:
                    return
                self._read.append(link)
            yield self._read[index]
            index += 1

    def first(self, rule: ContentRule) -> Link | None:
        """The first link that meets the rule's link conditions."""
        return next((link for link in self.all if rule.conditions.link_holds(link)), None)

    def match(self, rule: ContentRule, target: str, clock: _Clock) -> str | None:
        """What the rule's pattern matched in the first link (that meets its conditions) it matches."""
        for link in self.all:
            if not rule.conditions.link_holds(link):
                continue
            text = link.url if target == "link" else link.domain
            if rule.ignore_diacritics:
                text = strip_diacritics(text)
            if rule.prefilter is not None and not rule.prefilter.may_match(text, fold(text)):
                continue
            matched = clock.search(rule, text, functools.partial(encode, text))
            if matched is not None and not rule.vetoed(text):
                return link.url if target == "link" else f"{link.domain} ({link.url})"
        return None


class _Stream:
    """Rules matched over texts read window by window; each rule fires once, at its first match."""

    def __init__(self, rules: Sequence[ContentRule], target: str, gtube: bool = False, clock: _Clock | None = None):
        self.pending = list(rules)
        self.target = target
        self.clock = clock if clock is not None else _Clock(0.1)
        self.gtube = gtube
        self.found: dict[str, Found] = {}
        self.gtube_found = False

    @property
    def done(self) -> bool:
        return not self.pending and not self.gtube

    def read(self, pieces: Iterable[str]) -> None:
        """One text (a part or a document), given in pieces; the overlap runs within it only."""
        carry = ""  # the last OVERLAP characters of the previous normalised window
        raw_tail = ""  # the last characters of the previous raw window (GTUBE is matched as sent)
        for raw in windows(pieces, WINDOW):
            if self.gtube:
                if GTUBE in raw_tail + raw:
                    self.gtube_found = True
                    self.gtube = False
                raw_tail = raw[-(len(GTUBE) - 1) :]
            if self.pending:
                text = carry + normalize(raw)
                self._match(text)
                carry = text[-OVERLAP:]
            if self.done:
                return

    def _match(self, text: str) -> None:
        variants: dict[bool, str] = {}
        folded: dict[bool, str] = {}
        encoded: dict[bool, bytes] = {}
        fired = []
        for rule in self.pending:
            bare = rule.ignore_diacritics
            if bare not in variants:
                variants[bare] = strip_diacritics(text) if bare else text
            variant = variants[bare]
            if rule.prefilter is not None:
                if bare not in folded:
                    folded[bare] = fold(variant)
                if not rule.prefilter.may_match(variant, folded[bare]):
                    continue

            def utf8(bare: bool = bare, variant: str = variant) -> bytes:
                if bare not in encoded:  # the window as UTF-8 once, for every RE2 rule
                    encoded[bare] = encode(variant)
                return encoded[bare]

            matched = self.clock.search(rule, variant, utf8)
            if matched is not None:
                self.found[rule.id] = Found(self.target, matched)
                fired.append(rule)
        if fired:
            self.pending = [r for r in self.pending if r not in fired]


def _body_pieces(part: TextPart) -> Iterator[str]:
    """A body part's text as the reader sees it, in pieces (HTML through the incremental reader)."""
    if part.content_type != "text/html":
        yield from part.pieces(WINDOW)
        return
    reader = HtmlText()
    for piece in part.pieces(WINDOW):
        text = reader.feed(piece)
        if text:
            yield text
    yield reader.close()


class ContentCheck(CheckHooks):
    name = "content"
    stages = frozenset({Stage.EOM})

    def __init__(self, config: Config, metrics: Metrics):
        settings = config.content
        self.tag_threshold = settings.tag_threshold
        self.reject_threshold = settings.reject_threshold
        self.outbound_tag_threshold = settings.outbound_tag_threshold  # trusted relays and AUTH users
        self.outbound_reject_threshold = settings.outbound_reject_threshold
        self.code = settings.reply_code
        self.enhanced = settings.reply_enhanced
        self.replies = settings
        self.gtube = settings.gtube
        self.metrics = metrics
        self.budget = docs.Budget(
            max_bytes=settings.document_max_bytes,
            max_count=settings.document_max_count,
            seconds=settings.document_seconds,
            memory=settings.document_memory,
        )
        self.unreadable_mode = Mode.ENFORCE if settings.document_unreadable == "reject" else Mode.MONITOR
        self.spool_dir = config.milter.spool_dir
        self.time_limit = settings.pattern_time_limit_ms / 1000
        self.max_links = settings.max_links

    def run(self, stage: Stage, tx: Transaction) -> Sequence[Verdict]:
        rules = tx.ruleset.get(RULE_KIND)
        applying: list[ContentRule] = []
        if isinstance(rules, ContentRules):
            internal = tx.envelope.internal
            senders: tuple[str, ...] | None = None
            for rule in rules.rules:
                if not rule.applies(internal):
                    continue
                if rule.conditions.any:
                    if senders is None:
                        senders = from_domains(tx)
                    if not rule.conditions.envelope_holds(tx, senders):
                        continue
                applying.append(rule)
        combined = [rule for rule in applying if rule.expression is not None]
        applying = [rule for rule in applying if rule.expression is None]
        clock = _Clock(self.time_limit, self.metrics, tx.envelope.queue_id)
        body = _Stream([r for r in applying if "body" in r.targets], "body", gtube=self.gtube, clock=clock)
        if not body.done:
            facts = tx.facts()
            for part in (*facts.texts, *facts.subjects):
                body.read(_body_pieces(part))
                if body.done:
                    break
        found: list[Verdict | None] = []
        if body.gtube_found:
            found.append(
                Verdict(Action.CONTINUE, "content", rule="gtube", score=GTUBE_SCORE, reason="GTUBE test string")
            )
        document_rules = [r for r in applying if "document" in r.targets and r.id not in body.found]
        unreadable: list[Verdict] = []
        document = _Stream(document_rules, "document", clock=clock)
        if document_rules:
            unreadable = self._read_documents(tx, document)
        texts = _Texts(tx)
        links = _Links(tx, self.max_links)
        parts: dict[str, Callable[[], Verdict | None]] = {}  # link conditions only a combined rule reads
        for rule in applying:
            hit = body.found.get(rule.id) or document.found.get(rule.id)
            if rule.regex is None:  # conditions only: they held (the envelope's above), a link's here
                if rule.conditions.link and rule.action == "score" and not rule.score:
                    # a part of a combined rule: its links are read only if an expression asks for it
                    parts[rule.id] = functools.partial(self._conditions_hold, rule, links)
                    continue
                found.append(self._conditions_hold(rule, links))
                continue
            if hit is not None:
                verdict: Verdict | None = self._verdict(rule, hit.target, "", hit.matched)
            else:
                verdict = self._fire(rule, texts, clock, links)
            if verdict is not None and rule.conditions.link and not _is_link_rule(rule):
                if links.first(rule) is None:  # the pattern matched, but no link is where the rule asks
                    verdict = None
            if verdict is None and rule.id in clock.skipped and rule.action == "reject":
                verdict = self._unchecked(rule)  # a sender's filler must not buy a refusing rule's silence
            found.append(verdict)
        found.extend(unreadable)
        hits = [v for v in found if v is not None]
        if combined:
            seen = {h.rule for h in hits if h.rule} | {f"{h.check}/{h.rule}" for h in tx.hits if h.rule}
            fired = _Fired(seen, parts, hits)
            for rule in combined:
                assert rule.expression is not None
                if rule.expression.holds(fired):
                    fired.add(rule.id)
                    names = " ".join(dict.fromkeys(expression_names(rule.expression)))
                    hits.append(self._verdict(rule, "", "", "", reason=f"expression held over {names}"))
        refusals = [v for v in hits if v.refuses]
        if refusals:
            # every finding is recorded; the pipeline stops at the first refusal, put last
            return [v for v in hits if not v.refuses] + refusals
        return [*hits, self._score(tx.hits + hits, tx.scratch, internal=tx.envelope.internal)]

    def _conditions_hold(self, rule: ContentRule, links: _Links) -> Verdict | None:
        """A rule of conditions only (its envelope's held already): its hit when a link meets its link conditions."""
        link = links.first(rule) if rule.conditions.link else None
        if link is None and rule.conditions.link:
            return None
        what = f"link {_excerpt(link.url)!r}" if link is not None else "its conditions"
        return self._verdict(rule, "", "", "", reason=f"{what} held")

    def _fire(self, rule: ContentRule, texts: _Texts, clock: _Clock, links: _Links) -> Verdict | None:
        for target in rule.targets:
            if target in STREAMED:
                continue
            if target in LINK_TARGETS:
                found = links.match(rule, target, clock)
                if found is not None:
                    return self._verdict(rule, target, "", found)
                continue
            for header in rule.headers if target == "header" else ("",):
                candidates = texts.get(target, header, rule.ignore_diacritics)
                if rule.prefilter is not None:
                    folded = texts.folded(target, header, rule.ignore_diacritics)
                    candidates = tuple(
                        t for t, f in zip(candidates, folded, strict=True) if rule.prefilter.may_match(t, f)
                    )
                for text in candidates:
                    matched = clock.search(rule, text, functools.partial(encode, text))
                    if matched is not None and not rule.vetoed(text):
                        return self._verdict(rule, target, header, matched)
        return None

    # ---- attached documents ----------------------------------------------------------------

    def _read_documents(self, tx: Transaction, stream: _Stream) -> list[Verdict]:
        """Match the documents' text; the verdicts of the documents that could not be read."""
        found = docs.documents(tx.facts().parts)
        if not found:
            return []
        problems: list[tuple[docs.Document, str]] = []
        wanted: list[docs.Document] = []
        for document in found:
            if len(wanted) >= self.budget.max_count:
                problems.append((document, "too-many-documents"))
            elif document.size > self.budget.max_bytes:
                problems.append((document, "too-large"))
            elif document.kind == "encrypted-ooxml":
                problems.append((document, "encrypted"))
            else:
                wanted.append(document)
        # the spool directory when it exists (the daemon's), else the system's temporary directory
        spool = self.spool_dir if self.spool_dir and os.path.isdir(self.spool_dir) else None
        if wanted:
            files = mime.extract(tx.raw_chunks(), [d.path for d in wanted], self.budget.max_bytes, spool)
            try:
                for document in wanted:
                    if stream.done:
                        break
                    extracted = files.get(document.path)
                    if extracted is None:
                        problems.append((document, "not-found"))
                        continue
                    if extracted.truncated:
                        problems.append((document, "too-large"))
                        continue
                    try:
                        stream.read(docs.read_text(document, extracted.file, self.budget, spool))
                    except docs.Unreadable as exc:
                        problems.append((document, str(exc)))
            finally:
                for extracted in files.values():
                    extracted.file.close()
        return [self._unreadable(document, reason) for document, reason in problems]

    def _unreadable(self, document: docs.Document, reason: str) -> Verdict:
        name = _excerpt(document.name or document.path, 80)
        return Verdict(
            Action.REJECT,
            "content",
            rule="document-unreadable",
            code=self.code,
            enhanced=self.enhanced,
            text=self.replies.reply_text_unreadable.format(),
            mode=self.unreadable_mode,
            reason=f"document {document.path} {document.kind} {name!r}: {reason}",
        )

    def _unchecked(self, rule: ContentRule) -> Verdict:
        """A reject rule whose pattern spent its time limit before it could say: refused, unchecked.

        Skipping it would let any sender silence it with text the pattern is slow on (filler names
        before the marked one); a score rule is only left out of the score."""
        return Verdict(
            Action.REJECT,
            "content",
            rule=rule.id,
            code=self.code,
            enhanced=self.enhanced,
            text=self.replies.reply_text.format(rule=rule.id),
            mode=rule.mode,
            reason=f"pattern time limit of {self.time_limit * 1000:.0f} ms spent: refused unchecked",
        )

    def _verdict(self, rule: ContentRule, target: str, header: str, matched: str, reason: str = "") -> Verdict:
        if not reason:
            where = f"{target} {header}" if header else target
            reason = f"{where} matched {_excerpt(matched)!r}"
        if rule.action == "score":
            return Verdict(Action.CONTINUE, "content", rule=rule.id, mode=rule.mode, score=rule.score, reason=reason)
        text = rule.reply or self.replies.reply_text.format(rule=rule.id)
        return Verdict(
            Action.REJECT,
            "content",
            rule=rule.id,
            code=self.code,
            enhanced=self.enhanced,
            text=text,
            mode=rule.mode,
            score=rule.score,
            reason=reason,
        )

    def _score(self, hits: Sequence[Verdict], scratch: dict[str, Any] | None = None, internal: bool = False) -> Verdict:
        tag_at, reject_at = self._thresholds(internal)
        scored = [h for h in hits if h.score and h.rule]
        total = sum(h.score for h in scored if h.mode is Mode.ENFORCE)
        self.metrics.spam_score.observe(max(total, 0.0))
        headers = [("X-Spam-Score", f"{total:.1f}")]
        if scored:
            headers.append(("X-Spam-Report", self._report(total, scored, internal)))
        would_total = sum(h.score for h in scored)  # with every monitored rule enforced
        if any(h.mode is Mode.MONITOR for h in scored):
            would = self._outcome(would_total, internal)
            headers.append(
                ("X-Govmilter-Monitor", f"check=content rule=spam-score score={would_total:.1f} would={would}")
            )
            if scratch is not None:  # the decision line and `govmilter scan` say it too
                scratch["monitor_score"] = (round(would_total, 1), would)
        if total >= reject_at:
            top = sorted((h for h in scored if h.mode is Mode.ENFORCE), key=lambda h: -h.score)[:5]
            names = ", ".join(f"{h.check}/{h.rule}" for h in top)
            # an outside sender reads no internal rule ids unless the operator's text names {rules}
            template = self.replies.reply_text_spam if internal else self.replies.reply_text_spam_inbound
            return Verdict(
                Action.REJECT,
                "content",
                rule="spam-score",
                code=self.code,
                enhanced=self.enhanced,
                text=template.format(score=f"{total:.1f}", threshold=f"{reject_at:.1f}", rules=names),
                score=0.0,
                reason=f"score {total:.1f} >= reject threshold {reject_at:.1f}",
                headers=tuple(headers),
            )
        if total >= tag_at:
            headers.insert(0, ("X-Spam-Flag", "YES"))
            return Verdict(
                Action.CONTINUE,
                "content",
                rule="spam-tag",
                reason=f"score {total:.1f} >= tag threshold {tag_at:.1f}",
                headers=tuple(headers),
            )
        return Verdict(Action.CONTINUE, "content", reason=f"score {total:.1f}", headers=tuple(headers))

    def _thresholds(self, internal: bool) -> tuple[float, float]:
        """(tag, reject) thresholds: [content] outbound_* for outbound mail."""
        if internal:
            return self.outbound_tag_threshold, self.outbound_reject_threshold
        return self.tag_threshold, self.reject_threshold

    def _outcome(self, total: float, internal: bool = False) -> str:
        """What a score gets: reject, tag or accept."""
        tag_at, reject_at = self._thresholds(internal)
        if total >= reject_at:
            return "reject"
        return "tag" if total >= tag_at else "accept"

    def _report(self, total: float, scored: Sequence[Verdict], internal: bool = False) -> str:
        tag_at, reject_at = self._thresholds(internal)
        items = [f"{h.check}/{h.rule}={h.score:g}" + ("(monitor)" if h.mode is Mode.MONITOR else "") for h in scored]
        report = f"score={total:.1f} tag={tag_at:g} reject={reject_at:g} rules: " + " ".join(
            items
        )
        return report if len(report) <= REPORT_LIMIT else report[: REPORT_LIMIT - 3] + "..."


def _excerpt(text: str, limit: int = 60) -> str:
    text = _UNSAFE.sub(" ", text)
    return text if len(text) <= limit else text[:limit] + "..."


def build(config: Config, metrics: Metrics) -> ContentCheck:
    return ContentCheck(config, metrics)
