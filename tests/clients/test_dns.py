"""The blocklist resolver against a real dnsmasq, a server that never answers and a closed port."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.rrset
import pytest

from govmilter.clients.dns import CLEAN, ERROR, LISTED, SKIPPED, TIMEOUT, Answer, Budget, DnsClient, TTLCache
from support.dns_fixture import LabDns, SilentDns, free_dual_port

LISTED_NAME = "2.0.0.127.zen.spamhaus.org"


@pytest.fixture
def client_factory() -> Iterator[type[DnsClient]]:
    made: list[DnsClient] = []

    class Made(DnsClient):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            made.append(self)

    yield Made
    for client in made:
        client.close()


def test_listed_name_answers_its_address(lab_dns: LabDns, client_factory: type[DnsClient]) -> None:
    client = client_factory("127.0.0.1", lab_dns.port)
    answers = client.lookup([LISTED_NAME, "2.0.0.127.ZEN.spamhaus.org."], budget=5)
    assert answers == {LISTED_NAME: Answer(LISTED, ("127.0.0.2",))}  # one question for both spellings


def test_unlisted_name_is_clean(lab_dns: LabDns, client_factory: type[DnsClient]) -> None:
    client = client_factory("127.0.0.1", lab_dns.port)
    assert client.lookup(["9.9.0.127.zen.spamhaus.org"], budget=5)["9.9.0.127.zen.spamhaus.org"].status == CLEAN


def test_many_names_in_one_call(lab_dns: LabDns, client_factory: type[DnsClient]) -> None:
    client = client_factory("127.0.0.1", lab_dns.port, workers=4)
    names = [f"{i}.1.0.127.zen.spamhaus.org" for i in range(30)] + [LISTED_NAME, "dbltest.com.dbl.spamhaus.org"]
    answers = client.lookup(names, budget=10)
    assert len(answers) == len(names)
    assert answers[LISTED_NAME].status == LISTED
    assert answers["dbltest.com.dbl.spamhaus.org"].addresses == ("127.0.1.2",)
    assert {answers[n].status for n in names[:30]} == {CLEAN}


def test_answers_are_cached_for_their_ttl_and_survive_the_server(tmp_path: Path) -> None:
    server = LabDns(tmp_path / "dns", ttl=300).start()
    client = DnsClient("127.0.0.1", server.port, negative_ttl=300)
    try:
        first = client.lookup([LISTED_NAME, "8.8.0.127.zen.spamhaus.org"], budget=5)
        assert not first[LISTED_NAME].cached
        server.stop()  # from now on only the cache can answer
        again = client.lookup([LISTED_NAME, "8.8.0.127.zen.spamhaus.org", "7.7.0.127.zen.spamhaus.org"], budget=2)
        assert again[LISTED_NAME] == Answer(LISTED, ("127.0.0.2",), cached=True)
        assert again["8.8.0.127.zen.spamhaus.org"] == Answer(CLEAN, cached=True)  # negative answers too
        # a name never asked before finds the port closed: an error at once, not a timeout
        assert again["7.7.0.127.zen.spamhaus.org"].status == ERROR
    finally:
        server.stop()
        client.close()


def test_zero_ttl_and_failures_are_not_cached(tmp_path: Path) -> None:
    server = LabDns(tmp_path / "dns", ttl=0).start()
    client = DnsClient("127.0.0.1", server.port, negative_ttl=0)
    try:
        client.lookup([LISTED_NAME, "8.8.0.127.zen.spamhaus.org"], budget=5)
        assert len(client.cache) == 0
        again = client.lookup([LISTED_NAME], budget=5)
        assert again[LISTED_NAME] == Answer(LISTED, ("127.0.0.2",))
    finally:
        server.stop()
        client.close()


def test_cache_entries_expire_and_stay_bounded() -> None:
    cache = TTLCache(max_entries=3)
    cache.put("short", Answer(CLEAN), ttl=0.05)
    time.sleep(0.1)
    assert cache.get("short") is None
    for i in range(5):
        cache.put(f"n{i}", Answer(CLEAN), ttl=60)
    assert len(cache) == 3
    assert cache.get("n0") is None and cache.get("n4") == Answer(CLEAN)


def test_closed_port_is_an_error_not_a_wait(client_factory: type[DnsClient]) -> None:
    client = client_factory("127.0.0.1", free_dual_port())
    answers = client.lookup([LISTED_NAME], budget=30)
    assert answers[LISTED_NAME].status == ERROR


def test_silent_server_costs_at_most_the_budget(silent_dns: SilentDns, client_factory: type[DnsClient]) -> None:
    client = client_factory("127.0.0.1", silent_dns.port)
    budget = 0.6
    started = time.monotonic()
    answers = client.lookup([LISTED_NAME, "dbltest.com.dbl.spamhaus.org", "x.multi.uribl.com"], budget=budget)
    elapsed = time.monotonic() - started
    assert {a.status for a in answers.values()} == {TIMEOUT}
    assert silent_dns.received >= 3  # the queries were sent, and dropped
    assert budget <= elapsed < budget + 1.5  # generous margin for a busy machine


def test_a_silent_query_frees_its_worker(silent_dns: SilentDns, client_factory: type[DnsClient]) -> None:
    client = client_factory("127.0.0.1", silent_dns.port, workers=1, breaker_rounds=0)
    assert client.lookup(["a.zen.spamhaus.org"], budget=0.3)["a.zen.spamhaus.org"].status == TIMEOUT
    time.sleep(0.5)  # past the first query's own deadline
    received = silent_dns.received
    assert client.lookup(["b.zen.spamhaus.org"], budget=1)["b.zen.spamhaus.org"].status == TIMEOUT
    assert silent_dns.received > received  # the only worker was free to ask again


def test_silent_server_opens_the_breaker(silent_dns: SilentDns, client_factory: type[DnsClient]) -> None:
    client = client_factory("127.0.0.1", silent_dns.port, breaker_rounds=2, breaker_cooldown=60)
    for _ in range(2):
        assert client.lookup([LISTED_NAME], budget=0.2)[LISTED_NAME].status == TIMEOUT
    assert client.resolver_down()
    time.sleep(0.3)  # let the last retries of the silent rounds arrive
    received = silent_dns.received
    assert client.lookup([LISTED_NAME], budget=5)[LISTED_NAME].status == SKIPPED
    time.sleep(0.3)
    assert silent_dns.received == received  # nothing was asked while the breaker is open


def test_an_answer_resets_the_silent_count(lab_dns: LabDns, client_factory: type[DnsClient]) -> None:
    client = client_factory("127.0.0.1", lab_dns.port, breaker_rounds=1, breaker_cooldown=60)
    client.lookup([LISTED_NAME], budget=5)
    assert not client.resolver_down()


def test_spent_budget_asks_nothing(lab_dns: LabDns, client_factory: type[DnsClient]) -> None:
    client = client_factory("127.0.0.1", lab_dns.port)
    assert client.lookup([LISTED_NAME], budget=0)[LISTED_NAME].status == SKIPPED
    assert len(client.cache) == 0


def test_a_name_dns_cannot_carry_is_an_error(lab_dns: LabDns, client_factory: type[DnsClient]) -> None:
    client = client_factory("127.0.0.1", lab_dns.port)
    name = "a" * 70 + ".zen.spamhaus.org"
    assert client.lookup([name], budget=5)[name].status == ERROR


def test_a_huge_answer_is_used_but_never_cached(tmp_path: Path) -> None:
    """A sender's domain answering with huge TXT records cannot fill the shared cache with them."""
    from govmilter.clients.dns import FOUND, MAX_CACHED_CHARS, Budget
    from stack import Dns

    huge = "v=spf1 " + "a" * (MAX_CACHED_CHARS + 100)
    server = Dns(tmp_path / "dns", free_dual_port(), ttl=300, txt=[("huge.test", huge), ("small.test", "v=spf1 -all")])
    server.start()
    client = DnsClient("127.0.0.1", server.port, negative_ttl=300)
    try:
        big = client.query("huge.test", "TXT", Budget(5), "spf")
        assert big.status == FOUND and big.values == (huge,)
        small = client.query("small.test", "TXT", Budget(5), "spf")
        assert small.values == ("v=spf1 -all",)
        assert len(client.cache) == 1
        assert not client.query("huge.test", "TXT", Budget(5), "spf").cached  # asked again
        assert client.query("small.test", "TXT", Budget(5), "spf").cached
    finally:
        server.stop()
        client.close()


