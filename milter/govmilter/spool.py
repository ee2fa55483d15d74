"""The raw message, kept in memory while small and on disk past a threshold.

The header block is written as its fields arrive (every field, however many),
then the empty line, then the body: what the MIME walk and clamd read is the
message as it came, never a rebuilt or truncated copy. Memory does not grow
with message size: every reader streams the spool back in chunks.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterator, Sequence
from typing import BinaryIO

from govmilter.model import header_block as header_block  # re-exported: the wire form of fields
from govmilter.model import header_line as header_line

CHUNK = 65536
_LF = "\n"
_CRLF = "\r\n"


class Spool:
    """Header block, then body: in memory up to `threshold` bytes, then in an unnamed temporary file.

    Header fields come as the (name, value) pairs the milter hands over: a batch at once
    (write_fields), or one at a time (add_header), waiting in a small in-memory list that is
    written every CHUNK characters (nothing is built, encoded or written per field). Either
    way they are written as header_block writes them. end_headers() writes the empty line
    and marks where the body starts.
    """

    def __init__(self, directory: str | None, threshold: int):
        # what tempfile.SpooledTemporaryFile does, without its cost per message (~4 us to create one)
        self._memory: io.BytesIO | None = io.BytesIO()
        self._file: BinaryIO = self._memory
        self._directory = directory
        self._threshold = threshold
        self._pending: list[tuple[str, str]] = []  # header fields not yet in the file
        self._pending_chars = 0
        self._at_end = True  # the file position is at its end: a write needs no seek
        self.size = 0  # bytes in the file (header block and body)
        self.body_offset: int | None = None  # where the body starts, once the headers have ended

    def add_header(self, name: str, value: str) -> None:
        """One header field, after every field written before it."""
        self._pending.append((name, value))
        self._pending_chars += len(name) + len(value) + 4
        if self._pending_chars >= CHUNK:
            self._flush()

    def write_fields(self, fields: Sequence[tuple[str, str]]) -> None:
        """Header fields, after every field written before them."""
        self._flush()
        self._write_fields(fields)

    def _flush(self) -> None:
        if self._pending:
            self._write_fields(self._pending)
            self._pending.clear()
            self._pending_chars = 0

    def _write_fields(self, fields: Sequence[tuple[str, str]]) -> None:
        # `Name: value` CRLF each, every fold a CRLF: header_line's bytes, one encoding for them all
        text = "".join([f"{n}: {v}\r\n" if "\n" not in v else f"{n}: {v.replace(_LF, _CRLF)}\r\n" for n, v in fields])
        self._append(text.encode("utf-8", "surrogateescape"))

    def end_headers(self) -> None:
        """Write the empty line that ends the header block; later calls do nothing."""
        if self.body_offset is None:
            self._flush()
            self._append(b"\r\n")
            self.body_offset = self.size

    def write(self, chunk: bytes) -> None:
        """Append body bytes (the header block ends first, if it has not)."""
        if self.body_offset is None:
            self.end_headers()
        self._append(chunk)

    def chunks(self, size: int = CHUNK, start: int = 0) -> Iterator[bytes]:
        """The spool from byte `start` (the header block and the body), in chunks; each call starts over.

        Each reader keeps its own position, so two readers may interleave.
        """
        self._flush()
        position = start
        while True:
            self._file.seek(position)
            self._at_end = False
            block = self._file.read(size)
            if not block:
                return
            position += len(block)
            yield block

    def body_chunks(self, size: int = CHUNK) -> Iterator[bytes]:
        """The body alone, from its start, in chunks (nothing before the headers have ended)."""
        if self.body_offset is None:
            return iter(())
        return self.chunks(size, self.body_offset)

    @property
    def on_disk(self) -> bool:
        return self._memory is None

    @property
    def closed(self) -> bool:
        return self._file.closed

    def close(self) -> None:
        self._pending.clear()
        self._memory = None
        self._file.close()

    def _append(self, data: bytes) -> None:
        if not self._at_end:
            self._file.seek(0, 2)
            self._at_end = True
        self._file.write(data)
        self.size += len(data)
        if self._memory is not None and self.size > self._threshold:
            self._to_disk(self._memory)

    def _to_disk(self, memory: io.BytesIO) -> None:
        disk = tempfile.TemporaryFile(dir=self._directory, prefix="govmilter-")
        try:
            disk.write(memory.getbuffer())
        except BaseException:
            disk.close()
            raise
        self._file = disk  # positioned at its end
        self._at_end = True
        self._memory = None
        memory.close()


def iter_message_file(stream: BinaryIO) -> tuple[Iterator[tuple[str, str]], Iterator[bytes]]:
    """Split a stored message into its header fields and its body chunks, both streamed.

    Consume the fields before the body (they share the stream). One field is held at a time,
    as Postfix hands them to a milter: `(name, value)`, a fold kept as LF in the value.
    Line ends of the body become CRLF, as Postfix hands them to a milter.
    """

    def fields() -> Iterator[tuple[str, str]]:
        current: tuple[str, str] | None = None
        for line in iter(stream.readline, b""):
            if line in (b"\n", b"\r\n"):
                break
            if line.endswith(b"\n"):
                line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
            text = line.decode("utf-8", "surrogateescape")
            if not text:
                continue
            if text[0] in " \t" and current is not None:
                current = (current[0], current[1] + "\n" + text)
            elif ":" in text:
                if current is not None:
                    yield current
                name, _, value = text.partition(":")
                current = (name.strip(), value.lstrip(" "))
            # a line that is neither a field nor a continuation is dropped, as Postfix would
        if current is not None:
            yield current

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

    return fields(), body()


def read_message_file(stream: BinaryIO) -> tuple[list[tuple[str, str]], Iterator[bytes]]:
    """iter_message_file with the header fields in a list (small messages, tests)."""
    fields, body = iter_message_file(stream)
    return list(fields), body
