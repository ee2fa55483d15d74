"""The 20 MB attachment cap through real Postfix: the replies the sending client sees.

- SIZE= declared above the raw ceiling: refused at MAIL FROM, no byte of the body sent;
- no SIZE=, body past the raw ceiling: refused at the body chunk that passed it (the
  milter reads no further; SMTP makes the client finish DATA, then it gets 552);
- raw size under the ceiling but decoded attachments over 20 MiB: refused at end of DATA;
- 1 KiB under the cap: delivered;
- each kind of attachment that is not called one (a nameless text/csv leaf, a yEnc block,
  a data: URI, an attached message with an 8bit body) at 21 MiB: refused, at 19 MiB: delivered;
- a part with two different Content-Type fields: 554 5.6.0; a zip of 2 GiB of zeros: 550 5.7.1,
  answered from its directory before clamd is asked.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from e2e.helpers import INTERNET_CLIENT, unique
from govmilter.checks.size import derived_raw_ceiling
from stack import Stack
from support.mimebuild import BLOCK, TOP, Attachment, b64, leaf, message, multipart, text, write_message
from support.zipbomb import zip_of_zeros

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


# ---- issue 14: every class of attachment, ambiguous structure, zip bombs ---------------------

MIB = 1024 * 1024
CLASS_NAMES = ("text-csv", "yenc", "data-uri", "attached-message")


def _top(marker: str) -> bytes:
    return TOP.replace(b"Subject: test", f"Subject: {marker}".encode()).replace(
        b"<test@example.com>", f"<{marker}@test.example>".encode()
    )


def _yenc_lines(block: bytes) -> bytes:
    """yEnc of a block, vectorised: `=` first, then the bytes that may not travel raw."""
    shifted = block.translate(bytes((b + 42) & 255 for b in range(256)))
    shifted = shifted.replace(b"=", b"=}")
    for value in (0, 10, 13):
        shifted = shifted.replace(bytes((value,)), bytes((61, value + 64)))
    return b"".join(shifted[i : i + 128] + b"\r\n" for i in range(0, len(shifted), 128))


def write_class_message(path: Path, kind: str, marker: str, size: int) -> Path:
    """A message whose only big content is `size` bytes of one attachment class."""
    boundary = b"=_evasion_0123456789abcdef"
    rng = random.Random(size)
    with path.open("wb") as out:
        out.write(_top(marker) + b'Content-Type: multipart/mixed; boundary="' + boundary + b'"\r\n\r\n')
        out.write(b"--" + boundary + b"\r\n" + text(f"marker {marker}") + b"\r\n--" + boundary + b"\r\n")
        left = size
        if kind == "text-csv":
            out.write(b"Content-Type: text/csv; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n")
        elif kind == "yenc":
            out.write(b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n")
            out.write(b"Tep dinh kem:\r\n=ybegin line=128 size=%d name=so-lieu.bin\r\n" % size)
        elif kind == "data-uri":
            out.write(b"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n")
            out.write(b'<p>Kinh gui</p><img src="data:image/png;base64,\r\n')
        else:  # an attached .eml whose own body is 8bit text
            out.write(b"Content-Type: message/rfc822\r\n\r\nFrom: a@example.com\r\nSubject: fwd\r\n\r\n")
        line = b"Noi dung thu chuyen tiep, bao cao so lieu thang. " * 2 + b"\r\n"
        while left > 0:
            block = rng.randbytes(min(BLOCK, left))
            if kind == "attached-message":
                block = (line * (len(block) // len(line) + 1))[: len(block)]
            left -= len(block)
            if kind in ("text-csv", "data-uri"):
                out.write(b64(block))
            elif kind == "yenc":
                out.write(_yenc_lines(block))
            else:
                out.write(block)
        if kind == "yenc":
            out.write(b"=yend size=%d\r\n" % size)
        elif kind == "data-uri":
            out.write(b'"><p>Tran trong</p>\r\n')
        out.write(b"\r\n--" + boundary + b"--\r\n")
    return path


@pytest.fixture(scope="module")
def class_messages(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, int], tuple[str, Path]]:
    """Each class at 21 MiB and 19 MiB, built once for the module."""
    directory = tmp_path_factory.mktemp("classes")
    built = {}
    for kind in CLASS_NAMES:
        for size in (21 * MIB, 19 * MIB):
            marker = unique(f"{kind}-{size // MIB}")
            built[kind, size] = (marker, write_class_message(directory / f"{marker}.eml", kind, marker, size))
    return built


@pytest.mark.parametrize("kind", CLASS_NAMES)
def test_each_attachment_class_over_the_cap_is_refused(
    stack: Stack, class_messages: dict[tuple[str, int], tuple[str, Path]], kind: str
) -> None:
    _, path = class_messages[kind, 21 * MIB]
    data = path.read_bytes()
    assert len(data) < CEILING  # only the decoded count can tell
    reply = send(stack, data)
    assert (reply.stage, reply.code) == ("data", 552), reply
    assert reply.text.startswith("5.3.4 ") and f"gioi han {LIMIT} byte" in reply.text


@pytest.mark.parametrize("kind", CLASS_NAMES)
def test_each_attachment_class_under_the_cap_is_delivered(
    stack: Stack, class_messages: dict[tuple[str, int], tuple[str, Path]], kind: str
) -> None:
    marker, path = class_messages[kind, 19 * MIB]
    reply = send(stack, path.read_bytes())
    assert reply.accepted, reply
    assert stack.sink.find(marker, timeout=120).message["X-Govmilter"]


def test_a_second_different_content_type_is_refused_as_malformed(stack: Stack) -> None:
    marker = unique("dupct")
    part = (
        b"Content-Type: text/plain\r\nContent-Type: application/x-msdownload; name=\"a.exe\"\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + b64(b"MZ" + bytes(200))
    )
    data = _top(marker) + b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n' + part + b"--b--\r\n"
    reply = send(stack, data)
    assert (reply.stage, reply.code) == ("data", 554), reply
    assert reply.text.startswith("5.6.0 ") and "Content-Type" in reply.text
    assert "rule=duplicate-content-type" in milter_log_line(stack, "duplicate-content-type")


def test_a_zip_bomb_is_refused_before_clamd(stack: Stack) -> None:
    marker = unique("zipbomb")
    bomb = zip_of_zeros(2 << 30)  # 2 GiB of zeros in about 2 MB
    data = message(multipart(text(f"marker {marker}"), leaf(bomb, "application/zip", "bang-luong.zip")), _top(marker))
    assert 2_000_000 < len(data) < 3_500_000
    reply = send(stack, data)
    assert (reply.stage, reply.code) == ("data", 550), reply
    assert reply.text.startswith("5.7.1 ") and "zip bomb" in reply.text
    line = milter_log_line(stack, "archive-bomb")
    assert "check=attachments" in line
