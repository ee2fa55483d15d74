"""The ordered table of checks and the loop that runs them at each stage.

A check is an object with a `name`, the `stages` it runs at and a
`run(stage, tx) -> Sequence[Verdict]` method, and hooks (checks.CheckHooks
has them as no-ops): `accepted(tx)`, called once the message is accepted (the
forwarding memory uses it), `refused(tx, verdict)`, called on an enforced refusal
(the rate limits count outbound spam), and `health()`, what /health reports. An
exception inside a check becomes that check's 451 verdict: our own bug never
accepts and never answers 5xx.

With `monitor` on ([milter] monitor, a burn-in) every enforced refusal a check returns
becomes its monitor form: recorded, counted with mode="monitor", logged and tagged
(decision.py), and the message goes on to the next checks; only our own errors (rule
internal-error) still refuse.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from govmilter.checks import CheckHooks, attachments, dnsbl, size
from govmilter.checks.antivirus import check as antivirus
from govmilter.checks.auth import check as auth
from govmilter.checks.auth import signing
from govmilter.checks.content import check as content
from govmilter.checks.forwarding import check as forwarding
from govmilter.checks.impersonation import check as impersonation
from govmilter.checks.ratelimit import check as ratelimit
from govmilter.config import Config
from govmilter.metrics import Metrics
from govmilter.model import INTERNAL_ERROR, Mode, Stage, Transaction, Verdict, tempfail
from govmilter.ruleset import Compiler
from govmilter.ruleset.schema import Schema

log = logging.getLogger("govmilter.pipeline")


class Check(Protocol):
    name: str
    stages: frozenset[Stage]

    def run(self, stage: Stage, tx: Transaction) -> Sequence[Verdict]: ...

    def accepted(self, tx: Transaction) -> None: ...

    def health(self) -> dict[str, object] | None: ...


class Builder(Protocol):
    def __call__(self, config: Config, metrics: Metrics) -> Check: ...


@dataclass(frozen=True)
class CheckSpec:
    name: str
    build: Builder
    rule_kind: str | None = None  # the kind of rule file this check compiles
    compile_rules: Compiler | None = None
    rule_schema: Schema | None = None  # its keys: name, type, default, meaning


# The order in which checks run within a stage. Cheap, decisive checks first.
CHECK_TABLE: tuple[CheckSpec, ...] = (
    CheckSpec("forwarding", forwarding.build, forwarding.RULE_KIND, forwarding.compile_rules, forwarding.SCHEMA),
    CheckSpec("size", size.build),
    CheckSpec("attachments", attachments.build, attachments.RULE_KIND, attachments.compile_rules, attachments.SCHEMA),
    CheckSpec("antivirus", antivirus.build),
    CheckSpec("dnsbl", dnsbl.build, dnsbl.RULE_KIND, dnsbl.compile_rules, dnsbl.SCHEMA),
    # before content: the weights of its results join the spam score
    CheckSpec("auth", auth.build, auth.RULE_KIND, auth.compile_rules, auth.SCHEMA),
    # after auth (it reads its DMARC/SPF/DKIM summary), before content (its scores join the spam score)
    CheckSpec(
        "impersonation", impersonation.build, impersonation.RULE_KIND, impersonation.compile_rules, impersonation.SCHEMA
    ),
    CheckSpec("content", content.build, content.RULE_KIND, content.compile_rules, content.SCHEMA),
    # after every check that refuses: only messages about to be accepted take tokens, and an outbound
    # spam verdict of content counts against the account (checks/ratelimit/check.py says why at EOM)
    CheckSpec("ratelimit", ratelimit.build, ratelimit.RULE_KIND, ratelimit.compile_rules, ratelimit.SCHEMA),
    # last: the outbound DKIM-Signature is made only once every other check has accepted the message
    CheckSpec("dkim", signing.build),
)

CHECK_NAMES = tuple(spec.name for spec in CHECK_TABLE)


def rule_compilers() -> dict[str, Compiler]:
    """Each check module that owns a kind of rule file contributes its compiler."""
    return {spec.rule_kind: spec.compile_rules for spec in CHECK_TABLE if spec.rule_kind and spec.compile_rules}


def rule_schemas() -> dict[str, Schema]:
    """The declared keys of each kind of rule file, by kind."""
    return {spec.rule_kind: spec.rule_schema for spec in CHECK_TABLE if spec.rule_kind and spec.rule_schema}


def build_checks(config: Config, metrics: Metrics, skip: Iterable[str] = ()) -> list[Check]:
    skipped = set(skip)
    unknown = skipped - set(CHECK_NAMES)
    if unknown:
        raise ValueError(f"unknown check(s): {', '.join(sorted(unknown))}; known: {', '.join(CHECK_NAMES)}")
    checks: list[Check] = []
    for spec in CHECK_TABLE:
        if spec.name in skipped or not getattr(config, spec.name).enabled:
            continue
        checks.append(spec.build(config, metrics))
    return checks


class Pipeline:
    def __init__(self, checks: Sequence[Check], metrics: Metrics, monitor: bool = False):
        self.checks = tuple(checks)
        self.metrics = metrics
        self.monitor = monitor  # [milter] monitor: every policy refusal is recorded, none is made
        self._by_stage: Mapping[Stage, tuple[Check, ...]] = {
            stage: tuple(c for c in self.checks if stage in c.stages) for stage in Stage
        }
        self._durations = {c.name: metrics.check_duration.labels(check=c.name) for c in self.checks}
        # checks told of an enforced refusal (the ratelimit check counts outbound spam against the account)
        self._on_refusal = tuple(
            c for c in self.checks if getattr(type(c), "refused", CheckHooks.refused) is not CheckHooks.refused
        )

    def needs(self, stage: Stage) -> bool:
        """Whether any check runs at this stage (the adapter negotiates the rest away)."""
        return bool(self._by_stage[stage])

    def run(self, stage: Stage, tx: Transaction) -> Verdict | None:
        """Run the checks of one stage; return the first enforced refusal, else None."""
        durations: dict[str, float] = tx.scratch.setdefault("durations", {})
        for check in self._by_stage[stage]:
            started = time.perf_counter()
            try:
                found = check.run(stage, tx)
            except Exception as exc:
                log.exception("check=%s stage=%s raised", check.name, stage.value)
                self.metrics.internal_errors.labels(where=check.name).inc()
                found = [tempfail(check.name, f"internal error in {check.name}: {type(exc).__name__}")]
            elapsed = time.perf_counter() - started
            durations[check.name] = durations.get(check.name, 0.0) + elapsed
            self._durations[check.name].observe(elapsed)
            for verdict in found:
                if self.monitor and verdict.refuses and verdict.rule != INTERNAL_ERROR:
                    monitored = self._monitored(verdict, tx)
                    if monitored is None:
                        continue
                    verdict = monitored
                tx.hits.append(verdict)
                if verdict.rule:
                    self.metrics.rule_hits.labels(check=verdict.check, rule=verdict.rule, mode=verdict.mode.value).inc()
                if verdict.refuses:
                    self._refused(tx, verdict)
                    return verdict
        return None

    @staticmethod
    def _monitored(verdict: Verdict, tx: Transaction) -> Verdict | None:
        """The monitor form of a policy refusal; None when this check and rule already have one.

        A refusal that would have ended the transaction now lets it go on: a check that
        refuses at every body chunk (the raw size) is recorded once.
        """
        seen: set[tuple[str, str]] = tx.scratch.setdefault("monitored", set())
        key = (verdict.check, verdict.rule)
        if key in seen:
            return None
        seen.add(key)
        return dataclasses.replace(verdict, mode=Mode.MONITOR)

    def _refused(self, tx: Transaction, verdict: Verdict) -> None:
        """Tell the checks that care that a check refused this message."""
        for check in self._on_refusal:
            try:
                check.refused(tx, verdict)  # type: ignore[attr-defined]
            except Exception:
                log.exception("check=%s refused-hook raised", check.name)
                self.metrics.internal_errors.labels(where=check.name).inc()

    def accepted(self, tx: Transaction) -> None:
        """Tell the checks that care that this message was accepted."""
        for check in self.checks:
            try:
                check.accepted(tx)
            except Exception:
                log.exception("check=%s accepted-hook raised", check.name)
                self.metrics.internal_errors.labels(where=check.name).inc()
