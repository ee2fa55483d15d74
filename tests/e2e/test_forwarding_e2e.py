"""The forwarding check through real Postfix and the real govmilter daemon.

127.0.0.1 is the trusted internal relay (the mailbox server); Internet clients send
from other loopback addresses. The messages are the stored ones of
tests/messages/forwarding, with a fresh Subject and Message-ID per run.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.helpers import INTERNET_CLIENT, TRUSTED_RELAY, unique
from stack import Reply, Stack, wait_until

CORPUS = Path(__file__).resolve().parents[1] / "messages" / "forwarding"
OUTBOUND_REPLY = (
    "5.7.520 Chuyen tiep tu dong ra ngoai he thong thu cong vu bi cam (QD 06/2022 Dieu 8.5)"
    " - automatic forwarding to non-government domains is not allowed"
)
INBOUND_REPLY = (
    "5.7.520 Chuyen tiep tu dong tu hop thu ngoai nha nuoc vao hop thu cong vu bi cam"
    " (QD 06/2022 Dieu 8.5) - automatic forwarding from non-government mailboxes is not allowed"
)


def stored(name: str, subject: str, message_id: str | None = None) -> bytes:
    """A stored message with CRLF line ends, a fresh Subject and (unless given) a fresh Message-ID."""
    text = (CORPUS / f"{name}.eml").read_text(encoding="utf-8")
    text = re.sub(r"(?m)^Subject: .*$", f"Subject: {subject}", text, count=1)
    text = re.sub(r"(?m)^Message-ID: .*$", f"Message-ID: <{message_id or unique('mid')}@test.example>", text, count=1)
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode()


def one_line(reply: Reply) -> str:
    return " ".join(reply.message.split())


def assert_refused(reply: Reply, text: str) -> None:
    assert (reply.stage, reply.code) == ("data", 550), reply
    assert one_line(reply) == text, reply


def test_outbound_forward_is_refused(stack: Stack) -> None:
    """postsrsd on the mailbox server rewrote the sender of a message a gov mailbox forwards to Gmail."""
    subject = unique("out-srs")
    reply = stack.send(
        "SRS0=hK3f=TT=example.com=partner@bacninh.gov.vn",
        ["ban.cua.a@gmail.com"],
        stored("out-srs0", subject),
        source_ip=TRUSTED_RELAY,
    )
    assert_refused(reply, OUTBOUND_REPLY)


def test_outbound_account_forwarding_without_header_is_refused(stack: Stack) -> None:
    """Zimbra account forwarding: no header, the original MAIL FROM kept, through the trusted relay."""
    reply = stack.send(
        "partner@example.com",
        ["b.home@yahoo.com"],
        stored("out-relay-inference", unique("out-acct")),
        source_ip=TRUSTED_RELAY,
    )
    assert_refused(reply, OUTBOUND_REPLY)


def test_inbound_forward_is_refused(stack: Stack) -> None:
    """A non-government forwarder (SRS) delivering into a government mailbox."""
    reply = stack.send(
        "SRS0=q9Wz=TU=example.com=partner@forwarder.example.net",
        ["nguyenvana@bacninh.gov.vn"],
        stored("in-srs0", unique("in-srs")),
        source_ip=INTERNET_CLIENT,
    )
    assert_refused(reply, INBOUND_REPLY)


def test_inbound_gmail_auto_forward_is_refused(stack: Stack) -> None:
    reply = stack.send(
        "ban.cua.a+caf_=nguyenvana=bacninh.gov.vn@gmail.com",
        ["nguyenvana@bacninh.gov.vn"],
        stored("in-gmail-caf", unique("in-caf")),
        source_ip=INTERNET_CLIENT,
    )
    assert_refused(reply, INBOUND_REPLY)


def test_manual_forward_is_delivered(stack: Stack) -> None:
    """A person forwards by hand in webmail; the mailbox server relays it with the person's address."""
    subject = unique("manual")
    reply = stack.send(
        "tranthib@sotttt.bacninh.gov.vn",
        ["ban.cua.a@gmail.com"],
        stored("out-manual-forward-relay", subject),
        source_ip=TRUSTED_RELAY,
    )
    assert reply.accepted, reply
    delivered = stack.sink.find(subject)
    assert delivered.message["X-Govmilter"]
    assert delivered.message["X-Govmilter-Forwarding"] is None


def test_forward_between_government_domains_is_delivered(stack: Stack) -> None:
    subject = unique("gov-gov")
    reply = stack.send(
        "SRS0=k8Ld=TU=example.com=partner@hanoi.gov.vn",
        ["nguyenvana@bacninh.gov.vn"],
        stored("in-srs-from-gov", subject),
        source_ip=INTERNET_CLIENT,
    )
    assert reply.accepted, reply
    assert stack.sink.find(subject).message["X-Govmilter-Forwarding"] is None


