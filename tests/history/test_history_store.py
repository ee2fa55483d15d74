"""The history store, the same tests against SQLite and a real PostgreSQL (private, on loopback).

Search by each key, newest first; the per-rule summary; retention by age and (SQLite) size;
the SQLite file's mode and WAL; PostgreSQL stopped then started: the writer keeps the records
and catches up, the mail path never waits.
"""

from __future__ import annotations

import grp
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from govmilter.history.record import Attachment, DecisionRecord, Hit
from govmilter.history.store import (
    PostgresStore,
    Query,
    SqliteStore,
    Store,
    StoreUnavailable,
    open_store,
    redact,
)
from govmilter.history.writer import HistoryWriter
from govmilter.metrics import Metrics
from stack import ROOT, wait_until
from support.postgres_fixture import Postgres, postgres  # noqa: F401 - the fixture: a private PostgreSQL

NOW = time.time()


def record(n: int, *, age: float = 0.0, **values: object) -> DecisionRecord:
    base: dict[str, object] = dict(
        time=NOW - age - n * 0.001,
        node="gw1",
        queue_id=f"4Q{n:04d}",
        message_id=f"<m{n}@example.com>",
        subject=f"Bao cao so {n}",
        mail_from=f"sender{n % 3}@Example.com",
        rcpts=[f"user{n % 2}@bacninh.gov.vn"],
        from_header=f"<sender{n % 3}@example.com>",
        client_ip="203.0.113.9",
        client_name="mx.example.com",
        direction="inbound",
        direction_why="other client",
        authenticated=False,
        size=1000 + n,
        action="accept",
        check="",
        rule="",
        reply="",
        ruleset="v1",
        hits=[],
        attachments=[Attachment("a.pdf", "application/pdf", 1234)],
        rcpts_total=1,
    )
    base.update(values)
    return DecisionRecord(**base)  # type: ignore[arg-type]


REJECTED = dict(
    action="reject", check="content", rule="r-spam", reply="550 5.7.1 refused",
    hits=[Hit("content", "r-spam", "enforce", "reject", 0.0, "matched", "550 5.7.1 refused"),
          Hit("content", "score-x", "enforce", "continue", 2.0, "scored")],
)  # fmt: skip
MONITORED = dict(hits=[Hit("impersonation", "lookalike", "monitor", "reject", 0.0, "look-alike", "550 5.7.1 no")])


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        opened: Store = SqliteStore(str(tmp_path / "history.sqlite"))
    else:
        server: Postgres = request.getfixturevalue("postgres")
        opened = PostgresStore(server.url)
        # one database for the session: each test starts empty
        opened._execute("DELETE FROM records RETURNING 1")  # type: ignore[attr-defined]
        opened._execute("DELETE FROM rcpts RETURNING 1")  # type: ignore[attr-defined]
        opened._execute("DELETE FROM hits RETURNING 1")  # type: ignore[attr-defined]
    yield opened
    opened.close()


def test_search_by_each_key_newest_first(store: Store) -> None:
    store.write([record(1), record(2, **REJECTED), record(3, **MONITORED), record(4, subject="Hop dong 50% _x_")])
    ids = lambda **q: [r.queue_id for r in store.search(Query(**q))]  # noqa: E731
    assert ids() == ["4Q0001", "4Q0002", "4Q0003", "4Q0004"]  # newest first (1 is the newest)
    assert ids(queue_id="4Q0003") == ["4Q0003"]
    assert ids(message_id="m2@example.com") == ids(message_id="<m2@example.com>") == ["4Q0002"]
    assert ids(mail_from="SENDER1@example.com") == ["4Q0001", "4Q0004"]
    assert ids(rcpt="<USER0@bacninh.gov.vn>") == ["4Q0002", "4Q0004"]
    assert ids(rule="r-spam") == ids(rule="score-x") == ["4Q0002"]
    assert ids(rule="lookalike") == ["4Q0003"]
    assert ids(action="reject") == ["4Q0002"]
    assert ids(subject="bao SO") == ["4Q0001", "4Q0002", "4Q0003"]
    assert ids(subject="50%") == ids(subject="_x_") == ["4Q0004"]  # LIKE wildcards are literal
    assert ids(subject="5%") == [] and ids(subject="x_") == ["4Q0004"]
    assert ids(mail_from="sender1@example.com", rcpt="user0@bacninh.gov.vn") == ["4Q0004"]
    assert ids(since=NOW - 0.0025) == ["4Q0001", "4Q0002"]
    assert ids(since=NOW - 0.0035, until=NOW - 0.0015) == ["4Q0002", "4Q0003"]
    assert ids(limit=2) == ["4Q0001", "4Q0002"]
    [found] = store.search(Query(queue_id="4Q0002"))
    assert found == record(2, **REJECTED)  # every field back as written


