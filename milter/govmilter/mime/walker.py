"""The streaming MIME walk: one pass over the raw message, in bounded memory.

The message arrives in chunks (headers and body, CRLF line ends). The walk
keeps a stack of open multipart boundaries and, for the leaf part it is in,
a decoder whose output is only counted and sampled: the first bytes (`head`,
for true-type detection), the last bytes of a zip (its central directory).
The decoded text of text/plain and text/html parts, and of attached web pages
(HTML or SVG by type or file name), goes, all of it, to the message's
TextStore: memory up to `Limits.text_memory` characters, then an unlinked file.
No message and no part is ever held whole in memory.

What counts toward the attachment cap (decoded bytes) is every leaf that is
not the message's own body text. Body text is a text/plain or text/html leaf
without a file name, not marked `attachment`, and not inside an attached
message. So a nameless text/csv leaf counts; an attached message
(message/rfc822, message/global) counts whole: every leaf in it, its own
body text included, and its header blocks; and every file encoded inside
body text counts as a part of its own: uuencode and yEnc blocks and `data:`
URIs (paths "1.uu1", "1.yenc1", "1.data1").

Hostile structure (thousands of parts, deep nesting, huge headers, lines
without end, a boundary that never closes) meets fixed limits: the walk
records a defect name and goes on in a defined way, so that every input
gives a result in time proportional to its size. It never raises on input.
"""

from __future__ import annotations

import codecs
import dataclasses
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO

from govmilter.mime import archives
from govmilter.mime.archives import (
    GZIP_MAGIC,
    INFLATE_BUDGET_SPENT,
    LOCAL_HEADER,
    ZipListing,
    ZipStream,
    gzip_isize,
    local_header_encrypted,
    looks_like_zip,
    read_directory,
    sampled_by_name,
)
from govmilter.mime.decoders import DataURIScanner, Decoder, UUScanner, UUSink, YEncScanner, make_decoder
from govmilter.mime.headers import (
    DUPLICATE_DEFECTS,
    EntityHeaders,
    decode_header_value,
    header_fields,
    parse_entity,
    text_codec,
)
from govmilter.mime.textstore import TextStore, TextWriter
from govmilter.model import ArchiveMember, MessageFacts, Part, TextPart


@dataclass(frozen=True)
class Limits:
    max_parts: int = 1000  # leaf parts described; later ones are still counted toward the cap
    max_depth: int = 32  # multipart and message/rfc822 nesting
    max_header: int = 131072  # bytes of one entity's Content-* fields (the only ones the walk reads)
    head_bytes: int = 8192  # decoded bytes kept from the start of a part
    head_budget: int = 1048576  # total head bytes per message; then small heads
    small_head: int = 512  # enough for magic numbers (MZ, PK, %PDF)
    zip_tail: int = 131072  # last bytes of a zip kept to read its central directory
    text_memory: int = 1048576  # characters of text kept in memory per message; the rest spills to disk
    spool_dir: str | None = None  # where text spills ("" or None: the system's temporary directory)
    archive_names: int = 1000  # names listed per archive
    max_defects: int = 32


DEFAULT_LIMITS = Limits()

# Signatures that stand past the head, kept for every attachment whatever the head budget: the
# volume descriptors of an ISO 9660 or UDF image (sectors 16 to 18, "CD001" / "BEA01" at byte 1),
# and the last 512 bytes, where a fixed VHD keeps its only "conectix" footer. 536 bytes a part.
PROBES = (32768, 34816, 36864)
PROBE_BYTES = 8
END_BYTES = 512

# Defects that mean a limit cut the walk short: the facts are incomplete, and
# the size check answers them with [size] parse_error_action.
LIMIT_DEFECTS = frozenset({"too-many-parts", "nesting-too-deep", "header-too-large"})
# Defects that mean the message reads differently in different clients: [size] malformed_action.
AMBIGUOUS_DEFECTS = DUPLICATE_DEFECTS
# recorded whatever max_defects says: a policy depends on them
_POLICY_DEFECTS = LIMIT_DEFECTS | AMBIGUOUS_DEFECTS
# a zip directory that could not be read whole: its names and sizes were not all seen
UNREADABLE_ARCHIVE = frozenset({"archive-broken", "archive-directory-too-large", "archive-names-truncated"})