def test_datagrams_that_do_not_answer_the_query_are_ignored_until_the_answer(
    client_factory: type[DnsClient],
) -> None:
    """Garbage, a reply to another query and a reply to another name come first: the answer still counts."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.settimeout(5)

    def serve() -> None:
        wire, peer = server.recvfrom(65535)
        query = dns.message.from_wire(wire)
        server.sendto(b"\x00\x01garbage", peer)
        other = dns.message.make_response(query)
        other.id = (query.id + 1) % 65536  # another query's answer
        server.sendto(other.to_wire(), peer)
        elsewhere = dns.message.make_response(dns.message.make_query("elsewhere.example", "A"))
        elsewhere.id = query.id  # the right id, another question
        server.sendto(elsewhere.to_wire(), peer)
        answer = dns.message.make_response(query)
        answer.answer.append(dns.rrset.from_text(query.question[0].name, 60, "IN", "A", "127.0.0.2"))
        server.sendto(answer.to_wire(), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        client = client_factory("127.0.0.1", server.getsockname()[1])
        answers = client.lookup([LISTED_NAME], budget=5)
        assert answers[LISTED_NAME].status == LISTED
        assert answers[LISTED_NAME].addresses == ("127.0.0.2",)
    finally:
        thread.join(5)
        server.close()


def test_silent_names_of_a_sender_never_pause_the_blocklists(
    silent_dns: SilentDns, client_factory: type[DnsClient]
) -> None:
    """SPF, DKIM and DMARC names are the sender's: their silence must not open the breaker for every lookup."""
    client = client_factory("127.0.0.1", silent_dns.port, breaker_rounds=2, breaker_cooldown=60)
    for n in range(4):
        assert client.query(f"silent{n}.example", "TXT", Budget(0.2), "spf").status == TIMEOUT
    assert not client.resolver_down()
    received = silent_dns.received
    assert client.lookup([LISTED_NAME], budget=0.2)[LISTED_NAME].status == TIMEOUT  # asked, not skipped
    time.sleep(0.2)
    assert silent_dns.received > received
