"""The adapter driven through pymilter's own test context (no MTA): replies and return codes."""

from __future__ import annotations

import io
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import Milter
import pytest
from Milter.testctx import TestCtx as PymilterTestCtx

from govmilter import decision
from govmilter.adapter import GovMilter
from govmilter.checks import CheckHooks
from govmilter.model import Action, MessageFacts, Stage, Transaction, Verdict
from govmilter.runtime import Runtime
from support.header_flood import MARKER, filler, message_bytes, multipart_body, multipart_fields
from support.milter_ctx import RecordingCtx, TestCtx, adapter_runtime, drive


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    yield from adapter_runtime(monkeypatch)


def feed(
    ctx: TestCtx, sender: str, rcpt: str, message: bytes, params: tuple[str, ...] = (), ip: str = "127.0.0.2"
) -> int:
    """Drive the callbacks as libmilter would; return the first non-CONTINUE answer."""
    ctx._setsymval("i", "4ABCDEF")
    assert ctx._connect(ip=ip) == Milter.CONTINUE
    rc = ctx._envfrom(f"<{sender}>", *params)
    if rc != Milter.CONTINUE:
        return int(rc)
    ctx._envrcpt(f"<{rcpt}>")
    head, _, body = message.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        ctx._priv.header(name.decode(), value.strip().decode())
    rc = ctx._eoh()
    if rc != Milter.CONTINUE:
        return int(rc)
    ctx._body = io.BytesIO()
    rc = ctx._feed_body(io.BytesIO(body))
    if rc != Milter.CONTINUE:
        return int(rc)
    return int(ctx._eom())


MESSAGE = (
    b"From: a@example.com\r\nTo: user@bacninh.gov.vn\r\nSubject: hello\r\n"
    b"Message-ID: <x1@example.com>\r\n\r\nHi.\r\n"
)


def test_clean_message_is_accepted_with_a_header(runtime: Runtime) -> None:
    ctx = TestCtx()
    added: list[tuple[str, str]] = []
    ctx.addheader = lambda name, value, idx: added.append((name, value))  # type: ignore[method-assign]
    assert feed(ctx, "a@example.com", "user@bacninh.gov.vn", MESSAGE) == Milter.ACCEPT
    names = [name for name, _ in added]
    assert "X-Govmilter" in names
    assert runtime.metrics.messages.labels(action="accept", check="none")._value.get() == 1


def test_declared_size_is_refused_at_mail_from(runtime: Runtime) -> None:
    ctx = TestCtx()
    assert feed(ctx, "a@example.com", "user@bacninh.gov.vn", MESSAGE, params=("SIZE=99999999",)) == Milter.REJECT
    assert ctx._reply[0] == "552"
    assert ctx._reply[1] == "5.3.4"


def test_exception_in_a_check_answers_451(runtime: Runtime) -> None:
    class Exploding(CheckHooks):
        name = "exploding"
        stages = frozenset({Stage.HEADERS})

        def run(self, stage: Stage, tx: Transaction) -> list[Verdict]:
            raise ZeroDivisionError("boom")

    runtime.pipeline.__init__([*runtime.pipeline.checks, Exploding()], runtime.metrics)  # type: ignore[misc]
    ctx = TestCtx()
    assert feed(ctx, "a@example.com", "user@bacninh.gov.vn", MESSAGE) == Milter.TEMPFAIL
    assert ctx._reply[:2] == ("451", "4.3.0")
    assert runtime.metrics.internal_errors.labels(where="exploding")._value.get() == 1


def test_exception_in_a_no_reply_callback_is_answered_at_the_next_reply(runtime: Runtime) -> None:
    ctx = TestCtx()
    ctx._connect(ip="127.0.0.2")
    ctx._envfrom("<a@example.com>")
    milter = ctx._priv
    milter.tx.headers = None  # the next header callback fails inside
    milter.header("Subject", "x")
    ctx._body = io.BytesIO()  # end of headers is negotiated away: the body is the next reply
    assert ctx._feed_body(io.BytesIO(b"Hi.\r\n")) == Milter.TEMPFAIL
    assert ctx._reply[:2] == ("451", "4.3.0")
    assert runtime.metrics.internal_errors.labels(where="header")._value.get() == 1


def test_reply_text_cannot_break_the_protocol() -> None:
    from govmilter.runtime import reply_text as _reply_text  # every reply line the adapter hands libmilter

    assert _reply_text("50% off\r\nX: y") == "50  off  X: y"


def negotiated(ctx: TestCtx) -> int:
    assert ctx._negotiate() == Milter.CONTINUE
    return int(ctx._protocol)


def test_postfix_need_not_send_connect_nor_data_over_a_unix_socket(runtime: Runtime) -> None:
    protocol = negotiated(TestCtx())
    assert protocol & Milter.P_NOCONNECT and protocol & Milter.P_NODATA
    # HELO is sent (Postfix has no macro for the HELO name: the null sender's SPF); the
    # no-reply bit is asked (test_postfix_is_told_which_steps_need_no_reply), this MTA offers none
    assert not protocol & Milter.P_NOHELO


def test_the_helo_name_reaches_the_envelope(runtime: Runtime) -> None:
    ctx = TestCtx()
    negotiated(ctx)
    assert ctx._helo("mx1.example.org") == Milter.CONTINUE
    assert ctx._envfrom("<>") == Milter.CONTINUE
    assert ctx._priv.tx.envelope.helo == "mx1.example.org"


