"""Header-flood messages: the fields that matter hidden after thousands of filler fields."""

from __future__ import annotations

import base64
from collections.abc import Sequence

BOUNDARY = "flood-b1"
EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 48 + b"PE\x00\x00"
MARKER = "noi dung sau con lu truong"  # the body text, found only by a walk that read the Content-Type


def filler(count: int) -> list[tuple[str, str]]:
    """`count` harmless fields, none a trace, none of ours (Postfix limits Received: to 50 hops)."""
    return [(f"X-Filler-{i}", f"filler value {i}") for i in range(count)]


def multipart_fields(subject: str) -> list[tuple[str, str]]:
    return [
        ("Subject", subject),
        ("MIME-Version", "1.0"),
        ("Content-Type", f'multipart/mixed; boundary="{BOUNDARY}"'),
    ]


def multipart_body(filename: str = "baocao.exe", payload: bytes = EXE, text: str = MARKER) -> bytes:
    encoded = base64.encodebytes(payload).replace(b"\n", b"\r\n")
    return (
        f"--{BOUNDARY}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n".encode()
        + f"--{BOUNDARY}\r\nContent-Type: application/octet-stream; name=\"{filename}\"\r\n".encode()
        + f'Content-Disposition: attachment; filename="{filename}"\r\n'.encode()
        + b"Content-Transfer-Encoding: base64\r\n\r\n"
        + encoded
        + f"--{BOUNDARY}--\r\n".encode()
    )


def message_bytes(fields: Sequence[tuple[str, str]], body: bytes) -> bytes:
    head = "".join(f"{name}: {value}\r\n" for name, value in fields)
    return head.encode() + b"\r\n" + body
