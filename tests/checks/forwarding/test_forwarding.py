"""The forwarding check through the pipeline, on the stored messages and their envelopes.

Each tests/messages/forwarding/NAME.eml has NAME.env.toml: the envelope (mail_from,
rcpts, client_ip, auth_user), the expected action, the forwarding rule id expected
among the hits, the set it belongs to (forward, pass, exemption) and optionally a
message delivered before it (preceded_by), for the Message-ID memory.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from govmilter.model import Action, Mode
from govmilter.offline import ScanResult
from govmilter.pipeline import CHECK_NAMES
from support.harness import MESSAGES, RULES, Harness

CORPUS = MESSAGES / "forwarding"
ONLY_FORWARDING = [name for name in CHECK_NAMES if name != "forwarding"]
ALLOW_ENTRY = """
[[allow]]
id = "nhat-ky-luu-tru"
description = "Journal copies to the archive service"
recipients = ["archive-partner.example.net"]
"""


@dataclass(frozen=True)
class Case:
    name: str
    description: str
    set: str
    mail_from: str
    rcpts: tuple[str, ...]
    client_ip: str
    auth_user: str
    expect: str
    rule: str
    preceded_by: str

    @property
    def path(self) -> Path:
        return CORPUS / f"{self.name}.eml"


def load_case(name: str) -> Case:
    data = tomllib.loads((CORPUS / f"{name}.env.toml").read_text(encoding="utf-8"))
    return Case(
        name=name,
        description=data["description"],
        set=data["set"],
        mail_from=data["mail_from"],
        rcpts=tuple(data["rcpts"]),
        client_ip=data["client_ip"],
        auth_user=data.get("auth_user", ""),
        expect=data["expect"],
        rule=data.get("rule", ""),
        preceded_by=data.get("preceded_by", ""),
    )


CASES = [load_case(p.name.removesuffix(".eml")) for p in sorted(CORPUS.glob("*.eml"))]


def rules_dir(tmp: Path, mode: str = "enforce", extra: str = ALLOW_ENTRY) -> Path:
    """The shipped forwarding rules, with the mode set and an allow entry added."""
    text = (RULES / "forwarding.toml").read_text(encoding="utf-8")
    assert 'mode = "enforce"' in text
    (tmp / "forwarding.toml").write_text(text.replace('mode = "enforce"', f'mode = "{mode}"') + extra)
    return tmp


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    return Harness(skip=ONLY_FORWARDING, rules_dir=rules_dir(tmp_path))


def scan(harness: Harness, case: Case) -> ScanResult:
    return harness.scan(
        case.path,
        mail_from=case.mail_from,
        rcpts=case.rcpts,
        client_ip=case.client_ip,
        auth_user=case.auth_user,
    )


def run_case(harness: Harness, case: Case) -> ScanResult:
    if case.preceded_by:
        before = scan(harness, load_case(case.preceded_by))
        assert before.verdict.action is Action.ACCEPT, f"{case.preceded_by} must be accepted first"
    return scan(harness, case)


def forwarding_rules(result: ScanResult) -> list[str]:
    return [hit.rule for hit in result.tx.hits if hit.check == "forwarding"]


def test_the_corpus_is_complete() -> None:
    assert len(CASES) >= 30
    sets = {case.set for case in CASES}
    assert sets == {"forward", "pass", "exemption"}
    rules = {case.rule for case in CASES}
    traces = [
        "sieve-redirect",
        "zimbra-forwarded",
        "exchange-rules-loop",
        "gmail-forwarded",
        "gmail-caf",
        "srs",
        "exchange-srs",
        "delivered-to",
        "score",
    ]
    for trace in traces:
        assert f"outbound-{trace}" in rules and f"inbound-{trace}" in rules, trace
    for outbound_only in ("exchange-autoforwarded", "relay-inference", "message-id-memory"):
        assert f"outbound-{outbound_only}" in rules
    assert "score-exchange-autoforwarded" in rules  # the same header from outside only scores
    for exempt in ("exempt-null-sender", "exempt-dsn", "exempt-auto-reply", "exempt-mailing-list"):
        assert exempt in rules, exempt
    for name in ("ex-batv-inbound", "ex-batv-outbound", "ex-auth-new", "ex-auth-manual-redirect"):
        assert any(case.name == name for case in CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_message(harness: Harness, case: Case) -> None:
    result = run_case(harness, case)
    found = forwarding_rules(result)
    if case.expect == "reject":
        assert result.verdict.action is Action.REJECT, (case.description, result.as_json())
        assert result.verdict.check == "forwarding"
        assert result.verdict.rule == case.rule
        assert result.verdict.code == "550" and result.verdict.enhanced == "5.7.520"
        wanted = "to non-government" if case.rule.startswith("outbound-") else "from non-government"
        assert wanted in result.verdict.text
        assert result.verdict.text.isascii() and "%" not in result.verdict.text
    else:
        assert result.verdict.action is Action.ACCEPT, (case.description, result.as_json())
        assert not any(hit.refuses for hit in result.tx.hits)
    if case.rule:
        assert case.rule in found, (case.description, found)


def exemption_cases() -> Iterator[Case]:
    return (case for case in CASES if case.set == "exemption")


def test_zero_false_positives_on_the_exemption_set(tmp_path: Path) -> None:
    """Even in monitor mode nothing of the exemption set would have been refused."""
    harness = Harness(skip=ONLY_FORWARDING, rules_dir=rules_dir(tmp_path, mode="monitor"))
    cases = list(exemption_cases())
    assert len(cases) >= 12
    for case in cases:
        result = run_case(harness, case)
        would = [hit for hit in result.tx.hits if hit.action is Action.REJECT]
        assert not would, (case.name, result.as_json())
        assert not any(name == "X-Govmilter-Forwarding" for name, _ in result.verdict.headers)
    counted = [
        sample
        for metric in harness.metrics.registry.collect()
        if metric.name == "govmilter_forwarding_detected"
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.value
    ]
    assert counted == []


def test_monitor_mode_accepts_tags_and_counts(tmp_path: Path) -> None:
    harness = Harness(skip=ONLY_FORWARDING, rules_dir=rules_dir(tmp_path, mode="monitor"))
    case = load_case("out-srs0")
    result = run_case(harness, case)
    assert result.verdict.action is Action.ACCEPT
    (hit,) = [h for h in result.tx.hits if h.check == "forwarding"]
    assert hit.mode is Mode.MONITOR and hit.action is Action.REJECT and hit.rule == "outbound-srs"
    headers = dict(result.verdict.headers)
    assert headers["X-Govmilter-Forwarding"] == (
        "direction=outbound; trace=srs; forwarder=bacninh.gov.vn; class=local; action=monitor"
    )
    assert headers["X-Govmilter-Monitor"] == "check=forwarding rule=outbound-srs would=reject"
    value = harness.metrics.registry.get_sample_value(
        "govmilter_forwarding_detected_total", {"direction": "outbound", "trace": "srs", "action": "monitor"}
    )
    assert value == 1.0


def test_enforce_counts_by_direction_trace_action(harness: Harness) -> None:
    for name in ("in-srs0", "in-srs1", "out-relay-inference"):
        run_case(harness, load_case(name))
    sample = harness.metrics.registry.get_sample_value
    assert (
        sample("govmilter_forwarding_detected_total", {"direction": "inbound", "trace": "srs", "action": "reject"}) == 2
    )
    assert (
        sample(
            "govmilter_forwarding_detected_total",
            {"direction": "outbound", "trace": "relay-inference", "action": "reject"},
        )
        == 1
    )


def test_allowed_forward_is_tagged_and_counted(harness: Harness) -> None:
    result = run_case(harness, load_case("out-allow-listed"))
    assert result.verdict.action is Action.ACCEPT
    headers = dict(result.verdict.headers)
    assert headers["X-Govmilter-Forwarding"].endswith("allowed=nhat-ky-luu-tru")
    assert "trace=relay-inference" in headers["X-Govmilter-Forwarding"]
    sample = harness.metrics.registry.get_sample_value
    labels = {"direction": "outbound", "trace": "relay-inference", "action": "allowed"}
    assert sample("govmilter_forwarding_detected_total", labels) == 1


def test_allow_list_needs_every_forbidden_recipient(harness: Harness) -> None:
    case = load_case("out-allow-listed")
    result = harness.scan(
        case.path,
        mail_from=case.mail_from,
        rcpts=["journal@archive-partner.example.net", "someone@gmail.com"],
        client_ip=case.client_ip,
    )
    assert result.verdict.action is Action.REJECT and result.verdict.rule == "outbound-relay-inference"


def test_allow_by_forwarder_and_sender(tmp_path: Path) -> None:
    extra = """
