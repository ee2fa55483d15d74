"""govmilter on a TCP socket (inet:) through real Postfix: every step still reaches the checks.

Over TCP govmilter keeps the DATA step and answers it without entering Python (adapter.py);
these tests show that the whole conversation still works that way: macros, headers, body,
the end-of-message verdicts and the headers added there.
"""

from __future__ import annotations

import smtplib
from collections.abc import Iterator

import pytest

from e2e.helpers import INTERNET_CLIENT, message, running_stack, unique, wait_for_queue_id_in_log
from stack import Stack
from support.lab_clamd import EICAR
from support.virus_samples import mail


@pytest.fixture(scope="module")
def inet_stack() -> Iterator[Stack]:
    yield from running_stack("govmilter-inet-e2e-", milter_transport="inet")


def test_the_milter_listens_on_tcp(inet_stack: Stack) -> None:
    assert inet_stack.milter_socket.startswith("inet:")
    assert inet_stack.postfix.milter.startswith("inet:127.0.0.1:")


def test_clean_message_is_delivered_with_the_headers_and_the_queue_id_reaches_the_milter(inet_stack: Stack) -> None:
    start = inet_stack.govmilter.log_path.stat().st_size
    subject = unique("inet-clean")
    reply = inet_stack.send("partner@example.com", ["user@bacninh.gov.vn"], message(subject), source_ip=INTERNET_CLIENT)
    assert reply.accepted, reply
    delivered = inet_stack.sink.find(subject).message
    assert delivered["X-Govmilter"].startswith("govmilter ")
    assert delivered["X-Virus-Scanned"]
    wait_for_queue_id_in_log(inet_stack, delivered, start)


def test_a_virus_is_refused_after_the_final_dot(inet_stack: Stack) -> None:
    virus = mail(unique("inet-virus"), [("baocao.txt", EICAR)])
    reply = inet_stack.send("partner@example.com", ["user@bacninh.gov.vn"], virus, source_ip=INTERNET_CLIENT)
    assert (reply.stage, reply.code) == ("data", 554), reply
    assert "virus found" in reply.text


def test_declared_size_above_the_ceiling_is_refused_at_mail_from(inet_stack: Stack) -> None:
    reply = inet_stack.send(
        "sender@example.com", ["user@bacninh.gov.vn"], message(unique("inet-big")), source_ip=INTERNET_CLIENT,
        size=60_000_000,
    )  # fmt: skip
    assert (reply.stage, reply.code) == ("mail", 552), reply


def test_each_message_of_one_session_gets_its_own_verdict(inet_stack: Stack) -> None:
    # one milter connection carries the three transactions: DATA is answered each time
    subjects = [unique("inet-session") for _ in range(3)]
    bodies = [message(subjects[0]), mail(subjects[1], [("x.txt", EICAR)]), message(subjects[2])]
    codes = []
    with smtplib.SMTP("127.0.0.1", inet_stack.smtp_port, timeout=60, source_address=(INTERNET_CLIENT, 0)) as client:
        for body in bodies:
            client.mail("partner@example.com")
            client.rcpt("user@bacninh.gov.vn")
            try:
                codes.append(client.data(body)[0])
            except smtplib.SMTPDataError as exc:
                codes.append(exc.smtp_code)
    assert codes == [250, 554, 250]
    assert inet_stack.sink.find(subjects[0]).message["X-Govmilter"]
    assert inet_stack.sink.find(subjects[2]).message["X-Govmilter"]
