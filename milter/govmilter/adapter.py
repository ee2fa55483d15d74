"""The only module that speaks the milter protocol (pymilter).

Callbacks become an Envelope, headers and a spooled body; the pipeline runs at
each stage; a Verdict becomes setreply + a return code. Any exception answers
451 4.3.0: the sender retries and nothing is lost.
"""

from __future__ import annotations

import errno
import functools
import gc
import logging
import os
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import Milter
import milter as _pymilter_c

from govmilter.model import Action, Envelope, Stage, Transaction, Verdict, tempfail
from govmilter.runtime import ANSWER_WINDOW, Runtime, bind, header_value, shutdown_verdict

log = logging.getLogger("govmilter.adapter")

# pymilter's C module; typed Any because mypy resolves the name "milter" to our source root
libmilter: Any = _pymilter_c

GC_YOUNG_THRESHOLD = 20000  # allocations between young-generation collections (Python's default: 700)

# The macros the adapter reads at MAIL FROM, asked of Postfix in place of its default list
# (which lacks the client's address: the connect step is negotiated away). Every other stage
# keeps Postfix's defaults, which already carry the queue id "i": asking for a list costs a
# GIL round trip per connection in pymilter, so only the one list that must change is asked.
MAIL_MACROS = "i {auth_authen} {client_addr} {client_name} s"  # s: the HELO name under Sendmail (not Postfix)

_RETURN_CODES = {
    Action.REJECT: Milter.REJECT,
    Action.TEMPFAIL: Milter.TEMPFAIL,
    Action.DISCARD: Milter.DISCARD,
    Action.ACCEPT: Milter.ACCEPT,
}


