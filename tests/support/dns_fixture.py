"""A real DNS server for the blocklist tests: dnsmasq on a free loopback port, and one that never answers.

Import the fixtures into a test module: `from dns_fixture import lab_dns, silent_dns  # noqa: F401`.
dnsmasq answers the test zone below and NXDOMAIN for every other name.
"""

from __future__ import annotations

import shutil
import socket
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from stack import Dns, free_dns_port

DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"

# RFC 5782 test entries as the lists publish them, and a few more for the return-code rules
RECORDS = (
    "2.0.0.127.zen.spamhaus.org,127.0.0.2",  # client 127.0.0.2: SBL
    "10.0.0.127.zen.spamhaus.org,127.0.0.10",  # client 127.0.0.10: PBL
    "3.0.0.127.zen.spamhaus.org,127.255.255.254",  # client 127.0.0.3: "query refused", counts for nothing
    # client 2001:db8::2 (IPv6 nibbles)
    "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.zen.spamhaus.org,127.0.0.2",
    "dbltest.com.dbl.spamhaus.org,127.0.1.2",
    "test.uribl.com.multi.uribl.com,127.0.0.14",  # black, grey and red bits
    "greyonly.example.multi.uribl.com,127.0.0.4",  # grey bit only
)


def free_dual_port() -> int:
    """A loopback port free for both UDP and TCP (dnsmasq binds both)."""
    return free_dns_port()


class LabDns(Dns):
    """The loopback stack's dnsmasq with this module's records, on a free port."""

    def __init__(self, root: Path, records: Sequence[str] = RECORDS, ttl: int = 300):
        super().__init__(root, 0, records, ttl)

    def start(self) -> LabDns:  # type: ignore[override]
        self.port = free_dns_port()
        super().start()
        return self


class SilentDns:
    """A UDP socket that reads every query and never answers: a resolver that hangs."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.received = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drop, name="silent-dns", daemon=True)
        self._thread.start()

    def _drop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sock.recvfrom(4096)
                self.received += 1
            except TimeoutError:
                continue
            except OSError:
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def _require_dnsmasq() -> None:
    if not Path(DNSMASQ).exists():
        pytest.fail("dnsmasq is not installed (make test installs dnsmasq-base)")


@pytest.fixture(scope="module")
def lab_dns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabDns]:
    _require_dnsmasq()
    server = LabDns(tmp_path_factory.mktemp("dns")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def silent_dns() -> Iterator[SilentDns]:
    server = SilentDns()
    try:
        yield server
    finally:
        server.close()
