"""Everything the running daemon holds: config, metrics, rules, pipeline."""

from __future__ import annotations

import grp
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from govmilter import __version__, decision, replies
from govmilter.config import Config
from govmilter.history.writer import HistoryWriter
from govmilter.logfmt import bind, fields
from govmilter.metrics import Metrics
from govmilter.mime import Limits, walk
from govmilter.model import Action, MessageFacts, Transaction, Verdict
from govmilter.network import is_trusted
from govmilter.pipeline import Pipeline, build_checks, rule_compilers
from govmilter.ruleset import RuleErrors, RuleSet, RuleStore
from govmilter.ruleset.store import shown_problems
from govmilter.spool import Spool
from govmilter.text.escape import header_value, reply_text

# for the adapter, which imports only model, pipeline and runtime: the escaping of what it hands
# libmilter (text/escape.py), and the queue id its thread's log lines carry (logfmt.bind)
__all__ = ["bind", "header_value", "reply_text"]

log = logging.getLogger("govmilter.runtime")

SHUTDOWN_CHECK = "shutdown"  # the check label of a transaction answered while the daemon stops
# Past [milter] shutdown_grace, how long the open transactions have to reach their next step (where
# they are answered 451 4.3.2) before the daemon exits anyway; the unit's TimeoutStopSec covers both.
ANSWER_WINDOW = 10.0


def shutdown_verdict() -> Verdict:
    """The answer to a transaction the stopping daemon will not finish: try again (another node, or soon)."""
    return Verdict(
        Action.TEMPFAIL,
        SHUTDOWN_CHECK,
        rule="shutting-down",
        code="451",
        enhanced="4.3.2",
        text="Dich vu dang dung, vui long gui lai sau - service shutting down, try again later",
        reason="the milter is stopping",
    )


