"""Token buckets: in Redis, shared by every gateway node, or in this process.

One message asks for every bucket it takes from at once (`Charge`s), and the answer is all or
nothing: if one enforced bucket lacks the tokens, none is taken and the message is deferred.
In Redis that is one Lua script run by EVALSHA (loaded on NOSCRIPT), so N nodes behind one MX
enforce one limit without a race; the time is Redis's own (TIME), so the nodes' clocks need
not agree.

Redis is optional. Without it, or while it fails, the buckets of this process answer: each
node then enforces the limits on its own (per-node limits), a failure is counted and logged
once per retry interval, and it never blocks mail. Redis is tried again after the interval,
and the shared buckets resume where Redis left them.

The process's buckets are bounded: at most `max_keys` buckets, holds and over-limit marks; past
it the least recently used bucket is dropped (it starts full again when next used), counted.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from govmilter.checks.ratelimit.rules import Limit
from govmilter.clients.redis import RedisScripts, StoreError
from govmilter.metrics import Metrics

log = logging.getLogger("govmilter.ratelimit")

V = TypeVar("V")
MAX_SUBJECT = 200  # longer subjects (from the wire) are keyed by their hash


def subject_key(subject: str) -> str:
    if len(subject) <= MAX_SUBJECT and subject.isprintable() and " " not in subject:
        return subject
    return "sha256-" + hashlib.sha256(subject.encode("utf-8", "surrogateescape")).hexdigest()[:32]


@dataclass(frozen=True)
class Charge:
    """What one message asks of one bucket."""

    limit: Limit
    subject: str  # the normalised account, address or domain
    cost: float

    @property
    def bucket(self) -> str:
        return f"b:{self.limit.id}:{subject_key(self.subject)}"

    @property
    def over(self) -> str:
        return f"o:{self.limit.id}:{subject_key(self.subject)}"

    @property
    def hold(self) -> str:
        return f"h:{self.limit.key}:{subject_key(self.subject)}"


@dataclass
class Outcome:
    denied: int = -1  # index of the enforced charge that lacked tokens (nothing was taken)
    held: int = -1  # index of a charge whose subject is held (nothing was taken)
    newly_held: bool = False  # this deferral put the subject on hold
    over: float = 0.0  # units deferred while the denied subject is over its limit (this one included)
    tokens: tuple[float, ...] = ()  # each bucket's tokens after the decision
    would_deny: tuple[int, ...] = ()  # monitor-mode charges that lacked tokens
    shared: bool = False  # decided by Redis


# KEYS: per charge its bucket, over-limit mark and hold. ARGV: force, mark seconds, hold seconds,
# then per charge: tokens per second, burst, cost, hold_after, enforced (1 or 0).
SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local force = ARGV[1] == '1'
local mark = tonumber(ARGV[2])
local holdttl = tonumber(ARGV[3])
local n = #KEYS / 3
local tokens = {}
local denied = 0
local held = 0
local soft = {}
for i = 1, n do
  local a = 3 + (i - 1) * 5
  local rate = tonumber(ARGV[a + 1])
  local burst = tonumber(ARGV[a + 2])
  local cost = tonumber(ARGV[a + 3])
  local enforced = ARGV[a + 5] == '1'
  local v = redis.call('HMGET', KEYS[3 * i - 2], 'tokens', 'ts')
  local tok = tonumber(v[1])
  local ts = tonumber(v[2])
  if tok == nil or ts == nil then tok = burst; ts = now end
  if now > ts then tok = math.min(burst, tok + (now - ts) * rate) end
  tokens[i] = tok
  if enforced and held == 0 and not force and redis.call('EXISTS', KEYS[3 * i]) == 1 then held = i end
  if cost > 0 and tok < cost then
    if enforced then
      if denied == 0 then denied = i end
    else
      soft[#soft + 1] = tostring(i)
    end
  end
end
local over = 0
local newly = 0
if held > 0 then
  denied = 0
elseif force or denied == 0 then
  for i = 1, n do
    local a = 3 + (i - 1) * 5
    local rate = tonumber(ARGV[a + 1])
    local burst = tonumber(ARGV[a + 2])
    local cost = tonumber(ARGV[a + 3])
    if cost > 0 and (force or tokens[i] >= cost) then
      tokens[i] = math.max(tokens[i] - cost, -burst)
    end
    redis.call('HSET', KEYS[3 * i - 2], 'tokens', tostring(tokens[i]), 'ts', tostring(now))
    redis.call('EXPIRE', KEYS[3 * i - 2], math.ceil(2 * burst / rate) + 1)
  end
  denied = 0
else
  local a = 3 + (denied - 1) * 5
  over = tonumber(redis.call('INCRBYFLOAT', KEYS[3 * denied - 1], ARGV[a + 3]))
  redis.call('EXPIRE', KEYS[3 * denied - 1], mark)
  local hold_after = tonumber(ARGV[a + 4])
  if hold_after > 0 and over >= hold_after then
    if holdttl > 0 then
      redis.call('SET', KEYS[3 * denied], tostring(now), 'EX', holdttl)
    else
      redis.call('SET', KEYS[3 * denied], tostring(now))
    end
    newly = 1
  end
end
local shown = {}
for i = 1, n do shown[i] = string.format('%.3f', tokens[i]) end
return {denied, held, newly, string.format('%.3f', over), table.concat(shown, ','), table.concat(soft, ',')}
"""


