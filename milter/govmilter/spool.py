"""The message body, kept in memory while small and on disk past a threshold.

Memory does not grow with message size: every reader (the MIME walk, the
clamd stream) reads the spool back in chunks.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from typing import BinaryIO

CHUNK = 65536


class Spool:
    def __init__(self, directory: str | None, threshold: int):
        self._file = tempfile.SpooledTemporaryFile(max_size=threshold, dir=directory, prefix="govmilter-")
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self._file.seek(0, 2)
        self._file.write(chunk)
        self.size += len(chunk)

    def chunks(self, size: int = CHUNK) -> Iterator[bytes]:
        """The body from its start, in chunks; each call starts over.

        Each reader keeps its own position, so two readers may interleave.
        """
        position = 0
        while True:
            self._file.seek(position)
            block = self._file.read(size)
            if not block:
                return
            position += len(block)
            yield block

    def close(self) -> None:
        self._file.close()


def header_block(headers: Sequence[tuple[str, str]]) -> bytes:
    """Headers as they stood on the wire: `Name: value` CRLF each, then the empty line."""
    lines = []
    for name, value in headers:
        # every LF of a value is a fold (Postfix hands folds as LF); a CR before it is the sender's own
        value = value.replace("\n", "\r\n")
        lines.append(f"{name}: {value}\r\n".encode("utf-8", "surrogateescape"))
    lines.append(b"\r\n")
    return b"".join(lines)


def read_message_file(stream: BinaryIO) -> tuple[list[tuple[str, str]], Iterator[bytes]]:
    """Split a stored message into its header fields and its body chunks.

    Line ends become CRLF, as Postfix hands them to a milter.
    """
    head = bytearray()
    for line in iter(stream.readline, b""):
        if line in (b"\n", b"\r\n"):
            break
        head += line
    headers: list[tuple[str, str]] = []
    for raw_line in bytes(head).replace(b"\r\n", b"\n").split(b"\n"):
        text = raw_line.decode("utf-8", "surrogateescape")
        if not text:
            continue
        if text[0] in " \t" and headers:
            name, value = headers[-1]
            headers[-1] = (name, value + "\n" + text)
        elif ":" in text:
            name, _, value = text.partition(":")
            headers.append((name.strip(), value.lstrip(" ")))
        # a line that is neither a field nor a continuation is dropped, as Postfix would

    def body() -> Iterator[bytes]:
        pending = b""
        while True:
            block = stream.read(CHUNK)
            if not block:
                break
            block = pending + block
            # keep a trailing CR so that a CRLF split across chunks is not doubled
            pending = b"\r" if block.endswith(b"\r") else b""
            if pending:
                block = block[:-1]
            yield block.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        if pending:
            yield pending

    return headers, body()
