"""The antivirus check through real Postfix, the real govmilter daemon and a real clamd."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator

import pytest

from e2e.helpers import unique
from stack import SYSTEM_CLAMAV_DB, Reply, Stack
from support.fake_clamd import FakeClamd
from support.virus_samples import EICAR_SIGNATURE, SAMPLES, eicar_zip_in_eml, expected_signature, mail, sample_mail

INBOUND_IP = "127.0.0.9"  # an Internet client: not a trusted relay, not in the test DNSBL zone
LAB_DATABASE = not any(SYSTEM_CLAMAV_DB.glob("*.c[lv]d"))  # the stack's clamd has the lab's test signatures
VIRUS_REPLY = re.compile(r"^5\.7\.1 Thu co chua virus (\S+) \(QD 06/2022 Dieu 8\.2\) - virus found: (\S+)$")


@pytest.fixture(scope="module")
def av_stack(stack: Stack) -> Iterator[Stack]:
    """The session stack with the attachment rules off: they would refuse the .exe samples before clamd."""
    saved = dict(stack.govmilter.settings)
    stack.restart_milter(**{"attachments.enabled": "false"})
    try:
        yield stack
    finally:
        stack.govmilter.settings = saved
        stack.restart_milter()


def send_inbound(stack: Stack, data: bytes) -> Reply:
    return stack.send("partner@example.com", ["user@bacninh.gov.vn"], data, source_ip=INBOUND_IP)


def assert_virus(reply: Reply, signature: str | None) -> None:
    assert (reply.stage, reply.code) == ("data", 554), reply
    match = VIRUS_REPLY.match(reply.message.replace("\n", " "))
    assert match, reply.text
    assert match.group(1) == match.group(2)
    if signature is not None and LAB_DATABASE:
        assert match.group(1) == signature


@pytest.mark.parametrize("sample", SAMPLES)
def test_every_clamav_testfile_is_refused_with_its_signature(av_stack: Stack, sample: str) -> None:
    assert_virus(send_inbound(av_stack, sample_mail(sample, unique("sample"))), expected_signature(sample))


def test_eicar_in_a_zip_inside_an_attached_eml_is_refused(av_stack: Stack) -> None:
    assert_virus(send_inbound(av_stack, eicar_zip_in_eml(unique("eml"))), EICAR_SIGNATURE)


def test_clean_message_is_delivered_with_x_virus_scanned(av_stack: Stack) -> None:
    subject = unique("clean")
    reply = send_inbound(av_stack, mail(subject, [("baocao.txt", b"So lieu quy 3.\n" * 200)]))
    assert reply.accepted, reply
    scanned = av_stack.sink.find(subject).message["X-Virus-Scanned"]
    assert re.fullmatch(r"govmilter \S+ with ClamAV \d+\.\d+\S*", scanned), scanned


def test_clamd_stopped_answers_451_and_scanning_resumes_when_it_is_back(av_stack: Stack) -> None:
    av_stack.clamd.stop()
    try:
        reply = send_inbound(av_stack, mail(unique("no-clamd")))
        assert (reply.stage, reply.code) == ("data", 451), reply
        assert reply.text.startswith("4.7.1 Tam thoi khong quet duoc virus")
    finally:
        av_stack.clamd.start()
    # the same govmilter process, not restarted: the next messages are scanned again
    assert_virus(send_inbound(av_stack, eicar_zip_in_eml(unique("back"))), EICAR_SIGNATURE)
    subject = unique("back-clean")
    assert send_inbound(av_stack, mail(subject)).accepted
    assert av_stack.sink.find(subject).message["X-Virus-Scanned"]


def test_silent_clamd_answers_451_within_the_timeout_while_other_sessions_flow(av_stack: Stack) -> None:
    saved = dict(av_stack.govmilter.settings)
    with FakeClamd("silent") as fake:
        # spread over [silent, real]: a fresh daemon sends its first scan to the silent one,
        # its second to the real clamd
        av_stack.restart_milter(
            **{
                "antivirus.clamd": f'["{fake.address}", "unix:{av_stack.clamd.socket}"]',
                "antivirus.strategy": '"spread"',
                "antivirus.scan_timeout": "4.0",
                "antivirus.breaker_failures": "100",
            }
        )
        try:
            hung: list[object] = []

            def send_hung() -> None:
                started = time.monotonic()
                hung.append(send_inbound(av_stack, mail(unique("hung"))))
                hung.append(time.monotonic() - started)

            thread = threading.Thread(target=send_hung)
            thread.start()
            fake.wait_accepted(1)
            subject = unique("flowing")
            reply = send_inbound(av_stack, mail(subject))
            assert reply.accepted, reply  # served by the real clamd while the other session waits
            assert thread.is_alive()
            thread.join(120)
            result, elapsed = hung
            assert isinstance(result, Reply) and (result.stage, result.code) == ("data", 451), result
            assert result.text.startswith("4.7.1")
            assert isinstance(elapsed, float) and elapsed < 30.0  # generous: the budget is 4 s
            assert 'result="timeout"' in av_stack.scrape()
        finally:
            av_stack.govmilter.settings = saved
            av_stack.restart_milter(**{"attachments.enabled": "false"})