_HOLD = 4096  # the start of a line kept for the next chunk while it may be a boundary line
_IDENTITY = ("", "7bit", "8bit", "binary")
_TEXT_TYPES = ("text/plain", "text/html")
# an attached web page (the usual carrier of a phishing form or link) is read as HTML text as well
_PAGE_TYPES = ("text/html", "application/xhtml+xml", "image/svg+xml")
_PAGE_NAMES = (".htm", ".html", ".shtml", ".xhtml", ".svg")


def walk(chunks: Iterable[bytes], limits: Limits = DEFAULT_LIMITS) -> MessageFacts:
    """Walk a raw message given as chunks of bytes; see the module docstring.

    The facts' texts may live in a spill file: call `close()` on them when done
    (the file is unlinked already; close() gives its space back at once).
    """
    walker = Walker(limits)
    try:
        for chunk in chunks:
            walker.feed(chunk)
        return walker.close()
    except BaseException:
        walker.store.close()
        raise


@dataclass(frozen=True)
class Extracted:
    """One part's decoded bytes from a second pass: `file` is at offset 0."""

    file: BinaryIO
    size: int  # bytes in file
    truncated: bool  # the part had more than max_bytes


_EXTRACT_MEMORY = 262144  # bytes of an extracted part kept in memory before it goes to disk


def extract(
    chunks: Iterable[bytes], paths: Iterable[str], max_bytes: int, spool_dir: str | None = None
) -> dict[str, Extracted]:
    """Walk the raw message again and return the decoded bytes of the leaves at `paths`.

    Paths are Part.path values (also "1.uu1", "2.data1", ...). Each part is written to
    a SpooledTemporaryFile (memory up to 256 KiB, then disk in `spool_dir`) up to
    `max_bytes`; a path not found in the message is absent from the result. The caller
    closes the files.
    """
    wanted = {path: _Capture(max_bytes, spool_dir) for path in dict.fromkeys(paths)}
    walker = Walker(DEFAULT_LIMITS, capture=wanted, keep_text=False)
    try:
        for chunk in chunks:
            walker.feed(chunk)
        walker.close()
    except BaseException:
        for capture in wanted.values():
            capture.file.close()
        raise
    found: dict[str, Extracted] = {}
    for path, capture in wanted.items():
        if capture.seen:
            capture.file.seek(0)
            found[path] = Extracted(capture.file, capture.size, capture.truncated)
        else:
            capture.file.close()
    return found


class _Capture:
    """Where extract() writes one part's decoded bytes."""

    def __init__(self, max_bytes: int, spool_dir: str | None):
        self.max_bytes = max(0, max_bytes)
        self.file: BinaryIO = tempfile.SpooledTemporaryFile(  # type: ignore[assignment]
            max_size=_EXTRACT_MEMORY, dir=spool_dir or None
        )
        self.size = 0
        self.truncated = False
        self.seen = False

    def take(self, data: bytes) -> None:
        room = self.max_bytes - self.size
        if len(data) > room:
            self.truncated = True
            data = data[:room]
        if data:
            self.file.write(data)
            self.size += len(data)


@dataclass
class _Entity:
    """An entity whose header block is being read."""

    prefix: str  # part path of a multipart child, "" at the top
    depth: int
    default_type: str
    nested: bool = False  # the body of a message/rfc822 part
    attached: bool = False  # inside an attached message: everything counts toward the cap

    def leaf_path(self) -> str:
        if not self.prefix:
            return "1"
        return f"{self.prefix}.1" if self.nested else self.prefix


@dataclass
class _Multipart:
    boundary: bytes
    path: str
    depth: int
    digest: bool
    attached: bool = False
    children: int = 0


