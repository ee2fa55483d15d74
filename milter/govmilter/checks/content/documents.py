"""The text of attached documents: .txt, Office Open XML (.docx .xlsx .pptx) and PDF.

Which parts are documents is decided by their true type (Part.head and the zip
directory the MIME walk read), never by the name alone:

- pdf: the decoded content starts with `%PDF-` (within its first 1024 bytes, as
  PDF readers accept);
- ooxml: a zip whose directory holds `[Content_Types].xml` and `word/`, `xl/`
  or `ppt/` members; an Office file encrypted with a password is not a zip but
  an OLE2 container, and is recognised as such by its name (`encrypted`);
- text: a text/plain attachment, or any part named `*.txt`, that is not part of
  the message's own body text (which the body rules read already).

Text comes out as pieces (an iterator of str), so that the content check reads
a document in windows, in memory bounded by its window whatever the document's
size. Every document has a budget: `max_bytes` bytes read (the decoded file,
the decompressed XML of an Office file, the text pdftotext writes) and
`seconds` of wall-clock time for pdftotext, which runs under `prlimit` with an
address-space limit. A document that cannot be read within its budget, or is
encrypted or damaged, raises Unreadable with a short reason: the content check
records it as the hit `document-unreadable` under [content] document_unreadable.
"""

from __future__ import annotations

import codecs
import math
import os
import re
import selectors
import shutil
import struct
import subprocess
import tempfile
import time
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, BinaryIO
from xml.parsers import expat

from govmilter.mime.archives import looks_like_zip
from govmilter.model import Part

OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # an encrypted Office Open XML file is an OLE2 container
_OOXML_NAMES = (".docx", ".docm", ".xlsx", ".xlsm", ".pptx", ".pptm")
_OOXML_ROOTS = ("word/", "xl/", "ppt/")
# the members that hold text people read, in reading order within each kind
_TEXT_MEMBER = re.compile(
    r"^(?:word/(?:document|header\d*|footer\d*|footnotes|endnotes|comments)\.xml"
    r"|xl/(?:sharedStrings|worksheets/sheet\d+|comments\d*)\.xml"
    r"|ppt/(?:slides/slide\d+|notesSlides/notesSlide\d+|comments/comment\d+)\.xml)$"
)
MAX_MEMBERS = 10000  # entries in an Office file's zip directory; more is no Office document
PIECE = 65536  # bytes read at a time
# XML elements whose character data is text (w:t, a:t, spreadsheet t, deleted tracked text)
_TEXT_ELEMENTS = frozenset({"t", "delText"})
_LINE_ELEMENTS = frozenset({"p", "si", "br", "cr", "tr", "row"})  # their end is a line break
_SPACE_ELEMENTS = frozenset({"tab", "tc", "c"})  # their end is a space


class Unreadable(Exception):
    """A document whose text could not be read whole; str() is the reason (short, ASCII)."""


@dataclass(frozen=True)
class Budget:
    max_bytes: int = 33554432
    max_count: int = 10
    seconds: float = 10.0
    memory: int = 536870912  # address space of pdftotext


@dataclass(frozen=True)
class Document:
    path: str  # Part.path
    name: str  # the file name, for the log ("" when none)
    kind: str  # text | ooxml | pdf | encrypted-ooxml
    size: int  # decoded bytes


def kind_of(part: Part) -> str | None:
    """The document kind of a MIME leaf, or None when it is no document we read."""
    head = part.head
    name = part.filename.lower()
    if b"%PDF-" in head[:1024]:
        return "pdf"
    if looks_like_zip(head):
        names = part.archive_names
        if "[Content_Types].xml" in names and any(n.startswith(_OOXML_ROOTS) for n in names):
            return "ooxml"
        return None
    if head.startswith(OLE2) and name.endswith(_OOXML_NAMES):
        return "encrypted-ooxml"
    body_text = part.content_type in ("text/plain", "text/html") and part.disposition != "attachment"
    if not body_text and (part.content_type == "text/plain" or name.endswith(".txt")):
        return "text"
    return None


def documents(parts: Sequence[Part]) -> list[Document]:
    found = []
    for part in parts:
        kind = kind_of(part)
        if kind is not None:
            found.append(Document(part.path, part.filename, kind, part.decoded_size))
    return found


def read_text(document: Document, file: BinaryIO, budget: Budget, spool_dir: str | None = None) -> Iterator[str]:
    """The document's text in pieces; raises Unreadable (possibly after some pieces)."""
    if document.kind == "encrypted-ooxml":
        raise Unreadable("encrypted")
    if document.kind == "ooxml":
        return ooxml_text(file, budget.max_bytes)
    if document.kind == "pdf":
        return pdf_text(file, budget, spool_dir)
    return plain_text(file, budget.max_bytes)


# ---- plain text ---------------------------------------------------------------------------


def plain_text(file: IO[bytes], max_bytes: int) -> Iterator[str]:
    """A text file as UTF-8 (UTF-16 when it starts with a byte-order mark), bad bytes replaced."""
    first = file.read(PIECE)
    if first.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        decoder = codecs.getincrementaldecoder("utf-16")("replace")
    else:
        decoder = codecs.getincrementaldecoder("utf-8-sig")("replace")
    read = 0
    data = first
    while data:
        read += len(data)
        if read > max_bytes:
            raise Unreadable("too-large")
        yield decoder.decode(data)
        data = file.read(PIECE)
    yield decoder.decode(b"", True)


# ---- Office Open XML ------------------------------------------------------------------------


