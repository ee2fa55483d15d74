"""A small Redis client for the state gateway nodes share.

RedisStore: only SET with expiry and GET, the shared "seen inbound Message-ID" memory:
several gateway nodes write the Message-IDs they delivered inbound and read each other's.
RedisScripts: Lua scripts run atomically in one round trip (the rate-limit token buckets),
and the few reads and deletes the `govmilter ratelimit` command needs.
Every failure (refused, timeout, a reply that is not what we asked) raises StoreError;
the caller falls back.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from govmilter.lazy import lazy_module

if TYPE_CHECKING:
    import redis
    import redis.exceptions
else:  # ~23 MB of RSS: loaded when a Redis URL is configured (the client is made at start)
    redis = lazy_module("redis")


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


def _client(url: str, timeout: float) -> redis.Redis:
    """A client that fails fast (no retry on timeout: the caller falls back) and returns bytes."""
    try:
        return redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry_on_timeout=False,
            decode_responses=False,
        )
    except ValueError as exc:
        raise ValueError(f"redis_url {redact_url(url)!r}: {exc}") from exc


def ping(url: str, timeout: float) -> None:
    """PING the server of `url` once (govmilter doctor); StoreError when it does not answer PONG."""
    try:
        client = _client(url, timeout)
    except ValueError as exc:
        raise StoreError(str(exc)) from exc
    try:
        if client.ping() is not True:
            raise StoreError("PING was not answered PONG")
    except (redis.exceptions.RedisError, OSError) as exc:
        raise StoreError(f"{type(exc).__name__}: {exc}") from exc
    finally:
        client.close()


class KeyValueStore(Protocol):
    def set(self, key: str, value: str, ttl: int) -> None: ...

    def get(self, key: str) -> str | None: ...


class RedisStore:
    """Keys are namespaced with `prefix`; values are short ASCII strings."""

    def __init__(self, url: str, timeout: float, prefix: str = "govmilter:seen:"):
        self._client = _client(url, timeout)
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


class RedisScripts:
    """Lua scripts and the few commands around them, for state several nodes share (rate limits).

    A script runs by EVALSHA; a server that does not know it (NOSCRIPT: restarted, flushed)
    gets it by SCRIPT LOAD and the call is repeated, so one call is one round trip in the
    common case. Every failure raises StoreError; the caller falls back.
    """

    def __init__(self, url: str, timeout: float, prefix: str):
        self._client = _client(url, timeout)
        self.prefix = prefix
        self.url = redact_url(url)
        self._scripts: dict[str, Any] = {}

    def run(self, script: str, keys: Sequence[str], args: Sequence[str | int | float]) -> Any:
        """EVALSHA `script` (loaded on NOSCRIPT) with prefixed keys; its reply as returned."""
        runner = self._scripts.get(script)
        if runner is None:
            runner = self._scripts[script] = self._client.register_script(script)
        try:
            return runner(keys=[self.prefix + key for key in keys], args=list(args))
        except (redis.exceptions.RedisError, OSError) as exc:
            raise StoreError(f"redis script: {type(exc).__name__}: {exc}") from exc

    def keys(self, pattern: str, limit: int = 10000) -> list[str]:
        """Names (without the prefix) matching `pattern` under the prefix, by SCAN, at most `limit`."""
        found: list[str] = []
        try:
            for name in self._client.scan_iter(match=self.prefix + pattern, count=500):
                text = name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
                found.append(text.removeprefix(self.prefix))
                if len(found) >= limit:
                    break
        except (redis.exceptions.RedisError, OSError) as exc:
            raise StoreError(f"redis scan: {type(exc).__name__}: {exc}") from exc
        return found

    def hash(self, key: str) -> dict[str, str]:
        try:
            value = self._client.hgetall(self.prefix + key)
        except (redis.exceptions.RedisError, OSError) as exc:
            raise StoreError(f"redis hgetall: {type(exc).__name__}: {exc}") from exc
        return {
            (k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k)): (
                v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
            )
            for k, v in dict(value).items()
        }

    def ttl(self, key: str) -> int:
        """Seconds left (-1: no expiry, -2: no such key)."""
        try:
            return int(self._client.ttl(self.prefix + key))
        except (redis.exceptions.RedisError, OSError) as exc:
            raise StoreError(f"redis ttl: {type(exc).__name__}: {exc}") from exc

    def delete(self, keys: Sequence[str]) -> int:
        if not keys:
            return 0
        try:
            return int(self._client.delete(*(self.prefix + key for key in keys)))
        except (redis.exceptions.RedisError, OSError) as exc:
            raise StoreError(f"redis delete: {type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        self._client.close()
