"""Shared helpers for tests: a pipeline like the daemon's, and scanning a message through it."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from govmilter.config import Config, load_config
from govmilter.metrics import Metrics
from govmilter.offline import ScanResult, scan_message
from govmilter.pipeline import Pipeline, build_checks, rule_compilers
from govmilter.ruleset import RuleSet, load_ruleset

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "rules"
MESSAGES = Path(__file__).resolve().parents[1] / "messages"


class Harness:
    """The daemon's checks and rules, built from the defaults plus overrides."""

    def __init__(self, overrides: Sequence[str] = (), skip: Sequence[str] = (), rules_dir: Path | None = None):
        # the lab's 127.0.0.1 plays a mailbox server, not the gateway host (a test of the gateway-host
        # rule sets network.gateway_host itself)
        base = [f'rules.dir="{rules_dir or RULES}"', "network.gateway_host=[]"]
        self.config: Config = load_config(None, [*base, *overrides])
        self.metrics = Metrics()
        self.ruleset: RuleSet = load_ruleset(self.config.rules.dir, rule_compilers())
        checks = build_checks(self.config, self.metrics, skip)
        self.pipeline = Pipeline(checks, self.metrics, self.config.milter.monitor)

    def scan(
        self,
        message: bytes | str | Path,
        *,
        mail_from: str = "sender@example.com",
        rcpts: Sequence[str] = ("user@bacninh.gov.vn",),
        client_ip: str = "127.0.0.2",
        auth_user: str = "",
        mail_params: dict[str, str] | None = None,
    ) -> ScanResult:
        if isinstance(message, Path):
            data = message.read_bytes()
        elif isinstance(message, str):
            data = message.encode()
        else:
            data = message
        return scan_message(
            self.pipeline,
            self.ruleset,
            self.config,
            io.BytesIO(data),
            mail_from=mail_from,
            rcpts=rcpts,
            client_ip=client_ip,
            auth_user=auth_user,
            mail_params=mail_params,
            metrics=self.metrics,
        )