class Walker:
    def __init__(
        self,
        limits: Limits = DEFAULT_LIMITS,
        capture: dict[str, _Capture] | None = None,
        keep_text: bool = True,
    ):
        self.limits = limits
        self.parts: list[Part] = []
        self.texts: list[TextPart] = []
        # shared by every archive of the message: bytes left to inflate, members left to sample
        self.archive_budgets: tuple[list[int], list[int]] = ([archives.INFLATE_BUDGET], [archives.MESSAGE_MEMBERS])
        self.subjects: list[TextPart] = []
        self.attachment_bytes = 0
        self.part_count = 0
        self.head_budget = limits.head_budget
        self.store = TextStore(limits.text_memory, limits.spool_dir)
        self.keep_text = keep_text
        self.capture = capture or {}
        self._defects: dict[str, None] = {}
        self._stack: list[_Multipart] = []
        self._index: dict[bytes, int] = {}  # boundary -> its top-most position in the stack
        self._entity: _Entity | None = _Entity("", 0, "text/plain")  # reading headers when set
        # Of a header block only its Content-* fields are kept: a message's own header may be
        # large (a circular with thousands of addresses in To:) and none of it but those
        # fields changes how the body is read; every byte is still counted. An attached
        # message's Subject is kept too: a reader sees it as part of the content.
        self._header = bytearray()
        self._header_size = 0  # every byte of the header block being read
        self._keep_field = False  # the field being read is a Content-* field
        self._in_long_line = False  # inside a line longer than max_header of a field not kept
        self._leaf: _Leaf | None = None  # None in a body: preamble or epilogue, skipped
        self._leftover = b""
        self._line_start = True  # the next unread byte begins a line
        self._pending_eol = b""  # a line break that belongs to the next boundary line, if one follows

    # ---- input ---------------------------------------------------------------------

    def feed(self, chunk: bytes) -> None:
        data = self._leftover + chunk if self._leftover else bytes(chunk)
        self._leftover = data[self._run(data, final=False) :]

    def close(self) -> MessageFacts:
        data, self._leftover = self._leftover, b""
        self._run(data, final=True)
        if self._entity is not None:
            if self._header_size or self._header.strip():
                self._end_headers(overflow=False)
            else:
                self._entity = None
        self._finish_leaf()
        if self._stack:
            self.defect("unterminated-multipart")
        return MessageFacts(
            parts=tuple(self.parts),
            attachment_bytes=self.attachment_bytes,
            texts=tuple(self.texts),
            defects=tuple(self._defects),
            subjects=tuple(self.subjects),
            store=self.store,
        )

    def defect(self, name: str) -> None:
        if len(self._defects) < self.limits.max_defects or name in _POLICY_DEFECTS:
            self._defects.setdefault(name, None)

    def _run(self, data: bytes, final: bool) -> int:
        """Consume as much of `data` as can be decided now; return where to resume."""
        pos = 0
        while True:
            if self._entity is not None:
                pos, more = self._headers(data, pos, final)
            else:
                pos, more = self._body(data, pos, final)
            if not more:
                return pos

    # ---- header blocks -------------------------------------------------------------

    def _headers(self, data: bytes, pos: int, final: bool) -> tuple[int, bool]:
        while True:
            if self._in_long_line:  # the rest of a long line of a field that is not kept
                newline = data.find(b"\n", pos)
                end = len(data) if newline < 0 else newline + 1
                self._header_size += end - pos
                pos = end
                if newline < 0:
                    return pos, False
                self._in_long_line = False
                continue
            newline = data.find(b"\n", pos)
            if newline < 0:
                rest = len(data) - pos
                if final:
                    self._take_header_line(data[pos:])
                    return len(data), False
                if rest > self.limits.max_header and not self._kept(data[pos : pos + 8]):
                    self._in_long_line = True
                    continue
                if len(self._header) + rest > self.limits.max_header:
                    self.defect("header-too-large")
                    self._end_headers(overflow=True)
                    return pos, True
                return pos, False
            line = data[pos : newline + 1]
            if line == b"\r\n" or line == b"\n":
                self._end_headers(overflow=False)
                return newline + 1, True
            if self._stack and line.startswith(b"--") and self._match(line) is not None:
                self.defect("boundary-in-headers")
                self._end_headers(overflow=False)
                return pos, True  # the body scan reads the boundary line itself
            if not self._take_header_line(line):
                self.defect("header-too-large")
                self._end_headers(overflow=True)
                return pos, True  # the rest of the header is read as the part's content
            pos = newline + 1

    def _kept(self, start: bytes) -> bool:
        """Whether the header line beginning with `start` (8 bytes) belongs to a field the walk reads."""
        if start[:1] in (b" ", b"\t"):  # a continuation line: the field it continues decides
            return self._keep_field
        start = start.lower()
        if start == b"content-":
            return True
        # "Subject:" or "Subject :" of an attached message
        nested = self._entity is not None and self._entity.nested
        return nested and start[:7] == b"subject" and start[7:8] in (b":", b" ", b"\t")

    def _take_header_line(self, line: bytes) -> bool:
        """Count a header line and keep it if it is part of a Content-* field; False past the limit."""
        keep = self._kept(line[:8])
        if line[:1] not in (b" ", b"\t"):
            self._keep_field = keep
        if keep:
            if len(self._header) + len(line) > self.limits.max_header:
                return False
            self._header += line
        self._header_size += len(line)
        return True

    def _end_headers(self, overflow: bool) -> None:
        entity = self._entity
        assert entity is not None
        block = bytes(self._header)
        headers = parse_entity(block, entity.default_type)
        if entity.attached:
            self.attachment_bytes += self._header_size  # an attached message counts whole
        if overflow:
            # the fields past the limit are unknown: whatever follows is counted whole, as one
            # file, so that padding a header can never hide attachments from the cap
            headers = dataclasses.replace(headers, content_type="application/octet-stream", transfer_encoding="")
        self._header = bytearray()
        self._header_size = 0
        self._keep_field = False
        self._in_long_line = False
        self._entity = None
        self._line_start = True
        self._pending_eol = b""
        for name in headers.defects:
            self.defect(name)
        if entity.nested and self.keep_text:
            self._attached_subjects(block)
        kind = headers.content_type
        too_deep = entity.depth >= self.limits.max_depth
        if not overflow and kind.startswith("multipart/"):
            boundary = headers.boundary.encode("utf-8", "replace")
            if not boundary:
                self.defect("multipart-without-boundary")
            elif too_deep:
                self.defect("nesting-too-deep")
            else:
                digest = kind == "multipart/digest"
                self._push(_Multipart(boundary, entity.prefix, entity.depth, digest, entity.attached))
                return
        elif not overflow and kind in ("message/rfc822", "message/global"):
            if headers.transfer_encoding not in _IDENTITY:
                self.defect("encoded-message")  # not allowed (RFC 2046 5.2.1): counted as one file
            elif too_deep:
                self.defect("nesting-too-deep")
            else:
                path = entity.leaf_path() if entity.nested else (entity.prefix or "1")
                # an attached message, unless it is the whole message (a top-level message/rfc822)
                attached = entity.attached or bool(entity.prefix)
                self._entity = _Entity(path, entity.depth + 1, "text/plain", nested=True, attached=attached)
                return
        self._start_leaf(entity, headers)

    def _attached_subjects(self, block: bytes) -> None:
        """An attached message's Subject, decoded: the body rules read it as they read its body."""
        subjects = [decode_header_value(v) for k, v in header_fields(block) if k == "subject" and v]
        if subjects:
            writer = TextWriter(self.store)
            writer.write("\n".join(subjects) + "\n")
            self.subjects.append(TextPart.stored("text/plain", writer))

    # ---- bodies --------------------------------------------------------------------

    def _body(self, data: bytes, pos: int, final: bool) -> tuple[int, bool]:
        end = len(data)
        start = pos  # the first byte not yet passed to the leaf
        search = pos
        if not self._stack:  # no boundary can follow: everything is this leaf's content
            self._emit(self._pending_eol)
            self._emit(data[pos:] if pos else data)
            self._pending_eol = b""
            return end, False
        line_start = self._line_start
        while True:
            if line_start and data.startswith(b"--", search):
                candidate = search
            else:
                found = data.find(b"\n--", search)
                if found < 0:
                    break
                candidate = found + 1
            line_start = False
            newline = data.find(b"\n", candidate)
            if newline < 0 and not final and end - candidate <= _HOLD:
                self._emit_until(data, start, candidate)
                self._line_start = True
                return candidate, False  # wait for the rest of this line
            line_end = newline if newline >= 0 else end
            # a boundary line is short (RFC 2046: at most 70 characters of boundary)
            hit = self._match(data[candidate:line_end]) if line_end - candidate <= _HOLD else None
            if hit is None:
                search = candidate + 2
                continue
            self._emit_until(data, start, candidate)
            self._pending_eol = b""  # the line break before a boundary belongs to it
            self._line_start = True
            self._boundary(*hit)
            return (newline + 1 if newline >= 0 else end), True
        if final:
            self._emit(self._pending_eol)
            self._emit(data[start:])
            self._pending_eol = b""
            return end, False
        last = data.rfind(b"\n", start)
        if last >= 0:
            begin = last + 1
        else:
            begin = start if self._line_start else -1
        if begin >= 0 and end - begin <= _HOLD:
            self._emit_until(data, start, begin)
            self._line_start = True
            return begin, False  # the last line may be the start of a boundary line
        # a long line without its end: it cannot be a boundary line, pass it on whole
        self._emit(self._pending_eol)
        self._emit(data[start:])
        self._pending_eol = b""
        self._line_start = False
        return end, False

    def _emit_until(self, data: bytes, start: int, line: int) -> None:
        """Pass on data[start:line] except the line break just before `line`, which is held."""
        if line <= start:
            return
        eol = line - 1
        if eol > start and data[eol - 1] == 0x0D:
            eol -= 1
        self._emit(self._pending_eol)
        self._emit(data[start:eol])
        self._pending_eol = data[eol:line]

    def _emit(self, data: bytes) -> None:
        if data and self._leaf is not None:
            self._leaf.feed(data)

    # ---- boundaries ----------------------------------------------------------------

    def _push(self, multipart: _Multipart) -> None:
        self._index[multipart.boundary] = len(self._stack)
        self._stack.append(multipart)
        self._leaf = None  # the preamble is skipped

    def _match(self, line: bytes) -> tuple[int, bool] | None:
        """(stack position, closes) when `line` is a delimiter of an open multipart."""
        line = line.rstrip(b" \t\r\n")
        if not line.startswith(b"--"):
            return None
        if line.endswith(b"--"):
            position = self._index.get(line[2:-2])
            if position is not None:
                return position, True
        position = self._index.get(line[2:])
        return (position, False) if position is not None else None

    def _boundary(self, position: int, closes: bool) -> None:
        self._finish_leaf()
        if len(self._stack) > position + 1:
            self.defect("unterminated-multipart")  # an outer boundary ends the inner ones
            del self._stack[position + 1 :]
            self._index = {m.boundary: i for i, m in enumerate(self._stack)}
        multipart = self._stack[position]
        if closes:
            self._stack.pop()
            self._index = {m.boundary: i for i, m in enumerate(self._stack)}
            return  # what follows is an epilogue, skipped
        multipart.children += 1
        prefix = f"{multipart.path}.{multipart.children}" if multipart.path else str(multipart.children)
        default = "message/rfc822" if multipart.digest else "text/plain"
        self._entity = _Entity(prefix, multipart.depth + 1, default, attached=multipart.attached)

    # ---- leaves --------------------------------------------------------------------

    def _start_leaf(self, entity: _Entity, headers: EntityHeaders) -> None:
        self.count_part()
        self._leaf = _Leaf(self, entity.leaf_path(), entity.depth, headers, entity.attached)

    def count_part(self) -> None:
        self.part_count += 1
        if self.part_count == self.limits.max_parts + 1:
            self.defect("too-many-parts")

    def _finish_leaf(self) -> None:
        if self._leaf is not None:
            self._leaf.finish()
            self._leaf = None

    def add_part(self, part: Part) -> None:
        if part.is_attachment:
            self.attachment_bytes += part.decoded_size
        if len(self.parts) < self.limits.max_parts:
            self.parts.append(part)

    def take_head_budget(self) -> int:
        size = self.limits.head_bytes if self.head_budget >= self.limits.head_bytes else self.limits.small_head
        self.head_budget -= size
        return size


