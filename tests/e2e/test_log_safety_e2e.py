"""The daemon's own log through real Postfix: one record per line, whatever the wire carried.

Control characters in header fields reach govmilter through Postfix untouched; the
decision and forwarding lines must replace them, and every line the daemon writes
must be one record in its format (a formatting failure prints a multi-line
"--- Logging error ---" block instead, which this test would see).
"""

from __future__ import annotations

import re

from e2e.helpers import INTERNET_CLIENT, TRUSTED_RELAY, message, unique
from stack import Stack, wait_until

RECORD = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} govmilter\[\d+\] (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: \S"
)
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def test_wire_control_characters_never_break_a_log_line(stack: Stack) -> None:
    log = stack.govmilter.log_path
    start = log.stat().st_size
    forwarder = f"{unique('fwd')}\x1bx@gmail.com"
    inbound = message(
        f"{unique()} \x1b[31mdo\x07",
        headers={"X-Sieve-Redirected-From": f"<{forwarder}>", "X-Note": "a\x7fb\x0bc\x1b]0;title\x07"},
    )
    reply = stack.send("sender@example.com", ["user@bacninh.gov.vn"], inbound, source_ip=INTERNET_CLIENT)
    assert reply.code == 550, reply  # an inbound automatic forward by a gmail.com mailbox
    outbound = message(f"{unique()} \x1b[2J", headers={"X-Mailer": "x\x1b[1;1Hqueue_id=FORGED action=accept"})
    reply = stack.send("officer@bacninh.gov.vn", ["partner@example.com"], outbound, source_ip=TRUSTED_RELAY)
    assert reply.accepted, reply
    cleaned = forwarder.replace("\x1b", "?")

    def logged() -> bool:
        text = log.read_bytes()[start:].decode("utf-8", "replace")
        return f"forwarder={cleaned}" in text and text.count("govmilter.decision: ") >= 2

    wait_until(logged, 30, "the decision lines")
    lines = log.read_bytes()[start:].decode("utf-8", "replace").splitlines()
    assert lines
    for line in lines:
        assert RECORD.match(line), line
        assert not CONTROL.search(line), line
