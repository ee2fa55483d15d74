"""A private, real PostgreSQL on loopback for the history tests (Debian's postgresql-15 binaries).

initdb in a temporary directory, one server on a free 127.0.0.1 port, trust authentication for
loopback only, run as the `postgres` user (the server refuses to run as root). Stop and start
it again to play an outage: its data stays.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from stack import free_port, port_open, wait_until


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.fail("PostgreSQL is not installed (Debian package postgresql, lab/install-deps.sh)")
    return Path(found[-1]).parent


def _as_postgres(args: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *args]
    return args


class Postgres:
    def __init__(self, root: Path):
        self.bin = _bindir()
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self.log = root / "postgres.log"

    @property
    def url(self) -> str:
        return f"postgresql://govmilter@127.0.0.1:{self.port}/history"

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        subprocess.run(
            _as_postgres([str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                          "--no-sync", "-E", "UTF8", "--locale", "C.UTF-8"]),
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        self.start()
        psql = [str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-q", "-c"]
        subprocess.run([*psql, "CREATE ROLE govmilter LOGIN"], check=True, capture_output=True, timeout=60)
        subprocess.run([*psql, "CREATE DATABASE history OWNER govmilter"], check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off"
        subprocess.run(
            _as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options,
                          "-w", "-t", "60", "start"]),
            check=True, capture_output=True, timeout=90,
        )  # fmt: skip
        wait_until(lambda: port_open(self.port), 30, "PostgreSQL")

    def stop(self) -> None:
        subprocess.run(
            _as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"]),
            capture_output=True, timeout=90,
        )  # fmt: skip


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    root = Path(tempfile.mkdtemp(prefix="govmilter-pg-"))
    os.chmod(root, 0o755)
    server = Postgres(root / "pg")
    server.init()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