@dataclass(frozen=True)
class _ArchiveFacts:
    names: tuple[str, ...] = ()
    encrypted: bool = False
    expanded: int = 0
    ratio: float = 0.0
    unreadable: str = ""
    members: tuple[ArchiveMember, ...] = ()  # members sampled for their true type (archive.ZipStream)


_NOT_ZIP = _ArchiveFacts()


class _Payload:
    """Counts decoded bytes and keeps the samples the checks need: head, and the tail of a zip or gzip.

    A zip's local file headers are also read as the bytes pass (archive.ZipStream), which
    finds the zips stored or deflated inside it; a gzip's expanded size is its ISIZE trailer.
    """

    def __init__(
        self,
        head_limit: int,
        tail_limit: int,
        capture: _Capture | None,
        filename: str,
        shared: tuple[list[int], list[int]],
    ):
        self.size = 0
        self.shared = shared  # the message's archive budgets (Walker.archive_budgets): bytes to inflate, members
        self.sample_members = sampled_by_name(filename)  # not an Office file's parts (archives.OFFICE_PACKAGES)
        self.head = bytearray()
        self.head_limit = head_limit
        self.tail: bytearray | None = bytearray() if tail_limit else None
        self.tail_limit = tail_limit
        self.probes: dict[int, bytearray] = {}
        self.end = bytearray() if tail_limit else None  # attachments and embedded files only
        self.stream: ZipStream | None = None
        self.capture = capture
        if capture is not None:
            capture.seen = True

    def take(self, data: bytes) -> None:
        if not data:
            return
        before = self.size
        self.size += len(data)
        if self.capture is not None:
            self.capture.take(data)
        if len(self.head) < self.head_limit:
            self.head += data[: self.head_limit - len(self.head)]
        if self.end is not None:
            if before < PROBES[-1] + PROBE_BYTES and self.size > PROBES[0]:
                for offset in PROBES:
                    start, stop = max(offset, before), min(offset + PROBE_BYTES, self.size)
                    if start < stop:
                        self.probes.setdefault(offset, bytearray()).extend(data[start - before : stop - before])
            if len(data) >= END_BYTES:
                self.end[:] = data[-END_BYTES:]
            else:
                self.end += data
                del self.end[: max(0, len(self.end) - END_BYTES)]
        if self.tail is not None:
            if before < 4 <= len(self.head):  # the magic number is known now: decide once
                magic = bytes(self.head[:4])
                if magic.startswith(LOCAL_HEADER):
                    self.stream = ZipStream(sample=self.sample_members, budget=self.shared[0], left=self.shared[1])
                    self.stream.feed(bytes(self.head[:before]) + data if before else data)
                elif not (looks_like_zip(magic) or magic.startswith(GZIP_MAGIC)):
                    self.tail = None  # neither zip nor gzip: no directory or trailer to read
                    return
            elif self.stream is not None and self.stream.alive:
                self.stream.feed(data)
            self.tail += data[-self.tail_limit :]
            if len(self.tail) > 2 * self.tail_limit:
                del self.tail[: len(self.tail) - self.tail_limit]

    def part(
        self,
        walker: Walker,
        path: str,
        depth: int,
        content_type: str,
        filename: str,
        disposition: str,
        encoding: str,
        counts: bool,
    ) -> Part:
        """The leaf as checks see it: its count, its head, and what its zip or gzip says of itself."""
        archive = self.archive(walker)  # nothing to read where no tail was kept (body text)
        return Part(
            path=path,
            content_type=content_type,
            filename=filename,
            disposition=disposition,
            transfer_encoding=encoding,
            decoded_size=self.size,
            is_attachment=counts,
            head=bytes(self.head),
            probes=tuple((offset, bytes(data)) for offset, data in sorted(self.probes.items())),
            end=bytes(self.end) if self.end is not None and self.size > len(self.head) else b"",
            archive_names=archive.names,
            archive_encrypted=archive.encrypted,
            depth=depth,
            archive_expanded=archive.expanded,
            archive_ratio=archive.ratio,
            archive_unreadable=archive.unreadable,
            archive_members=archive.members,
        )

    def archive(self, walker: Walker) -> _ArchiveFacts:
        head = bytes(self.head)
        if self.tail is not None and head.startswith(GZIP_MAGIC):
            expanded, ratio = gzip_isize(bytes(self.tail[-8:]), self.size)
            return _ArchiveFacts(expanded=expanded, ratio=ratio)
        if self.tail is None or not looks_like_zip(head):
            return _NOT_ZIP
        listing: ZipListing = read_directory(
            bytes(self.tail[-self.tail_limit :]), self.size, walker.limits.archive_names
        )
        if listing.problem:
            walker.defect(listing.problem)
        expanded, ratio = listing.expanded, listing.ratio
        unreadable = listing.problem if listing.problem in UNREADABLE_ARCHIVE else ""
        members: tuple[ArchiveMember, ...] = ()
        if self.stream is not None:  # zips inside the zip and members' true types: what its directory cannot tell
            expanded, ratio = max(expanded, self.stream.expanded), max(ratio, self.stream.ratio)
            members = self.stream.members
            if self.stream.cut and not unreadable:  # a member's sample lay past the inflate budget
                walker.defect(INFLATE_BUDGET_SPENT)
                unreadable = INFLATE_BUDGET_SPENT
        return _ArchiveFacts(
            names=listing.names,
            encrypted=listing.encrypted or local_header_encrypted(head),
            expanded=expanded,
            ratio=ratio,
            unreadable=unreadable,
            members=members,
        )


