"""A small clamd client: INSTREAM over a unix socket or TCP, bounded by deadlines.

Written here instead of using the `clamd` package (1.0.2), which falls short on a gateway:
- its timeout is set only after connect(), so an unreachable TCP host blocks for the
  kernel's connect timeout (minutes) instead of `connect_timeout`;
- its timeout is per socket operation, so a clamd that trickles bytes is never bounded
  as a whole; here every operation gets what is left of one deadline;
- it writes with send(), not sendall(): a short write silently drops bytes of the stream;
- when clamd stops reading at StreamMaxLength it answers "INSTREAM size limit exceeded"
  and closes; the package keeps writing, fails with EPIPE and reports a connection error,
  so the size-limit answer is lost. Here clamd's early answer is noticed between frames
  (and read after a failed write), and is a result of its own, never "clean";
- it sends 1 KiB frames: 20,000 writes for a 20 MB message; here 64 KiB.

The pool below spreads scans over several clamd addresses, each behind a circuit breaker,
so one dead or hung clamd does not slow every message. clamd closes the connection after
each INSTREAM; a new unix or loopback connection costs tens of microseconds against
milliseconds of scanning, so connections are not kept (no IDSESSION).
"""

from __future__ import annotations

import enum
import itertools
import re
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from govmilter.config import ClamdAddress as ClamdAddress  # parsed where the config is validated

FRAME = 65536  # bytes per INSTREAM frame
REPLY_LIMIT = 4096  # a clamd reply is one short line
VERSION_REFRESH = 300.0  # seconds a VERSION answer is reused
PROBE_TIMEOUT = 0.5  # seconds a recovery PING of an open address may take

SIZE_LIMIT_REPLY = "INSTREAM size limit exceeded"
# Alerts of AlertExceedsMax that mean "too large", not "nested to evade" (MaxRecursion, MaxFiles)
SIZE_HEURISTICS = ("Heuristics.Limits.Exceeded.MaxFileSize", "Heuristics.Limits.Exceeded.MaxScanSize")
_FOUND = re.compile(r"^stream: (?P<name>.+) FOUND$")
_DETAIL = re.compile(r"\([^()]*\)$")  # ExtendedDetectionInfo appends "(md5:size)"


class Outcome(enum.Enum):
    CLEAN = "clean"
    FOUND = "found"
    SIZE_LIMIT = "size_limit"  # past StreamMaxLength, MaxFileSize or MaxScanSize: not scanned whole


@dataclass(frozen=True)
class ScanReply:
    outcome: Outcome
    signature: str = ""
    address: str = ""  # the clamd address that answered


class ClamdError(Exception):
    """clamd gave no usable answer: unreachable, too slow, or a reply we do not understand."""

    kind = "error"


class ClamdTimeout(ClamdError):
    kind = "timeout"


class ClamdUnreachable(ClamdError):
    """The connection itself failed: trying the next address costs nothing."""


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise ClamdTimeout("deadline passed")
    return left


