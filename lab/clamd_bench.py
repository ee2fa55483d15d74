"""How long a clamd scan takes, and what a new connection per scan costs (no IDSESSION).

    .venv/bin/python lab/clamd_bench.py            # starts a private clamd in a temp dir

Prints medians over repeated runs: connect+PING (the price of not reusing a
connection), and INSTREAM scans of clean messages of several sizes, over a unix
socket and over loopback TCP.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "milter"))  # govmilter without installing it; stack.py sits beside this script

from govmilter.clients.clamd import ClamdClient  # noqa: E402
from govmilter.spool import CHUNK  # noqa: E402
from stack import Clamd, free_port  # noqa: E402


def median_ms(action: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def ping(client: ClamdClient) -> Callable[[], object]:
    return lambda: client.command("PING", time.monotonic() + 10)


def scan(client: ClamdClient, chunks: list[bytes]) -> Callable[[], object]:
    return lambda: client.instream(iter(chunks), time.monotonic() + 120)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="clamd-bench-") as tmp, Clamd(Path(tmp), tcp_port=free_port()) as clamd:
        for address in (clamd.address, clamd.tcp_address):
            client = ClamdClient(address)
            kind = address.split(":")[0]
            connection = median_ms(ping(client), 500)
            print(f"{kind:4}  connect+PING              {connection:8.3f} ms")
            for size in (10_000, 100_000, 1_000_000, 10_000_000, 28_000_000):
                body = os.urandom(size)
                chunks = [body[i : i + CHUNK] for i in range(0, size, CHUNK)]
                runs = 200 if size <= 100_000 else 20 if size <= 1_000_000 else 5
                took = median_ms(scan(client, chunks), runs)
                share = connection / took * 100
                print(f"{kind:4}  INSTREAM {size:>11,} bytes {took:8.3f} ms   (connection {share:4.1f} % of it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
