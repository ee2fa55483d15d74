"""Misbehaving clamd stand-ins on loopback, for the failure modes a real clamd rarely shows.

Each accepts connections on 127.0.0.1 and then does one bad thing: never answers,
trickles bytes forever, closes without a word, or answers nonsense. The working
paths are always tested against the real clamd.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from types import TracebackType


class FakeClamd:
    """behaviour: "silent" | "trickle" | "close" | "garbage" | "version" | "early-ok".

    early-ok: answers "stream: OK" after the first bytes of a stream (set `answered`), then reads
    the rest without a word: a broken clamd that calls clean what it has not seen.
    """

    def __init__(self, behaviour: str):
        self.behaviour = behaviour
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port: int = self.listener.getsockname()[1]
        self.accepted = 0
        self.open_connections = 0
        self.changed = threading.Condition()
        self._stop = threading.Event()
        self.answered = threading.Event()
        self._connections: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def address(self) -> str:
        return f"tcp:127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.changed:
                self.accepted += 1
                self.open_connections += 1
                self._connections.append(conn)
                self.changed.notify_all()
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            if self.behaviour == "close":
                conn.recv(65536)
            elif self.behaviour == "garbage":
                self._drain_instream(conn)
                conn.sendall(b"what is this\0")
            elif self.behaviour == "version":
                conn.recv(65536)
                conn.sendall(b"ClamAV 9.9.9/12345/Mon Nov 23 10:00:00 2026\0")
            elif self.behaviour == "early-ok":
                conn.recv(65536)
                conn.sendall(b"stream: OK\0")
                self.answered.set()
                while not self._stop.is_set() and conn.recv(65536):
                    pass
            elif self.behaviour == "trickle":
                while not self._stop.is_set():
                    conn.sendall(b"s")
                    time.sleep(0.1)
            else:  # silent: read everything, never answer
                while not self._stop.is_set() and conn.recv(65536):
                    pass
        except OSError:
            pass
        finally:
            conn.close()
            with self.changed:
                self.open_connections -= 1
                self.changed.notify_all()

    @staticmethod
    def _drain_instream(conn: socket.socket) -> None:
        data = b""
        while not data.endswith(b"\0\0\0\0"):
            block = conn.recv(65536)
            if not block:
                return
            data = (data + block)[-8:]

    def wait_accepted(self, count: int, timeout: float = 30.0) -> None:
        with self.changed:
            if not self.changed.wait_for(lambda: self.accepted >= count, timeout):
                raise TimeoutError(f"only {self.accepted} connections reached the fake clamd")

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        with self.changed:
            for conn in self._connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> FakeClamd:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()
