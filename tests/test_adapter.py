"""The adapter driven through pymilter's own test context (no MTA): replies and return codes."""

from __future__ import annotations

import io
from collections.abc import Iterator

import Milter
import pytest
from Milter.testctx import TestCtx as PymilterTestCtx

from govmilter.adapter import GovMilter
from govmilter.model import Stage, Transaction, Verdict
from govmilter.runtime import Runtime
from milter_ctx import TestCtx, adapter_runtime


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
    class Exploding:
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
    from govmilter.adapter import _reply_text

    assert _reply_text("50% off\r\nX: y") == "50  off  X: y"


def negotiated(ctx: TestCtx) -> int:
    assert ctx._negotiate() == Milter.CONTINUE
    return int(ctx._protocol)


def test_postfix_need_not_send_connect_helo_nor_data_over_a_unix_socket(runtime: Runtime) -> None:
    protocol = negotiated(TestCtx())
    assert protocol & Milter.P_NOCONNECT and protocol & Milter.P_NOHELO and protocol & Milter.P_NODATA


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
        assert protocol & Milter.P_NOHELO
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
    assert ctx._symlist[Milter.M_ENVFROM] == {b"i", b"{auth_authen}", b"{client_addr}", b"{client_name}"}
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

    class AtEndOfHeaders:
        name = "at-end-of-headers"
        stages = frozenset({Stage.HEADERS})

        def run(self, stage: Stage, tx: Transaction) -> list[Verdict]:
            return []

    runtime.pipeline.__init__([*runtime.pipeline.checks, AtEndOfHeaders()], runtime.metrics)  # type: ignore[misc]
    assert milter.protocol_mask() & Milter.P_NOEOH  # a check runs there: the step is kept