class ClamdClient:
    """One clamd address. Thread-safe: every call opens its own connection."""

    def __init__(self, address: str, connect_timeout: float = 2.0, frame: int = FRAME):
        self.address = ClamdAddress.parse(address)
        self.connect_timeout = connect_timeout
        self.frame = frame

    def __repr__(self) -> str:
        return f"ClamdClient({self.address.text!r})"

    def _connect(self, deadline: float) -> socket.socket:
        sock = socket.socket(self.address.family, socket.SOCK_STREAM)
        try:
            sock.settimeout(min(self.connect_timeout, _remaining(deadline)))
            sock.connect(self.address.target)
        except TimeoutError as exc:
            sock.close()
            raise ClamdUnreachable(f"connect timed out after {self.connect_timeout}s") from exc
        except OSError as exc:
            sock.close()
            raise ClamdUnreachable(f"connect failed: {exc.strerror or exc}") from exc
        except BaseException:
            sock.close()
            raise
        if self.address.family != socket.AF_UNIX:
            # one reply after the last frame: no reason to wait for Nagle
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _send(self, sock: socket.socket, data: bytes, deadline: float) -> None:
        try:
            sock.settimeout(_remaining(deadline))
            sock.sendall(data)  # since 3.5 the timeout bounds the whole sendall
        except TimeoutError as exc:
            raise ClamdTimeout("clamd stopped reading") from exc

    def _read_reply(self, sock: socket.socket, deadline: float) -> str:
        """One NUL-terminated reply line (EOF also ends it)."""
        buffer = bytearray()
        while b"\0" not in buffer and len(buffer) < REPLY_LIMIT:
            try:
                sock.settimeout(_remaining(deadline))
                block = sock.recv(REPLY_LIMIT)
            except TimeoutError as exc:
                raise ClamdTimeout("no answer from clamd") from exc
            except OSError as exc:
                raise ClamdError(f"reading the answer failed: {exc.strerror or exc}") from exc
            if not block:
                break
            buffer += block
        reply = bytes(buffer).split(b"\0", 1)[0].decode("utf-8", "replace").strip()
        if not reply:
            raise ClamdError("clamd closed the connection without an answer")
        return reply

    def command(self, name: str, deadline: float) -> str:
        """A one-line command such as PING or VERSION."""
        sock = self._connect(deadline)
        try:
            self._send_frame(sock, b"z" + name.encode("ascii") + b"\0", deadline)
            return self._read_reply(sock, deadline)
        finally:
            sock.close()

    def version(self, deadline: float) -> str:
        """clamd's VERSION answer, "ClamAV 1.4.6/27530/Mon Jan ..." -> "1.4.6/27530"."""
        return short_version(self.version_reply(deadline))

    def version_reply(self, deadline: float) -> str:
        """clamd's whole VERSION answer: "ClamAV 1.4.6/27530/Mon Jan  6 09:36:02 2025"."""
        reply = self.command("VERSION", deadline)
        if not reply.startswith("ClamAV "):
            raise ClamdError(f"unexpected VERSION answer {reply[:80]!r}")
        return reply

    def instream(self, chunks: Iterable[bytes], deadline: float) -> ScanReply:
        """Stream the chunks to clamd and return its verdict.

        Only failures of the socket become ClamdError; an error raised by the
        chunk source (our spool) propagates as is: it is not clamd's fault.
        """
        sock = self._connect(deadline)
        try:
            complete = self._stream(sock, chunks, deadline)
            reply = self._read_reply(sock, deadline)
        finally:
            sock.close()
        result = parse_reply(reply, self.address.text)
        if result.outcome is Outcome.CLEAN and not complete:
            # only possible from a broken clamd, and never taken for clean
            raise ClamdError("clamd answered OK before the end of the stream")
        return result

    def _stream(self, sock: socket.socket, chunks: Iterable[bytes], deadline: float) -> bool:
        """Send the whole stream; False when clamd answered or closed before its end."""
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        if not self._send_frame(sock, b"zINSTREAM\0", deadline):
            return False
        for chunk in chunks:
            for start in range(0, len(chunk), self.frame):
                if poller.poll(0):  # an early answer: the size limit or an error
                    return False
                frame = chunk[start : start + self.frame]
                if not self._send_frame(sock, struct.pack("!L", len(frame)) + frame, deadline):
                    return False
        return self._send_frame(sock, struct.pack("!L", 0), deadline)

    def _send_frame(self, sock: socket.socket, data: bytes, deadline: float) -> bool:
        """False when clamd closed the connection: its answer may still be readable."""
        try:
            self._send(sock, data, deadline)
        except (BrokenPipeError, ConnectionResetError):
            return False
        except OSError as exc:
            raise ClamdError(f"sending failed: {exc.strerror or exc}") from exc
        return True


def short_version(reply: str) -> str:
    """ "ClamAV 1.4.6/27530/Mon Jan ..." -> "1.4.6/27530": the engine and the signature version."""
    return "/".join(reply[len("ClamAV ") :].split("/")[:2])


def signatures_time(reply: str) -> float | None:
    """The build time of the signature database (daily) a VERSION answer names, as Unix time.

    clamd writes it with ctime() in its own local time ("Mon Jan  6 09:36:02 2025"); None
    when the answer has no date: clamd loaded no official database (only local signatures).
    """
    parts = reply.split("/", 2)
    if len(parts) < 3:
        return None
    try:
        return time.mktime(time.strptime(" ".join(parts[2].split()), "%a %b %d %H:%M:%S %Y"))
    except (ValueError, OverflowError):
        return None


def parse_reply(reply: str, address: str = "") -> ScanReply:
    if reply == "stream: OK":
        return ScanReply(Outcome.CLEAN, address=address)
    found = _FOUND.match(reply)
    if found:
        name = _DETAIL.sub("", found.group("name")).strip() or "unknown"
        if name.startswith(SIZE_HEURISTICS):
            # AlertExceedsMax: a file or archive too large to scan whole is "not scanned"
            return ScanReply(Outcome.SIZE_LIMIT, name, address)
        return ScanReply(Outcome.FOUND, name, address)
    if reply.startswith(SIZE_LIMIT_REPLY):
        return ScanReply(Outcome.SIZE_LIMIT, address=address)
    raise ClamdError(f"clamd answered {reply[:120]!r}")