def _args(charges: Sequence[Charge], force: bool, mark_seconds: int, hold_seconds: int) -> list[str]:
    args = ["1" if force else "0", str(max(1, mark_seconds)), str(max(0, hold_seconds))]
    for charge in charges:
        limit = charge.limit
        args += [
            repr(limit.per_second),
            repr(limit.burst),
            repr(charge.cost),
            str(limit.hold_after),
            "1" if limit.enforced else "0",
        ]
    return args


class RedisBuckets:
    """The buckets in Redis: one EVALSHA per message."""

    def __init__(self, scripts: RedisScripts, mark_seconds: int, hold_seconds: int):
        self.scripts = scripts
        self.mark_seconds = mark_seconds
        self.hold_seconds = hold_seconds

    def charge(self, charges: Sequence[Charge], force: bool = False) -> Outcome:
        keys = [name for c in charges for name in (c.bucket, c.over, c.hold)]
        reply = self.scripts.run(SCRIPT, keys, _args(charges, force, self.mark_seconds, self.hold_seconds))
        try:
            denied, held, newly, over, tokens, soft = reply
            shown = tokens.decode() if isinstance(tokens, bytes) else str(tokens)
            would = soft.decode() if isinstance(soft, bytes) else str(soft)
            return Outcome(
                denied=int(denied) - 1,
                held=int(held) - 1,
                newly_held=bool(int(newly)),
                over=float(over.decode() if isinstance(over, bytes) else over),
                tokens=tuple(float(x) for x in shown.split(",") if x),
                would_deny=tuple(int(x) - 1 for x in would.split(",") if x),
                shared=True,
            )
        except (TypeError, ValueError) as exc:
            raise StoreError(f"redis script: unexpected reply {reply!r:.200}") from exc