def test_rule_summary_counts_hits_refusals_and_would_be_refusals(store: Store) -> None:
    store.write([record(1, **REJECTED), record(2, **REJECTED), record(3, **MONITORED), record(4, age=86400 * 3,
                 **MONITORED)])  # fmt: skip
    rows = {(r.check, r.rule): r for r in store.rule_summary(NOW - 86400, None)}
    assert set(rows) == {("content", "r-spam"), ("content", "score-x"), ("impersonation", "lookalike")}
    spam, score, look = rows["content", "r-spam"], rows["content", "score-x"], rows["impersonation", "lookalike"]
    assert (spam.hits, spam.refusals, spam.would_refusals, spam.monitored) == (2, 2, 0, 0)
    assert (score.hits, score.refusals, score.would_refusals) == (2, 0, 0)
    assert (look.hits, look.refusals, look.would_refusals, look.monitored) == (1, 0, 1, 1)
    everything = {(r.check, r.rule): r.hits for r in store.rule_summary(None, None)}
    assert everything["impersonation", "lookalike"] == 2


def test_prune_by_age(store: Store) -> None:
    store.write([record(1), record(2, age=86400 * 40, **REJECTED), record(3, age=86400 * 31)])
    assert store.size() > 0  # govmilter_history_store_bytes
    assert store.prune(NOW - 30 * 86400, 0) == 2
    assert [r.queue_id for r in store.search(Query())] == ["4Q0001"]
    assert store.rule_summary(None, None) == []  # the hits of pruned records went with them
    assert store.search(Query(rcpt="user0@bacninh.gov.vn")) == []


