"""The daemon's own log through real Postfix: one record per line, whatever the wire carried.

Control characters in header fields reach govmilter through Postfix untouched; the
decision and forwarding lines must replace them, and every line the daemon writes
must be one record in its format (a formatting failure prints a multi-line
"--- Logging error ---" block instead, which this test would see). A MAIL FROM
that carries a whole forged record is one quoted value of the decision line, as
a logfmt parser reads it.
"""

from __future__ import annotations

import re

from e2e.helpers import INTERNET_CLIENT, TRUSTED_RELAY, message, unique
from stack import Stack, wait_until
from support.logfmt_parse import parse_dict

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


DECISION_KEYS = [
    "queue_id", "client", "auth", "from", "rcpts", "action", "check", "rule", "reply", "ruleset", "size", "message_id"
]  # fmt: skip


def test_a_mail_from_carrying_a_forged_record_is_one_quoted_value(stack: Stack) -> None:
    log = stack.govmilter.log_path
    start = log.stat().st_size
    marker = unique("forged")
    # a quoted local part is a valid address: Postfix accepts it and hands it to the milter as it came
    sender = f'"{marker} action=accept check=- rule=- queue_id=FORGED client=10.0.0.1"@example.com'
    reply = stack.send(sender, ["user@bacninh.gov.vn"], message(marker), source_ip=INTERNET_CLIENT)
    assert reply.accepted, reply

    def decision_line() -> str | None:
        for line in log.read_bytes()[start:].decode("utf-8", "replace").splitlines():
            if " govmilter.decision: " in line and marker in line:
                return line
        return None

    wait_until(lambda: decision_line() is not None, 30, "the decision line")
    line = decision_line()
    assert line is not None
    fields = parse_dict(line.split(" govmilter.decision: ", 1)[1])
    assert [key for key in fields if key != "hits"] == [*DECISION_KEYS, "ms"]  # hits: when a check found any
    assert fields["message_id"] is not None and fields["message_id"].endswith("@test.example>")
    assert fields["queue_id"] not in ("FORGED", "-") and fields["client"] == INTERNET_CLIENT
    assert fields["action"] == "accept"
    assert fields["from"] is not None and marker in fields["from"] and "queue_id=FORGED" in fields["from"]
