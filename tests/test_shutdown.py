"""SIGTERM drains: the daemon as a process, spoken to in the milter protocol as Postfix speaks it.

A raw milter client (the MTA side of the protocol, v6) holds transactions open while the daemon
is told to stop: open transactions finish within [milter] shutdown_grace, a new one is answered
451 4.3.2, one still open past the grace is answered 451 4.3.2 at its next step (never a cut
connection, which Postfix would answer with milter_default_action), and the daemon exits 0.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stack import free_port, port_open, wait_until
from support.harness import RULES

SMFI_VERSION = 6
ALL_ACTIONS = 0x1FF & ~0x100  # every modification, but no SETSYMLIST: the connect step stays


class MilterClient:
    """The MTA's side of the milter protocol: every step sent, every step answered."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self._send(b"O", struct.pack(">III", SMFI_VERSION, ALL_ACTIONS, 0))
        command, _ = self._read()
        assert command == b"O"

    def _send(self, command: bytes, data: bytes = b"") -> None:
        self.sock.sendall(struct.pack(">I", len(data) + 1) + command + data)

    def _read(self) -> tuple[bytes, bytes]:
        header = self._exact(5)
        length = struct.unpack(">I", header[:4])[0]
        return header[4:5], self._exact(length - 1)

    def _exact(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise ConnectionError("the milter closed the connection")
            data += chunk
        return data

    def step(self, command: bytes, data: bytes = b"") -> tuple[bytes, bytes]:
        """Send one step and return the final reply (modifications before it are skipped)."""
        self._send(command, data)
        while True:
            reply, payload = self._read()
            if reply not in (b"h", b"m", b"i", b"p"):  # add/change header, insert header, progress
                return reply, payload

    def macros(self, stage: bytes, **values: str) -> None:
        self._send(b"D", stage + b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in values.items()))

    def start(self, queue_id: str, mail_from: str = "sender@example.com") -> None:
        """Connect, HELO, MAIL FROM and RCPT TO, each answered `continue`."""
        self.macros(b"C", **{"{client_addr}": "127.0.0.3"})
        assert self.step(b"C", b"client.example\x004" + struct.pack(">H", 25) + b"127.0.0.3\x00")[0] == b"c"
        assert self.step(b"H", b"client.example\x00")[0] == b"c"
        assert self.mail(queue_id, mail_from)[0] == b"c"
        assert self.step(b"R", b"<user@bacninh.gov.vn>\x00")[0] == b"c"

    def mail(self, queue_id: str, mail_from: str = "sender@example.com") -> tuple[bytes, bytes]:
        self.macros(b"M", i=queue_id, **{"{client_addr}": "127.0.0.3"})
        return self.step(b"M", f"<{mail_from}>".encode() + b"\x00")

    def finish(self, body: bytes = b"Xin chao.\r\n") -> tuple[bytes, bytes]:
        """Headers, body and end of message: the first answer that is not `continue`."""
        for name, value in (("From", "<sender@example.com>"), ("To", "<user@bacninh.gov.vn>"), ("Subject", "hi")):
            reply = self.step(b"L", name.encode() + b"\x00" + value.encode() + b"\x00")
            if reply[0] != b"c":
                return reply
        for command, data in ((b"N", b""), (b"B", body), (b"E", b"")):
            reply = self.step(command, data)
            if reply[0] != b"c":
                return reply
        return reply

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._send(b"Q")
        self.sock.close()


class Daemon:
    def __init__(self, tmp_path: Path, grace: float):
        self.port = free_port()
        self.log = tmp_path / "govmilter.log"
        settings = {
            "milter.socket": f'"inet:{self.port}@127.0.0.1"',
            "milter.spool_dir": f'"{tmp_path}"',
            "milter.shutdown_grace": str(grace),
            "rules.dir": f'"{RULES}"',
            "rules.last_good_dir": f'"{tmp_path / "last-good"}"',
            "history.path": f'"{tmp_path / "history.sqlite"}"',  # never the host's /var/lib/govmilter
            "metrics.listen": '""',
            "network.gateway_host": "[]",
        }
        command = [sys.executable, "-m", "govmilter", "run", "--skip", "antivirus", "--skip", "dnsbl"]
        for key, value in settings.items():
            command += ["--set", f"{key}={value}"]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(command, stdout=out, stderr=out, start_new_session=True)
        wait_until(lambda: port_open(self.port) or self.proc.poll() is not None, 30, "govmilter")
        assert self.proc.poll() is None, self.text()

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_log(self, needle: str, timeout: float = 15) -> None:
        wait_until(lambda: needle in self.text(), timeout, repr(needle))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.stop()