[[allow]]
id = "ung-dung-dvc"
forwarders = ["forwarder.example.net"]
senders = ["partner@example.com"]
"""
    harness = Harness(skip=ONLY_FORWARDING, rules_dir=rules_dir(tmp_path, extra=extra))
    # the SRS original sender is partner@example.com and the forwarder is forwarder.example.net
    assert run_case(harness, load_case("in-srs0")).verdict.action is Action.ACCEPT
    # another forwarder is not covered
    assert run_case(harness, load_case("in-srs1")).verdict.action is Action.REJECT


def test_forwarder_class_decides_not_header_from(harness: Harness) -> None:
    """A government From header does not make a non-government forwarder's forward legal."""
    message = (
        b"From: Van thu <vanthu@hanoi.gov.vn>\r\nTo: a@bacninh.gov.vn\r\nSubject: x\r\n"
        b"Message-ID: <m1@hanoi.gov.vn>\r\n\r\nbody\r\n"
    )
    result = harness.scan(
        message, mail_from="SRS0=ab=TT=hanoi.gov.vn=vanthu@relay.example.com", rcpts=["a@bacninh.gov.vn"]
    )
    assert result.verdict.rule == "inbound-srs"
    # and a non-government From forwarded by a government mailbox to a government one passes
    result = harness.scan(
        message.replace(b"vanthu@hanoi.gov.vn", b"x@gmail.com"),
        mail_from="SRS0=ab=TT=gmail.com=x@hanoi.gov.vn",
        rcpts=["a@bacninh.gov.vn"],
    )
    assert result.verdict.action is Action.ACCEPT


