"""The clamd client against a real clamd, and against stand-ins that misbehave."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from govmilter.clients.clamd import (
    Breaker,
    ClamdAddress,
    ClamdClient,
    ClamdError,
    ClamdPool,
    ClamdTimeout,
    ClamdUnreachable,
    NoClamd,
    Outcome,
    parse_reply,
)
from support.clamd_fixture import ClamdFactory
from support.fake_clamd import FakeClamd
from support.lab_clamd import EICAR, TESTFILES, LabClamd, free_port


def deadline(seconds: float = 30.0) -> float:
    return time.monotonic() + seconds


# --- addresses and replies ---------------------------------------------------------


def test_address_forms() -> None:
    unix = ClamdAddress.parse("unix:/run/clamav/clamd.ctl")
    assert unix.family == socket.AF_UNIX and unix.target == "/run/clamav/clamd.ctl"
    tcp = ClamdAddress.parse("tcp:127.0.0.1:3310")
    assert tcp.family == socket.AF_INET and tcp.target == ("127.0.0.1", 3310)
    six = ClamdAddress.parse("tcp:[::1]:3310")
    assert six.family == socket.AF_INET6 and six.target == ("::1", 3310)
    assert str(tcp) == "tcp:127.0.0.1:3310"


@pytest.mark.parametrize("text", ["unix:", "tcp:127.0.0.1", "tcp:127.0.0.1:0", "tcp::3310", "tcp:h:99999", "/x"])
def test_bad_addresses_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="expected unix:PATH or tcp:HOST:PORT"):
        ClamdAddress.parse(text)


def test_replies() -> None:
    assert parse_reply("stream: OK").outcome is Outcome.CLEAN
    found = parse_reply("stream: Win.Test.EICAR_HDB-1 FOUND")
    assert (found.outcome, found.signature) == (Outcome.FOUND, "Win.Test.EICAR_HDB-1")
    # ExtendedDetectionInfo appends the hash and size
    detailed = parse_reply("stream: Eicar-Test-Signature(44d88612fea8a8f36de82e1278abb02f:68) FOUND")
    assert detailed.signature == "Eicar-Test-Signature"
    assert parse_reply("INSTREAM size limit exceeded. ERROR").outcome is Outcome.SIZE_LIMIT
    too_big = parse_reply("stream: Heuristics.Limits.Exceeded.MaxFileSize FOUND")
    assert too_big.outcome is Outcome.SIZE_LIMIT  # not scanned whole: a size policy, not a virus
    scan_size = parse_reply("stream: Heuristics.Limits.Exceeded.MaxScanSize FOUND")
    assert (scan_size.outcome, scan_size.signature) == (Outcome.SIZE_LIMIT, "Heuristics.Limits.Exceeded.MaxScanSize")
    assert parse_reply("stream: Heuristics.Limits.Exceeded.MaxRecursion FOUND").outcome is Outcome.FOUND
    for nonsense in ("stream: Can't allocate memory ERROR", "UNKNOWN COMMAND", "stream: OKAY"):
        with pytest.raises(ClamdError):
            parse_reply(nonsense)


# --- a real clamd --------------------------------------------------------------------


@pytest.fixture(params=["unix", "tcp"])
def client(request: pytest.FixtureRequest, clamd: LabClamd) -> ClamdClient:
    return ClamdClient(clamd.address if request.param == "unix" else clamd.tcp_address)


def test_clean_stream(client: ClamdClient) -> None:
    reply = client.instream([b"Subject: hello\r\n\r\nXin chao.\r\n"], deadline())
    assert reply.outcome is Outcome.CLEAN
    assert reply.address == client.address.text


def test_eicar_found(client: ClamdClient) -> None:
    reply = client.instream([EICAR], deadline())
    assert (reply.outcome, reply.signature) == (Outcome.FOUND, "Eicar-Test-Signature.UNOFFICIAL")


def test_chunking_does_not_matter(client: ClamdClient) -> None:
    # one byte per chunk, and frames smaller than the sample: clamd reassembles the stream
    assert client.instream((bytes([b]) for b in EICAR), deadline()).outcome is Outcome.FOUND
    small = ClamdClient(client.address.text, frame=7)
    assert small.instream([EICAR], deadline()).signature == "Eicar-Test-Signature.UNOFFICIAL"
    data = (TESTFILES / "clam.exe").read_bytes()
    assert small.instream([data[:100], data[100:]], deadline()).signature == "ClamAV-Test-File.UNOFFICIAL"


def test_large_clean_stream(client: ClamdClient) -> None:
    block = os.urandom(1 << 20)
    assert client.instream((block for _ in range(8)), deadline(120)).outcome is Outcome.CLEAN


def test_version_and_ping(client: ClamdClient) -> None:
    version = client.version(deadline())
    assert version and version[0].isdigit()
    assert client.command("PING", deadline()) == "PONG"


def test_an_error_of_the_chunk_source_is_not_blamed_on_clamd(client: ClamdClient) -> None:
    def broken_spool() -> Iterator[bytes]:
        yield b"Subject: x\r\n\r\n"
        raise OSError(5, "Input/output error")

    with pytest.raises(OSError, match="Input/output") as caught:
        client.instream(broken_spool(), deadline())
    assert not isinstance(caught.value, ClamdError)


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_size_limit_is_its_own_answer_and_stops_the_upload(clamd_factory: ClamdFactory, transport: str) -> None:
    server = clamd_factory(tcp_port=free_port(), stream_max_length="1M")
    client = ClamdClient(server.address if transport == "unix" else server.tcp_address)
    sent = 0
    block = os.urandom(65536)

    def stream() -> Iterator[bytes]:
        nonlocal sent
        for _ in range(320):  # 20 MiB
            sent += len(block)
            yield block

    reply = client.instream(stream(), deadline(120))
    assert reply.outcome is Outcome.SIZE_LIMIT
    assert sent < 10 * (1 << 20)  # clamd's early answer was noticed: the rest was not sent


# --- failures -------------------------------------------------------------------------


def test_nothing_listening_is_unreachable(tmp_path: os.PathLike[str]) -> None:
    with pytest.raises(ClamdUnreachable):
        ClamdClient(f"unix:{tmp_path}/none.sock").instream([b"x"], deadline())
    with pytest.raises(ClamdUnreachable):
        ClamdClient(f"tcp:127.0.0.1:{free_port()}").instream([b"x"], deadline())


def test_silent_clamd_times_out_within_the_deadline() -> None:
    with FakeClamd("silent") as fake:
        started = time.monotonic()
        with pytest.raises(ClamdTimeout):
            ClamdClient(fake.address).instream([b"Subject: x\r\n\r\nhello\r\n"], deadline(1.0))
        assert time.monotonic() - started < 10.0  # generous: the budget is 1 s


def test_trickling_clamd_is_bounded_by_the_whole_deadline() -> None:
    # every read gets a byte in time: only a deadline for the whole scan ends it
    with FakeClamd("trickle") as fake:
        started = time.monotonic()
        with pytest.raises(ClamdTimeout):
            ClamdClient(fake.address).instream([b"x"], deadline(1.5))
        assert time.monotonic() - started < 10.0


@pytest.mark.parametrize("behaviour", ["close", "garbage"])
def test_no_usable_answer_is_an_error(behaviour: str) -> None:
    with FakeClamd(behaviour) as fake, pytest.raises(ClamdError) as caught:
        ClamdClient(fake.address).instream([b"Subject: x\r\n\r\nhello\r\n"], deadline(10))
    assert not isinstance(caught.value, ClamdTimeout)


def test_ok_before_the_end_of_the_stream_is_never_clean() -> None:
    # a clamd that answers OK before it has read the whole message has not scanned it
    with FakeClamd("early-ok") as fake:

        def chunks() -> Iterator[bytes]:
            yield b"Subject: x\r\n\r\n" + b"a" * 1000
            assert fake.answered.wait(10)
            time.sleep(0.2)  # the answer is in our receive buffer before the next frame
            yield b"b" * 100_000

        with pytest.raises(ClamdError, match="before the end of the stream"):
            ClamdClient(fake.address).instream(chunks(), deadline(10))


# --- the breaker ------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_consecutive_failures_and_tries_again_after_cooldown() -> None:
    clock = Clock()
    breaker = Breaker(failures=3, cooldown=10.0, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.record(False)
    assert breaker.allow()
    breaker.record(True)  # a success resets the count
    for _ in range(3):
        assert breaker.allow()
        breaker.record(False)
    assert breaker.is_open and not breaker.allow()
    clock.now += 9.9
    assert not breaker.allow()
    clock.now += 0.2
    assert breaker.allow()  # one trial
    assert not breaker.allow()  # and only one at a time
    breaker.record(False)  # the trial failed: open for another cooldown
    assert not breaker.allow()
    clock.now += 10.1
    assert breaker.allow()
    breaker.record(True)
    assert not breaker.is_open and breaker.allow() and breaker.allow()


def test_breaker_ignores_attempts_that_say_nothing_about_clamd() -> None:
    clock = Clock()
    breaker = Breaker(failures=1, cooldown=5.0, clock=clock)
    breaker.record(False)
    clock.now += 6
    assert breaker.allow()
    breaker.record(None)  # e.g. our spool failed mid-trial: the trial slot is released
    assert breaker.is_open and breaker.allow()


# --- the pool ---------------------------------------------------------------------------


def test_ordered_pool_skips_a_dead_address(clamd: LabClamd, tmp_path: os.PathLike[str]) -> None:
    states: list[tuple[str, bool]] = []
    dead = f"unix:{tmp_path}/dead.sock"
    pool = ClamdPool(
        [ClamdClient(dead), ClamdClient(clamd.address)],
        breaker_failures=1,
        breaker_cooldown=600,
        observe=lambda address, up: states.append((address, up)),
    )
    assert pool.scan(lambda: [EICAR], 30).address == clamd.address
    assert states == [(dead, False), (clamd.address, True)]
    assert pool.breakers[dead].is_open
    assert pool.scan(lambda: [b"clean"], 30).outcome is Outcome.CLEAN
    assert states[-1] == (clamd.address, True) and len(states) == 3  # the dead one was skipped


def test_spread_pool_alternates(clamd: LabClamd) -> None:
    pool = ClamdPool([ClamdClient(clamd.address), ClamdClient(clamd.tcp_address)], strategy="spread")
    answered = [pool.scan(lambda: [b"clean"], 30).address for _ in range(4)]
    assert sorted(answered) == sorted([clamd.address, clamd.tcp_address] * 2)
    assert answered[0] != answered[1]


def test_all_open_is_reported_as_such(tmp_path: os.PathLike[str]) -> None:
    pool = ClamdPool([ClamdClient(f"unix:{tmp_path}/dead.sock")], breaker_failures=1, breaker_cooldown=600)
    with pytest.raises(NoClamd) as first:
        pool.scan(lambda: [b"x"], 5)
    assert first.value.kind == "error"
    with pytest.raises(NoClamd) as second:
        pool.scan(lambda: [b"x"], 5)
    assert second.value.kind == "circuit_open"


def test_one_deadline_covers_every_address(clamd: LabClamd) -> None:
    with FakeClamd("silent") as fake:
        pool = ClamdPool([ClamdClient(fake.address), ClamdClient(clamd.address)], breaker_failures=1)
        started = time.monotonic()
        with pytest.raises(NoClamd) as caught:
            pool.scan(lambda: [b"x"], 1.0)
        assert caught.value.kind == "timeout"
        assert time.monotonic() - started < 10.0
        # the hung address is now skipped: the next scan goes straight to the real clamd
        assert pool.scan(lambda: [b"x"], 30).address == clamd.address


def test_hung_clamd_does_not_hold_up_other_scans(clamd: LabClamd) -> None:
    with FakeClamd("silent") as fake:
        hung = ClamdPool([ClamdClient(fake.address)])
        healthy = ClamdPool([ClamdClient(clamd.address)])
        outcome: list[BaseException] = []

        def scan_hung() -> None:
            try:
                hung.scan(lambda: [b"x"], 5.0)
            except NoClamd as exc:
                outcome.append(exc)

        thread = threading.Thread(target=scan_hung)
        thread.start()
        fake.wait_accepted(1)
        for _ in range(20):
            assert healthy.scan(lambda: [EICAR], 30).outcome is Outcome.FOUND
        assert thread.is_alive()  # still waiting on the silent clamd meanwhile
        thread.join(60)
        assert isinstance(outcome[0], NoClamd) and outcome[0].kind == "timeout"


def test_version_is_cached_and_kept_when_clamd_is_away(clamd_factory: ClamdFactory) -> None:
    server = clamd_factory()
    pool = ClamdPool([ClamdClient(server.address)], version_refresh=3600)
    first = pool.version(server.address, 5)
    assert first and first[0].isdigit()
    server.stop()
    assert pool.version(server.address, 5) == first  # cached: no connection made
    stale = ClamdPool([ClamdClient(server.address)], version_refresh=0)
    assert stale.version(server.address, 5) == ""  # never known, clamd away


def test_version_keeps_engine_and_database() -> None:
    with FakeClamd("version") as fake:
        assert ClamdClient(fake.address).version(deadline()) == "9.9.9/12345"


def test_a_clamd_that_is_back_is_used_by_the_next_scan_despite_the_open_breaker(tmp_path: os.PathLike[str]) -> None:
    with LabClamd(tmp_path) as lab:
        pool = ClamdPool([ClamdClient(lab.address)], breaker_failures=1, breaker_cooldown=600)
        lab.stop()
        for _ in range(3):
            with pytest.raises(NoClamd):
                pool.scan(lambda: [b"x"], 5)
        assert pool.breakers[lab.address].is_open
        lab.start()
        # no cooldown waited: every address is open, so each scan first PINGs for a clamd that is back
        assert pool.scan(lambda: [EICAR], 30).outcome is Outcome.FOUND
        assert not pool.breakers[lab.address].is_open
