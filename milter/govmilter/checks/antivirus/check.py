"""The antivirus check: every message goes through clamd (QD 06/2022 Dieu 8.2).

The raw message (headers and body, read back from the spool in chunks) is
streamed with INSTREAM. Copies of one message (the same content, other
per-copy metadata) reuse the first copy's answer for a few minutes, from the
same ClamAV version only (scancache.py). A virus is refused with its
signature name; a clean message gets X-Virus-Scanned. When clamd gives no answer the per-direction
failure policy decides (451 by default: the sender retries, nothing is lost
unscanned). clamd's "INSTREAM size limit exceeded" (the stream passed its
StreamMaxLength) means "not scanned", never "clean": on_size_limit decides.

clamd's size alerts (AlertExceedsMax: Heuristics.Limits.Exceeded.MaxFileSize or
MaxScanSize) mean two things. For a message at least `clamd_max_file_size` bytes
large (set it to clamd.conf's MaxFileSize) the message itself may be too big:
on_size_limit. For a smaller message only what something in it expands to can
pass the limit (a gzip of a gibibyte of zeros): a compression bomb, refused by
on_expansion_limit (rule expansion-limit).

clamd's own MIME parser decodes attachments, uuencode and data: URIs in HTML
attributes, but not yEnc blocks, nor data: URIs in plain text or CSS. Those files
(the walk's parts with transfer encoding x-yenc or x-data-uri) are decoded here and
each is scanned as an INSTREAM of its own, at most `max_embedded_scans` per message,
all within the one `scan_timeout` of the message. Past that count, or for a file
larger than clamd_max_file_size, the message is not scanned whole: on_size_limit.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import BinaryIO

from govmilter import __version__
from govmilter.checks import CheckHooks
from govmilter.checks.antivirus.scancache import CachedScan, ScanCache, scan_key
from govmilter.clients.clamd import (
    FRAME,
    SIZE_HEURISTICS,
    ClamdClient,
    ClamdError,
    ClamdPool,
    ClamdTimeout,
    Outcome,
    ScanReply,
    signatures_time,
)
from govmilter.config import AntivirusConfig, Config
from govmilter.metrics import Metrics
from govmilter.mime import extract
from govmilter.model import Action, Stage, Transaction, Verdict
from govmilter.text.escape import log_plain as clean
from govmilter.text.escape import reply_token

log = logging.getLogger("govmilter.antivirus")

SCANNED_HEADER = "X-Virus-Scanned"
NOT_SCANNED_HEADER = "X-Virus-Status"
VERSION_TIMEOUT = 2.0  # seconds for the occasional VERSION refresh
MAX_SIGNATURE_LABELS = 500  # distinct signature label values before "other"

# transfer encodings the walk gives files found inside body text that clamd does not decode
# itself (checked by hand against ClamAV 1.4: uuencode blocks and data: URIs in HTML
# attributes are found by clamd, yEnc blocks and data: URIs in text/plain or CSS are not)
EMBEDDED_ENCODINGS = frozenset({"x-yenc", "x-data-uri"})

def safe_signature(name: str) -> str:
    """A signature name fit for an SMTP reply, a header and a label (text/escape.py)."""
    return reply_token(name, 100)


class AntivirusCheck(CheckHooks):
    name = "antivirus"
    stages = frozenset({Stage.EOM})

    def __init__(self, config: AntivirusConfig, pool: ClamdPool, metrics: Metrics, spool_dir: str | None = None):
        self.config = config
        self.pool = pool
        self.metrics = metrics
        self.spool_dir = spool_dir  # where decoded embedded files past 256 KiB go (None: the system's)
        self.cache = ScanCache(config.cache_entries, config.cache_ttl)
        self._labels: set[str] = set()
        self._labels_lock = threading.Lock()

    def run(self, stage: Stage, tx: Transaction) -> Sequence[Verdict]:
        # the key covers the stored header fields; past max_header_fields some are not stored,
        # and two messages differing only there must never share an answer: no cache then
        use_cache = self.cache.enabled and not tx.headers_truncated
        key = scan_key(tx.headers, tx.body_chunks()) if use_cache else ""
        if key:
            cached = self.cache.get(key, self._current_version)
            self.metrics.scan_cache.labels(result="hit" if cached else "miss").inc()
            if cached is not None:
                return [self._answer(cached)]
        deadline = time.monotonic() + self.config.scan_timeout
        try:
            reply = self._scan(tx.raw_chunks, deadline)
            if reply.outcome is Outcome.CLEAN:
                reply, skipped = self._scan_embedded(tx, deadline, reply)
            else:
                skipped = ""
        except ClamdError as exc:
            queue_id = clean(tx.envelope.queue_id) or "-"
            log.warning("queue_id=%s antivirus=%s problem=%s", queue_id, exc.kind, clean(str(exc), 400))
            return [self._failed(tx, exc.kind)]
        if reply.outcome is Outcome.SIZE_LIMIT:
            said = reply.signature or "INSTREAM size limit exceeded (StreamMaxLength)"
            if reply.signature.startswith(SIZE_HEURISTICS) and tx.raw_size < self.config.clamd_max_file_size:
                return [self._expansion_limit(tx, said)]
            return [self._size_limit(tx, said)]
        if skipped:
            return [self._size_limit(tx, skipped)]
        signature = safe_signature(reply.signature) if reply.outcome is Outcome.FOUND else ""
        answer = CachedScan(signature, reply.address, self._current_version(reply.address))
        if key:
            self.cache.put(key, answer)
        return [self._answer(answer)]

    def _scan(self, chunks: Callable[[], Iterator[bytes]], deadline: float) -> ScanReply:
        """One INSTREAM through the pool, within what is left of the message's deadline."""
        started = time.perf_counter()
        try:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ClamdTimeout("scan_timeout passed before every part was scanned")
            reply = self.pool.scan(chunks, left)
        except ClamdError as exc:
            self.metrics.scans.labels(result=exc.kind).inc()
            raise
        finally:
            self.metrics.scan_duration.observe(time.perf_counter() - started)
        self.metrics.scans.labels(result=reply.outcome.value).inc()
        return reply

    def _scan_embedded(self, tx: Transaction, deadline: float, reply: ScanReply) -> tuple[ScanReply, str]:
        """Scan the files encoded in body text that clamd does not decode; (reply, why not whole)."""
        paths = [part.path for part in tx.facts().parts if part.transfer_encoding in EMBEDDED_ENCODINGS]
        if not paths:
            return reply, ""
        limit = self.config.max_embedded_scans
        skipped = ""
        if len(paths) > limit:
            skipped = f"{len(paths)} files encoded in body text, {limit} scanned (max_embedded_scans)"
        found = extract(tx.raw_chunks(), paths[:limit], self.config.clamd_max_file_size, self.spool_dir)
        try:
            for path in paths[:limit]:
                item = found.get(path)
                if item is None:
                    continue
                answer = self._scan(_file_chunks(item.file), deadline)
                if answer.outcome is not Outcome.CLEAN:
                    return answer, ""  # a virus, or a size alert: the message's answer
                if item.truncated and not skipped:
                    skipped = f"part {path} encoded in body text is larger than clamd_max_file_size"
        finally:
            for item in found.values():
                item.file.close()
        return reply, skipped

    def _current_version(self, address: str) -> str:
        return self.pool.version(address, VERSION_TIMEOUT)

    def _answer(self, scan: CachedScan) -> Verdict:
        if scan.signature:
            self.metrics.signatures.labels(signature=self._label(scan.signature)).inc()
            return found(scan.signature, self.config.reply_text_virus)
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
            reject=("554", "5.7.1", self.config.reply_text_scan_failed.format()),
            retry=self.config.reply_text_scan_failed_tempfail.format(),
        )

    def _size_limit(self, tx: Transaction, answer: str) -> Verdict:
        policy = self.config.on_size_limit
        return self._not_scanned(
            policy,
            "size-limit",
            f"not scanned whole, {tx.raw_size} bytes: clamd {answer}; policy {policy}",
            note="too large for the virus scanner",
            reject=("552", "5.3.4", self.config.reply_text_size_limit.format()),
            retry=self.config.reply_text_size_limit_tempfail.format(),
        )

    def _expansion_limit(self, tx: Transaction, answer: str) -> Verdict:
        policy = self.config.on_expansion_limit
        return self._not_scanned(
            policy,
            "expansion-limit",
            f"expands past clamd's limits, message {tx.raw_size} bytes: clamd {answer}; policy {policy}",
            note="expands past the virus scanner's limits",
            reject=("554", "5.7.1", self.config.reply_text_expansion_limit.format()),
            retry=self.config.reply_text_expansion_limit_tempfail.format(),
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
            if up:  # and the signatures' age (VERSION, fetched at most every few minutes)
                self.pool.version(address, VERSION_TIMEOUT)
            addresses[address] = "up" if up else "down"
        report: dict[str, object] = {"ok": "up" in addresses.values(), "clamd": addresses}
        opened = [address for address, breaker in self.pool.breakers.items() if breaker.is_open]
        if opened:
            report["circuit_open"] = opened
        return report


def found(signature: str, template: str = AntivirusConfig.reply_text_virus) -> Verdict:
    return Verdict(
        Action.REJECT,
        "antivirus",
        rule="virus-found",
        code="554",
        enhanced="5.7.1",
        text=template.format(signature=signature),
        reason=f"virus {signature}",
    )


def build(config: Config, metrics: Metrics) -> AntivirusCheck:
    settings = config.antivirus
    clients = [ClamdClient(address, settings.connect_timeout) for address in settings.clamd]

    def observe(address: str, up: bool) -> None:
        metrics.clamd_up.labels(address=address).set(1 if up else 0)

    def observe_version(address: str, reply: str) -> None:
        built = signatures_time(reply)
        if built is not None:  # no date: local signatures only, no series (doctor says so)
            metrics.clamd_signatures_time.labels(address=address).set(built)

    pool = ClamdPool(
        clients,
        strategy=settings.strategy,
        breaker_failures=settings.breaker_failures,
        breaker_cooldown=settings.breaker_cooldown,
        observe=observe,
        observe_version=observe_version,
    )
    spool_dir = config.milter.spool_dir
    return AntivirusCheck(settings, pool, metrics, spool_dir if spool_dir and os.path.isdir(spool_dir) else None)


def _file_chunks(file: BinaryIO) -> Callable[[], Iterator[bytes]]:
    """The pool may retry on another address: each call reads the file from its start."""

    def chunks() -> Iterator[bytes]:
        file.seek(0)
        while block := file.read(FRAME):
            yield block

    return chunks