def test_the_client_address_is_read_at_mail_from(runtime: Runtime) -> None:
    # connect is negotiated away: the blocklists and the trusted-relay test see {client_addr}
    for ip, trusted in (("127.0.0.1", True), ("192.0.2.7", False)):
        ctx = TestCtx()
        assert ctx._connect(host="mx.example.org", ip=ip) == Milter.CONTINUE
        assert ctx._envfrom("<a@example.com>") == Milter.CONTINUE
        envelope = ctx._priv.tx.envelope
        assert (envelope.client_ip, envelope.client_host, envelope.trusted_relay) == (ip, "mx.example.org", trusted)


def test_over_tcp_the_data_step_is_kept_and_answered(monkeypatch: pytest.MonkeyPatch) -> None:
    # without it, Postfix's next command waits in its Nagle buffer for our delayed ACK (README)
    for _ in adapter_runtime(monkeypatch, 'milter.socket="inet:8890@127.0.0.1"'):
        ctx = TestCtx()
        protocol = negotiated(ctx)
        assert not protocol & Milter.P_NOHELO
        assert not protocol & Milter.P_NODATA and not protocol & Milter.P_NR_DATA
        ctx._setsymval("i", "4ABCDEF")
        assert ctx._connect(ip="127.0.0.3") == Milter.CONTINUE
        assert ctx._envfrom("<a@example.com>") == Milter.CONTINUE
        assert ctx._envrcpt("<user@bacninh.gov.vn>") == Milter.CONTINUE
        assert ctx._data() == Milter.CONTINUE


def test_postfix_is_asked_for_the_mail_from_macros_only(runtime: Runtime) -> None:
    # the other stages keep Postfix's defaults (the queue id "i"): each list asked costs a GIL round trip
    ctx = TestCtx()
    negotiated(ctx)
    assert ctx._symlist[Milter.M_ENVFROM] == {b"i", b"{auth_authen}", b"{client_addr}", b"{client_name}", b"s"}
    assert [stage for stage, names in enumerate(ctx._symlist) if names is not None] == [Milter.M_ENVFROM]


def test_an_mta_that_cannot_take_a_macro_list_keeps_the_connect_step(monkeypatch: pytest.MonkeyPatch) -> None:
    for _ in adapter_runtime(monkeypatch):
        actions, *rest = PymilterTestCtx.default_opts
        monkeypatch.setattr(PymilterTestCtx, "default_opts", [actions & ~Milter.SETSYMLIST, *rest])
        ctx = TestCtx()
        assert ctx._connect(host="mx.example.org", ip="192.0.2.7") == Milter.CONTINUE
        assert not ctx._protocol & Milter.P_NOCONNECT
        ctx._macros.clear()  # that MTA's MAIL FROM carries no client address
        assert ctx._envfrom("<a@example.com>") == Milter.CONTINUE
        assert ctx._priv.tx.envelope.client_ip == "192.0.2.7"
        assert ctx._priv.tx.envelope.client_host == "mx.example.org"


def test_end_of_headers_is_negotiated_away_only_when_no_check_runs_there(runtime: Runtime) -> None:
    milter = GovMilter(runtime)
    assert not runtime.pipeline.needs(Stage.HEADERS)  # the shipped checks all decide later
    assert not milter.protocol_mask() & Milter.P_NOEOH  # so Postfix may skip the step

    class AtEndOfHeaders(CheckHooks):
        name = "at-end-of-headers"
        stages = frozenset({Stage.HEADERS})

        def run(self, stage: Stage, tx: Transaction) -> list[Verdict]:
            return []

    runtime.pipeline.__init__([*runtime.pipeline.checks, AtEndOfHeaders()], runtime.metrics)  # type: ignore[misc]
    assert milter.protocol_mask() & Milter.P_NOEOH  # a check runs there: the step is kept


# ---- every header field reaches the spool, the MIME walk and clamd ------------------------------


class Capture(CheckHooks):
    """A check that runs first at end of message and keeps what the checks after it will read."""

    name = "capture"
    stages = frozenset({Stage.EOM})

    def __init__(self) -> None:
        self.tx: Transaction | None = None
        self.facts: MessageFacts | None = None
        self.raw = b""
        self.body = b""
        self.forged: list[tuple[str, int]] = []
        self.rolled_to_disk = False

    def run(self, stage: Stage, tx: Transaction) -> list[Verdict]:
        self.tx = tx
        self.facts = tx.facts()
        self.raw = b"".join(tx.raw_chunks())
        self.body = b"".join(tx.body_chunks())
        self.forged = decision.forged_headers(tx)
        assert tx.spool is not None
        self.rolled_to_disk = bool(tx.spool.on_disk)
        return []


def capture_first(runtime: Runtime) -> Capture:
    capture = Capture()
    runtime.pipeline.__init__([capture, *runtime.pipeline.checks], runtime.metrics)  # type: ignore[misc]
    return capture


