"""The streaming MIME walk: one pass over the raw message, in bounded memory.

The message arrives in chunks (headers and body, CRLF line ends). The walk
keeps a stack of open multipart boundaries and, for the leaf part it is in,
a decoder whose output is only counted and sampled: the first bytes (`head`,
for true-type detection), the last bytes of a zip (its central directory),
and the decoded text of text/plain and text/html parts up to a total budget.
No message and no part is ever held whole.

Hostile structure (thousands of parts, deep nesting, huge headers, lines
without end, a boundary that never closes) meets fixed limits: the walk
records a defect name and goes on in a defined way, so that every input
gives a result in time proportional to its size. It never raises on input.
"""

from __future__ import annotations

import codecs
import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

from govmilter.archive import local_header_encrypted, looks_like_zip, read_directory
from govmilter.decoders import Decoder, UUScanner, make_decoder
from govmilter.mimeheaders import EntityHeaders, parse_entity, text_codec
from govmilter.model import MessageFacts, Part, TextPart


@dataclass(frozen=True)
class Limits:
    max_parts: int = 1000  # leaf parts described; later ones are still counted toward the cap
    max_depth: int = 32  # multipart and message/rfc822 nesting
    max_header: int = 131072  # bytes of one entity's header block
    head_bytes: int = 8192  # decoded bytes kept from the start of a part
    head_budget: int = 1048576  # total head bytes per message; then small heads
    small_head: int = 512  # enough for magic numbers (MZ, PK, %PDF)
    zip_tail: int = 131072  # last bytes of a zip kept to read its central directory
    text_budget: int = 1048576  # characters of text/plain and text/html kept per message
    archive_names: int = 1000  # names listed per archive
    max_defects: int = 32


DEFAULT_LIMITS = Limits()

# Defects that mean a limit cut the walk short: the facts are incomplete, and
# the size check answers them with [size] parse_error_action.
LIMIT_DEFECTS = frozenset({"too-many-parts", "nesting-too-deep", "header-too-large"})

_HOLD = 4096  # the start of a line kept for the next chunk while it may be a boundary line
_IDENTITY = ("", "7bit", "8bit", "binary")
_TEXT_TYPES = ("text/plain", "text/html")


def walk(chunks: Iterable[bytes], limits: Limits = DEFAULT_LIMITS) -> MessageFacts:
    """Walk a raw message given as chunks of bytes; see the module docstring."""
    walker = Walker(limits)
    for chunk in chunks:
        walker.feed(chunk)
    return walker.close()


@dataclass
class _Entity:
    """An entity whose header block is being read."""

    prefix: str  # part path of a multipart child, "" at the top
    depth: int
    default_type: str
    nested: bool = False  # the body of a message/rfc822 part

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
    children: int = 0


class Walker:
    def __init__(self, limits: Limits = DEFAULT_LIMITS):
        self.limits = limits
        self.parts: list[Part] = []
        self.texts: list[TextPart] = []
        self.attachment_bytes = 0
        self.part_count = 0
        self.head_budget = limits.head_budget
        self.text_budget = limits.text_budget
        self._defects: dict[str, None] = {}
        self._stack: list[_Multipart] = []
        self._index: dict[bytes, int] = {}  # boundary -> its top-most position in the stack
        self._entity: _Entity | None = _Entity("", 0, "text/plain")  # reading headers when set
        self._header = bytearray()
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
            if self._header.strip():
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
        )

    def defect(self, name: str) -> None:
        if len(self._defects) < self.limits.max_defects:
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
            newline = data.find(b"\n", pos)
            if newline < 0:
                rest = len(data) - pos
                if final:
                    self._header += data[pos:]
                    return len(data), False
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
            if len(self._header) + len(line) > self.limits.max_header:
                self.defect("header-too-large")
                self._end_headers(overflow=True)
                return pos, True  # the rest of the header is read as the part's content
            self._header += line
            pos = newline + 1

    def _end_headers(self, overflow: bool) -> None:
        entity = self._entity
        assert entity is not None
        headers = parse_entity(bytes(self._header), entity.default_type)
        if overflow:
            # the fields past the limit are unknown: whatever follows is counted whole, as one
            # file, so that padding a header can never hide attachments from the cap
            headers = dataclasses.replace(headers, content_type="application/octet-stream", transfer_encoding="")
        self._header = bytearray()
        self._entity = None
        self._line_start = True
        self._pending_eol = b""
        for name in headers.defects:
            self.defect(name)
        kind = headers.content_type
        too_deep = entity.depth >= self.limits.max_depth
        if not overflow and kind.startswith("multipart/"):
            boundary = headers.boundary.encode("utf-8", "replace")
            if not boundary:
                self.defect("multipart-without-boundary")
            elif too_deep:
                self.defect("nesting-too-deep")
            else:
                self._push(_Multipart(boundary, entity.prefix, entity.depth, kind == "multipart/digest"))
                return
        elif not overflow and kind in ("message/rfc822", "message/global"):
            if headers.transfer_encoding not in _IDENTITY:
                self.defect("encoded-message")  # not allowed (RFC 2046 5.2.1): counted as one file
            elif too_deep:
                self.defect("nesting-too-deep")
            else:
                path = entity.leaf_path() if entity.nested else (entity.prefix or "1")
                self._entity = _Entity(path, entity.depth + 1, "text/plain", nested=True)
                return
        self._start_leaf(entity, headers)

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
        self._entity = _Entity(prefix, multipart.depth + 1, default)

    # ---- leaves --------------------------------------------------------------------

    def _start_leaf(self, entity: _Entity, headers: EntityHeaders) -> None:
        self.count_part()
        self._leaf = _Leaf(self, entity.leaf_path(), entity.depth, headers)

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


