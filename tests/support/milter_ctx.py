"""Driving the adapter through pymilter's own test context, with no MTA."""

from __future__ import annotations

import functools
from collections.abc import Iterator

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


def adapter_runtime(monkeypatch: pytest.MonkeyPatch, *settings: str) -> Iterator[Runtime]:
    """A runtime whose GovMilter the test context creates, without the checks that need services."""
    # pymilter's test context closes on NOREPLY: play an MTA that offers no no-reply steps
    monkeypatch.setattr(PymilterTestCtx, "default_opts", [Milter.CURR_ACTS, 0x1FFFFF & ~NO_REPLY_BITS, 0, 0])
    config = load_config(None, [f'rules.dir="{RULES}"', 'metrics.listen=""', *settings])
    rt = Runtime(config, skip=SERVICE_CHECKS)
    previous = Milter.factory
    Milter.factory = functools.partial(GovMilter, rt)
    yield rt
    Milter.factory = previous