def drive_fields(ctx: TestCtx, fields: list[tuple[str, str]], body: bytes, sender: str = "a@example.com",
                 rcpt: str = "user@bacninh.gov.vn", ip: str = "127.0.0.3") -> int:  # fmt: skip
    """Every field through the header callback, then end of headers, the body and end of message."""
    ctx._setsymval("i", "4FLOOD")
    ctx.addheader = lambda name, value, idx: None  # type: ignore[method-assign]
    assert ctx._connect(ip=ip) == Milter.CONTINUE
    assert ctx._envfrom(f"<{sender}>") == Milter.CONTINUE
    ctx._envrcpt(f"<{rcpt}>")
    for name, value in fields:
        assert ctx._priv.header(name, value) == Milter.CONTINUE
    rc = ctx._eoh()
    if rc != Milter.CONTINUE:
        return int(rc)
    ctx._body = io.BytesIO()
    rc = ctx._feed_body(io.BytesIO(body))
    if rc != Milter.CONTINUE:
        return int(rc)
    return int(ctx._eom())


def test_a_content_type_after_2001_fields_reaches_the_mime_walk_and_the_raw_message(runtime: Runtime) -> None:
    capture = capture_first(runtime)
    fields = [("From", "a@example.com"), ("To", "user@bacninh.gov.vn"), *filler(2001),
              *multipart_fields("TỐI MẬT bao cao")]  # fmt: skip
    body = multipart_body("baocao.exe")
    rc = drive_fields(TestCtx(), fields, body)
    assert rc == Milter.REJECT  # the .exe the walk found behind the flood (or, later, the flood itself)
    tx = capture.tx
    assert tx is not None and capture.facts is not None
    assert (tx.header_count, len(tx.headers), tx.headers_truncated) == (2006, 2000, True)
    assert tx.first_header("Content-Type") == ""  # not stored: a check looking it up sees nothing...
    names = [part.filename for part in capture.facts.parts]
    assert "baocao.exe" in names  # ...but the walk read it from the spool
    assert any(MARKER in text.text for text in capture.facts.texts)
    assert capture.raw == message_bytes(fields, body)  # every field, byte for byte, then the body
    assert capture.body == body
    assert "Subject: TỐI MẬT bao cao\r\n".encode() in capture.raw


def test_a_header_block_past_the_spool_threshold_goes_to_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    for rt in adapter_runtime(monkeypatch, "milter.spool_threshold=4096", 'milter.spool_dir="/tmp"'):
        capture = capture_first(rt)
        fields = [("From", "a@example.com"), *filler(3000), *multipart_fields("x")]
        rc = drive_fields(TestCtx(), fields, multipart_body("baocao.exe"))
        assert rc == Milter.REJECT
        assert capture.rolled_to_disk
        assert capture.raw == message_bytes(fields, multipart_body("baocao.exe"))


def test_the_stored_fields_are_bounded_by_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    for rt in adapter_runtime(monkeypatch, "milter.max_header_fields=5", "milter.max_header_bytes=1024"):
        capture = capture_first(rt)
        fields = [("From", "a@example.com"), ("Subject", "x"), ("To", "user@bacninh.gov.vn")]
        drive_fields(TestCtx(), fields, b"Hi.\r\n")
        assert capture.tx is not None
        assert (capture.tx.header_count, len(capture.tx.headers), capture.tx.headers_truncated) == (3, 3, False)
        drive_fields(TestCtx(), [*fields, *filler(3)], b"Hi.\r\n")
        assert (capture.tx.header_count, len(capture.tx.headers), capture.tx.headers_truncated) == (6, 5, True)
        long_field = ("X-Long", "y" * 2000)  # past max_header_bytes: it and every later field stay unstored
        drive_fields(TestCtx(), [fields[0], long_field, fields[1]], b"Hi.\r\n")
        assert capture.tx.headers == [fields[0]] and capture.tx.headers_truncated
        assert capture.tx.header_count == 3
        assert capture.raw == message_bytes([fields[0], long_field, fields[1]], b"Hi.\r\n")


def test_a_forged_spam_flag_hidden_after_2001_fields_is_removed(monkeypatch: pytest.MonkeyPatch) -> None:
    # the size check (where the header-flood policy lives) is off so that the message is accepted
    # and the change-header actions at end of message can be seen
    changed: list[tuple[str, int, str]] = []
    for rt in adapter_runtime(monkeypatch, "size.enabled=false"):
        capture = capture_first(rt)
        ctx = TestCtx()
        ctx.chgheader = lambda name, idx, value: changed.append((name, idx, value))  # type: ignore[method-assign]
        fields = [("From", "a@example.com"), ("X-Spam-Flag", "YES"), *filler(2001), ("X-Spam-Flag", "NO"),
                  ("x-virus-scanned", "clean"), ("X-Spam-Status", "No, score=-5")]  # fmt: skip
        assert drive_fields(ctx, fields, b"Hi.\r\n") == Milter.ACCEPT
        expected = [("X-Spam-Status", 1), ("x-virus-scanned", 1), ("X-Spam-Flag", 2), ("X-Spam-Flag", 1)]
        assert capture.forged == expected
        assert changed == [(name, index, "") for name, index in expected]