class _Embedded:
    """A file encoded inside body text (uuencode, yEnc, a data: URI): a part of its own."""

    def __init__(
        self,
        walker: Walker,
        path: str,
        depth: int,
        filename: str,
        content_type: str,
        encoding: str,
        counts: bool,
    ):
        walker.count_part()
        self.walker = walker
        self.path = path
        self.depth = depth
        self.filename = filename
        self.content_type = content_type
        self.encoding = encoding
        self.counts = counts  # False inside a part that counts whole already (an attached message)
        self.payload = _Payload(
            walker.take_head_budget(), walker.limits.zip_tail, walker.capture.get(path), filename,
            walker.archive_budgets,
        )  # fmt: skip

    def take(self, data: bytes) -> None:
        self.payload.take(data)

    def close(self) -> None:
        disposition = "attachment" if self.filename else "inline"
        part = self.payload.part(
            self.walker, self.path, self.depth, self.content_type, self.filename, disposition, self.encoding,
            self.counts,
        )  # fmt: skip
        self.walker.add_part(part)


class _PageDecoder(codecs.IncrementalDecoder):
    """A web page's text as a browser reads it: a UTF-16 or UTF-8 byte-order mark decides the encoding
    (the HTML standard's BOM sniffing comes before the declared charset), else `declared` does."""

    def __init__(self, declared: codecs.IncrementalDecoder):
        super().__init__("replace")
        self.declared = declared
        self.chosen: codecs.IncrementalDecoder | None = None
        self.start = b""  # the first bytes, until a mark can be told from text

    def decode(self, data: bytes, final: bool = False) -> str:  # type: ignore[override]  # bytes only here
        if self.chosen is None:
            self.start += data
            if len(self.start) < 3 and not final:
                return ""
            data, self.start = self.start, b""
            if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
                self.chosen = codecs.getincrementaldecoder("utf-16")("replace")
            elif data.startswith(codecs.BOM_UTF8):
                self.chosen = codecs.getincrementaldecoder("utf-8-sig")("replace")
            else:
                self.chosen = self.declared
        return self.chosen.decode(data, final)