class _Payload:
    """Counts decoded bytes and keeps the samples the checks need: head and zip tail."""

    def __init__(self, head_limit: int, tail_limit: int):
        self.size = 0
        self.head = bytearray()
        self.head_limit = head_limit
        self.tail: bytearray | None = bytearray() if tail_limit else None
        self.tail_limit = tail_limit

    def take(self, data: bytes) -> None:
        if not data:
            return
        self.size += len(data)
        if len(self.head) < self.head_limit:
            self.head += data[: self.head_limit - len(self.head)]
        if self.tail is not None:
            if len(self.head) >= 4 and not looks_like_zip(bytes(self.head[:4])):
                self.tail = None  # not a zip: no directory to read
                return
            self.tail += data[-self.tail_limit :]
            if len(self.tail) > 2 * self.tail_limit:
                del self.tail[: len(self.tail) - self.tail_limit]

    def archive(self, walker: Walker) -> tuple[tuple[str, ...], bool]:
        head = bytes(self.head)
        if self.tail is None or not looks_like_zip(head):
            return (), False
        listing = read_directory(bytes(self.tail[-self.tail_limit :]), self.size, walker.limits.archive_names)
        if listing.problem:
            walker.defect(listing.problem)
        return listing.names, listing.encrypted or local_header_encrypted(head)


class _UUFile:
    """A uuencoded file inside a text part: a part of its own, and an attachment."""

    def __init__(self, walker: Walker, path: str, depth: int, filename: str):
        walker.count_part()
        self.walker = walker
        self.path = path
        self.depth = depth
        self.filename = filename
        self.payload = _Payload(walker.take_head_budget(), walker.limits.zip_tail)

    def take(self, data: bytes) -> None:
        self.payload.take(data)

    def close(self) -> None:
        names, encrypted = self.payload.archive(self.walker)
        self.walker.add_part(
            Part(
                path=self.path,
                content_type="application/octet-stream",
                filename=self.filename,
                disposition="attachment",
                transfer_encoding="x-uuencode",
                decoded_size=self.payload.size,
                is_attachment=True,
                head=bytes(self.payload.head),
                archive_names=names,
                archive_encrypted=encrypted,
                depth=self.depth,
            )
        )


class _Leaf:
    def __init__(self, walker: Walker, path: str, depth: int, headers: EntityHeaders):
        self.walker = walker
        self.path = path
        self.depth = depth
        self.headers = headers
        kind = headers.content_type
        # every named part, every part marked attachment, every non-text leaf (inline images too)
        self.is_attachment = (
            bool(headers.filename) or headers.disposition == "attachment" or not kind.startswith("text/")
        )
        head_limit = walker.take_head_budget() if self.is_attachment else walker.limits.small_head
        self.payload = _Payload(head_limit, walker.limits.zip_tail if self.is_attachment else 0)
        self.decoder: Decoder = make_decoder(headers.transfer_encoding)
        wants_text = kind in _TEXT_TYPES and headers.disposition != "attachment"
        self.text: list[str] = []
        self.text_decoder: codecs.IncrementalDecoder | None = None
        if wants_text and walker.text_budget > 0:
            codec = text_codec(headers.charset)
            if headers.charset and not codec:
                walker.defect("unknown-charset")
            self.text_decoder = codecs.getincrementaldecoder(codec or "utf-8")("replace")
        self.uu: UUScanner | None = None
        if kind == "text/plain" and headers.disposition != "attachment":
            self.uu = UUScanner(self._open_uu)

    def _open_uu(self, filename: str) -> _UUFile:
        assert self.uu is not None
        return _UUFile(self.walker, f"{self.path}.uu{self.uu.blocks}", self.depth, filename)

    def feed(self, raw: bytes) -> None:
        self._take(self.decoder.feed(raw))

    def _take(self, data: bytes) -> None:
        if not data:
            return
        self.payload.take(data)
        if self.uu is not None:
            self.uu.feed(data)
        if self.text_decoder is not None:
            self._text(data, final=False)

    def _text(self, data: bytes, final: bool) -> None:
        assert self.text_decoder is not None
        try:
            text = self.text_decoder.decode(data, final)
        except Exception:  # a codec's own failure: keep what we have
            self.walker.defect("charset-decode-error")
            self.text_decoder = None
            return
        if len(text) >= self.walker.text_budget:
            text = text[: self.walker.text_budget]
            self.text_decoder = None  # budget spent: stop decoding text
        self.walker.text_budget -= len(text)
        if text:
            self.text.append(text)

    def finish(self) -> None:
        self._take(self.decoder.finish())
        if self.text_decoder is not None:
            self._text(b"", final=True)
        if self.uu is not None:
            self.uu.finish()
            for name in self.uu.defects:
                self.walker.defect(name)
        for name in self.decoder.defects:
            self.walker.defect(name)
        headers = self.headers
        names, encrypted = self.payload.archive(self.walker) if self.is_attachment else ((), False)
        self.walker.add_part(
            Part(
                path=self.path,
                content_type=headers.content_type,
                filename=headers.filename,
                disposition=headers.disposition,
                transfer_encoding=headers.transfer_encoding,
                decoded_size=self.payload.size,
                is_attachment=self.is_attachment,
                head=bytes(self.payload.head),
                archive_names=names,
                archive_encrypted=encrypted,
                depth=self.depth,
            )
        )
        if self.text:
            self.walker.texts.append(TextPart(headers.content_type, "".join(self.text)))
