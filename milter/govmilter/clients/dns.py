"""The one DNS layer of every check: one resolver, one TTL cache, one breaker, one budget per message.

Two ways to ask. `lookup(names, budget)` is the blocklists' parallel A lookup
of `<reversed ip or domain>.<zone>`: an answer means listed (the address says
why), NXDOMAIN means not listed; lookups of one message run in parallel on a
small shared thread pool and the caller waits at most its budget. `query(name,
rdtype, budget, purpose)` is one lookup in the caller's thread (SPF, DKIM keys,
DMARC policies, ARC keys), bounded by the message's `Budget`, the time one
message may spend on DNS, shared by every check that asks.

Whatever has not answered in time is a timeout. Timeouts and errors are not
cached, so a resolver that recovers is used again at once; a resolver that
stays silent round after round of blocklist lookups is left alone for a short
cool-down, so that it does not cost every message its whole budget (the
silence of a sender's own names, SPF, DKIM, DMARC, never opens it: a sender
could otherwise pause the blocklists for everyone). Failures are counted
(govmilter_dns_lookups_total{purpose, result}) and logged as one line per
interval with their number, never one line per lookup.
"""

from __future__ import annotations

import concurrent.futures
import logging
import socket
import threading
import time
import weakref
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.query
import dns.rdatatype
import dns.resolver

from govmilter.expiring import ExpiringMap

log = logging.getLogger("govmilter.dns")

# blocklist answers (lookup)
LISTED = "listed"
CLEAN = "clean"
# any record type (query)
FOUND = "found"  # the name has records of the type asked
NXDOMAIN = "nxdomain"  # the name does not exist
NODATA = "nodata"  # the name exists, without records of that type
# both
TIMEOUT = "timeout"
ERROR = "error"  # SERVFAIL, REFUSED, a malformed answer, a name DNS cannot carry
SKIPPED = "skipped"  # not asked: the budget was spent or the resolver is known to be silent
FAILED = frozenset({TIMEOUT, ERROR, SKIPPED})

PURPOSES = ("dnsbl", "spf", "dkim", "dmarc", "arc")
BUDGET_KEY = "dns_budget"  # Transaction.scratch: the message's Budget


@dataclass(frozen=True)
class Answer:
    """What a blocklist said about one query name."""

    status: str  # listed | clean | timeout | error | skipped
    addresses: tuple[str, ...] = ()  # the A records of a listing, "127.0.0.2"
    cached: bool = False


@dataclass(frozen=True)
class Records:
    """The answer to one query of any type."""

    status: str  # found | nxdomain | nodata | timeout | error | skipped
    values: tuple[str, ...] = ()  # TXT: each record's strings joined; A/AAAA: addresses; MX: "10 host"; PTR: names
    cached: bool = False

    @property
    def failed(self) -> bool:
        """No answer at all (timeout, error, skipped): a temporary error to whoever asked."""
        return self.status in FAILED


class Budget:
    """The seconds one message may spend waiting for DNS, every check together."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.spent = 0.0

    def left(self) -> float:
        return self.seconds - self.spent

    def spend(self, seconds: float) -> None:
        self.spent += max(seconds, 0.0)


def message_budget(scratch: MutableMapping[str, Any], seconds: float) -> Budget:
    """The message's one Budget, kept in its Transaction.scratch: the first check to ask makes it."""
    budget = scratch.get(BUDGET_KEY)
    if not isinstance(budget, Budget):
        budget = scratch[BUDGET_KEY] = Budget(seconds)
    return budget


class BlocklistResolver(Protocol):
    def lookup(self, names: Sequence[str], budget: float) -> dict[str, Answer]:
        """Answer every name; never wait longer than `budget` seconds in all."""
        ...


class Resolver(Protocol):
    def query(self, name: str, rdtype: str, budget: Budget, purpose: str) -> Records:
        """One lookup within what is left of the message's budget."""
        ...


# The text an answer may hold and still be cached. Real SPF records and DKIM keys (even RSA-4096,
# ~800 characters) are far below it; a sender's domain that answers with 60 kB TXT records would
# otherwise fill the cache's entries with hundreds of MB. A larger answer is used, not kept.
MAX_CACHED_CHARS = 4096


