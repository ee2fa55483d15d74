"""The foundation through real Postfix: accept with a header, SIZE= refusal, 451 on our own bug."""

from __future__ import annotations

import sys
from pathlib import Path

from e2e.helpers import INTERNET_CLIENT, TRUSTED_RELAY, message, unique, wait_for_queue_id_in_log
from stack import Stack

FAULTY = Path(__file__).with_name("faulty_govmilter.py")


def test_clean_message_is_delivered_with_govmilter_header(stack: Stack) -> None:
    subject = unique("clean")
    reply = stack.send("officer@bacninh.gov.vn", ["partner@example.com"], message(subject), source_ip=TRUSTED_RELAY)
    assert reply.accepted, reply
    delivered = stack.sink.find(subject)
    assert delivered.message["X-Govmilter"].startswith("govmilter ")
    assert "ruleset=" in delivered.message["X-Govmilter"]


def test_declared_size_above_ceiling_is_refused_at_mail_from(stack: Stack) -> None:
    big = message(unique("big"))
    reply = stack.send("sender@example.com", ["user@bacninh.gov.vn"], big, source_ip=INTERNET_CLIENT, size=60_000_000)
    assert reply.stage == "mail"
    assert reply.code == 552
    assert "5.3.4" in reply.text


def test_exception_answers_451_and_the_milter_keeps_serving(stack: Stack) -> None:
    original_entry = list(stack.govmilter.entry)
    stack.restart_milter(entry=[sys.executable, str(FAULTY)])
    try:
        for fault in ("adapter", "check"):
            subject = unique(f"fault-{fault}")
            reply = stack.send(
                "sender@example.com",
                ["user@bacninh.gov.vn"],
                message(subject, headers={"X-Inject-Fault": fault}),
                source_ip=INTERNET_CLIENT,
            )
            assert reply.code == 451, reply
            assert "4.3.0" in reply.text
        # the next connection is served normally by the same process
        subject = unique("after-fault")
        reply = stack.send("sender@example.com", ["user@bacninh.gov.vn"], message(subject), source_ip=INTERNET_CLIENT)
        assert reply.accepted, reply
        assert stack.sink.find(subject).message["X-Govmilter"]
        log = stack.govmilter.log_path.read_text()
        assert "injected fault in the adapter" in log and "injected fault in a check" in log
        assert "RecursionError" not in log
    finally:
        stack.restart_milter(entry=original_entry)


def test_forged_filter_headers_from_the_sender_are_removed(stack: Stack) -> None:
    subject = unique("forged")
    forged = {"X-Spam-Flag": "NO", "X-Spam-Score": "-100", "X-Virus-Scanned": "clean (forged)", "X-Govmilter": "x"}
    reply = stack.send(
        "sender@example.com", ["user@bacninh.gov.vn"], message(subject, headers=forged), source_ip=INTERNET_CLIENT
    )
    assert reply.accepted, reply
    delivered = stack.sink.find(subject).message
    assert delivered.get_all("X-Spam-Flag") is None
    assert delivered.get_all("X-Spam-Score") != ["-100"]
    assert "forged" not in str(delivered.get_all("X-Virus-Scanned"))
    assert len(delivered.get_all("X-Govmilter")) == 1 and delivered["X-Govmilter"].startswith("govmilter ")


def test_the_macros_govmilter_asks_for_arrive(stack: Stack) -> None:
    # govmilter asks for its own MAIL FROM macro list and leaves the other stages to Postfix's
    # defaults: the queue id must still come
    start = stack.govmilter.log_path.stat().st_size
    subject = unique("macros")
    reply = stack.send("officer@bacninh.gov.vn", ["partner@example.com"], message(subject), source_ip=TRUSTED_RELAY)
    assert reply.accepted, reply
    wait_for_queue_id_in_log(stack, stack.sink.find(subject).message, start)
