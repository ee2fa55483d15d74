"""The final decision of a message: its verdict, its added headers, its log line, its record.

Shared by the daemon (adapter.py) and `govmilter scan`, so both say the same. record() builds
the message's decision record once (history/record.py), writes its one log line and hands the
record to the history writer when the daemon runs one.
"""

from __future__ import annotations

import logging
from typing import Protocol

from govmilter import __version__
from govmilter.history.record import DecisionRecord, build
from govmilter.logfmt import Line, Pair
from govmilter.metrics import Metrics
from govmilter.model import OWN_HEADER_PREFIXES, Action, Mode, Transaction, Verdict
from govmilter.text.escape import log_plain

log = logging.getLogger("govmilter.decision")


class RecordSink(Protocol):
    """Where decision records go (history.writer.HistoryWriter): submit never waits."""

    def submit(self, record: DecisionRecord) -> bool: ...


def clean(value: str, limit: int = 200) -> str:
    """Make a value from the wire safe for the free text of a log line: no control characters, bounded."""
    return log_plain(value, limit)


_REFUSALS = (Action.REJECT, Action.TEMPFAIL, Action.DISCARD)


def accept_verdict(tx: Transaction) -> Verdict:
    """The accept verdict at end of message, carrying every header the hits asked for."""
    headers: list[tuple[str, str]] = [("X-Govmilter", f"govmilter {__version__}; ruleset={tx.ruleset.version}")]
    for hit in tx.hits:
        headers.extend(hit.headers)
        if hit.mode is Mode.MONITOR and hit.action in _REFUSALS:
            headers.append(("X-Govmilter-Monitor", f"check={hit.check} rule={hit.rule} would={hit.action.value}"))
    return Verdict(Action.ACCEPT, "", headers=tuple(headers))


def forged_headers(tx: Transaction) -> list[tuple[str, int]]:
    """(name, occurrence) of each incoming header that only this gateway may set, last first.

    Found among every field that arrived, stored in tx.headers or not (the transaction
    records them as they arrive). Occurrences count from 1 per name, case-insensitive, as
    the milter protocol's change-header action wants; removing the last first keeps the
    earlier occurrences' numbers valid. Checks add the fields they find forged to
    tx.scratch["forged_fields"] (the auth check: Authentication-Results claiming our authserv-id).
    """
    extra: list[tuple[str, int]] = tx.scratch.get("forged_fields", [])
    if tx.header_count:
        return [*tx.own_headers[::-1], *extra]
    # a transaction built by hand (tests) has only its stored fields
    counts: dict[str, int] = {}
    found: list[tuple[str, int]] = []
    for name, _ in tx.headers:
        key = name.lower()
        counts[key] = counts.get(key, 0) + 1
        if key.startswith(OWN_HEADER_PREFIXES):
            found.append((name, counts[key]))
    return [*found[::-1], *extra]


def record(
    tx: Transaction,
    verdict: Verdict,
    metrics: Metrics,
    elapsed: float | None = None,
    history: RecordSink | None = None,
) -> None:
    """Count the decision, write its one log line, and hand its record to the history."""
    metrics.messages.labels(action=verdict.action.value, check=verdict.check or "none").inc()
    if elapsed is not None:
        metrics.message_duration.observe(elapsed)
    metrics.message_size.observe(tx.raw_size)
    if log.isEnabledFor(logging.INFO):  # the line costs more than the rest of the bookkeeping
        line = Line(log_pairs(tx, verdict, elapsed))
        # printed as logfmt, or as JSON keys ([log] format = "json"): the formatter chooses
        log.info("%s", line, extra={"fields": line})
    if history is not None:
        history.submit(build(tx, verdict, elapsed))


def log_line(tx: Transaction, verdict: Verdict, elapsed: float | None = None) -> str:
    """The decision as one logfmt line: our field names, each once, every value quoted as needed.

    A value from the wire (queue id, client, MAIL FROM, recipients, rule, reply) is bare only
    when it is a safe token, else quoted and escaped (logfmt.quote): it can never add a field.
    Each value is at most 200 characters written (recipients, reply and hits 400), escapes
    included: the whole line stays under 2 500 whatever the wire carries.
    """
    return str(Line(log_pairs(tx, verdict, elapsed)))


def log_pairs(tx: Transaction, verdict: Verdict, elapsed: float | None = None) -> list[Pair]:
    """The fields of the decision line, in order: (key, value) or (key, value, limit)."""
    env = tx.envelope
    monitored = ",".join(f"{h.check}/{h.rule}" for h in tx.hits if h.mode is Mode.MONITOR and h.rule)
    # the first monitored refusal: what the message would have been answered in enforce mode
    would = next((h for h in tx.hits if h.mode is Mode.MONITOR and h.action in _REFUSALS), None)
    pairs: list[Pair] = [
        ("queue_id", env.queue_id or "-"),
        ("client", env.client_ip or "-"),
        ("auth", "yes" if env.auth_user else "no"),
        ("from", f"<{env.mail_from}>"),
        ("rcpts", ",".join(env.rcpts), 400),
        ("action", verdict.action.value),
        ("check", verdict.check or "-"),
        ("rule", verdict.rule or "-"),
        ("reply", verdict.smtp_reply(), 400),
        ("ruleset", tx.ruleset.version),
        ("size", str(tx.raw_size)),
        ("message_id", (tx.first_header("Message-ID").strip() if tx.headers else "") or "-"),
    ]
    # every finding, not only the deciding one: a scored delivery names the rules that scored
    hits = ",".join(f"{h.check}/{h.rule}" + (":monitor" if h.mode is Mode.MONITOR else "") for h in tx.hits if h.rule)
    if hits:
        pairs.append(("hits", hits, 400))
    if monitored:
        pairs.append(("monitor", monitored))
    if would is not None:
        pairs.append(("would", ":".join(p for p in (would.action.value, would.code, would.enhanced) if p)))
    # the spam score with every monitored rule enforced, and what it would have got (content check)
    score, outcome = tx.scratch.get("monitor_score", (None, ""))
    if score is not None:
        pairs.append(("would_score", f"{score:.1f}"))
        if would is None and outcome != "accept":
            pairs.append(("would", outcome))
    if elapsed is not None:
        pairs.append(("ms", f"{elapsed * 1000:.1f}"))
    return pairs
