"""The ratelimit check: defer a message whose account (or client, or domain) is over its limit.

It decides at end of message, after the content check and before DKIM signing, because there
  - every recipient is known: a message is deferred whole (451 4.7.1, the mailbox server keeps
    it queued and retries) instead of being split into accepted and deferred recipients at RCPT;
  - every check that refuses has already run, so only messages that are going to be accepted
    take tokens (a message refused for a virus or a forward does not use up the account's
    limit); the take is atomic with the test, one round trip to Redis;
  - the content check's verdict is known: an outbound message judged spam (tagged or refused)
    counts `[ratelimit] spam_factor` times per recipient. A refused one is charged through the
    pipeline's `refused` hook, since no check after the refusal runs.
At the limit the subject is marked over its limit for `[ratelimit] over_limit_seconds` (the
gauge, `govmilter ratelimit status`), a log line and the metric say so; past a limit's
`hold_after` it is held until `govmilter ratelimit release SUBJECT`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence

from govmilter.checks import CheckHooks
from govmilter.checks.ratelimit.buckets import Buckets, Charge, LocalBuckets, RedisBuckets
from govmilter.checks.ratelimit.rules import (
    RULE_KIND,
    SCHEMA,
    Limit,
    RatelimitRules,
    compile_rules,
    normal_subject,
)
from govmilter.clients.redis import RedisScripts
from govmilter.config import Config, RatelimitConfig
from govmilter.domains import Domains
from govmilter.logfmt import fields
from govmilter.metrics import Metrics
from govmilter.model import Action, Envelope, Mode, Stage, Transaction, Verdict

__all__ = ["RULE_KIND", "SCHEMA", "RatelimitCheck", "build", "compile_rules", "subject_of"]

log = logging.getLogger("govmilter.ratelimit")

SPAM_RULES = ("spam-tag", "spam-score")  # the content check's verdicts on the score


def subject_of(key: str, envelope: Envelope) -> str:
    """The value a limit's bucket is keyed by for this message; "" when the limit has none here."""
    if key == "user":
        value = envelope.auth_user
    elif key == "sender":
        value = envelope.mail_from if envelope.trusted_relay and not envelope.auth_user else ""
    elif key == "account":
        value = envelope.auth_user or (envelope.mail_from if envelope.trusted_relay else "")
    elif key == "ip":
        value = "" if envelope.trusted_relay else envelope.client_ip
    else:  # domain
        value = envelope.mail_from.rpartition("@")[2] if "@" in envelope.mail_from else ""
    return normal_subject(key, value) if value else ""


class OverMarks:
    """The subjects this node deferred in the last `seconds`, per limit: the over-limit gauge."""

    def __init__(self, seconds: float, max_entries: int, metrics: Metrics):
        self.seconds = seconds
        self.max_entries = max(1, max_entries)
        self.metrics = metrics
        self._lock = threading.Lock()
        self._marks: dict[str, dict[str, float]] = {}

    def mark(self, limit_id: str, subject: str) -> None:
        with self._lock:
            marks = self._marks.get(limit_id)
            if marks is None:
                marks = self._marks[limit_id] = {}
                self.metrics.ratelimit_over_limit.labels(rule=limit_id).set_function(lambda: self.count(limit_id))
            marks.pop(subject, None)
            marks[subject] = time.monotonic() + self.seconds
            while len(marks) > self.max_entries:
                del marks[next(iter(marks))]

    def count(self, limit_id: str) -> int:
        now = time.monotonic()
        with self._lock:
            marks = self._marks.get(limit_id, {})
            for subject in [s for s, until in marks.items() if until <= now]:
                del marks[subject]
            return len(marks)