def guarded(where: str) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Turn any exception in a callback into 451 4.3.0, logged with its traceback and counted."""

    def wrap(func: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(func)
        def wrapper(self: GovMilter, *args: Any) -> int:
            try:
                return func(self, *args)
            except Exception as exc:
                return self._internal_error(where, exc)

        return wrapper

    return wrap


class GovMilter(Milter.Base):
    """One SMTP connection from Postfix."""

    def __init__(self, runtime: Runtime):
        self.rt = runtime
        self.connect_ip = ""  # from the connect step, when it is not negotiated away
        self.connect_host = ""
        self.helo = ""  # the last HELO/EHLO name of this connection
        self.tx: Transaction | None = None
        self.started = 0.0
        self.failure: Verdict | None = None  # an error in a no-reply callback, answered at the next reply
        self.in_flight = False

    def protocol_mask(self) -> int:
        """Negotiate away the end-of-headers step when no check runs there (one round trip less)."""
        mask: int = super().protocol_mask()
        if not self.rt.pipeline.needs(Stage.HEADERS):
            mask &= ~Milter.P_NOEOH
        if self.rt.config.milter.socket.startswith(("inet:", "inet6:")):
            # Over TCP, keep the DATA step and answer it. Without it smtpd(8) sends the DATA
            # macros and hands the connection to cleanup(8), whose first header then waits in
            # Postfix's Nagle buffer until our delayed ACK of those macros: ~40 ms per message.
            # The answer to DATA acknowledges them at once.
            mask |= Milter.P_NODATA
        return mask

    def negotiate(self, opts: list[int]) -> int:
        # the first callback of every connection (pymilter creates this object for it); close is the last
        self.rt.metrics.connections_in_flight.inc()
        self.in_flight = True
        result: int = super().negotiate(opts)
        if result == Milter.CONTINUE and not self._ask_for_mail_macros():
            # without {client_addr} at MAIL FROM the connect step has to stay
            protocol: int = opts[1] & ~Milter.P_NOCONNECT
            opts[1] = self._protocol = protocol
        return result

    def _ask_for_mail_macros(self) -> bool:
        if not self._actions & Milter.SETSYMLIST:
            return False
        try:
            # the context's own method: Milter.Base.setsymlist hands it bytes, which it refuses
            self._ctx.setsymlist(Milter.M_ENVFROM, MAIL_MACROS)
            return True
        except Exception as exc:
            log.warning("could not ask Postfix for the MAIL FROM macros, keeping the connect step: %s", exc)
            return False

    # connection ------------------------------------------------------------

    @Milter.nocallback
    def connect(self, hostname: str, family: int, hostaddr: Any) -> int:
        """Called only when Postfix could not be asked for MAIL_MACROS: remember the client here."""
        self.connect_host = hostname or ""
        if isinstance(hostaddr, tuple) and hostaddr:  # (ip, port) for inet and inet6
            self.connect_ip = str(hostaddr[0])
        elif isinstance(hostaddr, str):
            self.connect_ip = hostaddr
        return Milter.CONTINUE

    @Milter.noreply
    def hello(self, heloname: str) -> int:
        """Only remembered: the HELO name is the SPF identity of the null sender (RFC 7208 2.3).

        Postfix has no macro for it (it never fills in the sendmail macro s), so the step is
        kept, without a reply (SMFIP_NR_HELO): Postfix does not wait for us at HELO.
        """
        self.helo = heloname or ""
        return Milter.CONTINUE

    # message ----------------------------------------------------------------

    @guarded("mail")
    def envfrom(self, mailfrom: str, *params: str) -> int:
        self._end_message()
        self.failure = None
        self.started = time.perf_counter()
        client_ip = self.getsymval("{client_addr}") or self.connect_ip
        envelope = Envelope(
            client_ip=client_ip,
            client_host=self.getsymval("{client_name}") or self.connect_host,
            helo=self.helo or self.getsymval("s") or "",
            mail_from=mailfrom.strip().removeprefix("<").removesuffix(">"),
            mail_params=_esmtp_params(params),
            auth_user=self.getsymval("{auth_authen}") or "",
            queue_id=self.getsymval("i") or "",
            trusted_relay=self.rt.is_trusted(client_ip),
        )
        settings = self.rt.config.milter
        tx = Transaction(
            envelope=envelope,
            ruleset=self.rt.rules.current(),
            spool=self.rt.spool(),
            max_header_fields=settings.max_header_fields,
            max_header_bytes=settings.max_header_bytes,
        )
        tx.facts_loader = functools.partial(self.rt.walk, tx)
        self.tx = tx
        bind(envelope.queue_id)  # this thread's log lines carry the queue id
        drain = self.rt.drain
        if drain.refusing:  # stopping: no new transaction
            drain.answered += 1
            return self._answer(shutdown_verdict())
        drain.opened(self, tx)
        return self._stage(Stage.MAIL)

    @Milter.noreply
    def envrcpt(self, to: str, *params: str) -> int:
        try:
            if self.tx is not None:
                self.tx.envelope.rcpts.append(to.strip().removeprefix("<").removesuffix(">"))
        except Exception as exc:
            self._remember_failure("rcpt", exc)
        return Milter.CONTINUE

    @Milter.noreply
    def header(self, name: str, value: str) -> int:
        try:
            tx = self.tx
            if tx is not None:
                tx.add_header(name, value)  # every field to the spool; the first ones to tx.headers
        except Exception as exc:
            self._remember_failure("header", exc)
        return Milter.CONTINUE

    @guarded("headers")
    def eoh(self) -> int:
        if self.tx is not None:
            self.tx.end_headers()
            if self.tx.envelope.queue_id == "":
                self.tx.envelope.queue_id = self.getsymval("i") or ""
                bind(self.tx.envelope.queue_id)
        return self._stage(Stage.HEADERS)

    @guarded("body")
    def body(self, chunk: bytes) -> int:
        if self.failure is not None:
            return self._answer(self.failure)
        if self.tx is None:
            return Milter.CONTINUE
        self.tx.add_body(chunk)  # the header block ends at the first body bytes (end of headers may be skipped)
        return self._stage(Stage.BODY)

    @guarded("eom")
    def eom(self) -> int:
        tx = self.tx
        if self.failure is not None or tx is None:
            return self._answer(self.failure or tempfail("adapter", "end of message without a transaction"))
        if self.rt.drain.closing:  # stopping, past the grace period
            return self._answer(shutdown_verdict())
        tx.end_headers()  # a message without a body
        if not tx.envelope.queue_id:
            tx.envelope.queue_id = self.getsymval("i") or ""
            bind(tx.envelope.queue_id)
        verdict = self.rt.pipeline.run(Stage.EOM, tx)
        if verdict is None:
            verdict = self.rt.accept_verdict(tx)
            for name, index in self.rt.forged_headers(tx):
                self.chgheader(name, index, "")
            for name, value in verdict.headers:
                self.addheader(name, header_value(value))
            self.rt.pipeline.accepted(tx)
        return self._answer(verdict)

    def abort(self) -> int:
        self._end_message()
        return Milter.CONTINUE

    def close(self) -> int:
        self._end_message()
        if self.in_flight:
            self.rt.metrics.connections_in_flight.dec()
            self.in_flight = False
        return Milter.CONTINUE

    @Milter.nocallback
    def data(self) -> int:
        return Milter.CONTINUE

    @Milter.nocallback
    def unknown(self, cmd: str) -> int:
        return Milter.CONTINUE

    # helpers ----------------------------------------------------------------

    def _stage(self, stage: Stage) -> int:
        if self.failure is not None:
            return self._answer(self.failure)
        if self.tx is None:
            return Milter.CONTINUE
        if self.rt.drain.closing:  # stopping, past the grace period
            return self._answer(shutdown_verdict())
        verdict = self.rt.pipeline.run(stage, self.tx)
        return Milter.CONTINUE if verdict is None else self._answer(verdict)

    def _answer(self, verdict: Verdict) -> int:
        """Reply to Postfix, log and count the decision, and end the message."""
        if verdict.action in (Action.REJECT, Action.TEMPFAIL) and verdict.code:
            # the text, the reference the helpdesk looks up, the contact line: one reply line each
            self.setreply(verdict.code, verdict.enhanced or None, *self.rt.reply_lines(self.tx, verdict))
        if self.tx is not None:
            elapsed = time.perf_counter() - self.started if self.started else None
            self.rt.record(self.tx, verdict, elapsed)
        self._end_message()
        return _RETURN_CODES.get(verdict.action, Milter.TEMPFAIL)

    def _remember_failure(self, where: str, exc: Exception) -> None:
        log.error("internal error in %s: %s", where, "".join(traceback.format_exception(exc)).strip())
        self.rt.metrics.internal_errors.labels(where=where).inc()
        self.failure = tempfail("adapter", f"internal error in {where}: {type(exc).__name__}")

    def _internal_error(self, where: str, exc: Exception) -> int:
        self._remember_failure(where, exc)
        failure = self.failure or tempfail("adapter", where)
        try:
            return self._answer(failure)
        except Exception:  # even the reply failed: libmilter's own tempfail
            log.exception("could not answer after an internal error")
            return Milter.TEMPFAIL

    def _end_message(self) -> None:
        """Release the message: its spool and what its MIME walk holds."""
        tx, self.tx = self.tx, None
        self.started = 0.0
        bind("")
        if tx is not None:
            self.rt.drain.closed(self)
            try:
                tx.close()
            except Exception as exc:  # the answer is given: a failure to release is logged, not answered
                log.error("could not release a message: %s", "".join(traceback.format_exception(exc)).strip())
                self.rt.metrics.internal_errors.labels(where="release").inc()


def _esmtp_params(params: tuple[str, ...]) -> dict[str, str]:
    result: dict[str, str] = {}
    for param in params:
        key, _, value = param.partition("=")
        result[key.upper()] = value
    return result


def _set_nodelay_on_listener(conn: str) -> None:
    """TCP_NODELAY on the listening socket is inherited by every accepted socket.

    Without it each of libmilter's small writes waits for a delayed ACK: ~40 ms per message.
    """
    for fd in _listener_fds(conn):
        sock = socket.socket(fileno=fd)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            log.info("TCP_NODELAY set on the milter listening socket (%s)", conn)
        except OSError:
            pass
        finally:
            sock.detach()


def _inet_port(conn: str) -> int | None:
    if not conn.startswith(("inet:", "inet6:")):
        return None
    port = conn.split(":", 1)[1].split("@", 1)[0]
    return int(port) if port.isdigit() else None


def _register(name: str) -> None:
    """Hand libmilter our callbacks (what pymilter's runmilter does, minus three of them).

    DATA and unknown commands get no Python callback: pymilter's C layer then answers
    them itself, without taking the GIL. Over TCP the DATA step stays negotiated (see
    protocol_mask) and is answered at C speed. HELO has a callback that only stores the name
    and is negotiated without a reply (libmilter offers no HELO step at all without one).
    """
    libmilter.set_connect_callback(Milter.connect_callback)
    libmilter.set_helo_callback(lambda ctx, name: ctx.getpriv().hello(name))
    libmilter.set_envfrom_callback(lambda ctx, *b: ctx.getpriv().envfrom_bytes(*b))
    libmilter.set_envrcpt_callback(lambda ctx, *b: ctx.getpriv().envrcpt_bytes(*b))
    libmilter.set_header_callback(lambda ctx, f, v: ctx.getpriv().header_bytes(f, v))
    libmilter.set_eoh_callback(lambda ctx: ctx.getpriv().eoh())
    libmilter.set_body_callback(lambda ctx, chunk: ctx.getpriv().body(chunk))
    libmilter.set_eom_callback(lambda ctx: ctx.getpriv().eom())
    libmilter.set_abort_callback(lambda ctx: ctx.getpriv().abort())
    libmilter.set_close_callback(Milter.close_callback)
    libmilter.register(name, data=None, unknown=None, negotiate=Milter.negotiate_callback)


REPLY_LINGER = 0.5  # seconds left for libmilter to write the last replies before the process ends
STOP_SIGNALS: dict[int, str] = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "SIGINT"}


class _Stop:
    """What the main thread's signal handlers saw: the first stop signal, and whether another came."""

    def __init__(self) -> None:
        self.signal = ""
        self.again = False

    def handle(self, signum: int, frame: object) -> None:
        name = STOP_SIGNALS.get(signum, str(signum))
        if self.signal:
            self.again = True  # a second signal ends the grace period now
            log.warning("%s during shutdown: ending the grace period now", name)
        else:
            self.signal = name

    @staticmethod
    def hangup(signum: int, frame: object) -> None:
        log.info("SIGHUP ignored: rule files are reloaded when they change; a configuration change needs a restart")


def serve(runtime: Runtime) -> int:
    """Run the milter until SIGTERM or SIGINT, then drain (see _shutdown). Returns the exit status.

    libmilter runs in a thread of its own. It blocks SIGTERM, SIGINT and SIGHUP in that thread
    and its own signal thread (which would stop at once, and abort open sessions on SIGINT); the
    main thread keeps them unblocked, so the kernel hands it every signal sent to the process,
    and the shutdown is ours.
    """
    conn = runtime.config.milter.socket
    Milter.factory = functools.partial(GovMilter, runtime)
    # What start-up built lives as long as the process: keep it out of every collection. Each
    # message makes thousands of short-lived objects: collect the young ones less often.
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 50, 50)
    Milter.set_flags(Milter.ADDHDRS | Milter.CHGHDRS)
    libmilter.setconn(conn)
    if runtime.config.milter.timeout > 0:
        libmilter.settimeout(runtime.config.milter.timeout)
    _register(runtime.config.milter.name)
    try:
        libmilter.opensocket(True)  # removes a stale unix socket left by a crash
    except libmilter.error as exc:
        raise OSError(_listen_problem(conn)) from exc
    if _inet_port(conn) is not None:
        _set_nodelay_on_listener(conn)
    elif conn.startswith("unix:"):
        runtime.secure_unix_socket(conn.removeprefix("unix:"))

    stop = _Stop()
    for signum in STOP_SIGNALS:
        signal.signal(signum, stop.handle)
    signal.signal(signal.SIGHUP, stop.hangup)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            libmilter.main()
        except BaseException as exc:  # handed to the main thread
            failure.append(exc)

    # the threads started from here on inherit a blocked mask; the main thread unblocks its own
    signal.pthread_sigmask(signal.SIG_BLOCK, [*STOP_SIGNALS, signal.SIGHUP])
    try:
        milter = threading.Thread(target=run, name="libmilter", daemon=True)
        milter.start()
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [*STOP_SIGNALS, signal.SIGHUP])
    log.info("govmilter listening on %s ruleset=%s", conn, runtime.rules.current().version)
    while not stop.signal and milter.is_alive():
        time.sleep(0.2)  # a signal handler runs here, in the main thread
    if not stop.signal and failure:  # libmilter ended on its own: it could not serve
        raise OSError(f"[milter] socket {conn}: libmilter stopped: {failure[0]}") from failure[0]
    _shutdown(runtime, stop, milter)
    return 0


