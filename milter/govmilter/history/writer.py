"""The history writer: decision records go to the store off the hot path.

submit() is what a message's answer costs: one put into a bounded queue, never a wait. A
thread takes the records in batches and writes each batch in one transaction. When the store
cannot take them (SQLite locked or its disk full, PostgreSQL down) the batch is kept and
tried again with a growing pause (up to RETRY_MAX seconds); meanwhile new records wait in the
queue, and past its bound ([history] queue_size) a record is dropped and counted
(govmilter_history_records_dropped_total{reason="queue_full"}): mail is never delayed for
the history. When the store returns, what was kept is written ("catches up"). The same
thread prunes the store every prune_interval seconds (retention_days, max_size_mb).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from govmilter.history.record import DecisionRecord
from govmilter.history.store import Store, StoreUnavailable
from govmilter.metrics import Metrics

log = logging.getLogger("govmilter.history")

BATCH = 200  # records per transaction at most
RETRY_MIN = 0.5  # seconds before the first retry of a store that failed; doubles up to RETRY_MAX
RETRY_MAX = 30.0
SIZE_INTERVAL = 60.0  # seconds between readings of the store's size (the gauge)


class HistoryWriter:
    def __init__(
        self,
        opener: Callable[[], Store],
        metrics: Metrics,
        *,
        queue_size: int = 10000,
        retention_days: float = 30.0,
        max_bytes: int = 0,
        prune_interval: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ):
        self.opener = opener
        self.metrics = metrics
        self.queue: queue.Queue[DecisionRecord] = queue.Queue(maxsize=max(1, queue_size))
        self.retention = retention_days * 86400.0
        self.max_bytes = max_bytes
        self.prune_interval = prune_interval
        self.clock = clock
        self.store: Store | None = None
        self.up = False  # the last write (or open) succeeded
        self.kept = 0  # records held back while the store is down (the batch in hand)
        self._stop = threading.Event()
        self._wake = threading.Event()  # prune now (tests, `trace` never)
        self._thread: threading.Thread | None = None
        self._dropped_full = metrics.history_dropped.labels(reason="queue_full")
        for reason in ("queue_full", "store_error", "shutdown"):
            metrics.history_dropped.labels(reason=reason)
        for outcome in ("ok", "failed"):
            metrics.history_prunes.labels(outcome=outcome)

    # the hot path ---------------------------------------------------------------------------

    def submit(self, record: DecisionRecord) -> bool:
        """Queue a record for the store; False (counted) when the queue is full. Never waits."""
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self._dropped_full.inc()
            return False
        return True

    # the thread -----------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="history-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Write what is queued within `timeout` seconds, then stop; what is left is counted dropped."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("history: the writer did not finish within %.0f s; records left unwritten", timeout)

    def prune_now(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        down_since = 0.0
        try:  # at start: the store's state is known (and alerted on) before the first message
            self._open()
            self._set_up(True)
        except StoreUnavailable as exc:
            log.error("history: the store cannot be opened (%s); records queue until it can", exc)
            self._set_up(False)
            down_since = time.monotonic()
        pending: list[DecisionRecord] = []
        pause = 0.0
        next_prune = time.monotonic() + min(60.0, self.prune_interval)
        next_size = 0.0
        while True:
            stopping = self._stop.is_set()
            if not pending:
                pending = self._take(0.0 if stopping else 0.5)
                if not pending and stopping:
                    break
            if pending:
                try:
                    self._write(pending)
                except StoreUnavailable as exc:
                    self.kept = len(pending)
                    self._close()  # opened afresh at the next try (a connection past an I/O error)
                    if self.up or not down_since:
                        down_since = down_since or time.monotonic()
                        log.error(
                            "history: the store cannot be written (%s); %d records kept, new ones queue"
                            " (up to %d), then are dropped and counted; mail is not delayed",
                            exc,
                            len(pending),
                            self.queue.maxsize,
                        )
                    self._set_up(False)
                    if stopping:
                        self.metrics.history_dropped.labels(reason="shutdown").inc(len(pending) + self.queue.qsize())
                        log.error("history: stopping with the store down: %d records not written",
                                  len(pending) + self.queue.qsize())  # fmt: skip
                        break
                    pause = min(RETRY_MAX, max(RETRY_MIN, pause * 2))
                    self._stop.wait(pause)
                    continue
                except Exception:
                    log.exception("history: %d records could not be stored and are dropped", len(pending))
                    self.metrics.history_dropped.labels(reason="store_error").inc(len(pending))
                else:
                    if down_since:
                        log.warning(
                            "history: the store is back after %.0f s; writing the records kept",
                            time.monotonic() - down_since,
                        )
                        down_since = 0.0
                    self.metrics.history_written.inc(len(pending))
                    pause = 0.0
                self.kept = 0
                for _ in pending:
                    self.queue.task_done()
                pending = []
            now = time.monotonic()
            if (self._wake.is_set() and not stopping) or now >= next_prune:
                self._wake.clear()
                next_prune = now + self.prune_interval
                self._prune()
                next_size = 0.0
            if now >= next_size and self.up:
                next_size = now + SIZE_INTERVAL
                self._measure()
        self._close()

    def _close(self) -> None:
        if self.store is not None:
            try:
                self.store.close()
            except Exception as exc:
                log.debug("history: closing the store: %s", exc)
            self.store = None

    def _take(self, timeout: float) -> list[DecisionRecord]:
        try:
            batch = [self.queue.get(timeout=timeout) if timeout else self.queue.get_nowait()]
        except queue.Empty:
            return []
        while len(batch) < BATCH:
            try:
                batch.append(self.queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _open(self) -> Store:
        if self.store is None:
            try:
                self.store = self.opener()
            except StoreUnavailable:
                raise
            except Exception as exc:  # a directory not writable, a file that is not a database, ...
                raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
        return self.store

    def _write(self, records: list[DecisionRecord]) -> None:
        self._open().write(records)
        self._set_up(True)

    def _set_up(self, up: bool) -> None:
        self.up = up
        self.metrics.history_store_up.set(1 if up else 0)

    def _prune(self) -> None:
        try:
            store = self._open()
            deleted = store.prune(self.clock() - self.retention, self.max_bytes)
        except StoreUnavailable as exc:
            self.metrics.history_prunes.labels(outcome="failed").inc()
            log.warning("history: pruning failed: %s", exc)
            return
        except Exception:
            self.metrics.history_prunes.labels(outcome="failed").inc()
            log.exception("history: pruning failed")
            return
        self.metrics.history_prunes.labels(outcome="ok").inc()
        if deleted:
            log.info("history: pruned %d records (retention %.0f days)", deleted, self.retention / 86400)

    def _measure(self) -> None:
        try:
            self.metrics.history_store_bytes.set(self._open().size())
        except Exception as exc:
            log.debug("history: cannot read the store's size: %s", exc)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued record is written (tests, shutdown); False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.queue.unfinished_tasks == 0:  # every record taken was written or dropped
                return True
            time.sleep(0.02)
        return False
