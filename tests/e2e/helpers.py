"""Building test messages for the end-to-end tests."""

from __future__ import annotations

import email.message
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stack import Stack, wait_until

# 127.0.0.1 is the trusted internal relay; 127.0.0.2 is listed by every DNS blocklist (RFC 5782),
# so a clean Internet client sends from 127.0.0.3
TRUSTED_RELAY = "127.0.0.1"
LISTED_CLIENT = "127.0.0.2"
INTERNET_CLIENT = "127.0.0.3"


def unique(prefix: str = "t") -> str:
    """A marker to find one test's message in the sink."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def message(subject: str, body: str = "Xin chao.\r\n", headers: dict[str, str] | None = None,
            mail_from: str = "sender@example.com", to: str = "user@bacninh.gov.vn") -> bytes:
    marker = unique()
    lines = [
        f"From: <{mail_from}>",
        f"To: <{to}>",
        f"Subject: {subject}",
        f"Message-ID: <{marker}@test.example>",
        "Date: Mon, 23 Nov 2026 10:00:00 +0700",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
    ]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def _lab_available() -> str | None:
    if os.geteuid() != 0:
        return "the loopback stack runs Postfix and must start as root"
    for tool in ("postfix", "clamd", "dnsmasq"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            return f"{tool} is not installed (make test installs it)"
    return None


def running_stack(prefix: str, **options: Any) -> Iterator[Stack]:
    """A started private stack in a directory of its own, stopped and removed afterwards."""
    reason = _lab_available()
    if reason:
        pytest.fail(reason)  # never skip silently: e2e tests are part of the suite
    # not under pytest's tmp: that is root-only, and the postfix user must reach its files
    root = Path(tempfile.mkdtemp(prefix=prefix))
    lab = Stack(root, **options)
    try:
        lab.start()
        yield lab
    finally:
        lab.stop()
        if not os.environ.get("GOVMILTER_KEEP_STACK"):
            shutil.rmtree(root, ignore_errors=True)


def wait_for_queue_id_in_log(stack: Stack, delivered: email.message.Message, log_from: int) -> None:
    """The queue id Postfix gave the message (its Received line) appears in govmilter's decision line."""
    found = re.search(r"with E?SMTP id (\w+)", delivered["Received"])
    assert found, delivered["Received"]
    log = stack.govmilter.log_path
    wait_until(lambda: f"queue_id={found.group(1)} " in log.read_text()[log_from:], 30, "the decision line")