class _Leaf:
    def __init__(self, walker: Walker, path: str, depth: int, headers: EntityHeaders, attached: bool = False):
        self.walker = walker
        self.path = path
        self.depth = depth
        self.headers = headers
        kind = headers.content_type
        textual = kind in _TEXT_TYPES and headers.disposition != "attachment"
        # everything but the message's own body text counts (the module docstring)
        self.is_attachment = not (textual and not headers.filename and not attached)
        # an attached web page, whatever type it claims, is read as HTML text too (its links and words
        # reach the checks as the body's do; it still counts and is typed as an attachment): else a
        # phishing link moved from the body into invoice.html would pass every link check unseen
        page = not textual and (kind in _PAGE_TYPES or headers.filename.lower().rstrip(". ").endswith(_PAGE_NAMES))
        self.text_type = "text/html" if page else kind
        head_limit = walker.take_head_budget() if self.is_attachment else walker.limits.small_head
        tail_limit = walker.limits.zip_tail if self.is_attachment else 0
        self.payload = _Payload(head_limit, tail_limit, walker.capture.get(path), headers.filename,
                                walker.archive_budgets)  # fmt: skip
        self.decoder: Decoder = make_decoder(headers.transfer_encoding)
        # extract() walks a message again for a few leaves' bytes: a leaf that is not one of them
        # and holds none of them (a file encoded in its text, path "1.uu1") is not decoded at all
        capture = walker.capture
        self.skip = bool(capture) and path not in capture and not any(p.startswith(path + ".") for p in capture)
        self.text: TextWriter | None = None
        self.text_decoder: codecs.IncrementalDecoder | None = None
        if (textual or page) and walker.keep_text:
            codec = text_codec(headers.charset)
            if headers.charset and not codec:
                walker.defect("unknown-charset")
            self.text_decoder = codecs.getincrementaldecoder(codec or "utf-8")("replace")
            if page:  # a browser opens it: a byte-order mark overrides any charset (UTF-16 hides from UTF-8)
                self.text_decoder = _PageDecoder(self.text_decoder)
            self.text = TextWriter(walker.store)
        # files encoded inside the text: parts of their own, counted unless this leaf counts whole
        self.scanners: list[UUScanner | YEncScanner | DataURIScanner] = []
        # (uuencode and yEnc are read from plain text by the mail programs that decode them;
        # data: URIs are shown by HTML readers, and counted in plain text too)
        if textual:
            self.data = DataURIScanner(self._open_data)
            self.scanners.append(self.data)
        if textual and kind == "text/plain":
            self.uu = UUScanner(self._open_uu)
            self.yenc = YEncScanner(self._open_yenc)
            self.scanners += [self.uu, self.yenc]

    def _embedded(self, kind: str, number: int, filename: str, content_type: str, encoding: str) -> _Embedded:
        path = f"{self.path}.{kind}{number}"
        return _Embedded(self.walker, path, self.depth, filename, content_type, encoding, not self.is_attachment)

    def _open_uu(self, filename: str) -> UUSink:
        return self._embedded("uu", self.uu.blocks, filename, "application/octet-stream", "x-uuencode")

    def _open_yenc(self, filename: str) -> UUSink:
        return self._embedded("yenc", self.yenc.blocks, filename, "application/octet-stream", "x-yenc")

    def _open_data(self, filename: str) -> UUSink:  # a data: URI has no name: its media type comes
        return self._embedded("data", self.data.blocks, "", filename, "x-data-uri")

    def feed(self, raw: bytes) -> None:
        if not self.skip:
            self._take(self.decoder.feed(raw))

    def _take(self, data: bytes) -> None:
        if not data:
            return
        self.payload.take(data)
        for scanner in self.scanners:
            scanner.feed(data)
        if self.text_decoder is not None:
            self._text(data, final=False)

    def _text(self, data: bytes, final: bool) -> None:
        assert self.text_decoder is not None and self.text is not None
        try:
            text = self.text_decoder.decode(data, final)
        except Exception:  # a codec's own failure: go on with UTF-8, nothing is dropped
            self.walker.defect("charset-decode-error")
            self.text_decoder = codecs.getincrementaldecoder("utf-8")("replace")
            text = self.text_decoder.decode(data, final)
        self.text.write(text)

    def finish(self) -> None:
        self._take(self.decoder.finish())
        if self.text_decoder is not None:
            self._text(b"", final=True)
        for scanner in self.scanners:
            scanner.finish()
            for name in scanner.defects:
                self.walker.defect(name)
        for name in self.decoder.defects:
            self.walker.defect(name)
        headers = self.headers
        part = self.payload.part(
            self.walker,
            self.path,
            self.depth,
            headers.content_type,
            headers.filename,
            headers.disposition,
            headers.transfer_encoding,
            self.is_attachment,
        )
        self.walker.add_part(part)
        if self.text is not None and self.text.length:
            self.walker.texts.append(TextPart.stored(self.text_type, self.text))
