"""The antivirus check: every message goes through clamd (QD 06/2022 Dieu 8.2).

The raw message (headers and body, read back from the spool in chunks) is
streamed with INSTREAM. Copies of one message (the same content, other
per-copy metadata) reuse the first copy's answer for a few minutes, from the
same ClamAV version only (scancache.py). A virus is refused with its
signature name; a clean message gets X-Virus-Scanned. When clamd gives no answer the per-direction
failure policy decides (451 by default: the sender retries, nothing is lost
unscanned). clamd's "INSTREAM size limit exceeded" (the stream passed its
StreamMaxLength) means "not scanned", never "clean": on_size_limit decides.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Sequence

from govmilter import __version__
from govmilter.clients.clamd import ClamdClient, ClamdError, ClamdPool, Outcome
from govmilter.config import AntivirusConfig, Config
from govmilter.decision import clean
from govmilter.metrics import Metrics
from govmilter.model import Action, Stage, Transaction, Verdict
from govmilter.scancache import CachedScan, ScanCache, scan_key

log = logging.getLogger("govmilter.antivirus")

SCANNED_HEADER = "X-Virus-Scanned"
NOT_SCANNED_HEADER = "X-Virus-Status"
VERSION_TIMEOUT = 2.0  # seconds for the occasional VERSION refresh
MAX_SIGNATURE_LABELS = 500  # distinct signature label values before "other"
REGULATION = "QD 06/2022 Dieu 8.2"

_REPLY_UNSAFE = re.compile(r"[^A-Za-z0-9._:/+=@\-]")  # SMTP replies: ASCII, and never '%'


def safe_signature(name: str) -> str:
    """A signature name fit for an SMTP reply, a header and a label."""
    return _REPLY_UNSAFE.sub("_", name)[:100] or "unknown"


class AntivirusCheck:
    name = "antivirus"
    stages = frozenset({Stage.EOM})

    def __init__(self, config: AntivirusConfig, pool: ClamdPool, metrics: Metrics):
        self.config = config
        self.pool = pool
        self.metrics = metrics
        self.cache = ScanCache(config.cache_entries, config.cache_ttl)
        self._labels: set[str] = set()
        self._labels_lock = threading.Lock()

    def run(self, stage: Stage, tx: Transaction) -> Sequence[Verdict]:
        key = scan_key(tx.headers, tx.body_chunks()) if self.cache.enabled else ""
        if key:
            cached = self.cache.get(key, self._current_version)
            self.metrics.scan_cache.labels(result="hit" if cached else "miss").inc()
            if cached is not None:
                return [self._answer(cached)]
        started = time.perf_counter()
        try:
            reply = self.pool.scan(tx.raw_chunks, self.config.scan_timeout)
        except ClamdError as exc:
            self.metrics.scans.labels(result=exc.kind).inc()
            queue_id = clean(tx.envelope.queue_id) or "-"
            log.warning("queue_id=%s antivirus=%s problem=%s", queue_id, exc.kind, clean(str(exc), 400))
            return [self._failed(tx, exc.kind)]
        finally:
            self.metrics.scan_duration.observe(time.perf_counter() - started)
        self.metrics.scans.labels(result=reply.outcome.value).inc()
        if reply.outcome is Outcome.SIZE_LIMIT:
            return [self._size_limit(tx, reply.signature or "INSTREAM size limit exceeded (StreamMaxLength)")]
        signature = safe_signature(reply.signature) if reply.outcome is Outcome.FOUND else ""
        answer = CachedScan(signature, reply.address, self._current_version(reply.address))
        if key:
            self.cache.put(key, answer)
        return [self._answer(answer)]

    def _current_version(self, address: str) -> str:
        return self.pool.version(address, VERSION_TIMEOUT)

    def _answer(self, scan: CachedScan) -> Verdict:
        if scan.signature:
            self.metrics.signatures.labels(signature=self._label(scan.signature)).inc()
            return found(scan.signature)
        scanned = f"govmilter {__version__} with ClamAV {scan.version}".rstrip()
        return Verdict(Action.CONTINUE, self.name, headers=((SCANNED_HEADER, scanned),), reason="clean")

    def _label(self, signature: str) -> str:
        """Signature names as metric labels, bounded: past the cap they count as "other"."""
        with self._labels_lock:
            if signature in self._labels:
                return signature
            if len(self._labels) < MAX_SIGNATURE_LABELS:
                self._labels.add(signature)
                return signature
        return "other"

    def _failed(self, tx: Transaction, kind: str) -> Verdict:
        outbound = tx.envelope.internal
        policy = self.config.on_failure_outbound if outbound else self.config.on_failure_inbound
        return self._not_scanned(
            policy,
            "scan-failed",
            f"clamd {kind}, {'outbound' if outbound else 'inbound'} policy {policy}",
            note="virus scanner unavailable",
            reject=(
                "554",
                "5.7.1",
                f"Khong quet duoc virus, thu bi tu choi ({REGULATION})"
                " - the message could not be scanned for viruses and is refused",
            ),
            retry=(
                f"Tam thoi khong quet duoc virus, vui long gui lai sau ({REGULATION})"
                " - virus scanning is temporarily unavailable, please try again later"
            ),
        )

    def _size_limit(self, tx: Transaction, answer: str) -> Verdict:
        policy = self.config.on_size_limit
        return self._not_scanned(
            policy,
            "size-limit",
            f"not scanned whole, {tx.raw_size} bytes: clamd {answer}; policy {policy}",
            note="too large for the virus scanner",
            reject=(
                "552",
                "5.3.4",
                f"Thu qua lon de quet virus, thu bi tu choi ({REGULATION})"
                " - the message is too large to be scanned for viruses and is refused",
            ),
            retry=(
                f"Thu qua lon de quet virus luc nay, vui long gui lai sau ({REGULATION})"
                " - the message is too large for the virus scanner now, please try again later"
            ),
        )

    def _not_scanned(
        self, policy: str, rule: str, reason: str, *, note: str, reject: tuple[str, str, str], retry: str
    ) -> Verdict:
        """A message clamd did not scan whole: accept with a header, reject, or tempfail, as the policy says."""
        if policy == "accept":
            header = (NOT_SCANNED_HEADER, f"not scanned (govmilter {__version__}: {note})")
            return Verdict(Action.CONTINUE, self.name, rule=rule, headers=(header,), reason=reason)
        if policy == "reject":
            code, enhanced, text = reject
            return Verdict(
                Action.REJECT, self.name, rule=rule, code=code, enhanced=enhanced, text=text, reason=reason
            )
        return Verdict(
            Action.TEMPFAIL, self.name, rule=rule, code="451", enhanced="4.7.1", text=retry, reason=reason
        )

    def health(self) -> dict[str, object]:
        """For /health and each scrape: PING every clamd address now; usable while one answers."""
        addresses: dict[str, str] = {}
        for client in self.pool.clients:
            address = client.address.text
            try:
                up = client.command("PING", time.monotonic() + self.config.connect_timeout) == "PONG"
            except ClamdError:
                up = False
            self.pool.observe(address, up)  # keeps govmilter_clamd_up current without traffic
            addresses[address] = "up" if up else "down"
        report: dict[str, object] = {"ok": "up" in addresses.values(), "clamd": addresses}
        opened = [address for address, breaker in self.pool.breakers.items() if breaker.is_open]
        if opened:
            report["circuit_open"] = opened
        return report


def found(signature: str) -> Verdict:
    return Verdict(
        Action.REJECT,
        "antivirus",
        rule="virus-found",
        code="554",
        enhanced="5.7.1",
        text=f"Thu co chua virus {signature} ({REGULATION}) - virus found: {signature}",
        reason=f"virus {signature}",
    )


def build(config: Config, metrics: Metrics) -> AntivirusCheck:
    settings = config.antivirus
    clients = [ClamdClient(address, settings.connect_timeout) for address in settings.clamd]

    def observe(address: str, up: bool) -> None:
        metrics.clamd_up.labels(address=address).set(1 if up else 0)

    pool = ClamdPool(
        clients,
        strategy=settings.strategy,
        breaker_failures=settings.breaker_failures,
        breaker_cooldown=settings.breaker_cooldown,
        observe=observe,
    )
    return AntivirusCheck(settings, pool, metrics)
