"""Outbound rate limits through real Postfix: two gateway nodes sharing one real redis-server.

Node A is this module's stack (Postfix, govmilter, clamd, dnsmasq, sink); node B is a second
Postfix with a second govmilter daemon on the same rules, relaying to the same sink; both use the
same Redis. A third Postfix plays the mailbox server: it relays through node A from 127.0.0.1
(a trusted relay, so the envelope sender is the account) and queues what the gateway defers.
The limits are this test's own (10 recipients per account at once, 6 more per minute: one every
10 seconds, which is also the slack the tests of a deferral have), so the counts stay small.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from e2e.helpers import TRUSTED_RELAY, running_stack
from stack import Govmilter, Postfix, Reply, Stack, free_port, send, wait_until
from support.harness import RULES
from support.redis_fixture import RedisServer, start_redis

LIMITS = """
kind = "ratelimit"

[[limit]]
id = "e2e-account"
key = "account"
count = "recipients"
rate = 6
period = "minute"
burst = 10

# the account the mailbox server's queue is tested with refills faster: its test waits less
[[limit]]
id = "e2e-queued"
key = "account"
count = "recipients"
rate = 30
period = "minute"
burst = 8
accounts = ["hopthu.queued@bacninh.gov.vn"]
replaces = "e2e-account"
"""
DEFERRAL = (
    "4.7.1 Vuot qua gioi han gui thu e2e-account: 6 nguoi nhan moi phut, thu se duoc gui lai sau"
    " (QD 06/2022 Dieu 8.3) - sending limit e2e-account reached: 6 recipients per minute,"
    " the message will be retried later"
)


@dataclass
class Node:
    name: str
    smtp_port: int
    metrics_url: str

    def send(self, account: str, rcpts: list[str], subject: str) -> Reply:
        return send(self.smtp_port, account, rcpts, outbound(account, subject), source_ip=TRUSTED_RELAY)

    def sample(self, name: str, labels: dict[str, str]) -> float:
        with urllib.request.urlopen(f"{self.metrics_url}/metrics", timeout=10) as response:
            text = response.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return float(sample.value)
        return 0.0


@dataclass
class Lab:
    stack: Stack
    redis: RedisServer
    redis_dir: Path
    a: Node
    b: Node
    mailbox: Postfix


def outbound(account: str, subject: str) -> bytes:
    return (
        f"From: <{account}>\r\nTo: <doi.tac@example.com>\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject}@bacninh.gov.vn>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0700\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nKinh gui quy co quan.\r\n"
    ).encode()


def recipients(n: int) -> list[str]:
    return [f"nguoi.nhan{i}@example.com" for i in range(n)]


def account(name: str) -> str:
    return f"{name}.{uuid.uuid4().hex[:8]}@bacninh.gov.vn"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    redis_dir = tmp_path_factory.mktemp("redis")
    redis = start_redis(redis_dir)
    rules = tmp_path_factory.mktemp("rules")
    shutil.rmtree(rules)
    shutil.copytree(RULES, rules, ignore=shutil.ignore_patterns("ratelimit.toml", "tests"))
    (rules / "ratelimit.toml").write_text(LIMITS)
    settings = {
        "ratelimit.redis_url": f'"{redis.url}"',
        "ratelimit.redis_prefix": f'"e2e:{uuid.uuid4().hex[:8]}:"',
        "ratelimit.redis_retry_interval": "1.0",
    }
    started: list[object] = []
    built: list[Lab] = []
    try:
        for stack in running_stack("govmilter-ratelimit-", rules_source=rules, settings=settings):
            root = stack.root / "node-b"
            (root / "milter").mkdir(parents=True)
            os.chmod(root, 0o755)
            os.chmod(root / "milter", 0o755)
            (root / "spool").mkdir()
            b_metrics = free_port()
            b_settings = stack.milter_settings() | {
                "milter.socket": f'"unix:{root / "milter" / "govmilter.sock"}"',
                "milter.spool_dir": f'"{root / "spool"}"',
                "metrics.listen": f'"127.0.0.1:{b_metrics}"',
                "rules.last_good_dir": f'"{root / "last-good-rules"}"',
            }
            node_b = Govmilter(root / "govmilter", b_settings)
            node_b.start()
            started.append(node_b)
            postfix_b = Postfix(
                root / "postfix", free_port(), stack.sink_port, f"unix:{root / 'milter' / 'govmilter.sock'}"
            )
            postfix_b.start()
            started.append(postfix_b)
            # the mailbox server: relays everything through node A, keeps what is deferred
            mailbox = Postfix(
                stack.root / "mailbox",
                free_port(),
                stack.smtp_port,
                "",
                extra=["myhostname = mail.bacninh.gov.vn", "smtp_destination_recipient_limit = 50"],
            )
            mailbox.start()
            started.append(mailbox)
            built.append(
                Lab(
                    stack,
                    redis,
                    redis_dir,
                    Node("A", stack.smtp_port, stack.metrics_url),
                    Node("B", postfix_b.port, f"http://127.0.0.1:{b_metrics}"),
                    mailbox,
                )
            )
            yield built[0]
    finally:
        for part in reversed(started):
            part.stop()  # type: ignore[attr-defined]
        for server in {id(s): s for s in [redis, *(lab.redis for lab in built)]}.values():
            server.stop()  # the one a test restarted too


def assert_deferred(reply: Reply) -> None:
    assert (reply.stage, reply.code) == ("data", 451), reply
    assert " ".join(reply.text.split()).startswith(DEFERRAL), reply  # a reference line may follow


def test_the_shared_limit_defers_an_account_whichever_node_takes_its_mail(lab: Lab) -> None:
    busy, quiet = account("busy"), account("quiet")
    before = lab.a.sample("govmilter_ratelimit_deferred_total", {"rule": "e2e-account", "result": "limit"})
    assert lab.a.send(busy, recipients(5), "busy-1").accepted
    assert lab.b.send(busy, recipients(5), "busy-2").accepted  # the burst of 10, on two nodes
    assert_deferred(lab.a.send(busy, recipients(1), "busy-3"))
    assert_deferred(lab.b.send(busy, recipients(1), "busy-4"))
    for i, node in enumerate((lab.a, lab.b, lab.a)):  # another account under its limit: never deferred
        assert node.send(quiet, recipients(3), f"quiet-{i}").accepted
    assert lab.a.sample("govmilter_ratelimit_deferred_total", {"rule": "e2e-account", "result": "limit"}) == before + 1
    assert lab.b.sample("govmilter_ratelimit_over_limit_accounts", {"rule": "e2e-account"}) >= 1
    for subject in ("busy-1", "busy-2", "quiet-0", "quiet-1", "quiet-2"):
        lab.stack.sink.find(subject)
    time.sleep(10.5)  # 6 a minute: one recipient back every 10 seconds
    assert lab.b.send(busy, recipients(1), "busy-5").accepted, "after the refill the account sends again"
    lab.stack.sink.find("busy-5")


def test_every_deferred_message_waits_at_the_mailbox_server_and_leaves_after_the_refill(lab: Lab) -> None:
    """8 recipients at once for this account: of three messages of 4, one is deferred and queued."""
    sender = "hopthu.queued@bacninh.gov.vn"
    subjects = [f"queued-{uuid.uuid4().hex[:8]}-{i}" for i in range(3)]
    for subject in subjects:
        reply = send(lab.mailbox.port, sender, recipients(4), outbound(sender, subject), source_ip=TRUSTED_RELAY)
        assert reply.accepted, reply  # the mailbox server takes the message from its user

    def delivered() -> list[str]:
        return [s for s in subjects if any(s.encode() in m.data for m in list(lab.stack.sink.messages))]

    log = lab.mailbox.root / "postfix.log"

    def deferred_there() -> bool:  # the gateway's 451 reached the mailbox server, which keeps the message
        text = log.read_text()
        return "dsn=4.7.1, status=deferred" in text and "4.7.1 Vuot qua gioi han gui thu e2e-queued: 30" in text

    wait_until(deferred_there, 60, "the deferral in the mailbox server's log")
    wait_until(lambda: len(delivered()) == 2 and lab.mailbox.queue_size() == 1, 60, "two delivered, one queued")
    time.sleep(8.5)  # 30 a minute: the 4 recipients are back after 8 seconds
    flushed = subprocess.run(["postqueue", "-c", str(lab.mailbox.etc), "-f"], capture_output=True, text=True)
    assert flushed.returncode == 0, flushed.stderr
    wait_until(lambda: len(delivered()) == 3 and lab.mailbox.queue_size() == 0, 60, "the queued message delivered")


def test_redis_stopped_mid_run_per_node_limits_then_shared_again(lab: Lab) -> None:
    before = lab.a.sample("govmilter_ratelimit_fallbacks_total", {"op": "charge"})
    lab.redis.stop()
    try:
        during = account("during")
        # each node its own bucket of 10: mail keeps flowing, under per-node limits
        assert lab.a.send(during, recipients(10), "outage-a").accepted
        assert lab.b.send(during, recipients(10), "outage-b").accepted
        assert_deferred(lab.a.send(during, recipients(1), "outage-a2"))
        assert lab.a.sample("govmilter_ratelimit_fallbacks_total", {"op": "charge"}) >= before + 2
        assert lab.b.sample("govmilter_ratelimit_fallbacks_total", {"op": "charge"}) >= 1
    finally:
        lab.redis = start_redis(lab.redis_dir, port=lab.redis.port)
    time.sleep(1.5)  # [ratelimit] redis_retry_interval = 1 in this module
    after = account("after")
    assert lab.a.send(after, recipients(10), "after-a").accepted
    assert_deferred(lab.b.send(after, recipients(1), "after-b"))  # one shared bucket again
    for subject in ("outage-a", "outage-b", "after-a"):
        lab.stack.sink.find(subject)
