"""`govmilter trace`: time ranges as people say them, and records shown to people or scripts."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable
from typing import Any

from govmilter.history.record import DecisionRecord
from govmilter.history.store import RuleSummary
from govmilter.text.escape import terminal_text

_SPAN = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)$")
_SECONDS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, now: float) -> tuple[float, float | None]:
    """`1h`, `7d`, `30m`, `today`, `yesterday` or a date/time -> (since, until or None)."""
    value = text.strip().lower()
    match = _SPAN.match(value)
    if match:
        return now - float(match.group(1)) * _SECONDS[match.group(2)], None
    midnight = dt.datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0)
    if value == "today":
        return midnight.timestamp(), None
    if value == "yesterday":
        start = midnight - dt.timedelta(days=1)
        return start.timestamp(), midnight.timestamp()
    return parse_time(text), None


def parse_time(text: str) -> float:
    """A local date or date and time: 2026-12-03, 2026-12-03T08:00, "2026-12-03 08:00:00"."""
    try:
        return dt.datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise ValueError(
            f"cannot read the time {text!r}: write 1h, 7d, today, yesterday, or a date such as 2026-12-03 08:00"
        ) from None


def parse_between(text: str) -> tuple[float, float]:
    """`START..END` (each a date or date and time), END excluded; a date alone as END means its whole day."""
    start, sep, end = text.partition("..")
    if not sep:
        raise ValueError(f"--between {text!r}: write START..END, e.g. 2026-12-01..2026-12-03")
    until = parse_time(end)
    if len(end.strip()) == 10:  # a date: up to the end of that day
        until += 86400
    return parse_time(start), until


def as_json(record: DecisionRecord) -> str:
    """One line of `trace --json`: the whole record (ASCII, every control character escaped)."""
    data: dict[str, Any] = record.as_json()
    return json.dumps(data, ensure_ascii=True, sort_keys=False)


def _when(stamp: float) -> str:
    return dt.datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M:%S")


def readable(record: DecisionRecord) -> str:
    """A record for people: a head line, then the envelope, the hits and the reply. No control
    character from the wire reaches the terminal (text.escape.terminal_text)."""
    t = terminal_text
    action = record.action.upper()
    decided = f" by {record.check}/{record.rule}" if record.check else ""
    lines = [f"{_when(record.time)}  {action}{decided}  queue {t(record.queue_id) or '-'}  node {t(record.node)}"]
    more = f" (+{record.rcpts_total - len(record.rcpts)} more)" if record.rcpts_total > len(record.rcpts) else ""
    lines.append(f"  from      <{t(record.mail_from)}>  to {', '.join(t(r) for r in record.rcpts) or '-'}{more}")
    lines.append(f"  subject   {t(record.subject) or '-'}")
    lines.append(f"  msg-id    {t(record.message_id) or '-'}   From: {t(record.from_header) or '-'}")
    auth = "authenticated" if record.authenticated else "not authenticated"
    lines.append(
        f"  client    {t(record.client_ip)} {t(record.client_name)}  {record.direction} ({record.direction_why}),"
        f" {auth}, {record.size} bytes"
    )
    for item in record.attachments:
        true = f", content {t(item.true_type)}" if item.true_type else ""
        lines.append(f"  attached  {t(item.name) or '(no name)'}  {t(item.declared)}{true}, {item.size} bytes")
    for hit in record.hits:
        score = f" score {hit.score:g}" if hit.score else ""
        if not hit.rule and hit.action == "continue":  # a check's note on a message it let pass: what it saw
            lines.append(f"  checked   {hit.check}{score}: {t(hit.reason)}")
            continue
        lines.append(f"  hit       {hit.check}/{t(hit.rule)} {hit.mode} {hit.action}{score}: {t(hit.reason)}")
        if hit.mode == "monitor" and hit.reply:
            lines.append(f"            would reply: {t(hit.reply)}")
    if record.score or record.would_score is not None:
        would = f", would-be {record.would_score:g}" if record.would_score is not None else ""
        lines.append(f"  score     {record.score:g}{would}")
    if record.would_refuse():
        lines.append(f"  monitor   would have been refused: {record.would}")
    lines.append(f"  reply     {t(record.reply) if record.reply else '250 (accepted)'}")
    timing = f"{record.elapsed_ms:.1f} ms" if record.elapsed_ms is not None else "-"
    lines.append(f"  ruleset   {t(record.ruleset)}  time {timing}")
    return "\n".join(lines)


def summary_table(rows: list[RuleSummary]) -> str:
    """The per-rule summary: hits, refusals, would-be refusals in monitor mode."""
    if not rows:
        return "no rule hits in this period"
    head = ("check", "rule", "hits", "refused", "would refuse (monitor)", "monitor hits")
    body = [(r.check, terminal_text(r.rule), str(r.hits), str(r.refusals), str(r.would_refusals), str(r.monitored))
            for r in rows]  # fmt: skip
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    align: list[Callable[[str, int], str]] = [str.ljust, str.ljust, str.rjust, str.rjust, str.rjust, str.rjust]
    lines = ("  ".join(align[i](cell, widths[i]) for i, cell in enumerate(row)).rstrip() for row in [head, *body])
    return "\n".join(lines)


def summary_json(row: RuleSummary) -> str:
    return json.dumps(
        {
            "check": row.check,
            "rule": row.rule,
            "hits": row.hits,
            "refusals": row.refusals,
            "would_refusals": row.would_refusals,
            "monitor_hits": row.monitored,
        },
        ensure_ascii=True,
    )
