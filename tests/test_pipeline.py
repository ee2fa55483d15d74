"""The pipeline mechanism: order, stages, monitor mode, errors become 451, timing."""

from __future__ import annotations

from collections.abc import Sequence

from govmilter.checks import CheckHooks
from govmilter.metrics import Metrics
from govmilter.model import Action, Envelope, Mode, Stage, Transaction, Verdict
from govmilter.pipeline import CHECK_TABLE, Pipeline
from govmilter.ruleset import EMPTY


class Recording(CheckHooks):
    def __init__(self, name: str, stages: set[Stage], verdicts: Sequence[Verdict] = (), log: list[str] | None = None):
        self.name = name
        self.stages = frozenset(stages)
        self.verdicts = list(verdicts)
        self.log = log if log is not None else []

    def run(self, stage: Stage, tx: Transaction) -> Sequence[Verdict]:
        self.log.append(f"{self.name}@{stage.value}")
        return self.verdicts


def tx() -> Transaction:
    return Transaction(envelope=Envelope(client_ip="127.0.0.2"), ruleset=EMPTY)


def reject(check: str, mode: Mode = Mode.ENFORCE) -> Verdict:
    return Verdict(Action.REJECT, check, rule="r1", code="550", enhanced="5.7.1", text="no", mode=mode)


def test_checks_run_in_table_order_and_only_at_their_stages() -> None:
    log: list[str] = []
    first = Recording("first", {Stage.MAIL, Stage.EOM}, log=log)
    second = Recording("second", {Stage.EOM}, log=log)
    pipeline = Pipeline([first, second], Metrics())
    t = tx()
    assert pipeline.run(Stage.MAIL, t) is None
    assert pipeline.run(Stage.EOM, t) is None
    assert log == ["first@mail", "first@eom", "second@eom"]
    assert pipeline.needs(Stage.MAIL) and not pipeline.needs(Stage.RCPT)


def test_enforced_refusal_stops_the_stage() -> None:
    log: list[str] = []
    pipeline = Pipeline(
        [Recording("a", {Stage.EOM}, [reject("a")], log), Recording("b", {Stage.EOM}, log=log)], Metrics()
    )
    verdict = pipeline.run(Stage.EOM, tx())
    assert verdict is not None and verdict.check == "a"
    assert log == ["a@eom"]


def test_monitor_verdict_is_recorded_but_never_refuses() -> None:
    metrics = Metrics()
    pipeline = Pipeline([Recording("a", {Stage.EOM}, [reject("a", Mode.MONITOR)])], metrics)
    t = tx()
    assert pipeline.run(Stage.EOM, t) is None
    assert t.hits[0].mode is Mode.MONITOR
    assert metrics.rule_hits.labels(check="a", rule="r1", mode="monitor")._value.get() == 1


def test_exception_in_a_check_becomes_its_451_and_is_counted() -> None:
    class Broken(CheckHooks):
        name = "broken"
        stages = frozenset({Stage.HEADERS})

        def run(self, stage: Stage, tx: Transaction) -> Sequence[Verdict]:
            raise KeyError("x")

    metrics = Metrics()
    verdict = Pipeline([Broken()], metrics).run(Stage.HEADERS, tx())
    assert verdict is not None
    assert (verdict.action, verdict.code, verdict.enhanced) == (Action.TEMPFAIL, "451", "4.3.0")
    assert verdict.check == "broken"
    assert metrics.internal_errors.labels(where="broken")._value.get() == 1


def test_durations_are_recorded_per_check() -> None:
    t = tx()
    Pipeline([Recording("a", {Stage.EOM})], Metrics()).run(Stage.EOM, t)
    assert set(t.scratch["durations"]) == {"a"}


def test_check_table_keeps_the_documented_order() -> None:
    order = ["forwarding", "size", "attachments", "antivirus", "dnsbl", "auth", "impersonation", "content"]
    order += ["ratelimit", "dkim"]
    # exactly this table: a check removed, added or moved must update this list (and docs/design.md)
    assert [spec.name for spec in CHECK_TABLE] == order


def test_headers_only_this_gateway_may_set_are_found_last_first() -> None:
    from govmilter.decision import forged_headers

    t = tx()
    t.headers = [
        ("Subject", "x"),
        ("X-Spam-Flag", "NO"),
        ("X-Virus-Scanned", "clean, trust me"),
        ("x-spam-flag", "NO"),
        ("X-Govmilter", "forged"),
        ("X-Spamming", "not ours"),
    ]
    assert forged_headers(t) == [("X-Govmilter", 1), ("x-spam-flag", 2), ("X-Virus-Scanned", 1), ("X-Spam-Flag", 1)]