def _shutdown(runtime: Runtime, stop: _Stop, milter: threading.Thread) -> None:
    """No new connections; open transactions finish within the grace period; the rest get 451 4.3.2."""
    closed = _close_listener(runtime.config.milter.socket)
    drain = runtime.drain
    drain.phase = drain.DRAINING
    grace = runtime.config.milter.shutdown_grace
    waiting = len(drain.open_transactions())
    log.info(
        "shutting down (%s), draining %d open transactions, grace %g s (listening sockets closed: %d)",
        stop.signal or "libmilter stopped",
        waiting,
        grace,
        closed,
    )
    started = time.monotonic()
    if not drain.wait_idle(grace, lambda: stop.again):
        left = drain.open_transactions()
        drain.phase = drain.CLOSING
        log.warning(
            "shutdown grace over after %.1f s: %d open transactions get 451 4.3.2 at their next step",
            time.monotonic() - started,
            len(left),
        )
        if not drain.wait_idle(ANSWER_WINDOW):
            for described in drain.describe_open():
                # Postfix's next step on this connection meets a closed milter: milter_default_action
                log.error("shutdown: no step from Postfix within %g s, closing %s", ANSWER_WINDOW, described)
    if waiting or drain.answered:
        # libmilter writes a callback's reply after the callback returned (and the transaction
        # closed): give the last replies the moment they need before the process ends
        time.sleep(REPLY_LINGER)
    log.info("stopped after %.1f s", time.monotonic() - started)