class Drain:
    """The transactions open now, and how a stopping daemon treats them.

    running: every transaction is served. draining (from SIGTERM or SIGINT): a new transaction
    is answered 451 4.3.2 at MAIL FROM, open ones finish normally. closing (the grace is over):
    every open transaction is answered 451 4.3.2 at its next step.
    """

    RUNNING, DRAINING, CLOSING = "running", "draining", "closing"

    def __init__(self) -> None:
        self.phase = self.RUNNING  # one reference read per callback: no lock on the hot path
        self.answered = 0  # new transactions answered 451 4.3.2 while draining
        self._open: dict[object, Transaction] = {}
        self._changed = threading.Condition(threading.Lock())

    @property
    def refusing(self) -> bool:
        """New transactions are answered 451 4.3.2."""
        return self.phase is not self.RUNNING

    @property
    def closing(self) -> bool:
        """Open transactions are answered 451 4.3.2 at their next step."""
        return self.phase is self.CLOSING

    def opened(self, session: object, tx: Transaction) -> None:
        with self._changed:
            self._open[session] = tx

    def closed(self, session: object) -> None:
        with self._changed:
            if self._open.pop(session, None) is not None and not self._open:
                self._changed.notify_all()

    def open_transactions(self) -> list[Transaction]:
        with self._changed:
            return list(self._open.values())

    def describe_open(self) -> list[str]:
        """Each open transaction as logfmt fields (values from the wire quoted)."""
        return [
            fields([("queue_id", tx.envelope.queue_id or "-"), ("from", f"<{tx.envelope.mail_from}>")])
            for tx in self.open_transactions()
        ]

    def wait_idle(self, timeout: float, interrupted: Callable[[], bool] = lambda: False) -> bool:
        """Wait until no transaction is open (True), the timeout passes or `interrupted()` (False)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._changed:
                if not self._open:
                    return True
                left = deadline - time.monotonic()
                if left <= 0 or interrupted():
                    return False
                # short steps: the main thread runs signal handlers between them (a second signal)
                self._changed.wait(min(left, 0.2))


class Runtime:
    def __init__(self, config: Config, skip: Iterable[str] = (), metrics: Metrics | None = None):
        self.config = config
        self.metrics = metrics or Metrics()
        self.metrics.set_build_info(__version__)
        self.last_reload = "initial"
        self.rules = RuleStore(
            config.rules.dir, rule_compilers(), on_reload=self._on_reload, last_good=config.rules.last_good_dir
        )
        self.metrics.set_ruleset(self.rules.current().version)
        if self.rules.fallback is not None:  # the rule directory did not load: its last good copy serves
            self.last_reload = "fallback"
            self.metrics.rule_reload_successful.set(0)
        self.metrics.rules_fallback.set(1 if self.rules.fallback is not None else 0)
        self.drain = Drain()
        self.metrics.messages.labels(action="tempfail", check=SHUTDOWN_CHECK)  # at 0 from the start
        self.pipeline = Pipeline(build_checks(config, self.metrics, skip), self.metrics, config.milter.monitor)
        # the text of a message past [size] text_memory characters spills to the spool directory
        self.walk_limits = Limits(text_memory=config.size.text_memory, spool_dir=config.milter.spool_dir)
        self.metrics.declare_checks(check.name for check in self.pipeline.checks)
        self.history: HistoryWriter | None = None  # start_history(): `govmilter run` only

    def start_history(self) -> HistoryWriter | None:
        """Start the history writer ([history]); the store opens in its thread, never on the hot path."""
        settings = self.config.history
        if not settings.enabled:
            return None
        from govmilter.history.store import open_store

        def opener() -> Any:
            return open_store(settings.path, settings.url, mode=int(settings.file_mode, 8), group=settings.group)

        self.history = HistoryWriter(
            opener,
            self.metrics,
            queue_size=settings.queue_size,
            retention_days=settings.retention_days,
            max_bytes=settings.max_size_mb * 1024 * 1024,
            prune_interval=settings.prune_interval,
        )
        self.history.start()
        return self.history

    def stop_history(self, timeout: float = 5.0) -> None:
        if self.history is not None:
            self.history.stop(timeout)

    def walk(self, tx: Transaction) -> MessageFacts:
        # its defects and attachment bytes are counted by the size check, which reads them on every message
        return walk(tx.raw_chunks(), self.walk_limits)

    def spool(self) -> Spool:
        """A new spool for one message's raw bytes ([milter] spool_dir and spool_threshold)."""
        return Spool(self.config.milter.spool_dir, self.config.milter.spool_threshold)

    def is_trusted(self, client_ip: str) -> bool:
        """Whether the client is one of [network] trusted_relays."""
        return is_trusted(client_ip, self.config.network.trusted_relays)

    # The decision record (decision.py), for the adapter: one verdict, one log line, one metric.
    def accept_verdict(self, tx: Transaction) -> Verdict:
        return decision.accept_verdict(tx)

    def forged_headers(self, tx: Transaction) -> list[tuple[str, int]]:
        return decision.forged_headers(tx)

    def reply_lines(self, tx: Transaction | None, verdict: Verdict) -> list[str]:
        """A refusal's SMTP reply lines: its text, the reference the helpdesk looks up, the contact line."""
        lines = replies.reply_lines(verdict.text, replies.reference(tx), self.config.milter.reply_contact)
        return [reply_text(line) for line in lines]

    def record(self, tx: Transaction, verdict: Verdict, elapsed: float | None = None) -> None:
        decision.record(tx, verdict, self.metrics, elapsed, self.history)

    def _on_reload(self, outcome: str, ruleset: RuleSet | None, errors: RuleErrors | None) -> None:
        self.last_reload = outcome
        self.metrics.rule_reloads.labels(outcome=outcome).inc()
        self.metrics.rule_reload_successful.set(1 if ruleset is not None else 0)
        if ruleset is not None:
            self.metrics.set_ruleset(ruleset.version)
        self.metrics.rules_fallback.set(1 if self.rules.fallback is not None else 0)

    def health(self) -> dict[str, Any]:
        """What the /health endpoint reports: is the rule set usable, is each service up."""
        report: dict[str, Any] = {
            "ruleset": self.rules.current().version,
            "last_reload": self.last_reload,
        }
        healthy = True
        fallback = self.rules.fallback
        if fallback is not None:
            kept = self.rules.kept
            report["rules"] = {
                "ok": False,
                "state": "degraded: serving the last good copy",
                "serving": str(kept.resolve()) if kept else "",
                "errors": shown_problems(fallback),
            }
            healthy = False
        for check in self.pipeline.checks:
            state = check.health()
            if state is not None:
                report[check.name] = state
                healthy = healthy and bool(state.get("ok", True))
        report["ok"] = healthy
        return report

    def prepare_unix_socket(self) -> None:
        """Create the socket's directory; libmilter only creates the socket itself."""
        conn = self.config.milter.socket
        if conn.startswith("unix:"):
            os.makedirs(os.path.dirname(conn.removeprefix("unix:")) or ".", mode=0o750, exist_ok=True)

    def secure_unix_socket(self, path: str) -> None:
        """Only Postfix's group may talk to the milter socket."""
        os.chmod(path, int(self.config.milter.socket_mode, 8))
        group = self.config.milter.socket_group
        if group:
            try:
                os.chown(path, -1, grp.getgrnam(group).gr_gid)
            except (KeyError, PermissionError) as exc:
                log.warning("cannot give the milter socket to group %s: %s", group, exc)
