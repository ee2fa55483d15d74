"""The decision record: built once per message through the adapter, fields as sent, bounded.

Whatever the wire carries (the issue's forged MAIL FROM, control characters, quotes,
backslashes, `=`, U+2028/2029, NEL, undecodable bytes), the record holds what was sent, and
it survives the JSON of the store unchanged. Every hit of every check is in it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import Milter
import pytest

from govmilter.history.record import MAX_RCPTS, DecisionRecord, build, decode_subject
from govmilter.history.store import Query, SqliteStore
from govmilter.model import Action, Envelope, Mode, Transaction, Verdict
from govmilter.ruleset import RuleSet
from govmilter.runtime import Runtime
from support.milter_ctx import RecordingCtx, adapter_runtime, drive

FORGED_SENDER = '"x queue_id=FORGED action=accept client=10.0.0.1"@example.com'
HOSTILE = 'a\r\nqueue_id=FORGED "q" \\b\\ k=v \u2028\u2029\u0085 \x1b[31m\x00 ngày'


class Sink:
    def __init__(self) -> None:
        self.records: list[DecisionRecord] = []

    def submit(self, record: DecisionRecord) -> bool:
        self.records.append(record)
        return True


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    yield from adapter_runtime(monkeypatch)


def test_one_record_per_message_with_every_field_as_sent(runtime: Runtime) -> None:
    sink = Sink()
    runtime.history = sink  # type: ignore[assignment]
    fields = [
        ("From", f"Ke gia mao <{HOSTILE}@example.com>"),
        ("To", "user@bacninh.gov.vn"),
        ("Subject", f"Bao cao {HOSTILE}"),
        ("Message-ID", "<m1.hostile@example.com>"),
    ]
    rc = drive(RecordingCtx(), fields, b"Xin chao.\r\n", sender=FORGED_SENDER,
               rcpts=["user@bacninh.gov.vn", f"other{HOSTILE}@bacninh.gov.vn"], queue_id="4QX1")  # fmt: skip
    assert rc == Milter.ACCEPT
    [record] = sink.records
    assert record.queue_id == "4QX1"
    assert record.mail_from == FORGED_SENDER
    assert record.rcpts == ["user@bacninh.gov.vn", f"other{HOSTILE}@bacninh.gov.vn".replace("\x00", "\\x00")]
    assert record.subject == f"Bao cao {HOSTILE}".replace("\x00", "\\x00")
    assert record.message_id == "<m1.hostile@example.com>"
    assert record.client_ip == "127.0.0.3" and record.direction == "inbound"
    assert record.action == "accept" and record.check == "" and record.reply == ""
    assert record.ruleset == runtime.rules.current().version
    assert set(record.durations_ms) >= {"forwarding", "size"}
    # through the store's JSON and back: the same record
    again = DecisionRecord.from_json(json.loads(json.dumps(record.as_json(), ensure_ascii=False)))
    assert again == record


def test_attachments_are_recorded_with_the_type_their_content_shows(runtime: Runtime) -> None:
    """The helpdesk reads what was attached as the checks saw it: a PDF sent as image/jpeg is a PDF."""
    sink = Sink()
    runtime.history = sink  # type: ignore[assignment]
    pdf = base64.encodebytes(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< >>\nendobj\n" * 20).replace(b"\n", b"\r\n")
    body = (b"--b\r\nContent-Type: text/plain\r\n\r\nXin chao.\r\n--b\r\n"
            b"Content-Type: image/jpeg; name=anh.jpg\r\nContent-Disposition: attachment; filename=anh.jpg\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + pdf + b"--b--\r\n")  # fmt: skip
    fields = [("From", "a@example.com"), ("To", "user@bacninh.gov.vn"), ("Subject", "Anh"),
              ("MIME-Version", "1.0"), ("Content-Type", 'multipart/mixed; boundary="b"')]  # fmt: skip
    drive(RecordingCtx(), fields, body, queue_id="4QX3")
    [record] = sink.records
    assert [(a.name, a.declared, a.true_type) for a in record.attachments] == [
        ("anh.jpg", "image/jpeg", "application/pdf")
    ]


def test_a_refusal_records_the_reply_the_sender_saw_and_every_hit(runtime: Runtime) -> None:
    sink = Sink()
    runtime.history = sink  # type: ignore[assignment]
    ctx = RecordingCtx()
    fields = [("From", "a@example.com"), ("X-Sieve-Redirected-From", "fwd@gmail.com"), ("Subject", "chuyen")]
    assert drive(ctx, fields, b"x\r\n", queue_id="4QX2") == Milter.REJECT
    [record] = sink.records
    assert (record.action, record.check, record.rule) == ("reject", "forwarding", "inbound-sieve-redirect")
    assert record.reply.startswith("550 5.7.520 ") and "Dieu 8.5" in record.reply
    assert [(h.check, h.rule, h.mode, h.action) for h in record.hits] == [
        ("forwarding", "inbound-sieve-redirect", "enforce", "reject")
    ]
    assert record.hits[0].reply == record.reply


def test_hits_of_every_kind_monitor_and_score_are_kept() -> None:
    env = Envelope(client_ip="10.0.0.2", mail_from="a@b.vn", rcpts=[f"r{i}@x.vn" for i in range(MAX_RCPTS + 5)],
                   queue_id="Q", trusted_relay=True)  # fmt: skip
    tx = Transaction(envelope=env, ruleset=RuleSet("v9", {}))
    tx.hits += [
        Verdict(Action.CONTINUE, "content", rule="score-a", score=2.5, reason="matched"),
        Verdict(
            Action.REJECT, "impersonation", rule="lookalike", mode=Mode.MONITOR, code="550", enhanced="5.7.1",
            text="would refuse",
        ),
        Verdict(Action.CONTINUE, "ratelimit", rule="per-account", reason="near the limit"),
    ]
    tx.scratch["monitor_score"] = (7.5, "tag")
    record = build(tx, Verdict(Action.ACCEPT, ""), 0.004)
    assert [(h.check, h.rule, h.mode) for h in record.hits] == [
        ("content", "score-a", "enforce"),
        ("impersonation", "lookalike", "monitor"),
        ("ratelimit", "per-account", "enforce"),
    ]
    assert record.hits[1].reply == "550 5.7.1 would refuse"
    assert record.score == 2.5 and record.would_score == 7.5 and record.would == "reject" and record.would_refuse()
    assert record.direction == "outbound" and record.direction_why == "trusted relay"
    assert len(record.rcpts) == MAX_RCPTS and record.rcpts_total == MAX_RCPTS + 5
    assert record.elapsed_ms == 4.0


def test_subject_decoded_and_bounded() -> None:
    assert decode_subject("=?utf-8?b?QsOhbyBjw6Fv?=") == "Báo cáo"
    assert decode_subject("=?unknown-charset?q?x?=") == "=?unknown-charset?q?x?="
    assert decode_subject("a\r\n b\n\tc") == "a b\tc"
    tx = Transaction(envelope=Envelope(queue_id="Q"), ruleset=RuleSet("v", {}))
    tx.add_header("Subject", "x" * 5000)
    record = build(tx, Verdict(Action.ACCEPT, ""))
    assert len(record.subject) == 303 and record.subject.endswith("...")


def test_undecodable_bytes_and_nul_are_stored_as_escapes(tmp_path: Path) -> None:
    """UTF-8 cannot hold a lone surrogate, PostgreSQL text no NUL: both written \\xNN, the rest as sent."""
    sender = "b\udcffad\x00@example.com"
    tx = Transaction(envelope=Envelope(mail_from=sender, queue_id="Q"), ruleset=RuleSet("v", {}))
    record = build(tx, Verdict(Action.ACCEPT, ""))
    assert record.mail_from == "b\\xffad\\x00@example.com"
    store = SqliteStore(str(tmp_path / "h.sqlite"))
    store.write([record])
    [found] = store.search(Query())
    assert found.mail_from == record.mail_from
    store.close()
