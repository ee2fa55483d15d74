"""Build MIME messages for tests, small in memory or big straight into a file.

Everything is written with CRLF line ends, as Postfix hands a message to a
milter. Big attachments are streamed into the file block by block, so a test
of the 20 MiB cap never holds the message in memory and commits no big file.
"""

from __future__ import annotations

import base64
import binascii
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

TOP = (
    b"From: Nguoi gui <sender@example.com>\r\n"
    b"To: user@bacninh.gov.vn\r\n"
    b"Subject: test\r\n"
    b"Message-ID: <test@example.com>\r\n"
    b"MIME-Version: 1.0\r\n"
)
BLOCK = 57 * 1024  # base64 blocks of whole 76-character lines


def b64(data: bytes, line: int = 76) -> bytes:
    text = base64.b64encode(data)
    return b"".join(text[i : i + line] + b"\r\n" for i in range(0, len(text), line))


def qp(data: bytes) -> bytes:
    """Binary-safe quoted-printable: CR and LF are escaped, lines end in soft breaks."""
    return binascii.b2a_qp(data, quotetabs=True, istext=False).replace(b"\n", b"\r\n")


def leaf(
    body: bytes,
    content_type: str = "application/octet-stream",
    filename: str = "",
    encoding: str = "base64",
    disposition: str = "attachment",
    extra: Sequence[bytes] = (),
) -> bytes:
    """One MIME entity: headers, empty line, body encoded as asked."""
    headers = [f"Content-Type: {content_type}".encode()]
    if filename:
        headers[0] += f'; name="{filename}"'.encode()
    if disposition:
        value = disposition + (f'; filename="{filename}"' if filename else "")
        headers.append(f"Content-Disposition: {value}".encode())
    if encoding:
        headers.append(f"Content-Transfer-Encoding: {encoding}".encode())
    headers.extend(extra)
    if encoding == "base64":
        encoded = b64(body)
    elif encoding == "quoted-printable":
        encoded = qp(body)
    else:
        encoded = body
    return b"\r\n".join(headers) + b"\r\n\r\n" + encoded


def multipart(*parts: bytes, subtype: str = "mixed", boundary: str = "") -> bytes:
    boundary = boundary or f"=_b{random.getrandbits(48):x}"
    out = [f'Content-Type: multipart/{subtype}; boundary="{boundary}"\r\n\r\n'.encode()]
    out.append(b"This is a multi-part message in MIME format.\r\n")
    for part in parts:
        out.append(f"--{boundary}\r\n".encode() + part + b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out)


def message(entity: bytes, top: bytes = TOP) -> bytes:
    return top + entity


def text(body: str, subtype: str = "plain", charset: str = "utf-8", encoding: str = "8bit") -> bytes:
    data = body.replace("\n", "\r\n").encode(charset)
    return leaf(data, f"text/{subtype}; charset={charset}", encoding=encoding, disposition="")


def random_bytes(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


# ---- big messages, streamed into a file -------------------------------------------------


@dataclass(frozen=True)
class Attachment:
    size: int
    filename: str = "tai-lieu.pdf"
    content_type: str = "application/pdf"
    encoding: str = "base64"
    seed: int = 1


_NO_LINE_ENDS = bytes.maketrans(b"\r\n", b"rn")


def _blocks(size: int, seed: int, lines: bool = True) -> Iterator[bytes]:
    rng = random.Random(seed)
    left = size
    while left > 0:
        block = rng.randbytes(min(BLOCK, left))
        left -= len(block)
        # unencoded content travels as lines: a bare CR or LF would become CRLF on the way
        yield block if lines else block.translate(_NO_LINE_ENDS)


def write_message(path: Path, attachments: Sequence[Attachment], body: str = "Kinh gui anh chi.") -> Path:
    """A multipart/mixed message with a text part and these attachments, written block by block."""
    boundary = b"=_big_boundary_0123456789"
    with path.open("wb") as out:
        out.write(TOP + b'Content-Type: multipart/mixed; boundary="' + boundary + b'"\r\n\r\n')
        out.write(b"--" + boundary + b"\r\n" + text(body) + b"\r\n")
        for item in attachments:
            head = leaf(b"", item.content_type, item.filename, item.encoding)
            out.write(b"--" + boundary + b"\r\n" + head)
            for block in _blocks(item.size, item.seed, item.encoding in ("base64", "quoted-printable")):
                if item.encoding == "base64":
                    out.write(b64(block))
                elif item.encoding == "quoted-printable":
                    out.write(qp(block) + b"=\r\n")  # a soft break between blocks keeps lines short
                else:
                    out.write(block)
            out.write(b"\r\n")
        out.write(b"--" + boundary + b"--\r\n")
    return path


def file_chunks(path: Path, size: int = 65536) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while block := handle.read(size):
            yield block