class TTLCache(ExpiringMap[Answer | Records]):
    """Answers, each kept for its record's TTL."""


class ConnectedDo53(dns.nameserver.Do53Nameserver):
    """UDP through a connected socket, so a closed port fails at once (ICMP), not after the timeout.

    The exchange is dns.query.udp's, on a blocking socket with a timeout: dns.query.udp builds a
    selector for every wait, 40 % of the CPU of a blocklist lookup (~380 -> ~230 us a query). The
    same answers: a truncated reply raises Truncated (the resolver retries over TCP), a reply that
    does not parse or does not answer this query is ignored and the wait goes on (ignore_errors,
    ignore_unexpected), and the deadline ends it (Timeout).
    """

    def query(
        self,
        request: dns.message.QueryMessage,
        timeout: float,
        source: str | None,
        source_port: int,
        max_size: bool,
        one_rr_per_rrset: bool = False,
        ignore_trailing: bool = False,
    ) -> dns.message.Message:
        if max_size:  # the TCP retry of a truncated answer
            return super().query(request, timeout, source, source_port, max_size, one_rr_per_rrset, ignore_trailing)
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        begin = time.monotonic()
        deadline = begin + timeout
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect((self.address, self.port))  # only the resolver's datagrams reach it
            sock.send(request.to_wire())
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise dns.exception.Timeout(timeout=timeout)
                sock.settimeout(left)
                try:
                    wire = sock.recv(65535)
                except TimeoutError:
                    raise dns.exception.Timeout(timeout=timeout) from None
                try:
                    response = dns.message.from_wire(
                        wire,
                        keyring=request.keyring,
                        request_mac=request.mac,
                        one_rr_per_rrset=one_rr_per_rrset,
                        ignore_trailing=ignore_trailing,
                        raise_on_truncation=True,
                    )
                except dns.message.Truncated as exc:
                    if request.is_response(exc.message()):
                        raise
                    continue
                except Exception:  # noqa: S112 - a datagram that does not parse: keep waiting for the answer
                    continue
                if request.is_response(response):
                    response.time = time.monotonic() - begin
                    return response


