"""The decision history through real Postfix: a mixed run, then `govmilter trace` finds each message.

A stack of its own (its rules add a rejecting, a monitored and a scoring content rule; an
ambiguous message structure is deferred rather than refused: [size] malformed_action = "tempfail"): accept,
reject, tempfail, a monitor hit, a scored delivery and the issue's forged MAIL FROM. `trace`
reads the stack's govmilter.toml, as an officer would, and finds each message by queue id,
Message-ID, sender, recipient, Subject words, rule and action, with every hit; the per-rule summary
equals govmilter_rule_hits_total for the run. A locked store delays no message, and the records
are written once it is released.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.helpers import INTERNET_CLIENT, TRUSTED_RELAY, message, running_stack, unique
from stack import ROOT, VENV_BIN, Stack, wait_until

RULES = """kind = "content"

[[rule]]
id = "trace-reject"
pattern = 'tracerejectword'
action = "reject"

[[rule]]
id = "trace-monitor"
pattern = 'tracemonitorword'
action = "reject"
mode = "monitor"

[[rule]]
id = "trace-score"
pattern = 'tracescoreword'
score = 2.0
"""
FORGED_SENDER = '"x queue_id=FORGED action=accept client=10.0.0.1"@example.com'


@pytest.fixture(scope="module")
def trace_stack() -> Iterator[Stack]:
    source = Path(tempfile.mkdtemp(prefix="govmilter-trace-rules-"))
    try:
        shutil.copytree(ROOT / "rules", source / "rules")
        (source / "rules" / "trace-e2e.toml").write_text(RULES)
        # a message with two differing Content-Type fields is deferred (451) rather than refused
        yield from running_stack("govmilter-trace-", rules_source=source / "rules",
                                 settings={"size.malformed_action": '"tempfail"'})  # fmt: skip
    finally:
        shutil.rmtree(source, ignore_errors=True)


def trace(stack: Stack, *args: str) -> list[dict[str, Any]]:
    result = subprocess.run(
        [str(VENV_BIN / "govmilter"), "trace", "--config", str(stack.govmilter.root / "govmilter.toml"), "--json",
         *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def rule_hits(stack: Stack) -> Counter[tuple[str, str, str]]:
    found: Counter[tuple[str, str, str]] = Counter()
    for line in stack.scrape().splitlines():
        match = re.match(r'govmilter_rule_hits_total\{check="([^"]*)",mode="([^"]*)",rule="([^"]*)"\} (\S+)', line)
        if match:
            found[match.group(1), match.group(3), match.group(2)] = int(float(match.group(4)))
    return found


def test_a_mixed_run_is_found_by_every_key_with_every_hit(trace_stack: Stack) -> None:
    stack = trace_stack
    started = time.time() - 1
    before = rule_hits(stack)
    run = unique("run")
    cases = {
        "accept": (INTERNET_CLIENT, "sender@example.com", "user@bacninh.gov.vn", "Xin chao."),
        "reject": (INTERNET_CLIENT, "sender@example.com", "user@bacninh.gov.vn", "tracerejectword"),
        "tempfail": (INTERNET_CLIENT, "sender@example.com", "user@bacninh.gov.vn", "Xin chao."),
        "monitor": (INTERNET_CLIENT, "sender@example.com", "user@bacninh.gov.vn", "tracemonitorword"),
        "scored": (TRUSTED_RELAY, "officer@bacninh.gov.vn", "partner@example.com", "tracescoreword"),
        "forged": (INTERNET_CLIENT, FORGED_SENDER, "user@bacninh.gov.vn", "Xin chao."),
    }
    sent: dict[str, tuple[str, str, str, int]] = {}
    for name, (client, sender, rcpt, body) in cases.items():
        subject = f"{run} {name} bao cao"
        extra = {"Content-Type": "text/html"} if name == "tempfail" else None  # a second, different one
        data = message(subject, body=body + "\r\n", mail_from="from@example.com", to=rcpt, headers=extra)
        message_id = re.search(rb"Message-ID: <([^>]+)>", data).group(1).decode()  # type: ignore[union-attr]
        reply = stack.send(sender, [rcpt], data, source_ip=client)
        sent[name] = (subject, message_id, sender, reply.code)
    assert [sent[n][3] for n in cases] == [250, 550, 451, 250, 250, 250], sent

    def all_recorded() -> bool:
        return len(trace(stack, "--subject", run)) == len(cases)

    wait_until(all_recorded, 30, "the records of the run")
    by_subject = {r["subject"].split()[1]: r for r in trace(stack, "--subject", run)}
    expected_action = {"accept": "accept", "reject": "reject", "tempfail": "tempfail", "monitor": "accept",
                       "scored": "accept", "forged": "accept"}  # fmt: skip
    for name, (subject, message_id, sender, _) in sent.items():
        record = by_subject[name]
        assert record["subject"] == subject and record["mail_from"] == sender
        assert record["action"] == expected_action[name], record
        queue_id = record["queue_id"]
        assert re.fullmatch(r"[0-9A-F]{6,}", queue_id), queue_id  # Postfix's own queue id
        assert [r["queue_id"] for r in trace(stack, "--queue-id", queue_id)] == [queue_id]
        assert [r["queue_id"] for r in trace(stack, "--message-id", message_id)] == [queue_id]
        assert queue_id in [r["queue_id"] for r in trace(stack, "--from", sender, "--since", "1h")]
        assert queue_id in [r["queue_id"] for r in trace(stack, "--to", record["rcpts"][0], "--since", "1h")]
        assert queue_id in [r["queue_id"] for r in trace(stack, "--action", record["action"], "--since", "1h")]
        for hit in record["hits"]:
            assert {"check", "rule", "mode", "action"} <= set(hit)
            assert queue_id in [r["queue_id"] for r in trace(stack, "--rule", hit["rule"], "--since", "1h")]

    hits = {name: {(h["check"], h["rule"], h["mode"]) for h in by_subject[name]["hits"]} for name in cases}
    assert ("content", "trace-reject", "enforce") in hits["reject"]
    assert by_subject["reject"]["reply"].startswith("550 ") and by_subject["reject"]["rule"] == "trace-reject"
    assert by_subject["tempfail"]["check"] == "size" and by_subject["tempfail"]["reply"].startswith("451 ")
    assert ("content", "trace-monitor", "monitor") in hits["monitor"]
    assert by_subject["monitor"]["would"] == "reject"
    assert ("content", "trace-score", "enforce") in hits["scored"] and by_subject["scored"]["score"] == 2.0
    assert by_subject["scored"]["direction"] == "outbound"
    assert by_subject["forged"]["mail_from"] == FORGED_SENDER  # the whole forged record, one value

    # the per-rule summary of the run equals what govmilter_rule_hits_total counted in it
    after = rule_hits(stack)
    counted = {key: after[key] - before.get(key, 0) for key in after if after[key] - before.get(key, 0)}
    summary = trace(stack, "--rules", "--since", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)))
    totals = {(r["check"], r["rule"]): r["hits"] for r in summary}
    assert totals == _by_rule(counted) and ("content", "trace-reject") in totals
    monitored = {(r["check"], r["rule"]): r["monitor_hits"] for r in summary if r["monitor_hits"]}
    assert monitored == {(c, r): n for (c, r, m), n in counted.items() if m == "monitor"}
    assert {(r["check"], r["rule"]) for r in summary if r["would_refusals"]} == {("content", "trace-monitor")}

    # readable by default: every hit and the reply the sender saw
    readable = subprocess.run(
        [str(VENV_BIN / "govmilter"), "trace", "--config", str(stack.govmilter.root / "govmilter.toml"),
         "--queue-id", by_subject["reject"]["queue_id"]],
        capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    assert "REJECT by content/trace-reject" in readable and "hit       content/trace-reject" in readable
    assert f"reply     {by_subject['reject']['reply']}" in readable


def _by_rule(counted: dict[tuple[str, str, str], int]) -> dict[tuple[str, str], int]:
    totals: Counter[tuple[str, str]] = Counter()
    for (check, rule, _), n in counted.items():
        totals[check, rule] += n
    return dict(totals)


def test_a_locked_store_delays_no_message_and_the_records_follow(trace_stack: Stack) -> None:
    stack = trace_stack
    path = stack.govmilter.history_path
    wait_until(path.exists, 30, "the history file")
    run = unique("locked")
    locker = sqlite3.connect(path, isolation_level=None, timeout=10)
    locker.execute("BEGIN EXCLUSIVE")  # another program holds the database
    try:
        replies = [
            stack.send("sender@example.com", ["user@bacninh.gov.vn"], message(f"{run} {n}"), source_ip=INTERNET_CLIENT)
            for n in range(4)
        ]
        assert [r.code for r in replies] == [250] * 4  # answered while the store is locked
        wait_until(lambda: "history: the store cannot be written" in stack.govmilter.log_path.read_text(), 30,
                   "the writer to meet the lock")  # fmt: skip
        assert trace(stack, "--subject", run) == []  # trace still reads (WAL), nothing written yet
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    wait_until(lambda: len(trace(stack, "--subject", run)) == 4, 60, "the kept records to be written")
    assert "history: the store is back" in stack.govmilter.log_path.read_text()


def test_json_log_lines_of_the_daemon_read_as_exactly_our_fields(trace_stack: Stack) -> None:
    """[log] format = "json" through real Postfix: the forged MAIL FROM is one JSON string."""
    stack = trace_stack
    stack.restart_milter(**{"log.format": '"json"'})
    log = stack.govmilter.log_path
    start = log.stat().st_size
    marker = unique("json")
    sender = f'"{marker} queue_id=FORGED action=accept\\" }}, {{\\"x"@example.com'
    reply = stack.send(sender, ["user@bacninh.gov.vn"], message(marker), source_ip=INTERNET_CLIENT)
    assert reply.accepted, reply

    def decision() -> dict[str, Any] | None:
        for line in log.read_bytes()[start:].decode().splitlines():
            if line.startswith("{"):
                data = json.loads(line)  # every line the daemon writes is one JSON object
                if data["logger"] == "govmilter.decision" and marker in data["from"]:
                    return dict(data)
        return None

    wait_until(lambda: decision() is not None, 30, "the JSON decision line")
    data = decision()
    assert data is not None
    keys = ["time", "pid", "level", "logger", "queue_id", "client", "auth", "from", "rcpts", "action", "check",
            "rule", "reply", "ruleset", "size", "message_id"]  # fmt: skip
    assert [k for k in data if k not in ("hits", "ms")] == keys
    assert data["from"] == f"<{sender}>" and data["action"] == "accept" and data["queue_id"] != "FORGED"
    assert all(line.startswith("{") for line in log.read_bytes()[start:].decode().splitlines() if line)
