"""DNS blocklist lookups: parallel, inside one time budget, cached for the record's TTL.

A blocklist query is an A lookup of `<reversed ip or domain>.<zone>`: an
answer means listed (the address says why), NXDOMAIN means not listed.
Lookups of one message run in parallel on a small shared thread pool and the
caller waits at most its budget; whatever has not answered by then is a
timeout, which the dnsbl check skips and counts. Timeouts and errors are not
cached, so a resolver that recovers is used again at once; a resolver that
stays silent round after round is left alone for a short cool-down, so that
it does not cost every message its whole budget.
"""

from __future__ import annotations

import concurrent.futures
import logging
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.query
import dns.rdatatype
import dns.resolver

from govmilter.expiring import ExpiringMap

log = logging.getLogger("govmilter.dns")

LISTED = "listed"
CLEAN = "clean"
TIMEOUT = "timeout"
ERROR = "error"
SKIPPED = "skipped"  # not asked: the budget was spent or the resolver is known to be silent


@dataclass(frozen=True)
class Answer:
    """What a blocklist said about one query name."""

    status: str  # listed | clean | timeout | error | skipped
    addresses: tuple[str, ...] = ()  # the A records of a listing, "127.0.0.2"
    cached: bool = False


class BlocklistResolver(Protocol):
    def lookup(self, names: Sequence[str], budget: float) -> dict[str, Answer]:
        """Answer every name; never wait longer than `budget` seconds in all."""
        ...


class TTLCache(ExpiringMap[Answer]):
    """Blocklist answers, each kept for its record's TTL."""


class ConnectedDo53(dns.nameserver.Do53Nameserver):
    """UDP through a connected socket, so a closed port fails at once (ICMP), not after the timeout."""

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
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect((self.address, self.port))
            sock.setblocking(False)  # dnspython waits with select() up to its expiration
            return dns.query.udp(
                request,
                self.address,
                timeout=timeout,
                port=self.port,
                raise_on_truncation=True,
                one_rr_per_rrset=one_rr_per_rrset,
                ignore_trailing=ignore_trailing,
                ignore_errors=True,
                ignore_unexpected=True,
                sock=sock,
            )


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
        self._silent_rounds = 0
        self._open_until = 0.0
        self._lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dnsbl")

    def lookup(self, names: Sequence[str], budget: float) -> dict[str, Answer]:
        deadline = time.monotonic() + max(budget, 0.0)
        skip = budget <= 0 or self.resolver_down()
        results: dict[str, Answer] = {}
        pending: dict[concurrent.futures.Future[tuple[Answer, float]], str] = {}
        for name in dict.fromkeys(n.lower().rstrip(".") for n in names):
            cached = self.cache.get(name)
            if cached is not None:
                results[name] = Answer(cached.status, cached.addresses, cached=True)
            elif skip:
                results[name] = Answer(SKIPPED)  # budget spent or resolver silent: do not start
            else:
                pending[self._pool.submit(self._query, name, deadline)] = name
        if not pending:
            return results
        done, not_done = concurrent.futures.wait(pending, timeout=max(deadline - time.monotonic(), 0.0))
        for future in done:
            name = pending[future]
            try:
                answer, ttl = future.result()
            except Exception:  # a resolver bug must not become our failure: skip that zone
                answer, ttl = Answer(ERROR), 0.0
            results[name] = answer
            self.cache.put(name, answer, ttl)
        for future in not_done:
            future.cancel()  # queued work is dropped; a running query ends at its own deadline
            results[pending[future]] = Answer(TIMEOUT)
        self._note_round([results[name] for name in pending.values()])
        return results

    def resolver_down(self) -> bool:
        return time.monotonic() < self._open_until

    def _note_round(self, answers: Sequence[Answer]) -> None:
        silent = all(a.status == TIMEOUT for a in answers)
        with self._lock:
            if not silent:
                self._silent_rounds = 0
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

    def _query(self, name: str, deadline: float) -> tuple[Answer, float]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return Answer(TIMEOUT), 0.0
        try:
            qname = dns.name.from_text(name)
        except dns.exception.DNSException:  # a label too long, an empty label
            return Answer(ERROR), 0.0
        # a Resolver of its own per query: its per-try timeout is ours to set without a lock
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [ConnectedDo53(self.nameserver, self.port)]
        # half the remaining time per try leaves room for one retry of a lost UDP packet
        resolver.timeout = max(remaining / 2, 0.05)
        try:
            answer = resolver.resolve(qname, "A", lifetime=remaining, search=False)
        except dns.resolver.NXDOMAIN as exc:
            return Answer(CLEAN), self._negative_ttl(exc.responses().get(qname))
        except dns.resolver.NoAnswer as exc:
            return Answer(CLEAN), self._negative_ttl(exc.response())
        except dns.exception.Timeout:
            return Answer(TIMEOUT), 0.0
        except (dns.resolver.NoNameservers, dns.exception.DNSException):
            return Answer(ERROR), 0.0
        addresses = tuple(sorted(rdata.address for rdata in answer))
        ttl = answer.rrset.ttl if answer.rrset is not None else 0
        return Answer(LISTED, addresses), min(float(ttl), self.max_ttl)

    def _negative_ttl(self, response: dns.message.Message | None) -> float:
        """RFC 2308: the SOA in the authority section bounds how long 'not listed' holds."""
        if response is not None:
            for rrset in response.authority:
                if rrset.rdtype == dns.rdatatype.SOA:
                    return float(min(rrset.ttl, rrset[0].minimum, self.max_ttl))
        return self.negative_ttl

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