class LocalBuckets:
    """The same buckets in this process (one node's limits), bounded by `max_keys`."""

    def __init__(
        self,
        max_keys: int,
        mark_seconds: int,
        hold_seconds: int,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.max_keys = max(1, max_keys)
        self.mark_seconds = mark_seconds
        self.hold_seconds = hold_seconds
        self.metrics = metrics
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)
        self._over: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (units, until)
        self._holds: OrderedDict[str, float] = OrderedDict()  # key -> until (inf: until released)

    def __len__(self) -> int:
        return len(self._buckets)

    def charge(self, charges: Sequence[Charge], force: bool = False) -> Outcome:
        now = self._clock()
        with self._lock:
            tokens: list[float] = []
            denied = held = -1
            would: list[int] = []
            for i, c in enumerate(charges):
                limit = c.limit
                tok, at = self._buckets.get(c.bucket, (limit.burst, now))
                if now > at:
                    tok = min(limit.burst, tok + (now - at) * limit.per_second)
                tokens.append(tok)
                if limit.enforced and held < 0 and not force and self._held(c.hold, now):
                    held = i
                if c.cost > 0 and tok < c.cost:
                    if limit.enforced:
                        denied = i if denied < 0 else denied
                    else:
                        would.append(i)
            outcome = Outcome(tokens=tuple(tokens), would_deny=tuple(would))
            if held >= 0:
                outcome.held = held
                return outcome
            if force or denied < 0:
                for i, c in enumerate(charges):
                    if c.cost > 0 and (force or tokens[i] >= c.cost):
                        tokens[i] = max(tokens[i] - c.cost, -c.limit.burst)
                    self._put(self._buckets, c.bucket, (tokens[i], now))
                outcome.tokens = tuple(tokens)
                return outcome
            c = charges[denied]
            units, until = self._over.get(c.over, (0.0, 0.0))
            units = (units if until > now else 0.0) + c.cost
            self._put(self._over, c.over, (units, now + self.mark_seconds))
            outcome.denied, outcome.over = denied, units
            if c.limit.hold_after and units >= c.limit.hold_after:
                self._put(self._holds, c.hold, now + self.hold_seconds if self.hold_seconds > 0 else math.inf)
                outcome.newly_held = True
            return outcome

    def _held(self, key: str, now: float) -> bool:
        until = self._holds.get(key)
        if until is None:
            return False
        if until <= now:
            del self._holds[key]
            return False
        return True

    def _put(self, table: OrderedDict[str, V], key: str, value: V) -> None:
        table.pop(key, None)
        table[key] = value
        while len(table) > self.max_keys:
            table.popitem(last=False)
            if self.metrics is not None:
                self.metrics.ratelimit_local_evictions.inc()
        if self.metrics is not None and table is self._buckets:
            self.metrics.ratelimit_local_buckets.set(len(self._buckets))

    # what `govmilter ratelimit` and /health read of this node
    def snapshot(self, subject: str = "", limit: int = 100) -> dict[str, object]:
        """This node's buckets, over-limit marks and holds (of one subject), at most `limit` of each."""
        now = self._clock()
        tail = ":" + subject_key(subject) if subject else ""
        with self._lock:
            buckets = {k: round(tok, 3) for k, (tok, _) in self._buckets.items() if k.endswith(tail)}
            over = {k: units for k, (units, until) in self._over.items() if until > now and k.endswith(tail)}
            holds = [k for k, until in self._holds.items() if until > now and k.endswith(tail)]
        return {
            "buckets": dict(list(buckets.items())[:limit]),
            "over": dict(list(over.items())[:limit]),
            "held": holds[:limit],
        }

    def release(self, subject: str) -> int:
        tail = ":" + subject_key(subject)
        with self._lock:
            gone = [k for k in self._holds if k.endswith(tail)]
            gone += [k for k in self._over if k.endswith(tail)]
            for key in gone:
                self._holds.pop(key, None)
                self._over.pop(key, None)
        return len(gone)


class Buckets:
    """Redis when configured and answering, else this process's buckets (counted, logged, never blocking)."""

    def __init__(
        self,
        local: LocalBuckets,
        metrics: Metrics,
        shared: RedisBuckets | None = None,
        retry_interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.local = local
        self.shared = shared
        self.metrics = metrics
        self.retry_interval = retry_interval
        self._clock = clock
        self._down_until = 0.0
        self._unlogged = 0  # fallbacks since the last log line

    @property
    def mode(self) -> str:
        if self.shared is None:
            return "local"
        return "local (redis paused)" if self._clock() < self._down_until else "redis"

    def charge(self, charges: Sequence[Charge], force: bool = False) -> Outcome:
        if self.shared is not None:
            if self._clock() >= self._down_until:
                try:
                    return self.shared.charge(charges, force)
                except StoreError as exc:
                    self._failed(exc)
            else:
                self._fallback()
        return self.local.charge(charges, force)

    def _fallback(self) -> None:
        self.metrics.ratelimit_fallbacks.labels(op="charge").inc()
        self._unlogged += 1

    def _failed(self, exc: StoreError) -> None:
        self._fallback()
        log.warning(
            "ratelimit redis failed error=%r; per-node limits for %ss (%d message(s) counted in process since the "
            "last line)",
            str(exc),
            f"{self.retry_interval:g}",
            self._unlogged,
        )
        self._unlogged = 0
        self._down_until = self._clock() + self.retry_interval