class Breaker:
    """A circuit breaker for one address.

    Closed: every scan may use the address. After `failures` consecutive failures it
    opens: the address is skipped for `cooldown` seconds. Then one scan at a time is
    let through as a trial; its success closes the breaker, its failure reopens it.
    Meanwhile a cheap PING may be tried at most once per `probe_interval` (on every
    message when all addresses are open), so that a clamd that is back is used by the
    next message rather than after the cooldown.
    """

    probe_interval = 0.25

    def __init__(self, failures: int, cooldown: float, clock: Callable[[], float] = time.monotonic):
        self.failures = max(1, failures)
        self.cooldown = cooldown
        self.clock = clock
        self._lock = threading.Lock()
        self._consecutive = 0
        self._opened_at: float | None = None
        self._trial = False
        self._probed_at = float("-inf")

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None

    def allow(self) -> bool:
        with self._lock:
            if self._opened_at is None:
                return True
            if self._trial or self.clock() - self._opened_at < self.cooldown:
                return False
            self._trial = True
            return True

    def probe_due(self) -> bool:
        """Whether this caller may PING an open address now (one caller per interval)."""
        with self._lock:
            now = self.clock()
            if self._opened_at is None or self._trial or now - self._probed_at < self.probe_interval:
                return False
            self._probed_at = now
            return True

    def record(self, ok: bool | None) -> None:
        """ok=None: the attempt ended for a reason that says nothing about clamd."""
        with self._lock:
            self._trial = False
            if ok is None:
                return
            if ok:
                self._consecutive = 0
                self._opened_at = None
                return
            self._consecutive += 1
            if self._opened_at is not None or self._consecutive >= self.failures:
                self._opened_at = self.clock()


class NoClamd(ClamdError):
    """Every address failed or is in cooldown."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


class ClamdPool:
    """Several clamd addresses, tried in order or spread, each behind a breaker.

    One deadline covers a whole scan across addresses, so a message never waits
    longer than `scan_timeout` however many addresses are configured.
    """

    def __init__(
        self,
        clients: Sequence[ClamdClient],
        *,
        strategy: str = "ordered",
        breaker_failures: int = 3,
        breaker_cooldown: float = 10.0,
        observe: Callable[[str, bool], None] | None = None,
        version_refresh: float = VERSION_REFRESH,
        observe_version: Callable[[str, str], None] | None = None,
    ):
        if not clients:
            raise ValueError("no clamd address configured")
        if strategy not in ("ordered", "spread"):
            raise ValueError(f"unknown strategy {strategy!r}")
        self.clients = tuple(clients)
        self.strategy = strategy
        self.breakers = {c.address.text: Breaker(breaker_failures, breaker_cooldown) for c in self.clients}
        self.observe = observe or (lambda address, up: None)
        self.observe_version = observe_version or (lambda address, reply: None)  # each VERSION fetched
        self.version_refresh = version_refresh
        self._turn = itertools.count()
        self._versions: dict[str, tuple[str, float]] = {}
        self._version_lock = threading.Lock()

    def _order(self) -> tuple[ClamdClient, ...]:
        if self.strategy == "ordered" or len(self.clients) == 1:
            return self.clients
        start = next(self._turn) % len(self.clients)
        return self.clients[start:] + self.clients[:start]

    def scan(self, chunks: Callable[[], Iterable[bytes]], timeout: float) -> ScanReply:
        """Scan with the first address that answers; NoClamd when none does."""
        deadline = time.monotonic() + timeout
        problems: list[str] = []
        kind = "circuit_open"  # stays so when every address was skipped
        all_open = all(breaker.is_open for breaker in self.breakers.values())
        for client in self._order():
            address = client.address.text
            breaker = self.breakers[address]
            if time.monotonic() >= deadline:
                kind = "timeout"
                break
            if not breaker.allow():
                # with every address open there is nothing to protect: always look for a clamd that is back
                probe = all_open or breaker.probe_due()
                if not (probe and self._answers_ping(client, deadline)):
                    problems.append(f"{address}: circuit open")
                    continue
                breaker.record(True)  # clamd is back: close the breaker and use it now
            ok: bool | None = None
            try:
                reply = client.instream(chunks(), deadline)
                ok = True
                return reply
            except ClamdError as exc:
                ok = False
                kind = exc.kind
                problems.append(f"{address}: {exc}")
            finally:
                breaker.record(ok)
                if ok is not None:
                    self.observe(address, ok)
        raise NoClamd("; ".join(problems) or "no clamd address tried", kind)

    @staticmethod
    def _answers_ping(client: ClamdClient, deadline: float) -> bool:
        try:
            return client.command("PING", min(deadline, time.monotonic() + PROBE_TIMEOUT)) == "PONG"
        except ClamdError:
            return False

    def version(self, address: str, timeout: float) -> str:
        """The cached VERSION of an address, refreshed every `version_refresh` seconds.

        One caller refreshes while the others keep the old value; "" when never known.
        """
        now = time.monotonic()
        with self._version_lock:
            known, fetched = self._versions.get(address, ("", float("-inf")))
            if now - fetched < self.version_refresh:
                return known
            self._versions[address] = (known, now)  # others keep `known` meanwhile
        client = next(c for c in self.clients if c.address.text == address)
        try:
            reply = client.version_reply(time.monotonic() + timeout)
            value = short_version(reply)
            self.observe_version(address, reply)
        except ClamdError:
            value = known
            with self._version_lock:
                # retry soon rather than in `version_refresh` seconds
                self._versions[address] = (known, now - self.version_refresh + min(timeout, 5.0))
            return value
        with self._version_lock:
            self._versions[address] = (value, now)
        return value