def _directory_entries(file: IO[bytes]) -> int:
    """The entry count of a zip's end-of-central-directory record (before zipfile reads it all)."""
    file.seek(0, os.SEEK_END)
    size = file.tell()
    tail_size = min(size, 65536 + 22)
    file.seek(size - tail_size)
    tail = file.read(tail_size)
    file.seek(0)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        raise Unreadable("damaged")
    count = struct.unpack_from("<H", tail, at + 10)[0]
    return int(count) if count != 0xFFFF else MAX_MEMBERS + 1  # zip64: far more than an Office file has


def ooxml_text(file: IO[bytes], max_bytes: int) -> Iterator[str]:
    """The text of the document, sheet or slide members, read within `max_bytes` decompressed bytes."""
    if _directory_entries(file) > MAX_MEMBERS:
        raise Unreadable("too-many-members")
    try:
        archive = zipfile.ZipFile(file)
        infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise Unreadable("damaged") from exc
    members = sorted((i for i in infos if _TEXT_MEMBER.match(i.filename)), key=lambda i: _natural(i.filename))
    if any(info.flag_bits & 0x1 for info in members):
        raise Unreadable("encrypted")
    remaining = max_bytes
    for info in members:
        if info.file_size > remaining:
            raise Unreadable("too-large")
        reader = _XmlText()
        try:
            with archive.open(info) as member:
                while True:
                    data = member.read(PIECE)
                    remaining -= len(data)
                    if remaining < 0:
                        raise Unreadable("too-large")  # the directory understated the size
                    reader.parse(data, final=not data)
                    text = reader.take()
                    if text:
                        yield text
                    if not data:
                        break
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError, RuntimeError) as exc:
            raise Unreadable("damaged") from exc
        yield "\n"


def _natural(name: str) -> tuple[object, ...]:
    """slide2 before slide10."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


class _XmlText:
    """Character data of the text elements of one XML member, streamed through expat."""

    def __init__(self) -> None:
        parser = expat.ParserCreate()
        parser.buffer_text = True
        parser.StartElementHandler = self._start
        parser.EndElementHandler = self._end
        parser.CharacterDataHandler = self._data
        parser.StartDoctypeDeclHandler = self._refuse  # no DTD, so no entity expansion
        parser.EntityDeclHandler = self._refuse
        self.parser = parser
        self.inside = 0
        self.pieces: list[str] = []

    def parse(self, data: bytes, final: bool) -> None:
        try:
            self.parser.Parse(data, final)
        except expat.ExpatError as exc:
            raise Unreadable("damaged") from exc

    def take(self) -> str:
        text = "".join(self.pieces)
        self.pieces.clear()
        return text

    def _refuse(self, *args: object) -> None:
        raise Unreadable("damaged")

    def _start(self, name: str, attrs: dict[str, str]) -> None:
        if name.rpartition(":")[2] in _TEXT_ELEMENTS:
            self.inside += 1

    def _end(self, name: str) -> None:
        local = name.rpartition(":")[2]
        if local in _TEXT_ELEMENTS:
            self.inside = max(self.inside - 1, 0)
        elif local in _LINE_ELEMENTS:
            self.pieces.append("\n")
        elif local in _SPACE_ELEMENTS:
            self.pieces.append(" ")

    def _data(self, data: str) -> None:
        if self.inside:
            self.pieces.append(data)


# ---- PDF ----------------------------------------------------------------------------------


def pdftotext_available() -> bool:
    return shutil.which("pdftotext") is not None and shutil.which("prlimit") is not None


def pdf_text(file: IO[bytes], budget: Budget, spool_dir: str | None = None) -> Iterator[str]:
    """The text poppler's pdftotext reads, within the budget's time, memory and output size.

    pdftotext runs under util-linux's prlimit (address space, CPU seconds, no file
    writes) rather than a preexec_fn: the milter is threaded, and Python code between
    fork and exec is not safe there (the subprocess documentation says so).
    """
    if not pdftotext_available():
        raise Unreadable("no-pdftotext")
    with tempfile.NamedTemporaryFile(prefix="govmilter-pdf-", suffix=".pdf", dir=spool_dir or None) as copy:
        shutil.copyfileobj(file, copy, PIECE)
        copy.flush()
        yield from _run_pdftotext(copy.name, budget)


def _encrypted(file: IO[bytes]) -> bool:
    """The PDF declares an /Encrypt dictionary (its trailer, usually near the end)."""
    file.seek(0)
    previous = b""
    while True:
        data = file.read(PIECE)
        if not data:
            return False
        if b"/Encrypt" in previous[-16:] + data:
            return True
        previous = data


def _run_pdftotext(path: str, budget: Budget) -> Iterator[str]:
    cpu = max(1, math.ceil(budget.seconds))
    command = [
        "prlimit", f"--as={budget.memory}", f"--cpu={cpu}", "--fsize=0", "--core=0", "--",
        "pdftotext", "-q", "-enc", "UTF-8", "-nopgbrk", path, "-",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert process.stdout is not None
    deadline = time.monotonic() + budget.seconds
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    written = 0
    finished = False
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(left):
                    raise Unreadable("timeout")
                data = os.read(process.stdout.fileno(), PIECE)
                if not data:
                    break
                written += len(data)
                if written > budget.max_bytes:
                    raise Unreadable("too-large")
                text = decoder.decode(data)
                if text:
                    yield text
        yield decoder.decode(b"", True)
        try:
            code = process.wait(max(deadline - time.monotonic(), 0.01))
        except subprocess.TimeoutExpired as exc:
            raise Unreadable("timeout") from exc
        finished = True
    finally:
        if not finished and process.poll() is None:
            process.kill()
        process.stdout.close()
        process.wait()
    if code < 0:  # killed by a signal: the CPU limit, or out of its address space
        raise Unreadable("resource-limit")
    if code != 0:
        with open(path, "rb") as copy:
            raise Unreadable("encrypted" if _encrypted(copy) else "damaged")
