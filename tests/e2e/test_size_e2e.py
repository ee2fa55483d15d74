"""The 20 MB attachment cap through real Postfix: the replies the sending client sees.

- SIZE= declared above the raw ceiling: refused at MAIL FROM, no byte of the body sent;
- no SIZE=, body past the raw ceiling: refused at the body chunk that passed it (the
  milter reads no further; SMTP makes the client finish DATA, then it gets 552);
- raw size under the ceiling but decoded attachments over 20 MiB: refused at end of DATA;
- 1 KiB under the cap: delivered.
"""

from __future__ import annotations

import re
from pathlib import Path

from e2e.helpers import INTERNET_CLIENT, unique
from govmilter.checks.size import derived_raw_ceiling
from mimebuild import TOP, Attachment, write_message
from stack import Stack

LIMIT = 20 * 1024 * 1024
CEILING = derived_raw_ceiling(LIMIT)


def big_message(tmp_path: Path, marker: str, size: int) -> bytes:
    path = write_message(tmp_path / f"{marker}.eml", [Attachment(size, "ho so.pdf")], body=f"marker {marker}")
    top = TOP.replace(b"Subject: test", f"Subject: {marker}".encode())
    top = top.replace(b"<test@example.com>", f"<{marker}@test.example>".encode())
    return path.read_bytes().replace(TOP, top, 1)


def send(stack: Stack, data: bytes, size: int | None = None):  # type: ignore[no-untyped-def]
    return stack.send("sender@example.com", ["user@bacninh.gov.vn"], data, source_ip=INTERNET_CLIENT, size=size)


def milter_log_line(stack: Stack, reply_rule: str) -> str:
    lines = [line for line in stack.govmilter.log_path.read_text().splitlines() if f"rule={reply_rule}" in line]
    assert lines, f"no decision logged with rule={reply_rule}"
    return lines[-1]


def test_declared_size_is_refused_at_mail_from_with_the_numbers(stack: Stack, tmp_path: Path) -> None:
    reply = send(stack, b"Subject: x\r\n\r\nx\r\n", size=CEILING + 1)
    assert (reply.stage, reply.code) == ("mail", 552), reply
    assert reply.text.startswith("5.3.4 ")
    assert str(CEILING + 1) in reply.text and str(CEILING) in reply.text and str(LIMIT) in reply.text
    assert "QD 06/2022 Dieu 5.1" in reply.text


def test_undeclared_oversized_body_is_refused_mid_body(stack: Stack, tmp_path: Path) -> None:
    marker = unique("rawbig")
    data = big_message(tmp_path, marker, 25 * 1024 * 1024)  # base64: about 34 MB on the wire
    assert len(data) > CEILING
    reply = send(stack, data)
    assert (reply.stage, reply.code) == ("data", 552), reply
    assert reply.text.startswith("5.3.4 ") and "QD 06/2022 Dieu 5.1" in reply.text
    assert str(CEILING) in reply.text
    # the milter stopped at the chunk that passed the ceiling: it never saw the whole message
    line = milter_log_line(stack, "raw-size")
    seen = int(re.search(r" size=(\d+)", line).group(1))  # type: ignore[union-attr]
    assert CEILING < seen < len(data)


def test_attachments_over_the_cap_are_refused_at_end_of_data(stack: Stack, tmp_path: Path) -> None:
    marker = unique("capover")
    data = big_message(tmp_path, marker, LIMIT + 1024)
    assert len(data) < CEILING  # only the decoded count can tell
    reply = send(stack, data)
    assert (reply.stage, reply.code) == ("data", 552), reply
    assert reply.text.startswith("5.3.4 ")
    assert f"gioi han {LIMIT} byte" in reply.text and f"{LIMIT + 1024} byte" in reply.text
    assert "QD 06/2022 Dieu 5.1" in reply.text


def test_attachments_just_under_the_cap_are_delivered(stack: Stack, tmp_path: Path) -> None:
    marker = unique("capunder")
    reply = send(stack, big_message(tmp_path, marker, LIMIT - 1024))
    assert reply.accepted, reply
    delivered = stack.sink.find(marker, timeout=120)
    assert delivered.message["X-Govmilter"]