def test_mixed_recipients_outbound_refuses_the_message(harness: Harness) -> None:
    case = load_case("out-srs0")
    result = harness.scan(
        case.path, mail_from=case.mail_from, rcpts=["vanthu@hanoi.gov.vn", "x@gmail.com"], client_ip="127.0.0.1"
    )
    assert result.verdict.rule == "outbound-srs"
    only_gov = harness.scan(case.path, mail_from=case.mail_from, rcpts=["vanthu@hanoi.gov.vn"], client_ip="127.0.0.1")
    assert only_gov.verdict.action is Action.ACCEPT


def test_neither_direction_is_not_judged(harness: Harness) -> None:
    case = load_case("in-srs0")
    # an Internet client relaying to an outside address: Postfix refuses relaying; nothing to judge here
    result = harness.scan(case.path, mail_from=case.mail_from, rcpts=["x@gmail.com"], client_ip="127.0.0.9")
    assert forwarding_rules(result) == []
    # internal mail between local mailboxes
    result = harness.scan(case.path, mail_from=case.mail_from, rcpts=["a@bacninh.gov.vn"], client_ip="127.0.0.1")
    assert forwarding_rules(result) == []


def test_memory_only_remembers_accepted_inbound(harness: Harness) -> None:
    inbound = load_case("in-plain-gmail")
    outbound = load_case("out-message-id-memory")
    # without the inbound delivery the same outbound message is a new authenticated message
    assert scan(harness, outbound).verdict.action is Action.ACCEPT
    # an outbound copy does not teach the memory anything
    assert scan(harness, outbound).verdict.action is Action.ACCEPT
    assert scan(harness, inbound).verdict.action is Action.ACCEPT
    result = scan(harness, outbound)
    assert result.verdict.rule == "outbound-message-id-memory"
    assert "nguyenvana@bacninh.gov.vn" in result.verdict.reason


