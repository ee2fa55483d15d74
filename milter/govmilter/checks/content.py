"""The content check: officers' regular-expression rules, GTUBE and the spam score.

Rules of kind "content" match a header, the decoded text of the body (HTML as
the reader sees it) or attachment names, after NFC normalisation and, when a
rule asks, with the diacritics removed. A rule either adds its score or, with
`action = "reject"`, refuses the message with its own reply. The score of a
message is the sum of every enforced hit so far, the dnsbl weights included:
at `tag_threshold` the message gets X-Spam-Flag, at `reject_threshold` it is
refused. Monitor-mode hits are listed and counted but never add to the score.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from govmilter.checks.prefilter import Prefilter, fold
from govmilter.checks.prefilter import build as build_prefilter
from govmilter.checks.ruletables import Entry, entries
from govmilter.checks.textnorm import decode_header_value, html_to_text, normalize, strip_diacritics
from govmilter.config import Config
from govmilter.metrics import Metrics
from govmilter.model import Action, Mode, Stage, Transaction, Verdict
from govmilter.rules import RuleErrors, RuleFile, RuleProblem

RULE_KIND = "content"
TARGETS = ("header", "body", "attachment-name")
DIRECTIONS = ("any", "inbound", "outbound")
RULE_KEYS = frozenset(
    {
        "id",
        "description",
        "target",
        "header",
        "pattern",
        "case_sensitive",
        "ignore_diacritics",
        "direction",
        "score",
        "action",
        "mode",
        "reply",
    }
)
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
GTUBE_SCORE = 1000.0
_HEADER_NAME = re.compile(r"^[!-9;-~]{1,76}$")  # RFC 5322 field name
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]+")
REPORT_LIMIT = 900  # keep the added header within one line


@dataclass(frozen=True)
class ContentRule:
    id: str
    description: str
    target: str  # header | body | attachment-name
    headers: tuple[str, ...]  # lower-case field names, for target = header
    regex: re.Pattern[str]
    ignore_diacritics: bool
    direction: str  # any | inbound | outbound
    score: float
    action: str  # score | reject
    mode: Mode
    reply: str
    prefilter: Prefilter | None = None  # literals one of which every match contains

    def applies(self, internal: bool) -> bool:
        return self.direction == "any" or (self.direction == "outbound") == internal


@dataclass(frozen=True)
class ContentRules:
    rules: tuple[ContentRule, ...] = ()


def compile_rules(files: Sequence[RuleFile]) -> ContentRules:
    problems: list[RuleProblem] = []
    compiled: list[ContentRule] = []
    for entry in entries(files, "rule", RULE_KEYS, problems):
        before = len(problems)
        rule = _compile_rule(entry)
        if rule is not None and len(problems) == before:
            compiled.append(rule)
    if problems:
        raise RuleErrors(problems)
    return ContentRules(tuple(compiled))


def _compile_rule(entry: Entry) -> ContentRule | None:
    target = entry.choice("target", TARGETS, "body")
    headers = tuple(h.lower() for h in entry.strings("header"))
    if target == "header" and not headers:
        entry.problem("target = 'header' needs header = \"Subject\" (or a list of field names)")
    elif target != "header" and headers:
        entry.problem(f"header is only for target = 'header', not {target!r}", "header")
    for name in headers:
        if not _HEADER_NAME.match(name):
            entry.problem(f"header {name!r} is not a header field name", "header")
    ignore_diacritics = entry.flag("ignore_diacritics", False)
    case_sensitive = entry.flag("case_sensitive", False)
    source = entry.text("pattern", required=True)
    action = entry.choice("action", ("score", "reject"), "score")
    score = entry.number("score", 0.0)
    if action == "score" and score == 0:
        entry.problem("a rule with action = 'score' needs a non-zero score", "score")
    rule_reply = entry.reply()
    mode = entry.mode()
    direction = entry.choice("direction", DIRECTIONS, "any")
    description = entry.text("description")
    if not source:
        return None
    pattern = normalize(source)
    if ignore_diacritics:
        pattern = strip_diacritics(pattern)
    try:
        regex = re.compile(pattern, 0 if case_sensitive else re.IGNORECASE)
    except re.error as exc:
        entry.problem(f"pattern is not a valid regular expression: {exc}", "pattern")
        return None
    if regex.search(""):
        entry.problem("pattern matches the empty text, so it would fire on every message", "pattern")
        return None
    return ContentRule(
        id=entry.id,
        description=description,
        target=target,
        headers=headers,
        regex=regex,
        ignore_diacritics=ignore_diacritics,
        direction=direction,
        score=score,
        action=action,
        mode=mode,
        reply=rule_reply,
        prefilter=build_prefilter(regex),
    )


class _Texts:
    """The message as rules see it, prepared once per message and per variant."""

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
        facts = self.tx.facts()
        if target == "body":
            return [html_to_text(p.text) if p.content_type == "text/html" else p.text for p in facts.texts]
        names: list[str] = []
        for part in facts.parts:
            if part.filename:
                names.append(part.filename)
            names.extend(part.archive_names)
        return names


class ContentCheck:
    name = "content"
    stages = frozenset({Stage.EOM})

    def __init__(self, config: Config, metrics: Metrics):
        settings = config.content
        self.tag_threshold = settings.tag_threshold
        self.reject_threshold = settings.reject_threshold
        self.code = settings.reply_code
        self.enhanced = settings.reply_enhanced
        self.gtube = settings.gtube
        self.metrics = metrics

    def run(self, stage: Stage, tx: Transaction) -> Sequence[Verdict]:
        rules = tx.ruleset.get(RULE_KIND)
        texts = _Texts(tx)
        found: list[Verdict | None] = []
        if self.gtube and any(GTUBE in t for t in texts.get("body", "", False)):
            found.append(
                Verdict(Action.CONTINUE, "content", rule="gtube", score=GTUBE_SCORE, reason="GTUBE test string")
            )
        if isinstance(rules, ContentRules):
            internal = tx.envelope.internal
            found.extend(self._fire(rule, texts) for rule in rules.rules if rule.applies(internal))
        hits = [v for v in found if v is not None]
        refusals = [v for v in hits if v.refuses]
        if refusals:
            # every finding is recorded; the pipeline stops at the first refusal, put last
            return [v for v in hits if not v.refuses] + refusals
        return [*hits, self._score(tx.hits + hits)]

    def _fire(self, rule: ContentRule, texts: _Texts) -> Verdict | None:
        headers = rule.headers or ("",)
        for header in headers:
            candidates = texts.get(rule.target, header, rule.ignore_diacritics)
            if rule.prefilter is not None:
                folded = texts.folded(rule.target, header, rule.ignore_diacritics)
                candidates = tuple(t for t, f in zip(candidates, folded, strict=True) if rule.prefilter.may_match(t, f))
            for text in candidates:
                match = rule.regex.search(text)
                if match:
                    return self._verdict(rule, header, match.group(0))
        return None

    def _verdict(self, rule: ContentRule, header: str, matched: str) -> Verdict:
        where = f"{rule.target} {header}" if header else rule.target
        reason = f"{where} matched {_excerpt(matched)!r}"
        if rule.action == "score":
            return Verdict(Action.CONTINUE, "content", rule=rule.id, mode=rule.mode, score=rule.score, reason=reason)
        text = rule.reply or (
            f"Noi dung thu vi pham quy dinh cua he thong thu cong vu (QD 06/2022 Dieu 8)"
            f" - message refused by content rule {rule.id}"
        )
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

    def _score(self, hits: Sequence[Verdict]) -> Verdict:
        scored = [h for h in hits if h.score and h.rule]
        total = sum(h.score for h in scored if h.mode is Mode.ENFORCE)
        self.metrics.spam_score.observe(max(total, 0.0))
        headers = [("X-Spam-Score", f"{total:.1f}")]
        if scored:
            headers.append(("X-Spam-Report", self._report(total, scored)))
        if total >= self.reject_threshold:
            top = sorted((h for h in scored if h.mode is Mode.ENFORCE), key=lambda h: -h.score)[:5]
            names = ", ".join(f"{h.check}/{h.rule}" for h in top)
            return Verdict(
                Action.REJECT,
                "content",
                rule="spam-score",
                code=self.code,
                enhanced=self.enhanced,
                text=(
                    f"Thu bi tu choi vi bi danh gia la thu rac, diem {total:.1f} (QD 06/2022 Dieu 8.3, Dieu 10.2.c)"
                    f" - message refused as spam, score {total:.1f} >= {self.reject_threshold:.1f}: {names}"
                ),
                score=0.0,
                reason=f"score {total:.1f} >= reject threshold {self.reject_threshold:.1f}",
                headers=tuple(headers),
            )
        if total >= self.tag_threshold:
            headers.insert(0, ("X-Spam-Flag", "YES"))
            return Verdict(
                Action.CONTINUE,
                "content",
                rule="spam-tag",
                reason=f"score {total:.1f} >= tag threshold {self.tag_threshold:.1f}",
                headers=tuple(headers),
            )
        return Verdict(Action.CONTINUE, "content", reason=f"score {total:.1f}", headers=tuple(headers))

    def _report(self, total: float, scored: Sequence[Verdict]) -> str:
        items = [
            f"{h.check}/{h.rule}={h.score:g}" + ("(monitor)" if h.mode is Mode.MONITOR else "") for h in scored
        ]
        report = (
            f"score={total:.1f} tag={self.tag_threshold:g} reject={self.reject_threshold:g} rules: " + " ".join(items)
        )
        return report if len(report) <= REPORT_LIMIT else report[: REPORT_LIMIT - 3] + "..."


def _excerpt(text: str, limit: int = 60) -> str:
    text = _UNSAFE.sub(" ", text)
    return text if len(text) <= limit else text[:limit] + "..."


def build(config: Config, metrics: Metrics) -> ContentCheck:
    return ContentCheck(config, metrics)
