"""SIGTERM through real Postfix: a 25 MB message in the middle of its DATA finishes within the
grace period and is delivered; one whose client is still sending when the grace is over gets
451 4.3.2 from govmilter (not Postfix's milter_default_action for a cut connection); the daemon
exits 0 and logs the drain.

The client is a raw SMTP client that feeds the message slowly, so the signal lands mid-DATA.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import time
from pathlib import Path

import pytest

from e2e.helpers import INTERNET_CLIENT, unique
from stack import Stack, wait_until
from support.mimebuild import TOP, Attachment, write_message

MB = 1024 * 1024


def big_message(tmp_path: Path, marker: str, attachment: int) -> bytes:
    path = write_message(tmp_path / f"{marker}.eml", [Attachment(attachment, "ho so.pdf")], body=f"marker {marker}")
    top = TOP.replace(b"Subject: test", f"Subject: {marker}".encode())
    top = top.replace(b"<test@example.com>", f"<{marker}@test.example>".encode())
    return path.read_bytes().replace(TOP, top, 1)


class SlowClient:
    """One SMTP transaction whose DATA is fed in pieces, paced by the test."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=120, source_address=(INTERNET_CLIENT, 0))
        self.file = self.sock.makefile("rb")
        self.expect(220)
        self.command(b"EHLO client.example", 250)
        self.command(b"MAIL FROM:<sender@example.com>", 250)
        self.command(b"RCPT TO:<user@bacninh.gov.vn>", 250)
        self.command(b"DATA", 354)

    def expect(self, code: int) -> str:
        text = ""
        while True:
            line = self.file.readline().decode(errors="replace")
            text += line
            if len(line) < 4 or line[3] != "-":
                break
        assert text.startswith(str(code)), text
        return text

    def reply(self) -> str:
        text = ""
        while True:
            line = self.file.readline().decode(errors="replace")
            text += line
            if len(line) < 4 or line[3] != "-":
                return text

    def command(self, line: bytes, code: int) -> str:
        self.sock.sendall(line + b"\r\n")
        return self.expect(code)

    def feed(self, data: bytes, seconds: float, pieces: int = 50) -> None:
        """Send `data` (dot-stuffed already) in `pieces` over about `seconds`."""
        step = -(-len(data) // pieces)
        for start in range(0, len(data), step):
            self.sock.sendall(data[start : start + step])
            time.sleep(seconds / pieces)

    def end(self) -> str:
        self.sock.sendall(b"\r\n.\r\n")
        return self.reply()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(b"QUIT\r\n")
        self.sock.close()


def stuffed(message: bytes) -> bytes:
    return message.replace(b"\r\n.", b"\r\n..")


def stop_mid_data(stack: Stack, tmp_path: Path, grace: int, feed_seconds: float) -> tuple[str, str, int, str]:
    """Restart the milter with the grace, send the message slowly, SIGTERM at 30% of it.

    Returns the marker, the client's final reply, the milter's exit status and its log.
    """
    stack.restart_milter(**{"milter.shutdown_grace": str(grace)})
    log_from = stack.govmilter.log_path.stat().st_size
    proc = stack.govmilter.proc
    assert proc is not None
    marker = unique("drain")
    data = stuffed(big_message(tmp_path, marker, int(18.5 * MB)))
    assert len(data) > 25_000_000
    client = SlowClient(stack.smtp_port)
    cut = len(data) * 3 // 10
    try:
        client.feed(data[:cut], feed_seconds * 0.3)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        log = stack.govmilter.log_path
        wait_until(lambda: "shutting down (SIGTERM)" in log.read_text()[log_from:], 10, "the drain line")
        client.feed(data[cut:], feed_seconds * 0.7)
        reply = client.end()
        print(f"reply after SIGTERM +{time.monotonic() - started:.1f} s: {reply.strip()}")
    finally:
        client.close()
    status = proc.wait(grace + 30)
    text = stack.govmilter.log_path.read_text()[log_from:]
    return marker, reply, status, text


@pytest.fixture
def restore(stack: Stack) -> object:
    yield None
    stack.govmilter.settings.pop("milter.shutdown_grace", None)
    stack.govmilter.start()


def test_sigterm_during_a_25_mb_message_lets_it_finish(stack: Stack, tmp_path: Path, restore: object) -> None:
    marker, reply, status, log = stop_mid_data(stack, tmp_path, grace=30, feed_seconds=8)
    assert reply.startswith("250 "), reply
    assert status == 0, log
    assert "draining 1 open transactions, grace 30 s" in log
    assert "grace over" not in log
    decision = [line for line in log.splitlines() if "action=accept" in line and "client=127.0.0.3" in line]
    assert decision, log
    assert log.rstrip().splitlines()[-1].split(": ", 1)[1].startswith("stopped after ")
    stack.sink.find(marker, timeout=60)  # delivered


def test_a_client_still_sending_past_the_grace_gets_451_from_govmilter(
    stack: Stack, tmp_path: Path, restore: object
) -> None:
    marker, reply, status, log = stop_mid_data(stack, tmp_path, grace=2, feed_seconds=8)
    # Postfix passes our reply on; a cut milter connection would read "451 4.3.5 Server configuration problem"
    assert reply.startswith("451-4.3.2 ") and "service shutting down" in reply, reply
    assert status == 0, log
    assert "draining 1 open transactions, grace 2 s" in log and "shutdown grace over" in log
    assert "check=shutdown" in log and "no step from Postfix" not in log
    time.sleep(2)
    assert not [item for item in stack.sink.messages if marker.encode() in item.data], "delivered"