class RatelimitCheck(CheckHooks):
    name = "ratelimit"
    stages = frozenset({Stage.EOM})

    def __init__(self, settings: RatelimitConfig, domains: Domains, metrics: Metrics, buckets: Buckets):
        self.settings = settings
        self.domains = domains
        self.metrics = metrics
        self.buckets = buckets
        self.marks = OverMarks(settings.over_limit_seconds, settings.local_max_keys, metrics)

    # --- what a message asks ---------------------------------------------------------------------

    def charges(self, rules: RatelimitRules, tx: Transaction, factor: float = 1.0) -> list[Charge]:
        envelope = tx.envelope
        internal = envelope.internal
        rcpts = {r.strip().lower() for r in envelope.rcpts if r.strip()}
        external = sum(1 for r in rcpts if not self.domains.classify(r).government)
        found: list[Charge] = []
        subjects: dict[str, str] = {}
        for limit in rules.limits:
            if not limit.applies(internal):
                continue
            if limit.key not in subjects:
                subjects[limit.key] = subject_of(limit.key, envelope)
            subject = subjects[limit.key]
            if not subject or (limit.accounts and subject not in limit.accounts):
                continue
            if any(o.replaces == limit.id and subject in o.accounts and o.applies(internal) for o in rules.limits):
                continue  # a per-account override stands in for this limit
            if limit.count == "messages":
                cost = 1.0
            else:
                cost = float(len(rcpts) if limit.count == "recipients" else external)
            if cost > 0:
                found.append(Charge(limit, subject, cost * factor))
        return found

    def spam_factor(self, tx: Transaction) -> float:
        """Recipients of an outbound message the content check judged spam count spam_factor times."""
        if not tx.envelope.internal:
            return 1.0
        for hit in tx.hits:
            if hit.check == "content" and hit.rule in SPAM_RULES and hit.mode is Mode.ENFORCE:
                return max(1.0, self.settings.spam_factor)
        return 1.0

    # --- the check ---------------------------------------------------------------------------------

    def run(self, stage: Stage, tx: Transaction) -> Sequence[Verdict]:
        rules = tx.ruleset.get(RULE_KIND)
        if not isinstance(rules, RatelimitRules) or not rules.limits:
            return []
        charges = self.charges(rules, tx)
        if not charges:
            return []
        for charge in charges:  # a message no bucket can ever hold: retrying would never help
            if charge.limit.enforced and charge.cost > charge.limit.burst:
                self.metrics.ratelimit_deferred.labels(rule=charge.limit.id, result="too-large").inc()
                return [self._too_large(charge)]
        outcome = self.buckets.charge(charges)
        factor = self.spam_factor(tx)
        if factor > 1 and outcome.denied < 0 and outcome.held < 0:
            # judged spam and passing: the rest of its weight is taken as well, even into debt
            self.buckets.charge([Charge(c.limit, c.subject, c.cost * (factor - 1)) for c in charges], force=True)
            self.metrics.ratelimit_spam_charged.inc()
        verdicts: list[Verdict] = []
        for index in outcome.would_deny:
            charge = charges[index]
            self.metrics.ratelimit_deferred.labels(rule=charge.limit.id, result="monitor").inc()
            verdicts.append(self._deferred(charge, Mode.MONITOR))
        if outcome.held >= 0:
            charge = charges[outcome.held]
            self.metrics.ratelimit_deferred.labels(rule=charge.limit.id, result="held").inc()
            self._log("held", charge, tx)
            verdicts.append(self._held(charge))
        elif outcome.denied >= 0:
            charge = charges[outcome.denied]
            self.marks.mark(charge.limit.id, charge.subject)
            self.metrics.ratelimit_deferred.labels(rule=charge.limit.id, result="limit").inc()
            self._log("over-limit", charge, tx, outcome.over, outcome.tokens[outcome.denied])
            if outcome.newly_held:
                self._log("hold-set", charge, tx, outcome.over)
            verdicts.append(self._deferred(charge, Mode.ENFORCE))
        return verdicts

    def refused(self, tx: Transaction, verdict: Verdict) -> None:
        """An outbound message refused as spam still counts against the account (spam_factor per recipient)."""
        if verdict.check != "content" or verdict.rule != "spam-score" or not tx.envelope.internal:
            return
        rules = tx.ruleset.get(RULE_KIND)
        if not isinstance(rules, RatelimitRules):
            return
        charges = self.charges(rules, tx, max(1.0, self.settings.spam_factor))
        if charges:
            self.buckets.charge(charges, force=True)
            self.metrics.ratelimit_spam_charged.inc()

    def health(self) -> dict[str, object]:
        """For /health: which buckets answer; Redis away is not unhealthy (per-node limits apply)."""
        return {"ok": True, "buckets": self.buckets.mode, "local_buckets": len(self.buckets.local)}

    # --- answers -----------------------------------------------------------------------------------

    def _log(self, event: str, charge: Charge, tx: Transaction, over: float = 0.0, tokens: float = math.nan) -> None:
        pairs = [
            ("event", event),
            ("limit", charge.limit.id),
            ("key", charge.limit.key),
            ("subject", charge.subject),
            ("cost", f"{charge.cost:g}"),
            ("queue_id", tx.envelope.queue_id or "-"),
            ("buckets", self.buckets.mode),
        ]
        if over:
            pairs.append(("deferred_while_over", f"{over:g}"))
        if not math.isnan(tokens):
            pairs.append(("tokens", f"{tokens:.1f}"))
        log.warning("ratelimit %s", fields(pairs))

    def _words(self, limit: Limit) -> dict[str, str]:
        what_vi, what_en = limit.describe()
        return {"limit": limit.id, "what_vi": what_vi, "what_en": what_en}

    def _deferred(self, charge: Charge, mode: Mode) -> Verdict:
        limit = charge.limit
        return Verdict(
            Action.TEMPFAIL,
            "ratelimit",
            rule=limit.id,
            code="451",
            enhanced="4.7.1",
            text=self.settings.reply_text.format(**self._words(limit)),
            mode=mode,
            reason=f"{limit.key} over the limit {limit.id} ({limit.describe()[1]}, burst {limit.burst:g})",
        )

    def _held(self, charge: Charge) -> Verdict:
        limit = charge.limit
        return Verdict(
            Action.TEMPFAIL,
            "ratelimit",
            rule=limit.id,
            code="451",
            enhanced="4.7.1",
            text=self.settings.reply_text_held.format(**self._words(limit)),
            reason=f"{limit.key} held after the limit {limit.id}: until `govmilter ratelimit release`",
        )

    def _too_large(self, charge: Charge) -> Verdict:
        limit = charge.limit
        return Verdict(
            Action.REJECT,
            "ratelimit",
            rule=limit.id,
            code="550",
            enhanced="5.5.3",
            text=self.settings.reply_text_too_large.format(**self._words(limit), burst=f"{limit.burst:g}"),
            reason=f"counts {charge.cost:g}, more than the burst {limit.burst:g} of {limit.id}",
        )


def build_buckets(config: Config, metrics: Metrics) -> Buckets:
    settings = config.ratelimit
    local = LocalBuckets(settings.local_max_keys, settings.over_limit_seconds, settings.hold_seconds, metrics)
    shared = None
    if settings.redis_url:
        scripts = RedisScripts(settings.redis_url, settings.redis_timeout, settings.redis_prefix)
        shared = RedisBuckets(scripts, settings.over_limit_seconds, settings.hold_seconds)
    return Buckets(local, metrics, shared, settings.redis_retry_interval)


def build(config: Config, metrics: Metrics) -> RatelimitCheck:
    domains = Domains.from_names(config.domains.local, config.domains.government)
    return RatelimitCheck(config.ratelimit, domains, metrics, build_buckets(config, metrics))
