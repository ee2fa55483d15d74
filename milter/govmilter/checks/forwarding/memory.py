"""The memory of Message-IDs delivered inbound to local mailboxes.

A redirect-style forward keeps the Message-ID: when a message that came in to
a government mailbox leaves again to a non-government address, the forwarding
check finds it here. The in-process memory is bounded (oldest entries go first)
and forgets after a TTL. With a Redis URL the nodes of a gateway share it;
Redis being down never blocks mail: lookups and stores fall back to the
in-process memory, are counted, and Redis is retried after a pause.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable

from govmilter.clients.redis import KeyValueStore, StoreError
from govmilter.expiring import ExpiringMap
from govmilter.metrics import Metrics

log = logging.getLogger("govmilter.seen")

MAX_VALUE = 254  # the longest mailbox we keep as the value


def message_key(message_id: str) -> str:
    """A fixed-size key for a Message-ID, so memory per entry is bounded whatever was sent."""
    return hashlib.sha256(message_id.encode("utf-8", "surrogateescape")).hexdigest()[:32]


class LocalSeen:
    """Bounded, expiring, thread-safe map of Message-ID key -> mailbox it was delivered to."""

    def __init__(self, ttl: int, max_entries: int, clock: Callable[[], float] = time.monotonic):
        self.ttl = ttl
        self._map: ExpiringMap[str] = ExpiringMap(max(1, max_entries), clock)

    def __len__(self) -> int:
        return len(self._map)

    def remember(self, key: str, mailbox: str) -> None:
        self._map.put(key, mailbox[:MAX_VALUE], self.ttl)

    def recall(self, key: str) -> str | None:
        return self._map.get(key)


class SeenMemory:
    """The in-process memory, optionally shared through a store such as Redis.

    Writes go to both (the local copy answers when the store is down); lookups
    ask the local copy first, then the store.
    """

    def __init__(
        self,
        local: LocalSeen,
        metrics: Metrics,
        store: KeyValueStore | None = None,
        retry_interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.local = local
        self.store = store
        self.metrics = metrics
        self.retry_interval = retry_interval
        self._clock = clock
        self._down_until = 0.0  # while the store is considered down, it is not asked

    @property
    def ttl(self) -> int:
        return self.local.ttl

    def remember(self, message_id: str, mailbox: str) -> None:
        key = message_key(message_id)
        self.local.remember(key, mailbox)
        self.metrics.forward_memory_entries.set(len(self.local))
        if self.store is not None and self._store_usable("store"):
            try:
                self.store.set(key, mailbox[:MAX_VALUE], self.local.ttl)
            except StoreError as exc:
                self._store_failed("store", exc)

    def recall(self, message_id: str) -> str | None:
        key = message_key(message_id)
        found = self.local.recall(key)
        if found is not None or self.store is None:
            return found
        if not self._store_usable("lookup"):
            return None
        try:
            return self.store.get(key)
        except StoreError as exc:
            self._store_failed("lookup", exc)
            return None

    def _store_usable(self, op: str) -> bool:
        if self._clock() < self._down_until:
            self.metrics.forward_memory_fallbacks.labels(op=op).inc()
            return False
        return True

    def _store_failed(self, op: str, exc: StoreError) -> None:
        self.metrics.forward_memory_fallbacks.labels(op=op).inc()
        if self._clock() >= self._down_until:
            log.warning("forwarding memory store failed op=%s error=%r; using in-process memory", op, str(exc))
        self._down_until = self._clock() + self.retry_interval
