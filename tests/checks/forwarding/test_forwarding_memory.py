"""The memory of inbound Message-IDs: bounded in-process, shared through a real redis-server."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from govmilter.checks.forwarding.memory import LocalSeen, SeenMemory, message_key
from govmilter.clients.redis import RedisStore, StoreError
from govmilter.metrics import Metrics
from govmilter.model import Action
from govmilter.pipeline import CHECK_NAMES
from stack import free_port
from support.harness import MESSAGES, Harness
from support.redis_fixture import RedisServer, start_redis

ONLY_FORWARDING = [name for name in CHECK_NAMES if name != "forwarding"]
CORPUS = MESSAGES / "forwarding"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


# --- the in-process memory ------------------------------------------------------------------------


def test_local_remembers_until_the_ttl() -> None:
    clock = Clock()
    seen = LocalSeen(ttl=60, max_entries=10, clock=clock)
    seen.remember("k1", "a@bacninh.gov.vn")
    assert seen.recall("k1") == "a@bacninh.gov.vn"
    clock.now += 59
    assert seen.recall("k1") == "a@bacninh.gov.vn"
    clock.now += 1
    assert seen.recall("k1") is None
    assert len(seen) == 0  # an expired entry is dropped when found


def test_local_is_bounded_oldest_first() -> None:
    clock = Clock()
    seen = LocalSeen(ttl=3600, max_entries=3, clock=clock)
    for i in range(3):
        seen.remember(f"k{i}", f"u{i}@bacninh.gov.vn")
        clock.now += 1
    seen.remember("k0", "again@bacninh.gov.vn")  # seen again: now the newest
    seen.remember("k3", "u3@bacninh.gov.vn")
    assert len(seen) == 3
    assert seen.recall("k1") is None  # the oldest went
    assert seen.recall("k0") == "again@bacninh.gov.vn"
    assert seen.recall("k3") == "u3@bacninh.gov.vn"


def test_local_drops_expired_entries_when_storing() -> None:
    clock = Clock()
    seen = LocalSeen(ttl=10, max_entries=1000, clock=clock)
    for i in range(100):
        seen.remember(f"old{i}", "x@bacninh.gov.vn")
    clock.now += 11
    seen.remember("new", "y@bacninh.gov.vn")
    assert len(seen) == 1


def test_local_under_threads_stays_bounded() -> None:
    seen = LocalSeen(ttl=3600, max_entries=500)

    def work(n: int) -> None:
        for i in range(2000):
            seen.remember(f"{n}-{i}", "a@bacninh.gov.vn")
            seen.recall(f"{n}-{i - 1}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 500


def test_keys_have_a_fixed_size() -> None:
    assert len(message_key("a" * 100000)) == 32
    assert message_key("x@y") != message_key("X@y")  # Message-IDs are case-sensitive


# --- the real Redis -------------------------------------------------------------------------------


def test_redis_store_round_trip(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url, timeout=2.0, prefix="test:rt:")
    store.set("k1", "nguyenvana@bacninh.gov.vn", ttl=120)
    assert store.get("k1") == "nguyenvana@bacninh.gov.vn"
    assert store.get("missing") is None
    other = RedisStore(redis_server.url, timeout=2.0, prefix="test:other:")
    assert other.get("k1") is None  # the prefix namespaces the keys
    ttl = store._client.ttl("test:rt:k1")
    assert isinstance(ttl, int) and 0 < ttl <= 120
    store.close()


def test_two_nodes_share_the_memory(redis_server: RedisServer) -> None:
    node_a = SeenMemory(LocalSeen(3600, 100), Metrics(), RedisStore(redis_server.url, 2.0, "test:share:"))
    node_b = SeenMemory(LocalSeen(3600, 100), Metrics(), RedisStore(redis_server.url, 2.0, "test:share:"))
    node_a.remember("<abc@example.com>", "lethic@bacninh.gov.vn")
    assert node_b.recall("<abc@example.com>") == "lethic@bacninh.gov.vn"
    assert node_b.recall("<other@example.com>") is None


def test_two_gateway_nodes_through_the_pipeline(redis_server: RedisServer) -> None:
    """Delivered inbound on node A, redirected out through node B: node B refuses it."""
    overrides = [f'forwarding.redis_url="{redis_server.url}"', 'forwarding.redis_prefix="test:pipeline:"']
    node_a = Harness(overrides=overrides, skip=ONLY_FORWARDING)
    node_b = Harness(overrides=overrides, skip=ONLY_FORWARDING)
    inbound = node_a.scan(CORPUS / "in-plain-gmail.eml", mail_from="ban.cua.a@gmail.com")
    assert inbound.verdict.action is Action.ACCEPT
    outbound = node_b.scan(
        CORPUS / "out-message-id-memory.eml",
        mail_from="nguyenvana@bacninh.gov.vn",
        rcpts=["ban.cua.a@gmail.com"],
        client_ip="127.0.0.5",
        auth_user="nguyenvana@bacninh.gov.vn",
    )
    assert outbound.verdict.rule == "outbound-message-id-memory"
    assert outbound.verdict.smtp_reply().startswith("550 5.7.520 ")


# --- Redis down never blocks mail ---------------------------------------------------------------------


def test_outage_falls_back_and_counts(tmp_path: Path) -> None:
    server = start_redis(tmp_path)
    clock = Clock()
    metrics = Metrics()
    memory = SeenMemory(
        LocalSeen(3600, 100, clock=clock),
        metrics,
        RedisStore(server.url, timeout=1.0, prefix="test:outage:"),
        retry_interval=30.0,
        clock=clock,
    )
    memory.remember("<before@example.com>", "a@bacninh.gov.vn")
    server.stop()

    def fallbacks(op: str) -> float:
        return metrics.registry.get_sample_value("govmilter_forwarding_memory_fallbacks_total", {"op": op}) or 0.0

    memory.remember("<during@example.com>", "b@bacninh.gov.vn")  # store fails: counted, kept locally
    assert fallbacks("store") == 1
    assert memory.recall("<during@example.com>") == "b@bacninh.gov.vn"
    assert memory.recall("<unknown@example.com>") is None  # Redis is paused: not asked, counted
    assert fallbacks("lookup") == 1
    memory.remember("<paused@example.com>", "c@bacninh.gov.vn")
    assert fallbacks("store") == 2

    # Redis comes back on the same port; after the pause it is used again
    server = start_redis(tmp_path, port=server.port)
    try:
        clock.now += 31
        memory.remember("<after@example.com>", "d@bacninh.gov.vn")
        assert fallbacks("store") == 2
        fresh = RedisStore(server.url, timeout=2.0, prefix="test:outage:")
        assert fresh.get(message_key("<after@example.com>")) == "d@bacninh.gov.vn"
    finally:
        server.stop()


def test_a_redis_that_never_answers_does_not_block(tmp_path: Path) -> None:
    """A peer that accepts and stays silent: the operation times out and the local memory answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    try:
        metrics = Metrics()
        memory = SeenMemory(
            LocalSeen(3600, 100), metrics, RedisStore(f"redis://127.0.0.1:{port}/0", 0.2), retry_interval=60
        )
        memory.remember("<x@example.com>", "a@bacninh.gov.vn")
        assert memory.recall("<x@example.com>") == "a@bacninh.gov.vn"
        assert memory.recall("<y@example.com>") is None
        sample = metrics.registry.get_sample_value
        assert sample("govmilter_forwarding_memory_fallbacks_total", {"op": "store"}) == 1
        assert sample("govmilter_forwarding_memory_fallbacks_total", {"op": "lookup"}) == 1
    finally:
        listener.close()


