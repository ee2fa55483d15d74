"""What `govmilter ratelimit status [SUBJECT]` and `govmilter ratelimit release SUBJECT` do.

Both read and change the shared buckets in Redis ([ratelimit] redis_url): that is where the
limits of every node live. Without Redis each daemon keeps its buckets in its own memory, which
no other process can read; `status` then says so, and a hold ends when that daemon restarts
(or after [ratelimit] hold_seconds).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from govmilter.checks.ratelimit.buckets import Charge, subject_key
from govmilter.checks.ratelimit.rules import KEYS, RatelimitRules, normal_subject
from govmilter.clients.redis import RedisScripts, StoreError
from govmilter.config import Config

# KEYS: per limit its bucket, over-limit mark and hold; ARGV: per limit tokens per second and burst.
STATUS_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local out = {}
for i = 1, #KEYS / 3 do
  local rate = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local v = redis.call('HMGET', KEYS[3 * i - 2], 'tokens', 'ts')
  local tok = tonumber(v[1])
  local ts = tonumber(v[2])
  if tok == nil or ts == nil then tok = burst; ts = now end
  if now > ts then tok = math.min(burst, tok + (now - ts) * rate) end
  local over = redis.call('GET', KEYS[3 * i - 1]) or '0'
  out[#out + 1] = string.format('%.3f', tok)
  out[#out + 1] = over
  out[#out + 1] = tostring(redis.call('TTL', KEYS[3 * i - 1]))
  out[#out + 1] = tostring(redis.call('EXISTS', KEYS[3 * i]))
end
return out
"""

NO_REDIS = (
    "no [ratelimit] redis_url: each daemon keeps its buckets in its own memory (per-node limits), "
    "which this command cannot read"
)


@dataclass(frozen=True)
class BucketState:
    limit: str
    key: str
    subject: str
    tokens: float
    burst: float
    deferred_while_over: float
    over_for: int  # seconds the over-limit mark still lasts (<= 0: not over)
    held: bool

    def line(self) -> str:
        state = "HELD" if self.held else ("OVER" if self.over_for > 0 else "ok")
        text = f"{self.limit:<28} {self.key:<8} {self.subject:<40} {self.tokens:>10.1f}/{self.burst:<8g} {state}"
        if self.over_for > 0:
            text += f" (deferred {self.deferred_while_over:g} while over, mark ends in {self.over_for}s)"
        return text


def scripts(config: Config) -> RedisScripts | None:
    settings = config.ratelimit
    if not settings.redis_url:
        return None
    return RedisScripts(settings.redis_url, max(settings.redis_timeout, 2.0), settings.redis_prefix)


def status(store: RedisScripts, rules: RatelimitRules, subject: str) -> list[BucketState]:
    """The buckets of one subject under every limit of the rule set (read, never charged)."""
    charges = [Charge(limit, normal_subject(limit.key, subject), 0.0) for limit in rules.limits]
    if not charges:
        return []
    keys = [name for c in charges for name in (c.bucket, c.over, c.hold)]
    args = [value for c in charges for value in (repr(c.limit.per_second), repr(c.limit.burst))]
    reply = [item.decode() if isinstance(item, bytes) else str(item) for item in store.run(STATUS_SCRIPT, keys, args)]
    found = []
    for i, c in enumerate(charges):
        tokens, over, ttl, held = reply[4 * i : 4 * i + 4]
        found.append(
            BucketState(c.limit.id, c.limit.key, c.subject, float(tokens), c.limit.burst, float(over), int(ttl),
                        held == "1")
        )  # fmt: skip
    return found


def marked(store: RedisScripts, limit: int = 1000) -> tuple[list[tuple[str, str, int]], list[tuple[str, str]]]:
    """Every subject over a limit now ((limit, subject, seconds left)) and every hold ((key, subject))."""
    over = []
    for name in store.keys("o:*", limit):
        _, limit_id, subject = name.split(":", 2)
        over.append((limit_id, subject, store.ttl(name)))
    holds = []
    for name in store.keys("h:*", limit):
        _, key, subject = name.split(":", 2)
        holds.append((key, subject))
    return sorted(over), sorted(holds)


def release(store: RedisScripts, rules: RatelimitRules, subject: str) -> int:
    """Lift the holds and over-limit marks of a subject (under every kind of key); its buckets refill on their own."""
    names = [f"h:{key}:{subject_key(normal_subject(key, subject))}" for key in KEYS]
    names += [f"o:{limit.id}:{subject_key(normal_subject(limit.key, subject))}" for limit in rules.limits]
    return store.delete(sorted(set(names)))


def report_status(config: Config, rules: RatelimitRules, subject: str, say: Callable[[str], None]) -> int:
    store = scripts(config)
    if store is None:
        say(NO_REDIS)
        return 1
    try:
        if subject:
            states = status(store, rules, subject)
            say(f"{'limit':<28} {'key':<8} {'subject':<40} {'tokens/burst':>19} state")
            for state in states:
                say(state.line())
            if not states:
                say("no limits in the rule set")
            return 0
        over, holds = marked(store)
        say(f"subjects over a limit now: {len(over)}")
        for limit_id, name, ttl in over:
            say(f"  {limit_id:<28} {name:<40} mark ends in {ttl}s")
        say(f"held (until `govmilter ratelimit release SUBJECT`): {len(holds)}")
        for key, name in holds:
            say(f"  {key:<8} {name}")
        return 0
    except StoreError as exc:
        say(f"Redis {store.url} did not answer: {exc}")
        return 1
    finally:
        store.close()


def run_release(config: Config, rules: RatelimitRules, subject: str, say: Callable[[str], None]) -> int:
    store = scripts(config)
    if store is None:
        say(NO_REDIS + "; a hold ends when the daemon restarts or after [ratelimit] hold_seconds")
        return 1
    try:
        removed = release(store, rules, subject)
    except StoreError as exc:
        say(f"Redis {store.url} did not answer: {exc}; nothing released")
        return 1
    finally:
        store.close()
    say(f"released {subject}: {removed} hold(s) and over-limit mark(s) removed")
    return 0
