"""Run the daemon's pipeline on a stored message: `govmilter scan` and the tests.

The stages run in the order Postfix would drive them, on the same checks and
rule set, so an officer sees exactly what the gateway would answer.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from govmilter import decision
from govmilter.config import Config
from govmilter.metrics import Metrics
from govmilter.mime import Limits, walk
from govmilter.model import Envelope, Stage, Transaction, Verdict
from govmilter.network import is_trusted
from govmilter.pipeline import Pipeline
from govmilter.ruleset import RuleSet
from govmilter.spool import Spool, iter_message_file


@dataclass
class ScanResult:
    verdict: Verdict
    tx: Transaction
    stage: Stage  # where the transaction ended
    durations_ms: dict[str, float] = field(default_factory=dict)

    def close(self) -> None:
        """Release the message (its spool, its MIME walk's text): after the result is printed."""
        self.tx.close()

    def as_json(self) -> dict[str, Any]:
        return {
            "action": self.verdict.action.value,
            "smtp_reply": self.verdict.smtp_reply(),
            "stage": self.stage.value,
            "ruleset": self.tx.ruleset.version,
            "hits": [
                {
                    "check": hit.check,
                    "rule": hit.rule,
                    "mode": hit.mode.value,
                    "action": hit.action.value,
                    "score": hit.score,
                    "reason": hit.reason or hit.text,
                }
                for hit in self.tx.hits
            ],
            "add_headers": [list(h) for h in self.verdict.headers],
            "duration_ms": self.durations_ms,
        }


def scan_message(
    pipeline: Pipeline,
    ruleset: RuleSet,
    config: Config,
    stream: BinaryIO,
    *,
    mail_from: str,
    rcpts: Sequence[str],
    client_ip: str = "127.0.0.1",
    helo: str = "localhost",
    auth_user: str = "",
    queue_id: str = "SCAN",
    mail_params: dict[str, str] | None = None,
    metrics: Metrics | None = None,
) -> ScanResult:
    """Drive every stage of the pipeline over one message, as the daemon would.

    The message goes to a spool as the daemon builds it (every header field, the empty
    line, the body). The result holds it open for its reader: call ScanResult.close().
    """
    envelope = Envelope(
        client_ip=client_ip,
        helo=helo,
        mail_from=mail_from.strip("<>"),
        auth_user=auth_user,
        queue_id=queue_id,
        mail_params={k.upper(): v for k, v in (mail_params or {}).items()},
        trusted_relay=is_trusted(client_ip, config.network.trusted_relays),
    )
    headers, body = iter_message_file(stream)
    settings = config.milter
    tx = Transaction(
        envelope=envelope,
        ruleset=ruleset,
        spool=Spool(None, settings.spool_threshold),  # the system's temporary directory: any user may scan
        max_header_fields=settings.max_header_fields,
        max_header_bytes=settings.max_header_bytes,
    )
    # the daemon's walk (Runtime.walk_limits), its text spilling to the system's temporary directory
    limits = Limits(text_memory=config.size.text_memory)
    tx.facts_loader = lambda: walk(tx.raw_chunks(), limits)
    started = time.perf_counter()
    try:
        verdict, stage = _drive(pipeline, tx, headers, body, rcpts)
        if verdict is None:
            verdict = decision.accept_verdict(tx)
            pipeline.accepted(tx)
        if metrics is not None:
            decision.record(tx, verdict, metrics, time.perf_counter() - started)
    except BaseException:
        tx.close()
        raise
    durations = {name: round(sec * 1000, 3) for name, sec in tx.scratch.get("durations", {}).items()}
    return ScanResult(verdict, tx, stage, durations)


def _drive(
    pipeline: Pipeline,
    tx: Transaction,
    headers: Iterator[tuple[str, str]],
    body: Iterable[bytes],
    rcpts: Sequence[str],
) -> tuple[Verdict | None, Stage]:
    for stage in (Stage.CONNECT, Stage.MAIL):
        verdict = pipeline.run(stage, tx)
        if verdict:
            return verdict, stage
    for rcpt in rcpts:
        tx.envelope.rcpts.append(rcpt.strip("<>"))
        verdict = pipeline.run(Stage.RCPT, tx)
        if verdict:
            return verdict, Stage.RCPT
    for name, value in headers:
        tx.add_header(name, value)  # every field to the spool, the first ones to tx.headers: as the daemon
    tx.end_headers()
    verdict = pipeline.run(Stage.HEADERS, tx)
    if verdict:
        return verdict, Stage.HEADERS
    for chunk in body:
        tx.add_body(chunk)
        verdict = pipeline.run(Stage.BODY, tx)
        if verdict:
            return verdict, Stage.BODY
    return pipeline.run(Stage.EOM, tx), Stage.EOM
