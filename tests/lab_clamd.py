"""A private clamd for tests, the demo and the benchmark.

It runs from a directory of its own with the lab's test database (lab/stack.py's
lab_signatures: hashes of the samples, and EICAR as a body signature), so it
starts in about a second with no Internet and never touches /etc/clamav or the
system's clamd. Usable as a context manager; stop() and start() again keep the
same socket, which is how the tests play "clamd went away and came back".
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from stack import EICAR, TESTFILES, lab_signatures  # one test database for the lab and the tests

CLAMD = shutil.which("clamd") or "/usr/sbin/clamd"
__all__ = ["CLAMD", "EICAR", "TESTFILES", "LabClamd", "free_port"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LabClamd:
    """clamd on a unix socket in `directory`, and on 127.0.0.1:`tcp_port` when given."""

    def __init__(
        self,
        directory: Path,
        *,
        tcp_port: int | None = None,
        stream_max_length: str = "100M",
        settings: dict[str, str] | None = None,
        start_timeout: float = 60.0,
    ):
        self.directory = Path(directory)
        self.socket_path = self.directory / "clamd.sock"
        self.tcp_port = tcp_port
        self.stream_max_length = stream_max_length
        self.settings = settings or {}
        self.start_timeout = start_timeout
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """The unix address in govmilter's configuration syntax."""
        return f"unix:{self.socket_path}"

    @property
    def tcp_address(self) -> str:
        if self.tcp_port is None:
            raise ValueError("this clamd has no TCP socket")
        return f"tcp:127.0.0.1:{self.tcp_port}"

    def _write_config(self) -> Path:
        database = self.directory / "db"
        database.mkdir(parents=True, exist_ok=True)
        for name, text in lab_signatures().items():
            (database / name).write_text(text)
        settings = {
            "LocalSocket": str(self.socket_path),
            "DatabaseDirectory": str(database),
            "TemporaryDirectory": str(self.directory),
            "Foreground": "yes",
            "LogFile": str(self.directory / "clamd.log"),
            "StreamMaxLength": self.stream_max_length,
            "AlertExceedsMax": "yes",  # nesting past the limits is an evasion technique
            "SelfCheck": "3600",
        }
        if self.tcp_port is not None:
            settings.update(TCPSocket=str(self.tcp_port), TCPAddr="127.0.0.1")
        settings.update(self.settings)
        config = self.directory / "clamd.conf"
        config.write_text("".join(f"{key} {value}\n" for key, value in settings.items()))
        return config

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        with open(self.directory / "clamd.out", "ab") as out:  # the child keeps its own copy
            self.process = subprocess.Popen(
                [CLAMD, "-c", str(config)], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (self.directory / "clamd.out").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"clamd exited with {self.process.returncode}:\n{log}")
            if self.ping():
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"clamd did not answer PING within {self.start_timeout}s")

    def ping(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(2.0)
                sock.connect(str(self.socket_path))
                sock.sendall(b"zPING\0")
                return sock.recv(16).startswith(b"PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> LabClamd:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
