"""DKIM on one big message: Python heap at its peak (tracemalloc) and time, whole message vs streamed.

    .venv/bin/python bench/dkim_cost.py [--attachment BYTES]

The message is bench/memory.py's big message (a base64 attachment of 18 MiB by
default: ~25.8 MB), read from a file in the spool's 64 KiB chunks. "whole" is what
the auth and dkim checks did before the body hash was streamed: the chunks joined,
dkimpy given the whole message (its own canonicalization and hash). "streamed" is
what they do now (checks/auth/bodyhash.py). Both sign with the same RSA-2048 key
(OpenSSL through signing.py) and verify that signature; the key record is answered
from memory (DNS is not what is measured). One process, one message at a time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "milter"))
sys.path.insert(0, str(ROOT / "lab"))
sys.path.insert(0, str(ROOT / "bench"))

import dkim  # noqa: E402
import memory  # noqa: E402

from govmilter.checks.auth import dkim as dkim_mod  # noqa: E402
from govmilter.checks.auth.signing import CANONICALIZE, _local, keygen, load_key, public_record, sign  # noqa: E402
from govmilter.clients.dns import Budget, Records  # noqa: E402
from govmilter.config import DkimKey  # noqa: E402

CHUNK = 65536


class OneRecord:
    def __init__(self, record: str):
        self.record = record

    def query(self, name: str, qtype: str, budget: Budget, purpose: str) -> Records:
        return Records("found", (self.record,))


def chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            yield block


def measure(label: str, work: Callable[[], Any]) -> Any:
    tracemalloc.start()
    started = time.perf_counter()
    result = work()
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"{label:<18} peak heap {peak / 2**20:8.1f} MiB   {elapsed:6.2f} s   {result}", flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--attachment", type=int, default=18 * 2**20, help="decoded bytes of the attachment")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        keygen("alpha.com", "s1", "rsa", str(root / "key.pem"))
        key = load_key(DkimKey("alpha.com", "s1", str(root / "key.pem")))
        zone = OneRecord(public_record(str(root / "key.pem")))
        raw = memory.big(1, args.attachment).replace(b"From: <sender1@example.com>", b"From: <a@alpha.com>")
        (root / "message").write_bytes(raw)
        print(f"message: {len(raw) / 1e6:.1f} MB ({len(raw)} bytes), chunks of {CHUNK}", flush=True)
        del raw

        def sign_whole() -> str:
            message = b"".join(chunks(root / "message"))
            _local.rsa_key = key.rsa_key
            try:
                field = dkim.DKIM(message, signature_algorithm=key.algorithm, linesep=b"\r\n").sign(
                    b"s1", b"alpha.com", key.pem, canonicalize=CANONICALIZE
                )
            finally:
                _local.rsa_key = None
            return field.decode().partition(":")[2].replace("\r\n", "").strip()

        def verify_whole(value: str) -> bool:
            message = f"DKIM-Signature: {value}\r\n".encode() + b"".join(chunks(root / "message"))
            verifier = dkim.DKIM(message, logger=dkim_mod._quiet, minkey=1024)
            return bool(verifier.verify(0, dnsfunc=lambda name, timeout=5: zone.record.encode()))

        def verify_streamed(value: str) -> str:
            header = iter([f"DKIM-Signature: {value}\r\n".encode()])
            both = (block for source in (header, chunks(root / "message")) for block in source)
            return ",".join(r.result for r in dkim_mod.verify_all(both, zone, Budget(5), 5))  # type: ignore[arg-type]

        whole = measure("sign, whole", sign_whole)
        measure("verify, whole", lambda: verify_whole(whole))
        streamed = measure("sign, streamed", lambda: sign(chunks(root / "message"), key))
        measure("verify, streamed", lambda: verify_streamed(streamed))
        bh = [dkim.util.parse_tag_value(v.encode())[b"bh"] for v in (whole, streamed)]
        print(f"same bh=: {bh[0] == bh[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
