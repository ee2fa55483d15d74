"""Everything the running daemon holds: config, metrics, rules, pipeline."""

from __future__ import annotations

import grp
import logging
import os
from collections.abc import Iterable
from typing import Any

from govmilter import __version__, decision
from govmilter.config import Config
from govmilter.metrics import Metrics
from govmilter.mime import Limits, walk
from govmilter.model import MessageFacts, Transaction, Verdict
from govmilter.network import is_trusted
from govmilter.pipeline import Pipeline, build_checks, rule_compilers
from govmilter.ruleset import RuleErrors, RuleSet, RuleStore
from govmilter.spool import Spool

log = logging.getLogger("govmilter.runtime")


class Runtime:
    def __init__(self, config: Config, skip: Iterable[str] = (), metrics: Metrics | None = None):
        self.config = config
        self.metrics = metrics or Metrics()
        self.metrics.set_build_info(__version__)
        self.last_reload = "initial"
        self.rules = RuleStore(config.rules.dir, rule_compilers(), on_reload=self._on_reload)
        self.metrics.set_ruleset(self.rules.current().version)
        self.pipeline = Pipeline(build_checks(config, self.metrics, skip), self.metrics)
        # the text of a message past [size] text_memory characters spills to the spool directory
        self.walk_limits = Limits(text_memory=config.size.text_memory, spool_dir=config.milter.spool_dir)
        self.metrics.declare_checks(check.name for check in self.pipeline.checks)

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

    def record(self, tx: Transaction, verdict: Verdict, elapsed: float | None = None) -> None:
        decision.record(tx, verdict, self.metrics, elapsed)

    def _on_reload(self, outcome: str, ruleset: RuleSet | None, errors: RuleErrors | None) -> None:
        self.last_reload = outcome
        self.metrics.rule_reloads.labels(outcome=outcome).inc()
        self.metrics.rule_reload_successful.set(1 if ruleset is not None else 0)
        if ruleset is not None:
            self.metrics.set_ruleset(ruleset.version)

    def health(self) -> dict[str, Any]:
        """What the /health endpoint reports: is the rule set usable, is each service up."""
        report: dict[str, Any] = {
            "ruleset": self.rules.current().version,
            "last_reload": self.last_reload,
        }
        healthy = True
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