def test_score_threshold_zero_turns_scoring_off(tmp_path: Path) -> None:
    text = (
        (RULES / "forwarding.toml").read_text(encoding="utf-8").replace("score_threshold = 5.0", "score_threshold = 0")
    )
    (tmp_path / "forwarding.toml").write_text(text)
    harness = Harness(skip=ONLY_FORWARDING, rules_dir=tmp_path)
    result = run_case(harness, load_case("out-score"))
    assert result.verdict.action is Action.ACCEPT
    assert "score-received-for" in forwarding_rules(result)


def test_reply_text_comes_from_config(tmp_path: Path) -> None:
    harness = Harness(
        overrides=['forwarding.reply_code="554"', 'forwarding.reply_text="Cam chuyen tiep - no forwarding"'],
        skip=ONLY_FORWARDING,
        rules_dir=rules_dir(tmp_path),
    )
    result = run_case(harness, load_case("out-srs0"))
    assert result.verdict.smtp_reply() == "554 5.7.520 Cam chuyen tiep - no forwarding"


def test_bad_reply_text_is_refused_at_build() -> None:
    with pytest.raises(ValueError, match="reply_text"):
        Harness(overrides=['forwarding.reply_text="100% cam"'], skip=ONLY_FORWARDING)


def test_hostile_values_stay_out_of_the_header(tmp_path: Path) -> None:
    harness = Harness(skip=ONLY_FORWARDING, rules_dir=rules_dir(tmp_path, mode="monitor"))
    message = (
        "X-Sieve-Redirected-From: bö\x01se@exämple.com\r\nFrom: a@b.c\r\nMessage-ID: <m2@b.c>\r\n\r\nbody\r\n"
    ).encode()
    result = harness.scan(message, mail_from="a@b.c", rcpts=["a@bacninh.gov.vn"])
    value = dict(result.verdict.headers)["X-Govmilter-Forwarding"]
    assert value.isascii() and "\x01" not in value and "trace=sieve-redirect" in value


def test_garbage_headers_never_raise(harness: Harness) -> None:
    message = (
        b"X-Sieve-Redirected-From: <<<@@@>>>\r\nX-Zimbra-Forwarded: \r\nX-Forwarded-For: @\r\n"
        b'Delivered-To: \xff\xfe@\xff\r\nReceived: for <\r\nMessage-ID: <>\r\nFrom: "unterminated\r\n'
        b"Auto-Submitted: (((\r\nContent-Type: multipart/\r\n\r\nbody\r\n"
    )
    for mail_from in ("SRS0=@", "a+caf_=@gmail.com", "+SRS=", "@", "x@[1.2.3.4]", "prvs=="):
        for client in ("127.0.0.1", "127.0.0.2"):
            result = harness.scan(
                message, mail_from=mail_from, rcpts=["a@bacninh.gov.vn", "b@gmail.com"], client_ip=client
            )
            assert result.verdict.action in (Action.ACCEPT, Action.REJECT)
            assert not any(hit.rule == "internal-error" for hit in result.tx.hits)


def test_forwarding_evidence_does_not_feed_the_spam_score(tmp_path: Path) -> None:
    """Weak forwarding evidence is weighed by the forwarding check alone, never by the content score."""
    harness = Harness(skip=["size", "antivirus", "dnsbl", "attachments"], rules_dir=rules_dir(tmp_path))
    result = run_case(harness, load_case("out-weak-only"))
    weak = [hit for hit in result.tx.hits if hit.check == "forwarding"]
    assert [hit.rule for hit in weak] == ["score-resent", "score-arc"]
    assert all(hit.score == 0 for hit in weak) and "weight 1 of 5" in weak[0].reason
    assert dict(result.verdict.headers)["X-Spam-Score"] == "0.0"
