"""Sending many messages at once and proving that none was lost.

Every message sent must end in one of two places: delivered to the sink, or
refused with a 4xx/5xx reply that the client saw. A dropped connection or an
accepted message that never reaches the sink is a lost message.
"""

from __future__ import annotations

import base64
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from e2e.helpers import INTERNET_CLIENT, unique
from stack import Reply, Stack


@dataclass(frozen=True)
class Outgoing:
    marker: str
    mail_from: str
    rcpts: tuple[str, ...]
    data: bytes
    source_ip: str = INTERNET_CLIENT
    declared_size: int | None = None  # SIZE= at MAIL FROM
    expect: int = 250  # the reply this message should get: 250 (delivered) or a refusal code


def _outgoing(kind: str, content_type: str, body: str, source_ip: str) -> Outgoing:
    marker = unique(kind)
    data = (
        f"From: <sender@example.com>\r\nTo: <user@bacninh.gov.vn>\r\nSubject: {kind} {marker}\r\n"
        f"Message-ID: <{marker}@test.example>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0700\r\n"
        f"MIME-Version: 1.0\r\nContent-Type: {content_type}\r\n\r\n{body}\r\n"
    ).encode()
    return Outgoing(marker, "sender@example.com", ("user@bacninh.gov.vn",), data, source_ip)


def plain(kind: str = "clean", size: int = 2000, source_ip: str = INTERNET_CLIENT) -> Outgoing:
    """A text message of about `size` bytes."""
    body = ("Noi dung thu cong vu. " * (size // 22 + 1))[:size]
    return _outgoing(kind, "text/plain; charset=utf-8", body, source_ip)


def with_attachment(kind: str = "att", size: int = 400_000, source_ip: str = INTERNET_CLIENT) -> Outgoing:
    """A message with one random binary attachment of `size` decoded bytes."""
    payload = base64.encodebytes(os.urandom(size)).decode().replace("\n", "\r\n")
    body = (
        "--b\r\nContent-Type: text/plain\r\n\r\nBao cao.\r\n"
        "--b\r\nContent-Type: application/octet-stream\r\n"
        'Content-Disposition: attachment; filename="data.bin"\r\n'
        f"Content-Transfer-Encoding: base64\r\n\r\n{payload}--b--"
    )
    return _outgoing(kind, 'multipart/mixed; boundary="b"', body, source_ip)


@dataclass
class Outcome:
    sent: int
    delivered: int
    refused: Counter[int]
    lost: list[tuple[str, Reply | None]]

    def __str__(self) -> str:
        refused = ", ".join(f"{code}: {n}" for code, n in sorted(self.refused.items()))
        return f"sent {self.sent}, delivered {self.delivered}, refused {{{refused}}}, lost {len(self.lost)}"


def send_all(
    stack: Stack,
    messages: Sequence[Outgoing],
    workers: int = 8,
    during: Callable[[], None] | None = None,
    after: int = 0,
) -> list[Reply]:
    """Send concurrently; `during` runs (once) after `after` replies have come back."""
    replies: list[Reply | None] = [None] * len(messages)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [
            pool.submit(stack.send, m.mail_from, list(m.rcpts), m.data, source_ip=m.source_ip, size=m.declared_size)
            for m in messages
        ]
        if during is not None:
            while sum(f.done() for f in futures) < after:
                time.sleep(0.01)
            during()
        for index, future in enumerate(futures):
            replies[index] = future.result()
    return [r for r in replies if r is not None]


def account(stack: Stack, messages: Sequence[Outgoing], replies: Sequence[Reply], timeout: float = 90) -> Outcome:
    """Check that every message was delivered or refused with a reply the client saw."""
    outcome = Outcome(sent=len(messages), delivered=0, refused=Counter(), lost=[])
    waiting: list[tuple[Outgoing, Reply]] = []
    for message, reply in zip(messages, replies, strict=True):
        if reply.accepted:
            waiting.append((message, reply))
        elif 400 <= reply.code < 600:
            outcome.refused[reply.code] += 1
        else:
            outcome.lost.append((message.marker, reply))
    deadline = time.monotonic() + timeout
    for message, reply in waiting:
        try:
            stack.sink.find_id(f"{message.marker}@test.example", timeout=max(0.1, deadline - time.monotonic()))
            outcome.delivered += 1
        except TimeoutError:
            outcome.lost.append((message.marker, reply))
    return outcome