class FailureLog:
    """Failed lookups as one log line per interval, with their number and the last one."""

    def __init__(self, where: str, interval: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.where = where
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._count = 0
        self._last = ""
        self._logged_at: float | None = None

    def note(self, purpose: str, name: str, status: str) -> None:
        now = self._clock()
        with self._lock:
            self._count += 1
            self._last = f"{purpose} {name} {status}"
            if self._logged_at is not None and now - self._logged_at < self.interval:
                return
            count, last, since = self._count, self._last, self._logged_at
            self._count, self._logged_at = 0, now
        window = f"in the last {now - since:.0f}s" if since is not None else "so far"
        log.warning("dns resolver=%s: %d lookup(s) failed %s (last: %s)", self.where, count, window, last)


class DnsClient:
    """dnspython against one configured resolver, never /etc/resolv.conf."""

    def __init__(
        self,
        nameserver: str,
        port: int = 53,
        *,
        workers: int = 16,
        cache_entries: int = 10000,
        negative_ttl: float = 300.0,
        max_ttl: float = 3600.0,
        breaker_rounds: int = 3,
        breaker_cooldown: float = 10.0,
        failure_log_interval: float = 60.0,
        counter: Callable[[str, str], None] | None = None,
    ):
        self.nameserver = nameserver
        self.port = port
        self.negative_ttl = negative_ttl
        self.max_ttl = max_ttl
        self.cache = TTLCache(cache_entries)
        # a resolver that stays silent would cost every message its whole budget:
        # after `breaker_rounds` silent rounds in a row, skip lookups for `breaker_cooldown`
        self.breaker_rounds = breaker_rounds
        self.breaker_cooldown = breaker_cooldown
        self.failures = FailureLog(f"{nameserver}:{port}", failure_log_interval)
        self.counter = counter  # (purpose, result) of each query(): the metric
        self._silent_rounds = 0
        self._open_until = 0.0
        self._last_round_answered = True
        self._lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dns")

    # ---- blocklists: many A lookups in parallel ----

    def lookup(self, names: Sequence[str], budget: float) -> dict[str, Answer]:
        deadline = time.monotonic() + max(budget, 0.0)
        skip = budget <= 0 or self.resolver_down()
        results: dict[str, Answer] = {}
        pending: dict[concurrent.futures.Future[tuple[Records, float]], str] = {}
        for name in dict.fromkeys(n.lower().rstrip(".") for n in names):
            cached = self.cache.get(name)
            if isinstance(cached, Answer):
                results[name] = Answer(cached.status, cached.addresses, cached=True)
            elif skip:
                results[name] = Answer(SKIPPED)  # budget spent or resolver silent: do not start
            else:
                pending[self._pool.submit(self._resolve, name, "A", deadline)] = name
        if not pending:
            return results
        done, not_done = concurrent.futures.wait(pending, timeout=max(deadline - time.monotonic(), 0.0))
        for future in done:
            name = pending[future]
            try:
                records, ttl = future.result()
            except Exception:  # a resolver bug must not become our failure: skip that zone
                records, ttl = Records(ERROR), 0.0
            answer = _as_listing(records)
            results[name] = answer
            self.cache.put(name, answer, ttl)
        for future in not_done:
            future.cancel()  # queued work is dropped; a running query ends at its own deadline
            results[pending[future]] = Answer(TIMEOUT)
        for name in pending.values():
            if results[name].status in FAILED:
                self.failures.note("dnsbl", name, results[name].status)
        self._note_round([results[name].status for name in pending.values()])
        return results

    # ---- any record type, one at a time in the caller's thread ----

    def query(self, name: str, rdtype: str, budget: Budget, purpose: str) -> Records:
        """Records of one type; `budget` is the message's, shared with every other lookup of it."""
        name = name.lower().rstrip(".")
        key = f"{rdtype} {name}"
        cached = self.cache.get(key)
        if isinstance(cached, Records):
            self._count(purpose, "cached")
            return Records(cached.status, cached.values, cached=True)
        left = budget.left()
        if left <= 0 or self.resolver_down():
            self._count(purpose, SKIPPED)
            self.failures.note(purpose, name, SKIPPED)
            return Records(SKIPPED)
        started = time.monotonic()
        try:
            records, ttl = self._resolve(name, rdtype, started + left)
        except Exception:  # a resolver bug must not become our failure: a temporary error
            log.exception("dns query %s %s raised", rdtype, name)
            records, ttl = Records(ERROR), 0.0
        budget.spend(time.monotonic() - started)
        if sum(len(v) for v in records.values) <= MAX_CACHED_CHARS:
            self.cache.put(key, records, ttl)
        self._count(purpose, records.status)
        if records.failed:
            self.failures.note(purpose, name, records.status)
        # these names are the sender's (SPF, DKIM keys, DMARC), whose servers a sender can keep silent:
        # three such messages would pause every lookup, the blocklists' included. Only the blocklist
        # rounds (lookup: our zones' names) open the breaker; these say whether the resolver answers.
        self._note_round([records.status], breaker=False)
        return records

    def _count(self, purpose: str, result: str) -> None:
        if self.counter is not None:
            self.counter(purpose, result)

    # ---- the breaker and health ----

    def resolver_down(self) -> bool:
        return time.monotonic() < self._open_until

    def answering(self) -> bool:
        """False while the breaker is open or the last round had no answer at all (for /health)."""
        return self._last_round_answered and not self.resolver_down()

    def _note_round(self, statuses: Sequence[str], breaker: bool = True) -> None:
        silent = bool(statuses) and all(s in (TIMEOUT, ERROR) for s in statuses)
        with self._lock:
            self._last_round_answered = not silent
            if not all(s == TIMEOUT for s in statuses):
                self._silent_rounds = 0
                return
            if not breaker:
                return
            self._silent_rounds += 1
            if self.breaker_rounds > 0 and self._silent_rounds >= self.breaker_rounds:
                self._silent_rounds = 0
                self._open_until = time.monotonic() + self.breaker_cooldown
                log.warning(
                    "dns resolver=%s:%d silent for %d rounds: lookups skipped for %.0fs",
                    self.nameserver,
                    self.port,
                    self.breaker_rounds,
                    self.breaker_cooldown,
                )

    # ---- one lookup ----

    def _resolve(self, name: str, rdtype: str, deadline: float) -> tuple[Records, float]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return Records(TIMEOUT), 0.0
        try:
            qname = dns.name.from_text(name)
        except dns.exception.DNSException:  # a label too long, an empty label
            return Records(ERROR), 0.0
        # a Resolver of its own per query: its per-try timeout is ours to set without a lock
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [ConnectedDo53(self.nameserver, self.port)]
        # half the remaining time per try leaves room for one retry of a lost UDP packet
        resolver.timeout = max(remaining / 2, 0.05)
        try:
            answer = resolver.resolve(qname, rdtype, lifetime=remaining, search=False)
        except dns.resolver.NXDOMAIN as exc:
            return Records(NXDOMAIN), self._negative_ttl(exc.responses().get(qname))
        except dns.resolver.NoAnswer as exc:
            return Records(NODATA), self._negative_ttl(exc.response())
        except dns.exception.Timeout:
            return Records(TIMEOUT), 0.0
        except (dns.resolver.NoNameservers, dns.exception.DNSException):
            return Records(ERROR), 0.0
        values = tuple(_text(rdata) for rdata in answer)
        if rdtype == "A":
            values = tuple(sorted(values))
        ttl = answer.rrset.ttl if answer.rrset is not None else 0
        return Records(FOUND, values), min(float(ttl), self.max_ttl)

    def _negative_ttl(self, response: dns.message.Message | None) -> float:
        """RFC 2308: the SOA in the authority section bounds how long 'no such name' holds."""
        if response is not None:
            for rrset in response.authority:
                if rrset.rdtype == dns.rdatatype.SOA:
                    return float(min(rrset.ttl, rrset[0].minimum, self.max_ttl))
        return self.negative_ttl

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _text(rdata: Any) -> str:
    """One record as text: TXT strings joined (RFC 7208 3.3, RFC 6376 3.6.2.2), others as DNS writes them."""
    strings = getattr(rdata, "strings", None)
    if strings is not None:
        return b"".join(strings).decode("utf-8", "replace")
    if hasattr(rdata, "address"):
        return str(rdata.address)
    return str(rdata.to_text())


def _as_listing(records: Records) -> Answer:
    if records.status == FOUND:
        return Answer(LISTED, records.values)
    if records.status in (NXDOMAIN, NODATA):
        return Answer(CLEAN)
    return Answer(records.status)


# ---- one client per process and configuration ----

_SHARED: weakref.WeakKeyDictionary[object, dict[object, DnsClient]] = weakref.WeakKeyDictionary()
_SHARED_LOCK = threading.Lock()


def shared_client(settings: Any, metrics: Any) -> DnsClient:
    """The one client of `settings` (a config.DnsConfig) for `metrics` (the daemon's Metrics).

    Every check built for the same Metrics and settings gets the same client: one
    resolver, one cache, one breaker. A new Metrics (a test's, a rebuilt runtime)
    gets a client of its own. The client counts its query() lookups in
    govmilter_dns_lookups_total{purpose, zone="", result}; the blocklists count theirs per zone.
    """

    def counter(purpose: str, result: str) -> None:
        metrics.dns_lookups.labels(purpose=purpose, zone="", result=result).inc()

    with _SHARED_LOCK:
        clients = _SHARED.setdefault(metrics, {})
        client = clients.get(settings)
        if client is None:
            client = clients[settings] = DnsClient(
                settings.resolver,
                settings.port,
                workers=settings.workers,
                cache_entries=settings.cache_entries,
                negative_ttl=settings.negative_ttl,
                breaker_rounds=settings.breaker_rounds,
                breaker_cooldown=settings.breaker_cooldown,
                failure_log_interval=settings.failure_log_interval,
                counter=counter,
            )
        return client
