"""Mixed traffic through real Postfix: clean, virus, oversized, forwarded and spam.

Every message is accounted for (delivered, or refused with the reply its kind
deserves), and the milter's memory and open file descriptors stay flat.
`make test` runs a short mix; `make soak` runs 20 000 messages (GOVMILTER_SOAK_MESSAGES).
"""

from __future__ import annotations

import base64
import os
import time
from collections import Counter
from dataclasses import replace

import pytest

from e2e.accounting import Outgoing, _outgoing, account, plain, send_all
from e2e.helpers import INTERNET_CLIENT, TRUSTED_RELAY, unique
from stack import Stack, proc_status_kb

EICAR = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def virus() -> Outgoing:
    body = (
        "--b\r\nContent-Type: text/plain\r\n\r\nXem tep dinh kem.\r\n"
        '--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename="report.txt"\r\n'
        f"Content-Transfer-Encoding: base64\r\n\r\n{base64.b64encode(EICAR.encode()).decode()}\r\n--b--"
    )
    return replace(_outgoing("virus", 'multipart/mixed; boundary="b"', body, INTERNET_CLIENT), expect=554)


def oversized() -> Outgoing:
    return replace(plain("oversized", size=500), declared_size=40_000_000, expect=552)


def forwarded() -> Outgoing:
    """An official mailbox's Sieve redirect to a private address, relayed by the mailbox server."""
    marker = unique("forward")
    data = (
        "From: <citizen@example.org>\r\nTo: <officer@bacninh.gov.vn>\r\n"
        f"Subject: forwarded {marker}\r\nMessage-ID: <{marker}@test.example>\r\n"
        "X-Sieve: Pigeonhole Sieve 0.5.19\r\nX-Sieve-Redirected-From: officer@bacninh.gov.vn\r\n"
        "Date: Mon, 23 Nov 2026 10:00:00 +0700\r\n\r\nChuyen tiep.\r\n"
    ).encode()
    return Outgoing(marker, "officer@bacninh.gov.vn", ("officer.private@gmail.com",), data, TRUSTED_RELAY, expect=550)


def spam() -> Outgoing:
    message = plain("spam", size=300)
    return replace(message, data=message.data.replace(b"Noi dung", GTUBE.encode() + b" Noi dung", 1), expect=550)


def mix(count: int) -> list[Outgoing]:
    makers = [plain] * 6 + [virus, oversized, forwarded, spam]
    return [makers[i % len(makers)]() for i in range(count)]


def milter_usage(stack: Stack) -> tuple[float, int]:
    assert stack.govmilter.proc is not None
    pid = stack.govmilter.proc.pid
    return proc_status_kb(pid, "VmRSS") / 1024, len(os.listdir(f"/proc/{pid}/fd"))


def send_and_check(stack: Stack, messages: list[Outgoing], kinds: Counter[str]) -> None:
    """Send, account for every message, and check each got the answer its kind deserves."""
    replies = send_all(stack, messages, workers=16)
    outcome = account(stack, messages, replies)
    assert not outcome.lost, outcome.lost[:5]
    wrong = []
    for message, reply in zip(messages, replies, strict=True):
        code = 250 if reply.accepted else reply.code
        kinds[f"{message.marker.split('-')[0]} {code}"] += 1
        if code != message.expect:
            wrong.append((message.marker, message.expect, reply.code, reply.text))
    assert not wrong, wrong[:5]


def test_mixed_traffic_is_accounted_for(stack: Stack) -> None:
    kinds: Counter[str] = Counter()
    send_and_check(stack, mix(60), kinds)
    assert kinds["clean 250"] == 36


@pytest.mark.slow
def test_soak(stack: Stack) -> None:
    total = int(os.environ.get("GOVMILTER_SOAK_MESSAGES", "20000"))
    kinds: Counter[str] = Counter()
    send_and_check(stack, mix(200), kinds)  # warm up: caches, threads, imports
    rss_start, fds_start = milter_usage(stack)
    started = time.monotonic()
    sent = 0
    while sent < total:
        batch = mix(min(500, total - sent))
        send_and_check(stack, batch, kinds)
        sent += len(batch)
    rss_end, fds_end = milter_usage(stack)
    print(
        f"\nsoak: {sent} messages in {time.monotonic() - started:.0f}s, {dict(sorted(kinds.items()))},"
        f" RSS {rss_start:.1f} -> {rss_end:.1f} MB, fds {fds_start} -> {fds_end}"
    )
    assert rss_end - rss_start < 40, "the milter's memory must not grow with traffic"
    assert fds_end <= fds_start + 4, "no file descriptor may leak"
