"""A bounded map whose entries expire, safe to share between threads.

Used for the DNS answer cache and the in-process Message-ID memory: both must
never grow past a bound, whatever the traffic.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")


class ExpiringMap(Generic[V]):
    def __init__(self, max_entries: int, clock: Callable[[], float] = time.monotonic):
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[float, V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> V | None:
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] <= now:
                del self._entries[key]  # an expired entry is dropped when found
                return None
            return entry[1]

    def put(self, key: str, value: V, ttl: float) -> None:
        """Store for `ttl` seconds; the key becomes the newest. Nothing is kept when ttl or the bound is 0."""
        if ttl <= 0 or self.max_entries <= 0:
            return
        now = self._clock()
        with self._lock:
            self._entries.pop(key, None)
            self._entries[key] = (now + ttl, value)
            # the oldest insertions go first: expired ones, then any past the bound
            while self._entries:
                oldest_key, (expires, _) = next(iter(self._entries.items()))
                if expires > now and len(self._entries) <= self.max_entries:
                    break
                del self._entries[oldest_key]