def test_the_message_is_released_at_its_end(runtime: Runtime) -> None:
    capture = capture_first(runtime)
    closed: list[str] = []
    real_walk = runtime.walk

    def walk_with_a_close(tx: Transaction) -> MessageFacts:
        facts = real_walk(tx)
        original = getattr(facts, "close", None)

        def close() -> None:
            closed.append("facts")
            if original is not None:
                original()

        object.__setattr__(facts, "close", close)  # frozen dataclass: the instance's own attribute
        return facts

    runtime.walk = walk_with_a_close  # type: ignore[method-assign]
    ctx = TestCtx()
    assert drive_fields(ctx, [("From", "a@example.com"), ("Subject", "x")], b"Hi.\r\n") == Milter.ACCEPT
    assert capture.tx is not None and capture.tx.spool is not None
    assert capture.tx.spool.closed and closed == ["facts"]
    assert ctx._priv.tx is None
    # an aborted message (the client gave up) is released too, walk or no walk
    ctx = TestCtx()
    assert ctx._connect(ip="127.0.0.3") == Milter.CONTINUE
    assert ctx._envfrom("<a@example.com>") == Milter.CONTINUE
    ctx._priv.header("Subject", "x")
    tx = ctx._priv.tx
    assert tx is not None and tx.spool is not None
    ctx._abort()
    assert tx.spool.closed and ctx._priv.tx is None


# ---- every failure path answers 451 4.3.0, with the reply set ------------------------------------
# Our own bug never accepts a message and never leaves Postfix without an answer: each callback's
# exception, a failure remembered in a no-reply callback, a refused header change, even a failure
# of the reply itself. RecordingCtx records the replies and header changes as an MTA would see them.

PLAIN = [("From", "a@example.com"), ("To", "user@bacninh.gov.vn"), ("Subject", "hello"),
         ("Message-ID", "<f1@example.com>")]  # fmt: skip
BODY = b"Hi.\r\n"
TEMPFAIL_REPLY = ("451", "4.3.0")


class AtHeaders(CheckHooks):
    """A check that does nothing at end of headers, so that the step is negotiated and called."""

    name = "at-headers"
    stages = frozenset({Stage.HEADERS})

    def run(self, stage: Stage, tx: Transaction) -> list[Verdict]:
        return []


def internal_errors(runtime: Runtime, where: str) -> float:
    return float(runtime.metrics.internal_errors.labels(where=where)._value.get())


def decisions(runtime: Runtime, action: str, check: str) -> float:
    return float(runtime.metrics.messages.labels(action=action, check=check)._value.get())


def assert_tempfailed(ctx: RecordingCtx, rc: int, runtime: Runtime, where: str) -> None:
    assert rc == Milter.TEMPFAIL
    assert [reply[:2] for reply in ctx.replies] == [TEMPFAIL_REPLY]  # set once, before the answer
    assert ctx._reply[:2] == TEMPFAIL_REPLY
    assert internal_errors(runtime, where) == 1
    assert decisions(runtime, "accept", "none") == 0
    assert ctx._priv.tx is None  # the message is released with the answer


@pytest.mark.parametrize(
    ("stage", "where"), [(Stage.MAIL, "mail"), (Stage.HEADERS, "headers"), (Stage.BODY, "body"), (Stage.EOM, "eom")]
)
def test_an_exception_in_each_callback_answers_451(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, stage: Stage, where: str
) -> None:
    runtime.pipeline.__init__([*runtime.pipeline.checks, AtHeaders()], runtime.metrics)  # type: ignore[misc]
    real_run = runtime.pipeline.run

    def run(at: Stage, tx: Transaction) -> Verdict | None:
        if at is stage:
            raise RuntimeError(f"a bug at {at.value}")  # outside any check: the adapter's own guard
        return real_run(at, tx)

    monkeypatch.setattr(runtime.pipeline, "run", run)
    ctx = RecordingCtx()
    rc = drive(ctx, PLAIN, BODY)
    assert_tempfailed(ctx, rc, runtime, where)
    assert decisions(runtime, "tempfail", "adapter") == 1  # the answer is recorded like any decision
    assert ctx.added == [] and ctx.changed == []  # a tempfailed message is not marked


@pytest.mark.parametrize("part", ["accept_verdict", "forged_headers", "chgheader", "addheader"])
def test_a_failure_while_marking_an_accepted_message_answers_451(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, part: str
) -> None:
    accepted: list[Transaction] = []
    monkeypatch.setattr(runtime.pipeline, "accepted", accepted.append)
    ctx = RecordingCtx()

    def refuse(*args: object) -> None:
        raise OSError(f"{part} refused")

    monkeypatch.setattr(runtime if part in ("accept_verdict", "forged_headers") else ctx, part, refuse)
    rc = drive(ctx, [*PLAIN, ("X-Spam-Flag", "NO")], BODY)
    assert_tempfailed(ctx, rc, runtime, "eom")
    assert accepted == []  # not remembered as accepted (the forwarding memory)