# The write ends of the pipes that stand in for closed listening sockets (kept open: see below).
_INERT_WRITERS: list[int] = []


def _close_listener(conn: str) -> int:
    """Stop accepting connections, leaving the open ones and libmilter's own state alone.

    smfi_stop() would close the listening socket but also abort every open session (libmilter
    sets MILTER_ABRT: measured, the next step of an open transaction finds the connection closed).
    Instead the listening socket's descriptor is replaced, in one dup2, by the read end of a pipe
    that never becomes readable: libmilter's listener goes on waiting on a descriptor where
    nothing ever arrives, and the socket closes when its wait in progress ends (libmilter wakes
    every 5 s). Measured: a connection in those seconds is reset, later ones refused, none is
    served; Postfix applies milter_default_action to them. A shutdown() of the socket would
    refuse at once but wakes libmilter's listener into its error path, which ends every session.
    Returns how many sockets were replaced.
    """
    closed = 0
    for fd in _listener_fds(conn):
        read_end, write_end = os.pipe()
        os.dup2(read_end, fd)
        os.close(read_end)
        _INERT_WRITERS.append(write_end)  # with no writer left the pipe would read as EOF
        closed += 1
    return closed


def _listener_fds(conn: str) -> list[int]:
    """The descriptors of our listening milter socket (found by its address, as libmilter opened it)."""
    port = _inet_port(conn)
    path = conn.removeprefix("unix:") if conn.startswith("unix:") else None
    found = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            continue
        try:
            if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                continue
            address = sock.getsockname()
            unix = sock.family == socket.AF_UNIX and path is not None and address == path
            inet = sock.family in (socket.AF_INET, socket.AF_INET6) and port is not None and address[1] == port
            if unix or inet:
                found.append(fd)
        except OSError:
            pass
        finally:
            sock.detach()
    return found


def _listen_problem(conn: str) -> str:
    """Why libmilter could not open its socket, said with the address and the key that names it."""
    port = _inet_port(conn)
    if port is not None:
        host = conn.split("@", 1)[1] if "@" in conn else ""
        family = socket.AF_INET6 if conn.startswith("inet6:") else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((host.strip("[]"), port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"[milter] socket {conn}: {host or '*'}:{port} is already in use (another govmilter?)"
            return f"[milter] socket {conn}: cannot listen: {exc.strerror or exc}"
    elif conn.startswith("unix:"):
        path = conn.removeprefix("unix:")
        directory = os.path.dirname(path) or "."
        if not os.path.isdir(directory):
            return f"[milter] socket {conn}: the directory {directory} does not exist"
        if not os.access(directory, os.W_OK | os.X_OK):
            return f"[milter] socket {conn}: the directory {directory} is not writable by this user"
    return f"[milter] socket {conn}: libmilter cannot listen there"
