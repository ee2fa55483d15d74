"""A small Redis client for the shared "seen inbound Message-ID" memory.

Only SET with expiry and GET: several gateway nodes write the Message-IDs they
delivered inbound and read each other's. Every failure (refused, timeout, a
reply that is not what we asked) raises StoreError; the caller falls back.
"""

from __future__ import annotations

import re
from typing import Protocol

import redis
import redis.exceptions


def redact_url(url: str) -> str:
    """The URL without its password (redis://user:PASSWORD@host, ?password=), for logs and errors."""
    url = re.sub(r"([?&]password=)[^&#]*", r"\1***", url, flags=re.I)
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}"


class StoreError(Exception):
    """The shared store did not answer as expected."""


class KeyValueStore(Protocol):
    def set(self, key: str, value: str, ttl: int) -> None: ...

    def get(self, key: str) -> str | None: ...


class RedisStore:
    """Keys are namespaced with `prefix`; values are short ASCII strings."""

    def __init__(self, url: str, timeout: float, prefix: str = "govmilter:seen:"):
        try:
            self._client = redis.Redis.from_url(
                url,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry_on_timeout=False,
                decode_responses=False,
            )
        except ValueError as exc:
            raise ValueError(f"redis_url {redact_url(url)!r}: {exc}") from exc
        self.prefix = prefix
        self.url = redact_url(url)  # for messages: never the password

    def set(self, key: str, value: str, ttl: int) -> None:
        try:
            self._client.set(self.prefix + key, value.encode("utf-8", "replace"), ex=max(1, ttl))
        except (redis.exceptions.RedisError, OSError) as exc:
            raise StoreError(f"redis set: {type(exc).__name__}: {exc}") from exc

    def get(self, key: str) -> str | None:
        try:
            value = self._client.get(self.prefix + key)
        except (redis.exceptions.RedisError, OSError) as exc:
            raise StoreError(f"redis get: {type(exc).__name__}: {exc}") from exc
        if value is None:
            return None
        if not isinstance(value, bytes):
            raise StoreError(f"redis get: unexpected reply type {type(value).__name__}")
        return value.decode("utf-8", "replace")

    def close(self) -> None:
        self._client.close()
