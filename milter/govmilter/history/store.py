"""Where decision records are kept: SQLite (one node, the default) or PostgreSQL (several nodes).

One schema for both. `records` holds one row per message, with the searchable values as
columns (lower-cased copies for addresses and the Subject) and the whole record as JSON;
`rcpts` and `hits` hold one row per recipient and per finding, so "which messages did rule X
hit" and "mail to this recipient" are index lookups. Retention: records older than
retention_days are deleted, and (SQLite) the oldest go first past max_size_mb.

The PostgreSQL driver (psycopg 3) is imported only when a postgresql:// url is configured.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from govmilter.history.record import DecisionRecord

SCHEMA_VERSION = 1

# one statement per item; `{id}` is the key column's type, `{real}` a float
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS govmilter_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS records (
        id {id},
        time {real} NOT NULL,
        node TEXT NOT NULL,
        queue_id TEXT NOT NULL,
        message_id TEXT NOT NULL,
        subject_fold TEXT NOT NULL,
        sender TEXT NOT NULL,
        action TEXT NOT NULL,
        check_name TEXT NOT NULL,
        rule TEXT NOT NULL,
        data TEXT NOT NULL
    )""",
    "CREATE TABLE IF NOT EXISTS rcpts (record_id BIGINT NOT NULL, time {real} NOT NULL, rcpt TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS hits (
        record_id BIGINT NOT NULL, time {real} NOT NULL, check_name TEXT NOT NULL, rule TEXT NOT NULL,
        mode TEXT NOT NULL, action TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS records_time ON records (time)",
    "CREATE INDEX IF NOT EXISTS records_queue_id ON records (queue_id)",
    "CREATE INDEX IF NOT EXISTS records_message_id ON records (message_id)",
    "CREATE INDEX IF NOT EXISTS records_sender ON records (sender, time)",
    "CREATE INDEX IF NOT EXISTS rcpts_rcpt ON rcpts (rcpt, time)",
    "CREATE INDEX IF NOT EXISTS rcpts_record ON rcpts (record_id)",
    "CREATE INDEX IF NOT EXISTS hits_rule ON hits (rule, time)",
    "CREATE INDEX IF NOT EXISTS hits_time ON hits (time)",
    "CREATE INDEX IF NOT EXISTS hits_record ON hits (record_id)",
)
_SQLITE_TYPES = {"id": "INTEGER PRIMARY KEY", "real": "REAL"}
_POSTGRES_TYPES = {"id": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY", "real": "DOUBLE PRECISION"}


_INSERT_RCPT = "INSERT INTO rcpts (record_id, time, rcpt) VALUES (?, ?, ?)"
_INSERT_HIT = "INSERT INTO hits (record_id, time, check_name, rule, mode, action) VALUES (?, ?, ?, ?, ?, ?)"


class StoreUnavailable(Exception):
    """The store cannot be written now (locked, disk full, server down): try again later."""


@dataclass(frozen=True)
class Query:
    """What `govmilter trace` asks; every given condition must hold."""

    mail_from: str = ""
    rcpt: str = ""
    rule: str = ""
    action: str = ""
    queue_id: str = ""
    message_id: str = ""
    subject: str = ""  # words, each must appear in the Subject (case-insensitive)
    since: float | None = None
    until: float | None = None
    limit: int = 100


@dataclass(frozen=True)
class RuleSummary:
    check: str
    rule: str
    hits: int  # every finding, enforced or monitored
    refusals: int  # enforced findings that refused the message
    would_refusals: int  # monitored findings that would have refused it
    monitored: int  # monitored findings of any kind


# per (check, rule): every hit, enforced refusals, monitored would-be refusals, monitored hits
_SUMMARY = """SELECT check_name, rule, COUNT(*),
    SUM(CASE WHEN mode = 'enforce' AND action IN ('reject', 'tempfail', 'discard') THEN 1 ELSE 0 END),
    SUM(CASE WHEN mode = 'monitor' AND action IN ('reject', 'tempfail', 'discard') THEN 1 ELSE 0 END),
    SUM(CASE WHEN mode = 'monitor' THEN 1 ELSE 0 END)
    FROM hits WHERE time >= ? AND time < ? GROUP BY check_name, rule ORDER BY COUNT(*) DESC, check_name, rule"""


class Store(Protocol):
    kind: str

    def write(self, records: Sequence[DecisionRecord]) -> None: ...
    def search(self, query: Query) -> list[DecisionRecord]: ...
    def rule_summary(self, since: float | None, until: float | None) -> list[RuleSummary]: ...
    def prune(self, before: float, max_bytes: int) -> int: ...
    def size(self) -> int: ...
    def close(self) -> None: ...


def _fold(value: str) -> str:
    return value.strip().lower()


def _like(word: str) -> str:
    return "%" + word.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class _SqlStore:
    """The SQL both stores share; `?` placeholders (PostgresStore turns them into %s)."""

    kind = "sql"
    _unavailable: tuple[type[BaseException], ...] = ()

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        raise NotImplementedError

    def _insert_record(self, cursor: Any, values: Sequence[Any]) -> int:
        raise NotImplementedError

    def _transaction(self) -> Any:
        raise NotImplementedError

    def _sql(self, sql: str) -> str:
        return sql

    def write(self, records: Sequence[DecisionRecord]) -> None:
        """All the records in one transaction; StoreUnavailable when the store cannot take them now."""
        rcpt_rows: list[tuple[int, float, str]] = []
        hit_rows: list[tuple[int, float, str, str, str, str]] = []
        try:
            with self._transaction() as cursor:
                for record in records:
                    rid = self._insert_record(
                        cursor,
                        (
                            record.time,
                            record.node,
                            record.queue_id,
                            record.message_id,
                            _fold(record.subject),
                            _fold(record.mail_from),
                            record.action,
                            record.check,
                            record.rule,
                            json.dumps(record.as_json(), ensure_ascii=False),
                        ),
                    )
                    rcpt_rows += [(rid, record.time, r) for r in sorted({_fold(r) for r in record.rcpts})]
                    hit_rows += [(rid, record.time, h.check, h.rule, h.mode, h.action) for h in record.hits if h.rule]
                # the recipients and hits of the whole batch: one statement each
                if rcpt_rows:
                    cursor.executemany(self._sql(_INSERT_RCPT), rcpt_rows)
                if hit_rows:
                    cursor.executemany(self._sql(_INSERT_HIT), hit_rows)
        except self._unavailable as exc:
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc

    def search(self, query: Query) -> list[DecisionRecord]:
        where: list[str] = []
        params: list[Any] = []
        if query.since is not None:
            where.append("r.time >= ?")
            params.append(query.since)
        if query.until is not None:
            where.append("r.time < ?")
            params.append(query.until)
        if query.queue_id:
            where.append("r.queue_id = ?")
            params.append(query.queue_id.strip())
        if query.message_id:
            wanted = query.message_id.strip()
            wanted = wanted if wanted.startswith("<") else f"<{wanted}>"
            where.append("r.message_id = ?")
            params.append(wanted)
        if query.mail_from:
            where.append("r.sender = ?")
            params.append(_fold(query.mail_from).removeprefix("<").removesuffix(">"))
        if query.action:
            where.append("r.action = ?")
            params.append(query.action)
        for word in query.subject.split():
            where.append("r.subject_fold LIKE ? ESCAPE '\\'")
            params.append(_like(word))
        if query.rcpt:
            where.append("r.id IN (SELECT record_id FROM rcpts WHERE rcpt = ?)")
            params.append(_fold(query.rcpt).removeprefix("<").removesuffix(">"))
        if query.rule:
            where.append("r.id IN (SELECT record_id FROM hits WHERE rule = ?)")
            params.append(query.rule)
        # every condition above is a fixed text with a placeholder: no value is ever part of the SQL
        sql = "SELECT r.data FROM records r" + (" WHERE " + " AND ".join(where) if where else "")  # noqa: S608
        sql += " ORDER BY r.time DESC, r.id DESC LIMIT ?"
        params.append(max(1, query.limit))
        rows = self._execute(sql, params)
        return [DecisionRecord.from_json(json.loads(row[0])) for row in rows]

    def rule_summary(self, since: float | None, until: float | None) -> list[RuleSummary]:
        params = (0.0 if since is None else since, 1e12 if until is None else until)
        rows = self._execute(_SUMMARY, params)
        return [RuleSummary(r[0], r[1], int(r[2]), int(r[3]), int(r[4]), int(r[5])) for r in rows]

    def _delete_before(self, cursor: Any, before: float) -> int:
        cursor.execute(self._sql("DELETE FROM rcpts WHERE time < ?"), (before,))
        cursor.execute(self._sql("DELETE FROM hits WHERE time < ?"), (before,))
        cursor.execute(self._sql("DELETE FROM records WHERE time < ?"), (before,))
        return int(cursor.rowcount or 0)


class SqliteStore(_SqlStore):
    """The embedded store: one file, WAL (readers such as `govmilter trace` never block the writer)."""

    kind = "sqlite"
    _unavailable = (sqlite3.OperationalError,)

    def __init__(self, path: str, *, readonly: bool = False, mode: int = 0o640, group: str = "", timeout: float = 1.0):
        self.path = path
        if readonly:
            if not os.path.exists(path):
                raise FileNotFoundError(f"no history database at {path} (is [history] path right?)")
            self.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout, check_same_thread=False)
            try:
                self.conn.execute("SELECT 1 FROM govmilter_meta LIMIT 1").fetchall()
            except sqlite3.OperationalError:
                # an officer (the file's group) reading while the daemon is stopped: with no -wal and
                # -shm left, SQLite would have to create them in a directory the reader cannot write.
                # Nothing writes the file then: read it as immutable.
                self.conn.close()
                self.conn = sqlite3.connect(
                    f"file:{path}?mode=ro&immutable=1", uri=True, timeout=timeout, check_same_thread=False
                )
            return
        directory = os.path.dirname(path) or "."
        if not os.path.isdir(directory):  # created by the package (/var/lib/govmilter), never here
            raise StoreUnavailable(f"[history] path {path}: the directory {directory} does not exist")
        if not os.path.exists(path):
            # the file's mode from its creation on: the store holds who wrote to whom
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, mode))
        os.chmod(path, mode)
        if group:
            import grp

            try:
                os.chown(path, -1, grp.getgrnam(group).gr_gid)
            except (KeyError, PermissionError) as exc:
                raise OSError(f"[history] group {group!r}: cannot give {path} to it: {exc}") from exc
        self.conn = sqlite3.connect(path, timeout=timeout, check_same_thread=False, isolation_level=None)
        try:
            self.conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # only takes effect on a new file
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA synchronous = NORMAL")  # WAL: a crash loses the last records, never the file
            for statement in _SCHEMA:
                self.conn.execute(statement.format(**_SQLITE_TYPES))
            self.conn.execute(
                "INSERT OR IGNORE INTO govmilter_meta (key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),)
            )
        except sqlite3.OperationalError as exc:
            self.conn.close()
            raise StoreUnavailable(f"{path}: {exc}") from exc
        for suffix in ("-wal", "-shm"):  # SQLite gives them the database's mode; the group too
            if group and os.path.exists(path + suffix):
                with contextlib.suppress(PermissionError):
                    os.chown(path + suffix, -1, os.stat(path).st_gid)

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return list(self.conn.execute(sql, params))

    def _transaction(self) -> Any:
        store = self

        class _Tx:
            def __enter__(self) -> sqlite3.Cursor:
                self.cursor = store.conn.cursor()
                self.cursor.execute("BEGIN IMMEDIATE")
                return self.cursor

            def __exit__(self, kind: object, exc: object, tb: object) -> None:
                if kind is None:
                    try:
                        self.cursor.execute("COMMIT")
                        return
                    except sqlite3.Error:
                        store.conn.rollback()
                        raise
                if store.conn.in_transaction:
                    store.conn.rollback()

        return _Tx()

    def _insert_record(self, cursor: Any, values: Sequence[Any]) -> int:
        cursor.execute(
            "INSERT INTO records (time, node, queue_id, message_id, subject_fold, sender, action, check_name, rule,"
            " data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            values,
        )
        return int(cursor.lastrowid)

    def size(self) -> int:
        """Bytes in use (pages not free) of the database file."""
        page_size = self.conn.execute("PRAGMA page_size").fetchone()[0]
        pages = self.conn.execute("PRAGMA page_count").fetchone()[0]
        free = self.conn.execute("PRAGMA freelist_count").fetchone()[0]
        return int((pages - free) * page_size)

    def prune(self, before: float, max_bytes: int) -> int:
        """Delete records older than `before`, then the oldest while past `max_bytes` (0: no cap)."""
        try:
            with self._transaction() as cursor:
                deleted = self._delete_before(cursor, before)
            while max_bytes and self.size() > max_bytes:
                row = self.conn.execute("SELECT COUNT(*), MIN(time) FROM records").fetchone()
                if not row[0]:
                    break
                # the oldest tenth (at least one record) per round
                cut = self.conn.execute(
                    "SELECT time FROM records ORDER BY time LIMIT 1 OFFSET ?", (max(1, row[0] // 10) - 1,)
                ).fetchone()[0]
                with self._transaction() as cursor:
                    deleted += self._delete_before(cursor, cut + 1e-6)
            self.conn.execute("PRAGMA incremental_vacuum")
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
        return deleted

    def close(self) -> None:
        self.conn.close()


class PostgresStore(_SqlStore):
    """Several gateway nodes, one PostgreSQL database: the same schema, each row names its node."""

    kind = "postgresql"

    def __init__(self, url: str, *, connect_timeout: float = 5.0, readonly: bool = False):
        try:
            import psycopg  # only when configured: the daemon's start-up memory does not carry it otherwise
        except ImportError as exc:  # libpq missing (Debian package libpq5)
            raise StoreUnavailable(f"PostgreSQL: the driver cannot load: {exc}") from exc

        self._psycopg = psycopg
        self._unavailable = (psycopg.OperationalError, psycopg.InterfaceError)
        self.url = url
        self.connect_timeout = connect_timeout
        self.conn: Any = None
        self._connect()
        if not readonly:
            try:
                conn = self._ready()
                with conn.transaction(), conn.cursor() as cursor:
                    # one node creates the tables at a time (several start together)
                    cursor.execute("SELECT pg_advisory_xact_lock(724221)")
                    for statement in _SCHEMA:
                        cursor.execute(statement.format(**_POSTGRES_TYPES))
                    cursor.execute(
                        "INSERT INTO govmilter_meta (key, value) VALUES ('schema', %s) ON CONFLICT DO NOTHING",
                        (str(SCHEMA_VERSION),),
                    )
            except self._unavailable as exc:
                raise StoreUnavailable(f"PostgreSQL: {exc}") from exc

    def _connect(self) -> None:
        try:
            self.conn = self._psycopg.connect(
                self.url, autocommit=True, connect_timeout=max(1, int(self.connect_timeout))
            )
        except self._psycopg.OperationalError as exc:
            raise StoreUnavailable(f"PostgreSQL: {_first_line(exc)}") from exc

    def _ready(self) -> Any:
        if self.conn is None or self.conn.closed or self.conn.broken:
            self._connect()
        return self.conn

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s")

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            with self._ready().cursor() as cursor:
                cursor.execute(self._sql(sql), params)
                return list(cursor.fetchall())
        except self._psycopg.Error as exc:  # a query (trace): down, or no tables yet
            raise StoreUnavailable(f"PostgreSQL: {_first_line(exc)}") from exc

    def _transaction(self) -> Any:
        store = self

        class _Tx:
            def __enter__(self) -> Any:
                conn = store._ready()
                self.tx = conn.transaction()
                self.tx.__enter__()
                self.cursor = conn.cursor()
                return self.cursor

            def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
                self.cursor.close()
                self.tx.__exit__(kind, exc, tb)

        return _Tx()

    def _insert_record(self, cursor: Any, values: Sequence[Any]) -> int:
        cursor.execute(
            "INSERT INTO records (time, node, queue_id, message_id, subject_fold, sender, action, check_name, rule,"
            " data) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            values,
        )
        return int(cursor.fetchone()[0])

    def write(self, records: Sequence[DecisionRecord]) -> None:
        try:
            super().write(records)
        except StoreUnavailable:
            self._drop_connection()
            raise

    def _drop_connection(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):  # a broken connection may fail to close: dropped anyway
                self.conn.close()
            self.conn = None

    def size(self) -> int:
        rows = self._execute(
            "SELECT COALESCE(SUM(pg_total_relation_size(c)), 0) FROM unnest(ARRAY['records', 'rcpts', 'hits']) AS c"
        )
        return int(rows[0][0])

    def prune(self, before: float, max_bytes: int) -> int:
        """Delete records older than `before`. The size cap is the database server's (not applied here)."""
        try:
            with self._transaction() as cursor:
                return self._delete_before(cursor, before)
        except self._unavailable as exc:
            self._drop_connection()
            raise StoreUnavailable(f"PostgreSQL: {_first_line(exc)}") from exc

    def close(self) -> None:
        self._drop_connection()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def open_store(path: str, url: str, *, readonly: bool = False, mode: int = 0o640, group: str = "") -> Store:
    """The configured store: PostgreSQL when a url is set, else the SQLite file at `path`."""
    if url:
        return PostgresStore(url, readonly=readonly)
    return SqliteStore(path, readonly=readonly, mode=mode, group=group)


def redact(url: str) -> str:
    """A PostgreSQL url without its password, for messages."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else url
