"""Driving the adapter through pymilter's own test context, with no MTA.

pymilter's TestCtx carries no message object when its callbacks are called one by one, so its
addheader and chgheader raise: RecordingCtx plays an MTA that takes header changes at end of
message (and only there, as libmilter does) and records every action and reply the milter asked.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Iterator, Sequence

import Milter
import pytest
from Milter.testctx import TestCtx as PymilterTestCtx

from govmilter.adapter import GovMilter
from govmilter.config import load_config
from govmilter.pipeline import CHECK_NAMES
from govmilter.runtime import Runtime
from support.harness import RULES

NO_REPLY_BITS = (
    Milter.P_NR_CONN | Milter.P_NR_HELO | Milter.P_NR_MAIL | Milter.P_NR_RCPT | Milter.P_NR_DATA
    | Milter.P_NR_UNKN | Milter.P_NR_EOH | Milter.P_NR_BODY | Milter.P_NR_HDR
)  # fmt: skip
SERVICE_CHECKS = [name for name in ("antivirus", "dnsbl") if name in CHECK_NAMES]  # need clamd / DNS


class TestCtx(PymilterTestCtx):  # type: ignore[misc]
    __test__ = False

    def _connect(self, host: str = "localhost", helo: str = "spamrelay", ip: str = "1.2.3.4") -> int:
        # as Postfix does: the client's address and name are macros of every stage
        self._setsymval("{client_addr}", ip)
        self._setsymval("{client_name}", host)
        return int(super()._connect(host, helo, ip))


class RecordingCtx(TestCtx):
    """An MTA that applies nothing and records what the milter asked: header changes and replies."""

    __test__ = False

    def __init__(self) -> None:
        super().__init__()
        self.added: list[tuple[str, str, int]] = []  # (name, value, index) of each addheader
        self.changed: list[tuple[str, int, str]] = []  # (name, occurrence, value) of each chgheader
        self.replies: list[tuple[str, ...]] = []  # every setreply, in order
        self.actions: list[tuple[str, str]] = []  # (action, header name) of each change, in order

    def _only_at_end_of_message(self, action: str) -> None:
        if self._stage != Milter.M_EOM:  # libmilter refuses message changes before end of message
            raise OSError(f"{action} not called from eom()")

    def addheader(self, field: str, value: str, idx: int) -> None:
        self._only_at_end_of_message("addheader")
        self.added.append((field, value, idx))
        self.actions.append(("addheader", field))

    def chgheader(self, field: str, idx: int, value: str) -> None:
        self._only_at_end_of_message("chgheader")
        self.changed.append((field, idx, value))
        self.actions.append(("chgheader", field))

    def setreply(self, rcode: str, xcode: str | None, *msg: str) -> None:
        self.replies.append((rcode, xcode or "", *msg))
        super().setreply(rcode, xcode, *msg)


def drive(
    ctx: TestCtx,
    fields: Sequence[tuple[str, str]],
    body: bytes,
    sender: str = "a@example.com",
    rcpts: Sequence[str] = ("user@bacninh.gov.vn",),
    ip: str = "127.0.0.3",
    params: Sequence[str] = (),
    queue_id: str = "4DRIVE",
) -> int:
    """One transaction as libmilter drives it; the first answer that is not CONTINUE, or the end's."""
    ctx._setsymval("i", queue_id)
    assert ctx._connect(ip=ip) == Milter.CONTINUE
    rc = ctx._envfrom(f"<{sender}>", *params)
    if rc != Milter.CONTINUE:
        return int(rc)
    for rcpt in rcpts:
        ctx._envrcpt(f"<{rcpt}>")  # a no-reply step: its answer is not read
    for name, value in fields:
        ctx._priv.header(name, value)  # likewise
    rc = ctx._eoh()
    if rc != Milter.CONTINUE:
        return int(rc)
    ctx._body = io.BytesIO()
    rc = ctx._feed_body(io.BytesIO(body))
    if rc != Milter.CONTINUE:
        return int(rc)
    return int(ctx._eom())


def adapter_runtime(monkeypatch: pytest.MonkeyPatch, *settings: str) -> Iterator[Runtime]:
    """A runtime whose GovMilter the test context creates, without the checks that need services."""
    # pymilter's test context closes on NOREPLY: play an MTA that offers no no-reply steps
    monkeypatch.setattr(PymilterTestCtx, "default_opts", [Milter.CURR_ACTS, 0x1FFFFF & ~NO_REPLY_BITS, 0, 0])
    # 127.0.0.1 plays a mailbox server in these tests, not the gateway host ([network] gateway_host)
    # rules.last_good_dir="": no copy kept, never in the host's /var/lib/govmilter (a gateway's state)
    config = load_config(None, [f'rules.dir="{RULES}"', 'metrics.listen=""', "network.gateway_host=[]",
                                'rules.last_good_dir=""', *settings])
    rt = Runtime(config, skip=SERVICE_CHECKS)
    previous = Milter.factory
    Milter.factory = functools.partial(GovMilter, rt)
    yield rt
    Milter.factory = previous
