"""The history writer: off the hot path, bounded, and catching up after a store outage.

Real outages only: a SQLite database locked by another connection, a disk that refuses the
write (the kernel's file-size limit, RLIMIT_FSIZE, makes every write past it fail with EFBIG,
as a full disk fails with ENOSPC), PostgreSQL stopped (test_history_store.py). Submitting
never waits: what the store cannot take now is kept (the batch in hand and the queue) and
written when it returns; past the queue's bound a record is dropped and counted.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from govmilter.history.record import DecisionRecord
from govmilter.history.store import Query, SqliteStore
from govmilter.history.writer import HistoryWriter
from govmilter.metrics import Metrics
from stack import wait_until
from support.harness import ROOT

SAMPLE = dict(
    node="gw1", message_id="<m@x>", subject="s", mail_from="a@b.vn", rcpts=["c@d.vn"], from_header="",
    client_ip="10.0.0.1", client_name="", direction="inbound", direction_why="other client", authenticated=False,
    size=1, action="accept", check="", rule="", reply="", ruleset="v1",
)  # fmt: skip


def record(queue_id: str, t: float | None = None, **values: object) -> DecisionRecord:
    when = time.time() if t is None else t  # now: within the retention the writer prunes by
    return DecisionRecord(time=when, queue_id=queue_id, **{**SAMPLE, **values})  # type: ignore[arg-type]


def stored(path: Path) -> set[str]:
    store = SqliteStore(str(path), readonly=True)
    try:
        return {r.queue_id for r in store.search(Query(limit=100000))}
    finally:
        store.close()


def test_a_locked_database_delays_no_submit_and_the_writer_catches_up(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    SqliteStore(str(path)).close()
    metrics = Metrics()
    sample = metrics.registry.get_sample_value
    writer = HistoryWriter(lambda: SqliteStore(str(path), timeout=0.2), metrics, queue_size=20)
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")  # another process holding the database (a long VACUUM, a backup tool)
    writer.start()
    try:
        results = [writer.submit(record(f"L{n}")) for n in range(60)]
        wait_until(lambda: writer.kept > 0, 30, "the writer to meet the lock")
        assert sample("govmilter_history_store_up") == 0
        dropped = results.count(False)
        # the writer took a batch (kept), the queue holds 20, the rest were dropped and counted
        assert 0 < dropped < 60
        assert sample("govmilter_history_records_dropped_total", {"reason": "queue_full"}) == dropped
        assert stored(path) == set()
        locker.execute("ROLLBACK")
        assert writer.flush(60), "the writer did not catch up"
    finally:
        locker.close()
        writer.stop()
    assert stored(path) == {f"L{n}" for n, ok in enumerate(results) if ok}
    assert sample("govmilter_history_records_written_total") == 60 - dropped
    assert sample("govmilter_history_store_up") == 1


def test_a_disk_that_refuses_writes_keeps_the_records_until_it_has_room(tmp_path: Path) -> None:
    """In a process of its own, whose file-size limit plays the full disk (then is lifted)."""
    script = textwrap.dedent(
        f"""
        import json, logging, resource, signal, sys, time
        sys.path[:0] = ["tests", "lab"]
        logging.basicConfig(level=logging.INFO)
        from govmilter.history.store import SqliteStore
        from govmilter.history.writer import HistoryWriter
        from govmilter.metrics import Metrics
        from history.test_history_writer import record
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        path = {str(tmp_path / "history.sqlite")!r}
        SqliteStore(path).close()
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (400_000, hard))  # the disk is full past 400 kB
        metrics = Metrics()
        value = metrics.registry.get_sample_value
        writer = HistoryWriter(lambda: SqliteStore(path), metrics, queue_size=5000)
        writer.start()
        for n in range(600):
            writer.submit(record(f"D{{n}}", subject="x" * 3000))
        deadline = time.monotonic() + 60
        while not writer.kept and time.monotonic() < deadline:  # a batch the disk refused, held
            time.sleep(0.05)
        down = value("govmilter_history_store_up")
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # room again
        caught_up = writer.flush(60)
        writer.stop()
        print(json.dumps({{"down": down, "caught_up": caught_up,
                          "written": value("govmilter_history_records_written_total"),
                          "dropped": sum(value("govmilter_history_records_dropped_total", {{"reason": r}}) or 0
                                         for r in ("queue_full", "store_error", "shutdown"))}}))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"down": 0.0, "caught_up": True, "written": 600.0, "dropped": 0}, result.stderr[-2000:]
    assert "the store cannot be written" in result.stderr and "the store is back" in result.stderr
    assert stored(tmp_path / "history.sqlite") == {f"D{n}" for n in range(600)}


def test_a_full_queue_drops_and_counts_without_a_store_at_all(tmp_path: Path) -> None:
    metrics = Metrics()
    writer = HistoryWriter(lambda: SqliteStore(str(tmp_path / "h.sqlite")), metrics, queue_size=3)
    # not started: nothing takes from the queue
    assert [writer.submit(record(f"Q{n}")) for n in range(5)] == [True, True, True, False, False]
    assert metrics.registry.get_sample_value("govmilter_history_records_dropped_total", {"reason": "queue_full"}) == 2
    writer.start()
    assert writer.flush(30)
    writer.stop()
    assert stored(tmp_path / "h.sqlite") == {"Q0", "Q1", "Q2"}


def test_the_background_prune_runs_and_is_counted(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    metrics = Metrics()
    writer = HistoryWriter(lambda: SqliteStore(str(path)), metrics, retention_days=30, clock=lambda: 1.7e9 + 40 * 86400)
    writer.start()
    try:
        writer.submit(record("old", t=1.7e9))
        writer.submit(record("new", t=1.7e9 + 39 * 86400))
        assert writer.flush(30)
        writer.prune_now()
        wait_until(lambda: metrics.registry.get_sample_value("govmilter_history_prune_runs_total",
                                                             {"outcome": "ok"}) == 1, 30, "a prune")  # fmt: skip
    finally:
        writer.stop()
    assert stored(path) == {"new"}
    assert (metrics.registry.get_sample_value("govmilter_history_store_bytes") or 0) > 0


def test_a_file_that_is_not_a_database_is_an_outage_not_a_dead_writer(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    metrics = Metrics()
    writer = HistoryWriter(lambda: SqliteStore(str(path)), metrics, queue_size=10)
    writer.start()
    try:
        assert writer.submit(record("N1"))
        wait_until(lambda: writer.kept == 1, 30, "the writer to keep the record")
        assert writer._thread is not None and writer._thread.is_alive()
        path.unlink()  # the operator moves the broken file away: the writer creates a new store
        assert writer.flush(60)
    finally:
        writer.stop()
    assert stored(path) == {"N1"}
