"""The decoded text of a message, all of it, in memory bounded by configuration.

The MIME walk writes the text of every body-text part (text/plain and
text/html, charset decoded) here, part after part. The first `memory_chars`
characters of the message stay in memory; the rest goes, as UTF-8, to one
temporary file that is unlinked from the start (in the spool directory when
one is given). Readers get each part's text back in pieces, in order, from
memory or disk: no check has to hold a large text whole, and no text is
dropped because it came late.

Only one part is written at a time (the walk is sequential), so each part's
spilled text is one contiguous byte range of the file.
"""

from __future__ import annotations

import codecs
import os
import tempfile
from collections.abc import Iterator
from typing import IO

_ENCODING = "utf-8"
_ERRORS = "surrogatepass"  # a lone surrogate from a codec goes to disk and back unchanged


class TextStore:
    """One message's text: memory up to a number of characters, then an unlinked file."""

    def __init__(self, memory_chars: int = 1048576, spool_dir: str | None = None):
        self.memory_left = max(0, memory_chars)
        self.spool_dir = spool_dir
        self._file: IO[bytes] | None = None
        self.disk_bytes = 0
        self.closed = False

    def append(self, data: bytes) -> tuple[int, int]:
        """Write bytes at the end of the spill file; return their (start, end) offsets."""
        if self.closed:
            raise ValueError("text store is closed")
        if self._file is None:
            self._file = _temporary(self.spool_dir)
        start = self.disk_bytes
        view = memoryview(data)
        while view:
            written = self._file.write(view)
            view = view[written or 0 :]
        self.disk_bytes += len(data)
        return start, self.disk_bytes

    def read(self, start: int, end: int, size: int) -> Iterator[bytes]:
        """The bytes [start, end) of the spill file, `size` at a time."""
        if self.closed or self._file is None:
            raise ValueError("text store is closed")
        fd = self._file.fileno()
        position = start
        while position < end:
            block = os.pread(fd, min(size, end - position), position)
            if not block:
                raise OSError("text spill file is shorter than written")
            position += len(block)
            yield block

    def text(self, start: int, end: int, size: int) -> Iterator[str]:
        """The text written to bytes [start, end) of the spill file, decoded, in pieces."""
        decoder = codecs.getincrementaldecoder(_ENCODING)(_ERRORS)
        for block in self.read(start, end, size):
            text = decoder.decode(block)
            if text:
                yield text
        tail = decoder.decode(b"", True)
        if tail:
            yield tail

    @property
    def spilled(self) -> bool:
        return self._file is not None

    def close(self) -> None:
        self.closed = True
        if self._file is not None:
            self._file.close()
            self._file = None


def _temporary(spool_dir: str | None) -> IO[bytes]:
    if spool_dir:
        try:
            return tempfile.TemporaryFile(dir=spool_dir, prefix="text-", buffering=0)
        except OSError:
            pass  # a spool directory that is not there (tests, `govmilter scan`): the system's
    return tempfile.TemporaryFile(prefix="govmilter-text-", buffering=0)


class TextWriter:
    """Writes one part's text into the store; `finish()` gives the part's segments."""

    def __init__(self, store: TextStore):
        self.store = store
        self.memory: list[str] = []
        self.length = 0
        self.disk: tuple[int, int] | None = None

    def write(self, text: str) -> None:
        if not text:
            return
        self.length += len(text)
        store = self.store
        if self.disk is None:
            take = min(len(text), store.memory_left)
            if take:
                self.memory.append(text if take == len(text) else text[:take])
                store.memory_left -= take
                if take == len(text):
                    return
                text = text[take:]
        start, end = store.append(text.encode(_ENCODING, _ERRORS))
        self.disk = (self.disk[0] if self.disk is not None else start, end)


def pieces(memory: list[str], store: TextStore | None, disk: tuple[int, int] | None, size: int) -> Iterator[str]:
    """A part's text in order, in pieces of at most `size` characters (memory, then disk)."""
    size = max(1, size)
    for text in memory:
        if len(text) <= size:
            yield text
        else:
            for i in range(0, len(text), size):
                yield text[i : i + size]
    if disk is None or store is None:
        return
    yield from store.text(disk[0], disk[1], size)