def test_redirect_of_a_message_that_came_in_is_refused(stack: Stack) -> None:
    """The Message-ID memory: delivered inbound, then sent on unchanged through the relay."""
    message_id = unique("memory")
    inbound_subject = unique("memory-in")
    reply = stack.send(
        "ban.cua.a@gmail.com",
        ["nguyenvana@bacninh.gov.vn"],
        stored("in-plain-gmail", inbound_subject, message_id),
        source_ip=INTERNET_CLIENT,
    )
    assert reply.accepted, reply
    stack.sink.find(inbound_subject)
    reply = stack.send(
        "nguyenvana@bacninh.gov.vn",
        ["ban.cua.a@gmail.com"],
        stored("in-plain-gmail", unique("memory-out"), message_id),
        source_ip=TRUSTED_RELAY,
    )
    assert_refused(reply, OUTBOUND_REPLY)


def test_list_copy_with_a_trace_inside_is_delivered(stack: Stack) -> None:
    """Issue 14: a post carrying someone's Sieve trace; the list's copy to a gov subscriber."""
    subject = unique("list-copy")
    reply = stack.send(
        "thaoluan-bounces+nguyenvana=bacninh.gov.vn@lists.example.org",
        ["nguyenvana@bacninh.gov.vn"],
        stored("ex-list-post-trace-mailman", subject),
        source_ip=INTERNET_CLIENT,
    )
    assert reply.accepted, reply
    delivered = stack.sink.find(subject).message
    assert delivered["X-Sieve-Redirected-From"] == "someone@gmail.com"  # the post's trace, kept
    assert delivered["X-Govmilter-Forwarding"] is None


def test_list_copy_redirected_by_a_members_sieve_is_refused(stack: Stack) -> None:
    """The list's own forward: a member mailbox's Sieve redirect above the list's fields."""
    reply = stack.send(
        "thaoluan-bounces+an=company-mail.vn@lists.example.org",
        ["nguyenvana@bacninh.gov.vn"],
        stored("in-list-copy-sieve-redirect", unique("list-fwd")),
        source_ip=INTERNET_CLIENT,
    )
    assert_refused(reply, INBOUND_REPLY)


def test_outbound_sieve_redirect_with_forged_list_id_is_refused(stack: Stack) -> None:
    reply = stack.send(
        "partner@example.com",
        ["ban.cua.a@gmail.com"],
        stored("out-sieve-redirect-forged-list-id", unique("forged-list")),
        source_ip=TRUSTED_RELAY,
    )
    assert_refused(reply, OUTBOUND_REPLY)


def test_outbound_report_label_from_a_user_is_refused(stack: Stack) -> None:
    """Issue 14: multipart/report with a PDF and a Sieve trace, non-null sender: no exemption."""
    reply = stack.send(
        "nguyenvana@bacninh.gov.vn",
        ["ban.cua.a@gmail.com"],
        stored("out-report-label-sieve", unique("report-label")),
        source_ip=TRUSTED_RELAY,
    )
    assert_refused(reply, OUTBOUND_REPLY)


def test_real_null_sender_dsn_is_delivered(stack: Stack) -> None:
    """A delivery report of our mailbox server (MAIL FROM:<>), and a bounce re-sent by forwarding."""
    for name, rcpt in (
        ("ex-dsn-relay", "partner@example.com"),
        ("ex-null-sender-forwarded-dsn", "ban.cua.a@gmail.com"),
    ):
        subject = unique("dsn")
        reply = stack.send("", [rcpt], stored(name, subject), source_ip=TRUSTED_RELAY)
        assert reply.accepted, (name, reply)
        assert stack.sink.find(subject).message["X-Govmilter-Forwarding"] is None


def ruleset_version(stack: Stack) -> str:
    match = re.search(r'govmilter_ruleset_info\{version="([^"]+)"\} 1', stack.scrape())
    return match.group(1) if match else ""


@pytest.fixture
def monitor_mode(stack: Stack) -> Iterator[Stack]:
    """Officers switch the rule file to monitor; the running milter reloads it."""
    path = stack.rules_dir / "forwarding.toml"
    original = path.read_text(encoding="utf-8")
    before = ruleset_version(stack)
    path.write_text(original.replace('mode = "enforce"', 'mode = "monitor"'), encoding="utf-8")
    try:
        wait_until(lambda: ruleset_version(stack) not in ("", before), 30, "rule reload")
        yield stack
    finally:
        changed = ruleset_version(stack)
        path.write_text(original, encoding="utf-8")
        wait_until(lambda: ruleset_version(stack) not in ("", changed), 30, "rule reload back")


def test_monitor_mode_delivers_tagged_and_counts(monitor_mode: Stack) -> None:
    stack = monitor_mode
    subject = unique("monitor")
    reply = stack.send(
        "SRS0=hK3f=TT=example.com=partner@bacninh.gov.vn",
        ["ban.cua.a@gmail.com"],
        stored("out-srs0", subject),
        source_ip=TRUSTED_RELAY,
    )
    assert reply.accepted, reply
    delivered = stack.sink.find(subject).message
    assert delivered["X-Govmilter-Forwarding"] == (
        "direction=outbound; trace=srs; forwarder=bacninh.gov.vn; class=local; action=monitor"
    )
    assert delivered["X-Govmilter-Monitor"] == "check=forwarding rule=outbound-srs would=reject"
    metrics = stack.scrape()
    assert re.search(
        r'govmilter_forwarding_detected_total\{action="monitor",direction="outbound",trace="srs"\} [1-9]', metrics
    ), metrics