def test_pipeline_with_redis_down_still_decides() -> None:
    port = free_port()  # nothing listens there
    harness = Harness(overrides=[f'forwarding.redis_url="redis://127.0.0.1:{port}/0"'], skip=ONLY_FORWARDING)
    inbound = harness.scan(CORPUS / "in-plain-gmail.eml", mail_from="ban.cua.a@gmail.com")
    assert inbound.verdict.action is Action.ACCEPT
    outbound = harness.scan(
        CORPUS / "out-message-id-memory.eml",
        mail_from="nguyenvana@bacninh.gov.vn",
        rcpts=["ban.cua.a@gmail.com"],
        client_ip="127.0.0.5",
        auth_user="nguyenvana@bacninh.gov.vn",
    )
    assert outbound.verdict.rule == "outbound-message-id-memory"  # the node's own memory answered
    assert not any(hit.rule == "internal-error" for hit in outbound.tx.hits)
    store = harness.metrics.registry.get_sample_value("govmilter_forwarding_memory_fallbacks_total", {"op": "store"})
    assert store == 1


def test_store_errors_are_store_errors() -> None:
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    with pytest.raises(StoreError):
        store.get("k")
    with pytest.raises(StoreError):
        store.set("k", "v", 10)


def test_bad_redis_url_is_refused_at_build() -> None:
    with pytest.raises(ValueError, match="redis_url"):
        Harness(overrides=['forwarding.redis_url="http://nope"'], skip=ONLY_FORWARDING)
