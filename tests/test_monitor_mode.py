"""[milter] monitor: every check in monitor mode, through the daemon's pipeline on real messages.

Would-be refusals are accepted, recorded with mode="monitor", tagged X-Govmilter-Monitor and
written in the decision line (monitor=, would=); our own errors still answer 451.
"""

from __future__ import annotations

from collections.abc import Sequence

from govmilter import decision
from govmilter.checks import CheckHooks
from govmilter.metrics import Metrics
from govmilter.model import Action, Envelope, Mode, RuleSet, Stage, Transaction, Verdict
from govmilter.pipeline import Pipeline
from support.harness import MESSAGES, Harness

SERVICES = ["antivirus", "dnsbl"]
SRS_FORWARD = MESSAGES / "forwarding" / "out-srs0.eml"
SRS_SENDER = "SRS0=hK3f=TT=example.com=partner@bacninh.gov.vn"
EXE = (
    b"From: a@example.com\r\nTo: user@bacninh.gov.vn\r\nSubject: invoice\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n'
    b'--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename="hoadon.exe"\r\n'
    b"Content-Transfer-Encoding: base64\r\n\r\n"
    b"TVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAgAAAAA==\r\n--b--\r\n"
)


def test_enforcing_by_default_the_forward_is_refused() -> None:
    result = Harness(skip=SERVICES).scan(SRS_FORWARD, mail_from=SRS_SENDER, rcpts=["ban.cua.a@gmail.com"],
                                         client_ip="127.0.0.1")  # fmt: skip
    assert result.verdict.action is Action.REJECT and result.verdict.code == "550"


def test_in_monitor_mode_the_forward_and_the_executable_are_accepted_tagged_and_logged() -> None:
    harness = Harness(["milter.monitor=true"], skip=SERVICES)
    forward = harness.scan(SRS_FORWARD, mail_from=SRS_SENDER, rcpts=["ban.cua.a@gmail.com"], client_ip="127.0.0.1")
    assert forward.verdict.action is Action.ACCEPT
    hit = next(h for h in forward.tx.hits if h.check == "forwarding" and h.action is Action.REJECT)
    assert hit.mode is Mode.MONITOR and hit.rule == "outbound-srs"
    headers = dict(forward.verdict.headers)
    assert headers["X-Govmilter-Monitor"] == "check=forwarding rule=outbound-srs would=reject"
    line = decision.log_line(forward.tx, forward.verdict)
    assert "action=accept" in line and "monitor=forwarding/outbound-srs" in line and "would=reject:550:5.7.520" in line
    sample = harness.metrics.registry.get_sample_value
    assert sample("govmilter_rule_hits_total", {"check": "forwarding", "rule": "outbound-srs", "mode": "monitor"}) == 1
    assert sample("govmilter_messages_total", {"action": "accept", "check": "none"}) == 1
    exe = harness.scan(EXE)
    assert exe.verdict.action is Action.ACCEPT
    assert any(h.check == "attachments" and h.mode is Mode.MONITOR and h.action is Action.REJECT for h in exe.tx.hits)


def test_in_monitor_mode_a_message_past_the_raw_ceiling_is_recorded_once_and_accepted() -> None:
    harness = Harness(["milter.monitor=true", "size.raw_ceiling=4096", "milter.spool_threshold=1024"], skip=SERVICES)
    body = b"".join(b"line %06d of a long text that goes past the ceiling\r\n" % i for i in range(2000))
    result = harness.scan(b"From: a@example.com\r\nSubject: big\r\n\r\n" + body)
    assert result.verdict.action is Action.ACCEPT
    raw = [h for h in result.tx.hits if h.check == "size" and h.rule == "raw-size"]
    assert len(raw) == 1 and raw[0].mode is Mode.MONITOR


class Broken(CheckHooks):
    name = "broken"
    stages = frozenset({Stage.EOM})

    def run(self, stage: Stage, tx: Transaction) -> Sequence[Verdict]:
        raise KeyError("a bug of ours")


def test_in_monitor_mode_our_own_bug_still_answers_451() -> None:
    tx = Transaction(envelope=Envelope(client_ip="203.0.113.5"), ruleset=RuleSet("v1"))
    verdict = Pipeline([Broken()], Metrics(), monitor=True).run(Stage.EOM, tx)
    assert verdict is not None and verdict.refuses
    assert (verdict.action, verdict.code, verdict.rule) == (Action.TEMPFAIL, "451", "internal-error")