def test_a_failure_of_the_reply_itself_is_still_a_tempfail(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    def record(*args: object) -> None:
        raise OSError("the decision log is full")

    monkeypatch.setattr(runtime, "record", record)
    ctx = RecordingCtx()
    rc = drive(ctx, PLAIN, BODY)
    assert rc == Milter.TEMPFAIL  # libmilter's own tempfail: never the accept that was being answered
    assert ctx._reply[:2] == TEMPFAIL_REPLY
    assert internal_errors(runtime, "eom") == 1


class FailingList(list[str]):
    def append(self, item: str) -> None:
        raise MemoryError("no room for a recipient")


def start(ctx: RecordingCtx) -> GovMilter:
    ctx._setsymval("i", "4FAIL")
    assert ctx._connect(ip="127.0.0.3") == Milter.CONTINUE
    assert ctx._envfrom("<a@example.com>") == Milter.CONTINUE
    milter: GovMilter = ctx._priv
    return milter


@pytest.mark.parametrize("where", ["rcpt", "header"])
def test_a_failure_in_a_no_reply_callback_is_answered_at_end_of_message(runtime: Runtime, where: str) -> None:
    ctx = RecordingCtx()
    milter = start(ctx)
    assert milter.tx is not None
    if where == "rcpt":
        milter.tx.envelope.rcpts = FailingList()
        assert ctx._envrcpt("<user@bacninh.gov.vn>") == Milter.CONTINUE  # no reply is read here
    else:
        assert ctx._envrcpt("<user@bacninh.gov.vn>") == Milter.CONTINUE
        milter.tx.headers = None  # type: ignore[assignment]
        assert milter.header("Subject", "x") == Milter.CONTINUE
    assert internal_errors(runtime, where) == 1
    ctx._body = io.BytesIO()
    assert ctx._feed_body(io.BytesIO(b"")) == Milter.CONTINUE  # an empty body: no body step at all
    rc = ctx._eom()
    assert_tempfailed(ctx, rc, runtime, where)
    assert ctx.added == [] and ctx.changed == []
    assert decisions(runtime, "tempfail", "adapter") == 1


def test_a_remembered_failure_is_answered_at_end_of_headers(runtime: Runtime) -> None:
    runtime.pipeline.__init__([*runtime.pipeline.checks, AtHeaders()], runtime.metrics)  # type: ignore[misc]
    ctx = RecordingCtx()
    milter = start(ctx)
    assert milter.tx is not None
    milter.tx.headers = None  # type: ignore[assignment]
    milter.header("Subject", "x")
    assert_tempfailed(ctx, ctx._eoh(), runtime, "header")


def test_a_remembered_failure_ends_with_its_message(runtime: Runtime) -> None:
    # the next MAIL FROM on the same connection starts clean: one bad message does not refuse the next
    ctx = RecordingCtx()
    milter = start(ctx)
    assert milter.tx is not None
    milter.tx.headers = None  # type: ignore[assignment]
    milter.header("Subject", "x")
    ctx._body = io.BytesIO()
    assert ctx._eom() == Milter.TEMPFAIL
    assert ctx._envfrom("<a@example.com>") == Milter.CONTINUE
    assert ctx._envrcpt("<user@bacninh.gov.vn>") == Milter.CONTINUE
    for name, value in PLAIN:
        milter.header(name, value)
    ctx._body = io.BytesIO()
    assert ctx._feed_body(io.BytesIO(BODY)) == Milter.CONTINUE
    assert ctx._eom() == Milter.ACCEPT
    assert decisions(runtime, "accept", "none") == 1


def test_forged_gateway_headers_are_removed_by_occurrence_before_ours_is_added(runtime: Runtime) -> None:
    fields = [("From", "a@example.com"), ("X-Spam-Flag", "YES"), ("To", "user@bacninh.gov.vn"),
              ("x-spam-flag", "NO"), ("X-Virus-Scanned", "clean"), ("Subject", "hello"),
              ("X-Govmilter", "action=accept forged"), ("X-Spammy", "not ours"), ("X-Virus", "not ours"),
              ("X-SPAM-FLAG", "NO"), ("X-Virus-Status", "Clean"), ("X-Spam-Status", "No, score=-5")]  # fmt: skip
    ctx = RecordingCtx()
    assert drive(ctx, fields, BODY) == Milter.ACCEPT
    # the last first, so that the earlier occurrences keep their numbers; each name counted on its own,
    # whatever its case; an empty value deletes the field
    assert ctx.changed == [
        ("X-Spam-Status", 1, ""),
        ("X-Virus-Status", 1, ""),
        ("X-SPAM-FLAG", 3, ""),
        ("X-Govmilter", 1, ""),
        ("X-Virus-Scanned", 1, ""),
        ("x-spam-flag", 2, ""),
        ("X-Spam-Flag", 1, ""),
    ]
    ours = [name for name, _, _ in ctx.added]
    assert "X-Govmilter" in ours
    # ours are added after the removals: an index counted before they are added stays right
    assert ctx.actions == [("chgheader", name) for name, _, _ in ctx.changed] + [("addheader", n) for n in ours]
    assert not any("forged" in value for _, value, _ in ctx.added)


def test_a_message_without_forged_headers_changes_none(runtime: Runtime) -> None:
    ctx = RecordingCtx()
    assert drive(ctx, PLAIN, BODY) == Milter.ACCEPT
    assert ctx.changed == [] and "X-Govmilter" in [name for name, _, _ in ctx.added]
    assert ctx.replies == []  # an accept sets no reply


# ---- small pieces the mutation run found untested (docs/mutation.md) -------------------------------


def test_reply_text_keeps_printable_ascii_and_blanks_the_rest() -> None:
    from govmilter.runtime import reply_text as _reply_text  # every reply line the adapter hands libmilter

    printable = "".join(chr(c) for c in range(0x20, 0x7F))
    assert _reply_text(printable) == printable.replace("%", " ")
    assert _reply_text("\x7f\x1f\té€\u2028") == "      "


def test_the_listening_port_is_read_from_inet_sockets_only() -> None:
    from govmilter.adapter import _inet_port

    assert _inet_port("inet:8890@127.0.0.1") == 8890
    assert _inet_port("inet6:10025@[::1]") == 10025
    assert _inet_port("inet:8890") == 8890
    assert _inet_port("unix:/run/govmilter/milter.sock") is None
    assert _inet_port("inet:port@127.0.0.1") is None


def test_the_queue_id_is_read_later_when_mail_from_had_none(runtime: Runtime) -> None:
    runtime.pipeline.__init__([*runtime.pipeline.checks, AtHeaders()], runtime.metrics)  # type: ignore[misc]
    for step in ("eoh", "eom"):
        ctx = RecordingCtx()
        ctx._macros.pop("i", None)
        assert ctx._connect(ip="127.0.0.3") == Milter.CONTINUE
        assert ctx._envfrom("<a@example.com>") == Milter.CONTINUE
        milter: GovMilter = ctx._priv
        assert milter.tx is not None and milter.tx.envelope.queue_id == ""
        tx = milter.tx
        ctx._setsymval("i", "4LATER")  # Postfix knows it from end of headers on
        if step == "eoh":
            assert ctx._eoh() == Milter.CONTINUE
        else:
            ctx._body = io.BytesIO()
            assert ctx._eom() == Milter.ACCEPT
        assert tx.envelope.queue_id == "4LATER"


def test_a_known_queue_id_is_kept(runtime: Runtime) -> None:
    runtime.pipeline.__init__([*runtime.pipeline.checks, AtHeaders()], runtime.metrics)  # type: ignore[misc]
    ctx = RecordingCtx()
    ctx._setsymval("i", "4FIRST")
    assert ctx._connect(ip="127.0.0.3") == Milter.CONTINUE
    assert ctx._envfrom("<a@example.com>") == Milter.CONTINUE
    tx = ctx._priv.tx
    ctx._setsymval("i", "4OTHER")
    assert ctx._eoh() == Milter.CONTINUE
    ctx._body = io.BytesIO()
    assert ctx._eom() == Milter.ACCEPT
    assert tx.envelope.queue_id == "4FIRST"


def test_keeping_the_connect_step_changes_that_bit_only(monkeypatch: pytest.MonkeyPatch) -> None:
    for _ in adapter_runtime(monkeypatch):
        actions, protocol, *rest = PymilterTestCtx.default_opts
        monkeypatch.setattr(PymilterTestCtx, "default_opts", [actions & ~Milter.SETSYMLIST, protocol, *rest])
        ctx = TestCtx()
        assert ctx._negotiate() == Milter.CONTINUE
        assert not ctx._protocol & Milter.P_NOCONNECT
        assert not ctx._protocol & Milter.P_NOHELO and ctx._protocol & Milter.P_NODATA  # the rest as negotiated


def test_a_connection_closed_before_negotiation_leaves_the_gauge_alone(runtime: Runtime) -> None:
    GovMilter(runtime).close()
    assert runtime.metrics.connections_in_flight._value.get() == 0


# ---- found by the mutation run (docs/mutation.md) ---------------------------------------------------


def test_the_connect_step_reads_the_address_libmilter_hands_as_a_tuple(runtime: Runtime) -> None:
    """libmilter hands (ip, port) for inet and (ip, port, flow, scope) for inet6; pymilter's test context a str."""
    for family, hostaddr in ((socket.AF_INET, ("192.0.2.7", 40123)), (socket.AF_INET6, ("2001:db8::7", 40123, 0, 0))):
        milter = GovMilter(runtime)
        assert milter.connect("mx.example.org", family, hostaddr) == Milter.CONTINUE
        assert (milter.connect_ip, milter.connect_host) == (hostaddr[0], "mx.example.org")


def test_postfix_need_not_send_unknown_commands(runtime: Runtime) -> None:
    protocol = negotiated(TestCtx())
    assert protocol & Milter.P_NOUNKNOWN


def test_the_listening_socket_is_found_by_its_own_address_only(tmp_path: Path) -> None:
    """At shutdown only our listener is replaced: not another listening socket of the process."""
    from govmilter.adapter import _listener_fds

    ours_path, other_path = str(tmp_path / "milter.sock"), str(tmp_path / "a-other.sock")  # the other sorts first
    sockets = []
    try:
        for path in (ours_path, other_path):
            unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sockets.append(unix)
            unix.bind(path)
            unix.listen(1)
        idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # bound, not listening
        sockets.append(idle)
        idle.bind(str(tmp_path / "idle.sock"))
        inets = [socket.socket(), socket.socket()]
        sockets += inets
        for inet in inets:
            inet.bind(("127.0.0.1", 0))
            inet.listen(1)
        _lower, inet_ours = sorted(inets, key=lambda sock: sock.getsockname()[1])  # the other listens lower
        port = inet_ours.getsockname()[1]
        assert _listener_fds("unix:" + ours_path) == [sockets[0].fileno()]
        assert _listener_fds(f"inet:{port}@127.0.0.1") == [inet_ours.fileno()]
        assert _listener_fds(f"unix:{tmp_path}/none.sock") == []
    finally:
        for sock in sockets:
            sock.close()


def test_postfix_is_told_which_steps_need_no_reply(runtime: Runtime) -> None:
    """No reply per header and recipient (a round trip each), no unknown commands at all.

    protocol_mask() holds the bits the milter takes away from what the MTA offers: these stay.
    """
    mask = GovMilter(runtime).protocol_mask()
    wanted = Milter.P_NR_HDR | Milter.P_NR_RCPT | Milter.P_NOUNKNOWN | Milter.P_NR_HELO | Milter.P_NODATA
    assert mask & wanted == 0, hex(mask & wanted)


def test_the_message_duration_is_the_time_from_mail_from_to_the_answer(runtime: Runtime) -> None:
    started = time.perf_counter()
    assert feed(RecordingCtx(), "a@example.com", "user@bacninh.gov.vn", MESSAGE) == Milter.ACCEPT
    wall = time.perf_counter() - started
    value = runtime.metrics.registry.get_sample_value
    assert value("govmilter_message_duration_seconds_count") == 1
    assert 0 < value("govmilter_message_duration_seconds_sum") <= wall  # type: ignore[operator]


def test_a_port_in_use_is_named_with_its_host() -> None:
    from govmilter.adapter import _listen_problem

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert _listen_problem(f"inet:{port}@127.0.0.1") == (
            f"[milter] socket inet:{port}@127.0.0.1: 127.0.0.1:{port} is already in use (another govmilter?)"
        )


def test_a_negative_libmilter_timeout_is_a_configuration_error() -> None:
    """serve() hands libmilter [milter] timeout when it is above 0; 0 keeps libmilter's own."""
    from govmilter.config import ConfigError, load_config

    assert load_config(None, ["milter.timeout=0"]).milter.timeout == 0
    with pytest.raises(ConfigError, match=r"\[milter\] timeout must be 0"):
        load_config(None, ["milter.timeout=-1"])


def test_a_refusal_without_its_own_code_gets_no_empty_reply(runtime: Runtime) -> None:
    """Only a refusal that carries a code sets the reply; without one libmilter's default stands."""

    class Refusing(CheckHooks):
        name = "refusing"
        stages = frozenset({Stage.HEADERS})

        def run(self, stage: Stage, tx: Transaction) -> list[Verdict]:
            return [Verdict(Action.REJECT, "refusing", reason="no code of its own")]

    runtime.pipeline.__init__([*runtime.pipeline.checks, Refusing()], runtime.metrics)  # type: ignore[misc]
    ctx = RecordingCtx()
    assert drive(ctx, [("From", "a@example.com"), ("Subject", "x")], b"Hi.\r\n") == Milter.REJECT
    assert ctx.replies == []


def test_a_message_that_cannot_be_released_is_still_answered_and_counted(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    def close(self: Transaction) -> None:
        raise OSError("spool file already gone")

    monkeypatch.setattr(Transaction, "close", close)
    ctx = RecordingCtx()
    assert drive(ctx, [("From", "a@example.com"), ("Subject", "x")], b"Hi.\r\n") == Milter.ACCEPT
    assert runtime.metrics.internal_errors.labels(where="release")._value.get() == 1
    assert ctx._priv.tx is None


def test_tcp_nodelay_is_set_on_the_listening_socket() -> None:
    """Inherited by every accepted connection: no delayed-ACK wait per reply (~40 ms per message)."""
    from govmilter.adapter import _set_nodelay_on_listener

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        assert not listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        _set_nodelay_on_listener(f"inet:{listener.getsockname()[1]}@127.0.0.1")
        assert listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_the_connection_gauge_counts_each_negotiated_connection_once(runtime: Runtime) -> None:
    gauge = runtime.metrics.connections_in_flight._value
    ctx = TestCtx()
    assert ctx._negotiate() == Milter.CONTINUE
    assert gauge.get() == 1
    milter: GovMilter = ctx._priv
    milter.close()
    milter.close()  # a second close does not count the connection out twice
    assert gauge.get() == 0


def test_a_unix_socket_in_a_missing_directory_is_named() -> None:
    from govmilter.adapter import _listen_problem

    assert _listen_problem("unix:/nonexistent-govmilter/milter.sock") == (
        "[milter] socket unix:/nonexistent-govmilter/milter.sock: the directory /nonexistent-govmilter does not exist"
    )


# ---- found by the mutation run of 2026-12-04 (docs/mutation.md) -----------------------------------------


def test_end_of_message_without_a_transaction_is_answered_451_without_an_internal_error(runtime: Runtime) -> None:
    """An end of message with no open transaction gets the adapter's own 451 4.3.0: not counted as a bug."""
    ctx = RecordingCtx()
    ctx._setsymval("i", "4NOTX")
    assert ctx._connect(ip="127.0.0.3") == Milter.CONTINUE
    ctx._body = io.BytesIO()
    assert ctx._eom() == Milter.TEMPFAIL
    assert [reply[:2] for reply in ctx.replies] == [TEMPFAIL_REPLY]
    assert internal_errors(runtime, "eom") == 0


def test_a_failed_negotiation_asks_the_mta_for_no_macro_list(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """pymilter answers ALL_OPTS when its negotiation fails (the MTA keeps its own protocol, every
    step sent, the connect step included): then nothing else is asked of the MTA either."""

    def needs(stage: Stage) -> bool:
        raise RuntimeError("no pipeline yet")

    monkeypatch.setattr(runtime.pipeline, "needs", needs)
    ctx = TestCtx()
    assert ctx._negotiate() == Milter.ALL_OPTS
    assert ctx._symlist == [None] * len(ctx._symlist)


def test_an_mta_that_refuses_the_macro_list_keeps_the_connect_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """The MTA offers macro lists but refuses ours: the client's address then comes from the connect step."""

    class Refusing(TestCtx):
        __test__ = False

        def setsymlist(self, stage: int, macros: str) -> None:
            raise ValueError("this MTA takes no list for MAIL FROM")

    for _ in adapter_runtime(monkeypatch):
        ctx = Refusing()
        assert ctx._connect(host="mx.example.org", ip="192.0.2.8") == Milter.CONTINUE
        assert not ctx._protocol & Milter.P_NOCONNECT
        ctx._macros.clear()
        assert ctx._envfrom("<a@example.com>") == Milter.CONTINUE
        assert ctx._priv.tx.envelope.client_ip == "192.0.2.8"


def test_each_new_transaction_refused_while_draining_is_counted_once(runtime: Runtime) -> None:
    """The drain counts the new transactions it answered 451 4.3.2 (the shutdown waits for their replies)."""
    runtime.drain.phase = runtime.drain.DRAINING
    for number in (1, 2):
        ctx = RecordingCtx()
        ctx._setsymval("i", f"4DRAIN{number}")
        assert ctx._connect(ip="127.0.0.3") == Milter.CONTINUE
        assert ctx._envfrom("<a@example.com>") == Milter.TEMPFAIL
        assert ctx.replies[0][:2] == ("451", "4.3.2")
        assert runtime.drain.answered == number


def test_a_listener_whose_address_sorts_after_ours_is_not_ours(tmp_path: Path) -> None:
    """As test_the_listening_socket_is_found_by_its_own_address_only, the other listeners above ours."""
    from govmilter.adapter import _listener_fds

    sockets = []
    try:
        for name in ("milter.sock", "z-other.sock"):
            unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sockets.append(unix)
            unix.bind(str(tmp_path / name))
            unix.listen(1)
        inets = [socket.socket(), socket.socket()]
        sockets += inets
        for inet in inets:
            inet.bind(("127.0.0.1", 0))
            inet.listen(1)
        inet_ours, _higher = sorted(inets, key=lambda sock: sock.getsockname()[1])
        assert _listener_fds(f"unix:{tmp_path}/milter.sock") == [sockets[0].fileno()]
        assert _listener_fds(f"inet:{inet_ours.getsockname()[1]}@127.0.0.1") == [inet_ours.fileno()]
    finally:
        for sock in sockets:
            sock.close()


def test_a_unix_socket_in_a_usable_directory_is_left_to_libmilter(tmp_path: Path) -> None:
    """The directory exists and root may write there: the problem is libmilter's own, said as such."""
    from govmilter.adapter import _listen_problem

    assert _listen_problem(f"unix:{tmp_path}/milter.sock") == (
        f"[milter] socket unix:{tmp_path}/milter.sock: libmilter cannot listen there"
    )


LISTEN_PROBLEM_AS_NOBODY = """
import os, sys
from govmilter.adapter import _listen_problem
os.setgroups([])
os.setresgid(65534, 65534, 65534)
os.setresuid(65534, 65534, 65534)  # access(2) checks the real uid: the service user's view, not root's
for directory in sys.argv[1:]:
    print(_listen_problem(f"unix:{directory}/milter.sock"))
"""


def test_the_socket_directory_must_be_writable_and_searchable_by_the_service_user() -> None:
    """As a user that is not root (root passes every access check): a directory it can only search,
    one it can only write, and one it can write and search."""
    import os
    import subprocess
    import sys
    import tempfile

    base = tempfile.mkdtemp(prefix="govmilter-socketdir.", dir="/tmp")  # not under pytest's 0700 tree
    try:
        os.chmod(base, 0o711)
        modes = {"search-only": 0o711, "write-only": 0o722, "usable": 0o733}
        for name, mode in modes.items():
            os.mkdir(f"{base}/{name}")
            os.chmod(f"{base}/{name}", mode)  # owned by root: "others" is the service user
        run = subprocess.run(
            [sys.executable, "-c", LISTEN_PROBLEM_AS_NOBODY, *(f"{base}/{name}" for name in modes)],
            capture_output=True,
            text=True,
            check=True,
        )
        assert run.stdout.splitlines() == [
            f"[milter] socket unix:{base}/search-only/milter.sock: the directory {base}/search-only"
            " is not writable by this user",
            f"[milter] socket unix:{base}/write-only/milter.sock: the directory {base}/write-only"
            " is not writable by this user",
            f"[milter] socket unix:{base}/usable/milter.sock: libmilter cannot listen there",
        ]
    finally:
        for name in ("search-only", "write-only", "usable"):
            if os.path.isdir(f"{base}/{name}"):
                os.rmdir(f"{base}/{name}")
        os.rmdir(base)


def test_the_sasl_login_reaches_the_envelope(runtime: Runtime) -> None:
    for login in ("officer1", None):
        ctx = TestCtx()
        if login is not None:
            ctx._setsymval("{auth_authen}", login)
        assert ctx._connect(ip="127.0.0.3") == Milter.CONTINUE
        assert ctx._envfrom("<a@bacninh.gov.vn>") == Milter.CONTINUE
        assert ctx._priv.tx.envelope.auth_user == (login or "")  # "" when the client did not log in
