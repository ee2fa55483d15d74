"""Faults through real Postfix: every message is delivered or refused with a reply the client saw.

Each test breaks one part while mail flows (clamd, DNS, the rule directory,
the spool file system, govmilter itself) and then accounts for every message.
The stack here is this module's own, since these tests kill its parts.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.accounting import account, plain, send_all, with_attachment
from e2e.helpers import running_stack
from stack import Stack


@pytest.fixture(scope="module")
def lab() -> Iterator[Stack]:
    yield from running_stack("govmilter-faults-")  # this module kills parts of its stack


def test_clamd_killed_mid_scan(lab: Stack) -> None:
    messages = [with_attachment() for i in range(24)]

    def kill_clamd() -> None:
        assert lab.clamd.proc is not None
        lab.clamd.proc.kill()
        lab.clamd.proc.wait()

    replies = send_all(lab, messages, during=kill_clamd, after=6)
    lab.clamd.start()
    outcome = account(lab, messages, replies)
    print(outcome)
    assert not outcome.lost, outcome.lost
    assert outcome.delivered + sum(outcome.refused.values()) == len(messages)
    assert outcome.refused.get(451, 0) > 0, "clamd was down for some messages: they must be deferred"
    # clamd is back: the next message is scanned again without restarting govmilter
    again = plain("after-clamd")
    reply = lab.send(again.mail_from, list(again.rcpts), again.data, source_ip=again.source_ip)
    assert reply.accepted, reply
    assert "ClamAV" in (lab.sink.find(again.marker).message["X-Virus-Scanned"] or "")


def test_dns_server_gone(lab: Stack) -> None:
    lab.dns.stop()
    try:
        # many Internet clients, none listed: each asks the (dead) DNS server anew
        messages = [plain("nodns", source_ip=f"127.0.0.{10 + i}") for i in range(12)]
        replies = send_all(lab, messages)
    finally:
        lab.dns.start()
    outcome = account(lab, messages, replies)
    print(outcome)
    assert not outcome.lost, outcome.lost
    assert outcome.delivered == len(messages), "a DNS outage skips the blocklists, it never blocks mail"


def test_rule_directory_unreadable(lab: Stack) -> None:
    hidden = lab.rules_dir.with_name("rules-away")
    lab.rules_dir.rename(hidden)
    try:
        time.sleep(1.5)  # a few reload intervals
        messages = [plain("norules") for _ in range(10)]
        replies = send_all(lab, messages)
    finally:
        hidden.rename(lab.rules_dir)
    outcome = account(lab, messages, replies)
    print(outcome)
    assert not outcome.lost, outcome.lost
    assert outcome.delivered == len(messages), "the previous rule set stays active"
    assert "reload=failed" in lab.govmilter.log_path.read_text()


def _mount_small_tmpfs(path: Path) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)], capture_output=True)
    return result.returncode == 0


def test_spool_directory_full(lab: Stack) -> None:
    full = lab.root / "full-spool"
    if not _mount_small_tmpfs(full):
        pytest.fail("cannot mount a 1 MiB tmpfs for the full-spool test (needs root with CAP_SYS_ADMIN)")
    try:
        lab.restart_milter(**{"milter.spool_dir": f'"{full}"', "milter.spool_threshold": "16384"})
        messages = [with_attachment(size=300_000) for i in range(12)]
        replies = send_all(lab, messages, workers=12)
        outcome = account(lab, messages, replies)
        print(outcome)
        assert not outcome.lost, outcome.lost
        assert outcome.refused.get(451, 0) > 0, "a full spool must defer, not accept or reject"
        assert set(outcome.refused) <= {451}
    finally:
        lab.restart_milter(**{"milter.spool_dir": f'"{lab.root / "spool"}"', "milter.spool_threshold": "262144"})
        subprocess.run(["umount", str(full)], check=False)


def test_govmilter_killed_with_open_transactions(lab: Stack) -> None:
    messages = [with_attachment(size=100_000) for i in range(30)]

    def kill_and_restart() -> None:
        lab.govmilter.kill()
        time.sleep(0.5)
        lab.govmilter.start()

    replies = send_all(lab, messages, during=kill_and_restart, after=8)
    outcome = account(lab, messages, replies)
    print(outcome)
    assert not outcome.lost, outcome.lost
    assert set(outcome.refused) <= {421, 451}, "milter_default_action = tempfail: the sender retries"


def test_govmilter_restarted_under_load(lab: Stack) -> None:
    messages = [plain("restart", size=5000) for _ in range(40)]

    def restart() -> None:
        lab.govmilter.stop()
        lab.govmilter.start()

    replies = send_all(lab, messages, during=restart, after=10)
    outcome = account(lab, messages, replies)
    print(outcome)
    assert not outcome.lost, outcome.lost
    assert set(outcome.refused) <= {421, 451}