def test_sqlite_prunes_the_oldest_past_its_size_cap_and_gives_the_space_back(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "h.sqlite"))
    store.write([record(n, subject="x" * 2000) for n in range(400)])
    full = store.size()
    assert full > 800_000
    deleted = store.prune(NOW - 30 * 86400, full // 2)
    assert store.size() <= full // 2 and 150 <= deleted < 400
    kept = store.search(Query(limit=1000))
    assert kept[0].queue_id == "4Q0000"  # the newest stayed
    assert os.path.getsize(tmp_path / "h.sqlite") < full  # incremental vacuum: the file shrank
    store.close()


def test_sqlite_file_is_0640_in_wal_mode_and_trace_reads_it_while_the_writer_holds_it(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable, match="does not exist"):
        SqliteStore(str(tmp_path / "sub" / "history.sqlite"))  # the package makes the directory, not the daemon
    path = tmp_path / "sub" / "history.sqlite"
    path.parent.mkdir()
    writer = SqliteStore(str(path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert writer.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    writer.write([record(1)])
    writer.conn.execute("BEGIN IMMEDIATE")  # the writer in the middle of a transaction
    reader = open_store(str(path), "", readonly=True)
    assert [r.queue_id for r in reader.search(Query())] == ["4Q0001"]
    writer.conn.execute("ROLLBACK")
    for name in ("history.sqlite-wal", "history.sqlite-shm"):
        assert stat.S_IMODE((path.parent / name).stat().st_mode) == 0o640
    reader.close()
    writer.close()
    with pytest.raises(FileNotFoundError):
        open_store(str(tmp_path / "none.sqlite"), "", readonly=True)


def test_postgresql_stopped_then_started_the_writer_keeps_and_catches_up(postgres: Postgres) -> None:  # noqa: F811
    metrics = Metrics()
    writer = HistoryWriter(lambda: PostgresStore(postgres.url, connect_timeout=2), metrics, queue_size=50)
    writer.start()
    sample = metrics.registry.get_sample_value
    try:
        writer.submit(record(9001, queue_id="PG-before"))
        assert writer.flush(30)
        postgres.stop()
        # while the server is down: submit never waits; the first records are kept, the rest queue,
        # and past the queue's bound they are dropped and counted
        started = time.monotonic()
        accepted = [writer.submit(record(9100 + n, queue_id=f"PG-down-{n}")) for n in range(80)]
        submitting = time.monotonic() - started
        wait_until(lambda: writer.kept > 0, 30, "the writer to see the store down")
        assert sample("govmilter_history_store_up") == 0
        dropped = accepted.count(False)
        assert dropped == sample("govmilter_history_records_dropped_total", {"reason": "queue_full"}) and dropped > 0
        postgres.start()
        assert writer.flush(90), "the writer did not catch up"
        assert sample("govmilter_history_store_up") == 1
    finally:
        writer.stop()
    reader = PostgresStore(postgres.url, readonly=True)
    stored = {r.queue_id for r in reader.search(Query(limit=1000)) if r.queue_id.startswith("PG-")}
    reader.close()
    expected = {"PG-before"} | {f"PG-down-{n}" for n, ok in enumerate(accepted) if ok}
    assert stored == expected
    assert sample("govmilter_history_records_written_total") == len(expected)
    print(f"80 submits with PostgreSQL down took {submitting * 1000:.1f} ms")  # shown with -s; not asserted


def test_a_store_that_cannot_open_is_a_store_unavailable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises((StoreUnavailable, OSError)):
        SqliteStore(str(tmp_path / "file" / "history.sqlite"))
    with pytest.raises(StoreUnavailable) as failed:
        PostgresStore("postgresql://nobody:s3cret-Pa55@127.0.0.1:1/none", connect_timeout=1)
    assert "s3cret" not in str(failed.value)  # what the writer logs never carries the password
    assert redact("postgresql://nobody:s3cret-Pa55@10.0.0.30/h") == "postgresql://nobody:***@10.0.0.30/h"


def test_an_officer_of_the_files_group_reads_it_with_the_daemon_running_or_stopped(tmp_path: Path) -> None:
    """Mode 0640 and [history] group: a user of that group (here nobody:nogroup) reads, never writes."""
    if os.geteuid() != 0:
        pytest.fail("needs root to play another user (runuser)")
    root = Path(tempfile.mkdtemp(prefix="govmilter-history-group-"))
    try:
        os.chmod(root, 0o755)
        shutil.copytree(ROOT / "milter" / "govmilter", root / "src" / "govmilter")  # the code, readable by all
        subprocess.run(["chmod", "-R", "a+rX", str(root / "src")], check=True)
        path = root / "history.sqlite"
        writer = SqliteStore(str(path), group="nogroup")
        writer.write([record(1), record(2)])
        reader = (
            f"import sys; sys.path.insert(0, {str(root / 'src')!r});"
            "from govmilter.history.store import Query, SqliteStore;"
            f"print(len(SqliteStore({str(path)!r}, readonly=True).search(Query())))"
        )
        as_officer = ["runuser", "-u", "nobody", "-g", "nogroup", "--", "/usr/bin/python3", "-c", reader]
        running = subprocess.run(as_officer, capture_output=True, text=True, timeout=60)
        writer.close()  # the daemon stopped: no -wal or -shm left, and the officer cannot create them
        assert not (root / "history.sqlite-shm").exists()
        stopped = subprocess.run(as_officer, capture_output=True, text=True, timeout=60)
        assert (running.stdout, stopped.stdout) == ("2\n", "2\n"), (running.stderr, stopped.stderr)
        assert path.stat().st_gid == grp.getgrnam("nogroup").gr_gid
        writing = subprocess.run(
            ["runuser", "-u", "nobody", "-g", "nogroup", "--", "/usr/bin/python3", "-c",
             f"import sqlite3; sqlite3.connect({str(path)!r}).execute('DELETE FROM records')"],  # noqa: S608
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert writing.returncode != 0 and "readonly" in writing.stderr
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_the_postgresql_driver_is_loaded_only_when_a_url_is_configured(tmp_path: Path) -> None:
    """The daemon's start-up memory does not carry psycopg on a SQLite node."""
    script = (
        "import sys\n"
        "from govmilter.config import load_config\n"
        "from govmilter.runtime import Runtime\n"
        f"config = load_config(None, ['history.path=\"{tmp_path / 'h.sqlite'}\"', 'rules.dir=\"{ROOT / 'rules'}\"',"
        " 'rules.last_good_dir=\"\"', 'metrics.listen=\"\"'])\n"
        "runtime = Runtime(config, skip=['antivirus', 'dnsbl'])\n"
        "writer = runtime.start_history()\n"
        "writer.flush(10)\n"
        "runtime.stop_history()\n"
        "print('psycopg' in sys.modules, (writer.store is None), writer.up)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["False", "True", "True"]