def start(daemons: list[Daemon], tmp_path: Path, grace: float) -> Daemon:
    daemon = Daemon(tmp_path, grace)
    daemons.append(daemon)
    return daemon


def test_sigterm_lets_an_open_transaction_finish_and_refuses_new_ones(tmp_path: Path, daemons: list[Daemon]) -> None:
    daemon = start(daemons, tmp_path, grace=20)
    open_tx = MilterClient(daemon.port)
    open_tx.start("QOPEN1")
    idle = MilterClient(daemon.port)  # a connection between transactions
    idle.macros(b"C", **{"{client_addr}": "127.0.0.3"})
    assert idle.step(b"C", b"client.example\x004" + struct.pack(">H", 25) + b"127.0.0.3\x00")[0] == b"c"

    daemon.proc.send_signal(signal.SIGTERM)
    daemon.wait_log("shutting down (SIGTERM), draining 1 open transactions, grace 20 s")
    with pytest.raises(OSError):  # no new connection is served: refused, or reset within 5 s
        MilterClient(daemon.port).close()
    # a new transaction on a connection that was already open is told to come back
    reply, text = idle.mail("QNEW1")
    assert reply == b"y" and text.startswith(b"451-4.3.2 ") and b"service shutting down" in text, (reply, text)

    time.sleep(1)  # the open transaction takes its time, well inside the grace
    assert daemon.proc.poll() is None
    assert open_tx.finish() == (b"a", b"")  # accepted, judged as ever
    open_tx.close()
    idle.close()
    assert daemon.proc.wait(15) == 0
    log = daemon.text()
    assert "queue_id=QOPEN1 " in log and "action=accept" in log
    assert "queue_id=QNEW1 " in log and "check=shutdown" in log
    assert "grace over" not in log
    assert log.rstrip().splitlines()[-1].split(": ", 1)[1].startswith("stopped after ")


def test_a_transaction_past_the_grace_gets_451_at_its_next_step(tmp_path: Path, daemons: list[Daemon]) -> None:
    daemon = start(daemons, tmp_path, grace=1)
    slow = MilterClient(daemon.port)
    slow.start("QSLOW1")
    daemon.proc.send_signal(signal.SIGTERM)
    daemon.wait_log("shutdown grace over after")
    assert daemon.proc.poll() is None  # still there to answer: a cut would be milter_default_action
    reply, text = slow.finish()
    assert reply == b"y" and text.startswith(b"451-4.3.2 ") and b"service shutting down" in text, (reply, text)
    assert b"reference: QSLOW1" in text  # the queue id, for the helpdesk
    slow.close()
    assert daemon.proc.wait(15) == 0
    log = daemon.text()
    assert "queue_id=QSLOW1 " in log and "action=tempfail check=shutdown" in log
    assert "stopped after" in log


def test_a_second_signal_ends_the_grace_and_an_idle_daemon_stops_at_once(tmp_path: Path, daemons: list[Daemon]) -> None:
    daemon = start(daemons, tmp_path, grace=60)
    open_tx = MilterClient(daemon.port)
    open_tx.start("QTWICE")
    daemon.proc.send_signal(signal.SIGINT)  # Ctrl-C drains too
    daemon.wait_log("shutting down (SIGINT), draining 1 open transactions, grace 60 s")
    started = time.monotonic()
    daemon.proc.send_signal(signal.SIGTERM)
    daemon.wait_log("shutdown grace over after")
    assert time.monotonic() - started < 5
    assert open_tx.finish()[1].startswith(b"451-4.3.2 ")  # a multi-line reply: the text, then the reference
    open_tx.close()
    assert daemon.proc.wait(15) == 0

    idle = start(daemons, tmp_path, grace=60)
    started = time.monotonic()
    idle.proc.send_signal(signal.SIGTERM)
    assert idle.proc.wait(15) == 0
    assert time.monotonic() - started < 3  # nothing open: no waiting
    assert "draining 0 open transactions" in idle.text()


def test_sighup_does_not_stop_the_daemon(tmp_path: Path, daemons: list[Daemon]) -> None:
    daemon = start(daemons, tmp_path, grace=5)
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_log("SIGHUP ignored")
    client = MilterClient(daemon.port)
    client.start("QHUP1")
    assert client.finish() == (b"a", b"")
    client.close()
    assert daemon.proc.poll() is None
    os.kill(daemon.proc.pid, signal.SIGTERM)
    assert daemon.proc.wait(15) == 0


def test_the_daemon_asks_postfix_for_header_changes_and_logs_its_stop(tmp_path: Path, daemons: list[Daemon]) -> None:
    """Found by the mutation run: the flags registered with libmilter, and the stop's own log line."""
    daemon = start(daemons, tmp_path, grace=5)
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=30) as sock:
        sock.sendall(struct.pack(">I", 13) + b"O" + struct.pack(">III", SMFI_VERSION, ALL_ACTIONS, 0))
        reply = b""
        while len(reply) < 17:
            chunk = sock.recv(17 - len(reply))
            assert chunk, "the milter closed the connection"
            reply += chunk
    assert reply[4:5] == b"O"
    _version, actions, _protocol = struct.unpack(">III", reply[5:17])
    add_headers, change_headers = 0x01, 0x10  # SMFIF_ADDHDRS, SMFIF_CHGHDRS
    assert actions & (add_headers | change_headers) == add_headers | change_headers, hex(actions)
    assert "TCP_NODELAY set on the milter listening socket" in daemon.text()
    signalled = time.monotonic()
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(15) == 0
    wall = time.monotonic() - signalled
    assert "(listening sockets closed: 1)" in daemon.text()  # found and replaced: ours, only ours
    [stopped] = [line for line in daemon.text().splitlines() if "stopped after" in line]
    seconds = float(stopped.split("stopped after ", 1)[1].split(" s", 1)[0])
    assert 0 <= seconds <= wall + 0.05, (stopped, wall)  # %.1f rounds


def test_a_transaction_with_no_step_past_the_grace_is_named_and_the_daemon_stops(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    """Found by the mutation run: the grace's own duration in its log line, and the connection that
    Postfix left without a step for the answer window is logged by queue id before the stop."""
    daemon = start(daemons, tmp_path, grace=2)
    silent = MilterClient(daemon.port)
    silent.start("QSILENT1")
    daemon.proc.send_signal(signal.SIGTERM)
    daemon.wait_log("shutdown grace over after")
    [over] = [line for line in daemon.text().splitlines() if "shutdown grace over after" in line]
    seconds = float(over.split("grace over after ", 1)[1].split(" s", 1)[0])
    assert 2 <= seconds < 7, over
    daemon.wait_log("shutdown: no step from Postfix within 10 s, closing", timeout=30)
    assert "QSILENT1" in daemon.text().split("no step from Postfix", 1)[1].splitlines()[0]
    assert daemon.proc.wait(15) == 0
    silent.close()


def test_a_stale_unix_socket_left_by_a_crash_does_not_stop_the_start(tmp_path: Path) -> None:
    path = tmp_path / "milter.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nothing listens: what a killed daemon leaves
    log = tmp_path / "govmilter.log"
    command = [sys.executable, "-m", "govmilter", "run", "--skip", "antivirus", "--skip", "dnsbl",
               "--set", f'milter.socket="unix:{path}"', "--set", f'milter.spool_dir="{tmp_path}"',
               "--set", f'rules.dir="{RULES}"', "--set", f'rules.last_good_dir="{tmp_path / "last-good"}"',
               "--set", 'metrics.listen=""', "--set", "network.gateway_host=[]",
               "--set", f'history.path="{tmp_path / "history.sqlite"}"']  # fmt: skip
    with open(log, "ab") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=out, start_new_session=True)
    try:
        wait_until(lambda: "govmilter listening on" in log.read_text() or proc.poll() is not None, 30, "govmilter")
        assert proc.poll() is None, log.read_text()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(path))  # the new socket, not the stale file
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)

