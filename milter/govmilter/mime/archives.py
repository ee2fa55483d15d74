"""Names and encryption flags of a zip archive, read from its central directory.

Nothing is extracted. The central directory sits at the end of a zip, so the
MIME walk keeps only a bounded tail of an attachment that starts like a zip
and hands that tail here when the part ends. A directory larger than the tail
is reported as such instead of being read.

The directory also tells each entry's compressed and uncompressed size, which
is all a zip bomb policy needs: the expanded size of the whole archive (a
zip64 entry's real sizes are read from its extra field) and the largest
compression ratio of an entry of meaningful size (RATIO_FLOOR). Sizes are what
the archive declares; an extractor that trusts the data stream instead is
clamd's affair, and clamd reports what passes its own limits (AlertExceedsMax).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from govmilter.model import ArchiveMember

LOCAL_HEADER = b"PK\x03\x04"
EMPTY_ARCHIVE = b"PK\x05\x06"  # an archive with no entries is only its end record

_EOCD = struct.Struct("<4sHHHHIIH")  # end of central directory record, 22 bytes
_EOCD64_LOCATOR = struct.Struct("<4sIQI")  # 20 bytes
_EOCD64 = struct.Struct("<4sQHHIIQQQQ")  # 56 bytes
_ENTRY = struct.Struct("<4sHHHHHHIIIHHHHHII")  # central directory file header, 46 bytes
_LOCAL = struct.Struct("<4sHHH")  # start of a local file header
_AES = 99  # compression method of WinZip AES encryption
_MAX_COMMENT = 65535
_ZIP64_EXTRA = 0x0001
_EXTRA = struct.Struct("<HH")

# An entry's compression ratio counts only from this compressed size up. Below it an entry
# expands to at most 64 KiB x 1032 (deflate's ceiling) = 66 MiB, less than what clamd scans
# whole by default (MaxFileSize 100M), while small parts of real files have ratios in the
# hundreds: a repeated string in an xlsx's sharedStrings.xml (15 kB -> 5.3 MB, 340:1), a blank
# 30 MB bitmap (29 kB, 1028:1). Above it, real content measured 10:1 to 16:1 (sheet XML of
# 200 000 rows, server logs); zeros and other bombs 1000:1.
RATIO_FLOOR = 65536


@dataclass(frozen=True)
class ZipListing:
    names: tuple[str, ...] = ()
    encrypted: bool = False
    problem: str = ""  # "" or a defect name: archive-directory-too-large, archive-broken, ...
    expanded: int = 0  # the uncompressed sizes of the entries read, summed
    ratio: float = 0.0  # the largest uncompressed/compressed ratio of an entry of RATIO_FLOOR or more
    entries: int = 0  # entries read from the directory


def looks_like_zip(head: bytes) -> bool:
    return head.startswith((LOCAL_HEADER, EMPTY_ARCHIVE))


def local_header_encrypted(head: bytes) -> bool:
    """The first local file header's encryption flag (seen even when the directory is not)."""
    if len(head) < _LOCAL.size or not head.startswith(LOCAL_HEADER):
        return False
    _, _, flags, method = _LOCAL.unpack_from(head)
    return bool(flags & 1) or method == _AES


def read_directory(tail: bytes, total_size: int, max_names: int) -> ZipListing:
    """List the archive whose last `len(tail)` bytes (of `total_size`) are `tail`."""
    eocd = _find_eocd(tail)
    if eocd < 0:
        return ZipListing(problem="archive-broken")
    _, _, _, _, count, cd_size, cd_offset, _ = _EOCD.unpack_from(tail, eocd)
    cd_end = eocd
    # zip64 end records sit between the directory and the end record; some tools write
    # them even for small archives, so their locator is looked for every time
    found = _zip64(tail, eocd)
    if found is not None:
        count, cd_size, cd_end = found
    elif count == 0xFFFF or cd_size == 0xFFFFFFFF or cd_offset == 0xFFFFFFFF:
        return ZipListing(problem="archive-broken")
    cd_start = cd_end - cd_size
    if cd_start < 0:
        problem = "archive-directory-too-large" if total_size > len(tail) else "archive-broken"
        return ZipListing(problem=problem)
    return _entries(tail, cd_start, cd_end, count, max_names)


def _find_eocd(tail: bytes) -> int:
    """Position of the last plausible end record (its comment must fit in the tail)."""
    floor = max(0, len(tail) - _EOCD.size - _MAX_COMMENT)
    position = len(tail)
    while True:
        position = tail.rfind(EMPTY_ARCHIVE, floor, position)
        if position < 0 or position + _EOCD.size > len(tail):
            if position < 0:
                return -1
            continue
        comment_length = _EOCD.unpack_from(tail, position)[7]
        if position + _EOCD.size + comment_length <= len(tail):
            return position


def _zip64(tail: bytes, eocd: int) -> tuple[int, int, int] | None:
    locator = eocd - _EOCD64_LOCATOR.size
    if locator < 0 or tail[locator : locator + 4] != b"PK\x06\x07":
        return None
    record = tail.rfind(b"PK\x06\x06", 0, locator)
    if record < 0 or record + _EOCD64.size > len(tail):
        return None
    fields = _EOCD64.unpack_from(tail, record)
    count, cd_size = fields[7], fields[8]
    return min(count, 1 << 31), cd_size, record


def _entries(tail: bytes, start: int, end: int, count: int, max_names: int) -> ZipListing:
    names: list[str] = []
    encrypted = False
    position = start
    problem = ""
    expanded = 0
    ratio = 0.0
    read = 0
    for _ in range(count):
        if position + _ENTRY.size > end or tail[position : position + 4] != b"PK\x01\x02":
            problem = "archive-broken"
            break
        fields = _ENTRY.unpack_from(tail, position)
        flags, method = fields[3], fields[4]
        compressed, uncompressed = fields[8], fields[9]
        name_length, extra_length, comment_length = fields[10], fields[11], fields[12]
        name_end = position + _ENTRY.size + name_length
        raw_name = tail[position + _ENTRY.size : name_end]
        if compressed == 0xFFFFFFFF or uncompressed == 0xFFFFFFFF:
            extra = tail[name_end : name_end + extra_length]
            compressed, uncompressed = _zip64_sizes(extra, compressed, uncompressed)
        position = name_end + extra_length + comment_length
        read += 1
        expanded += uncompressed
        if compressed >= RATIO_FLOOR:
            ratio = max(ratio, uncompressed / compressed)
        encrypted = encrypted or bool(flags & 1) or method == _AES
        if len(names) < max_names:
            # bit 11: the name is UTF-8; otherwise the historical code page 437
            names.append(raw_name.decode("utf-8" if flags & 0x800 else "cp437", "replace")[:255])
        elif not problem:
            problem = "archive-names-truncated"
    return ZipListing(tuple(names), encrypted, problem, expanded, ratio, read)


def _zip64_sizes(extra: bytes, compressed: int, uncompressed: int) -> tuple[int, int]:
    """The real sizes of a zip64 entry: its extra field holds each size that reads 0xFFFFFFFF."""
    position = 0
    while position + _EXTRA.size <= len(extra):
        kind, size = _EXTRA.unpack_from(extra, position)
        data = extra[position + _EXTRA.size : position + _EXTRA.size + size]
        position += _EXTRA.size + size
        if kind != _ZIP64_EXTRA:
            continue
        offset = 0
        if uncompressed == 0xFFFFFFFF and offset + 8 <= len(data):
            uncompressed = int.from_bytes(data[offset : offset + 8], "little")
            offset += 8
        if compressed == 0xFFFFFFFF and offset + 8 <= len(data):
            compressed = int.from_bytes(data[offset : offset + 8], "little")
        break
    return compressed, uncompressed


# ---- local file headers, read as the bytes pass: zips inside zips, members' true types ---------

GZIP_MAGIC = b"\x1f\x8b\x08"
MAX_NESTING = 3  # zips inside a zip whose entries are read (the outer one is depth 0)
INFLATE_BUDGET = 64 << 20  # bytes inflated per message, every archive of it: nested zips and members' samples
_STEP = 1 << 20  # bytes inflated at a time: memory stays bounded whatever the ratio
_PROBE = 4096  # bytes inflated from an entry before its first four bytes say whether it is a zip
_LOCAL_FULL = struct.Struct("<4sHHHHHIIIHH")  # local file header, 30 bytes
_DESCRIPTOR = 0x08  # general purpose flag bit 3: sizes follow the data, the header's are zero

# What a member's true type needs, as the walk keeps for an attachment (walker.PROBES): its first
# bytes, the volume descriptors of an ISO 9660 / UDF image (byte 1 of sectors 16 to 18), and for a
# member read to its end (stored, or inflated whole) the last 512 bytes, a fixed VHD's footer.
MEMBER_HEAD = 2048
MEMBER_PROBES = (32768, 34816, 36864)
MEMBER_PROBE_BYTES = 8
MEMBER_END = 512
MEMBER_REACH = MEMBER_PROBES[-1] + MEMBER_PROBE_BYTES  # bytes of a member a sample needs inflated
MAX_MEMBERS = 64  # members sampled per top-level archive, every depth; the later ones by name only
# members sampled per message, every archive: 900 small zips of 64 members each held 156 MB of samples
# and inflated 2 GB (a 4.9 s walk) before this bound; past it members are judged by name and by clamd
MESSAGE_MEMBERS = 256
INFLATE_BUDGET_SPENT = "archive-inflate-budget"  # a member's sample was cut by INFLATE_BUDGET
# Office and OpenDocument files are zips that their programs open, not Explorer: nobody opens a
# file inside them with a double click, so their members are not sampled (an .xlsx of 60 sheets
# cost 5-7 ms more to sample, each sheet inflated to 36 KiB). Judged by the attachment's name:
# a zip named bao-cao.zip, or bao-cao.xlsx.zip, is sampled.
OFFICE_PACKAGES = frozenset(
    "docx docm dotx dotm xlsx xlsm xltx xltm xlsb pptx pptm potx potm ppsx ppsm sldx vsdx "
    "odt ods odp odg odf ott ots otp".split()
)


def sampled_by_name(filename: str) -> bool:
    """Whether the members of a zip attachment with this name are sampled for their true type."""
    name = filename.strip().rstrip(". ")
    return "." not in name or name.rsplit(".", 1)[1].lower() not in OFFICE_PACKAGES


def gzip_isize(tail: bytes, total_size: int) -> tuple[int, float]:
    """(expanded, ratio) of a gzip file from its ISIZE trailer (the expanded size mod 2**32).

    The trailer only covers the last member and wraps at 4 GiB: a lower bound, good enough to
    refuse the common bomb before clamd unpacks it (clamd's own size alert covers the rest).
    """
    if len(tail) < 8 or total_size < 18:
        return 0, 0.0
    expanded = int.from_bytes(tail[-4:], "little")
    ratio = expanded / total_size if total_size >= RATIO_FLOOR else 0.0
    return expanded, ratio


class _Sampler:
    """The bytes of one member its true type needs, taken as its (inflated) bytes pass."""

    def __init__(self, name: str, size: int):
        self.name = name
        self.size = size  # the member's uncompressed size, from its header
        self.seen = 0
        self.head = bytearray()
        self.probes: dict[int, bytearray] = {}
        self.end = bytearray()

    @property
    def wants(self) -> int:
        """Bytes still needed before the sample is whole (the end is taken only in passing)."""
        return max(0, min(MEMBER_REACH, self.size) - self.seen)

    def take(self, data: bytes) -> None:
        before = self.seen
        self.seen += len(data)
        if len(self.head) < MEMBER_HEAD:
            self.head += data[: MEMBER_HEAD - len(self.head)]
        if before < MEMBER_REACH and self.seen > MEMBER_PROBES[0]:
            for offset in MEMBER_PROBES:
                start, stop = max(offset, before), min(offset + MEMBER_PROBE_BYTES, self.seen)
                if start < stop:
                    self.probes.setdefault(offset, bytearray()).extend(data[start - before : stop - before])
        self.end += data[-MEMBER_END:]
        del self.end[: max(0, len(self.end) - MEMBER_END)]

    def member(self) -> ArchiveMember:
        whole = self.seen >= self.size > len(self.head)  # read to its end, and longer than its head
        return ArchiveMember(
            self.name,
            bytes(self.head),
            tuple((offset, bytes(data)) for offset, data in sorted(self.probes.items())),
            bytes(self.end) if whole else b"",
        )


class _Tree:
    """What every level of one top-level archive shares: the inflate budget and the members sampled."""

    def __init__(self, budget: list[int] | None, max_members: int = MAX_MEMBERS, left: list[int] | None = None):
        self.budget = budget if budget is not None else [INFLATE_BUDGET]
        self.max_members = max_members
        self.left = left if left is not None else [MESSAGE_MEMBERS]  # samples the message has left
        self.members: list[ArchiveMember] = []
        self.sampling = 0  # members sampled, finished or not
        self.cut = False  # a sample needed bytes past the budget


class ZipStream:
    """A zip's local file headers, read in order as its bytes pass; nothing is searched for.

    Each header gives the entry's sizes and where the next header starts, so the data is
    skipped by counting. An entry that is itself a zip, stored (method 0) or deflated
    (method 8, inflated within a budget shared by the whole tree), is read the same way,
    MAX_NESTING deep. This is what the central directory cannot tell: an outer zip that
    STORES ten zips of 200 MiB of zeros each has an outer ratio of 1, and clamd, which cuts
    each entry at MaxFileSize without an alert, answers clean. The walk reports the largest
    expanded size and ratio of the central directory and of this stream.

    The first MAX_MEMBERS members (stored or deflated, not encrypted, at any depth; MESSAGE_MEMBERS
    for all the message's archives together) are also sampled for their true type (`members`):
    an ISO named bao-cao.pdf inside a zip is typed by its volume descriptor at 32 KiB, inflated
    within the same budget (the message's). A sample the budget cuts makes the archive not
    readable whole (`cut`, INFLATE_BUDGET_SPENT: the archive-bomb rule's `unreadable` policy);
    members past MAX_MEMBERS or MESSAGE_MEMBERS are judged by their names and by clamd.

    Reading stops (what was read stays) at the central directory, at a header that is not
    one, or at an entry whose sizes come after its data (flag bit 3): its end cannot be
    found without inflating or searching, and clamd and the directory judge the rest.
    """

    def __init__(
        self,
        depth: int = 0,
        budget: list[int] | None = None,
        tree: _Tree | None = None,
        sample: bool = True,
        left: list[int] | None = None,
    ):
        """`budget` and `left` are the message's (shared by its archives): bytes to inflate, members to sample."""
        self.depth = depth
        self.tree = tree if tree is not None else _Tree(budget, MAX_MEMBERS if sample else 0, left)
        self.budget = self.tree.budget
        self.expanded = 0  # uncompressed sizes of the entries read, a nested zip by its own expansion
        self.ratio = 0.0  # largest uncompressed/compressed ratio of an entry of RATIO_FLOOR or more, at any depth
        self.entries = 0
        self.alive = True
        self._buffer = bytearray()
        self._want = _LOCAL_FULL.size
        self._fields: tuple[int, ...] = ()
        self._skip = 0  # data bytes of the current entry still to pass
        self._size = 0  # the current entry's uncompressed size
        self._child: ZipStream | None = None
        self._sampler: _Sampler | None = None
        self._inflater: zlib._Decompress | None = None
        self._deflated = False  # the current entry is deflated: its data reaches readers only inflated
        self._pending = b""  # deflated input held back while the inflater's output is bounded

    @property
    def members(self) -> tuple[ArchiveMember, ...]:
        """The members sampled so far, at every depth, in the order they ended."""
        return tuple(self.tree.members)

    @property
    def cut(self) -> bool:
        return self.tree.cut

    def feed(self, data: bytes) -> None:
        pos = 0
        end = len(data)
        while pos < end and self.alive:
            if self._skip:
                count = min(self._skip, end - pos)
                if self._child is not None or self._sampler is not None:
                    self._pass(data[pos : pos + count])
                self._skip -= count
                pos += count
                if not self._skip:
                    self._end_entry()
                continue
            take = data[pos : pos + self._want - len(self._buffer)]
            self._buffer += take
            pos += len(take)
            if len(self._buffer) == self._want:
                self._header()

    def _header(self) -> None:
        buffer = self._buffer
        if len(buffer) == _LOCAL_FULL.size:
            if not buffer.startswith(LOCAL_HEADER):
                self.alive = False  # the central directory, or not a zip at all
                return
            self._fields = _LOCAL_FULL.unpack_from(buffer)
            name_length, extra_length = self._fields[9], self._fields[10]
            if name_length + extra_length:
                self._want = _LOCAL_FULL.size + name_length + extra_length
                return
        flags, method = self._fields[2], self._fields[3]
        compressed, uncompressed = self._fields[7], self._fields[8]
        name_end = _LOCAL_FULL.size + self._fields[9]
        if compressed == 0xFFFFFFFF or uncompressed == 0xFFFFFFFF:
            extra = bytes(buffer[name_end:])
            compressed, uncompressed = _zip64_sizes(extra, compressed, uncompressed)
        raw_name = bytes(buffer[_LOCAL_FULL.size : name_end])
        self._buffer = bytearray()
        self._want = _LOCAL_FULL.size
        if flags & _DESCRIPTOR and not compressed:
            self.alive = False
            return
        self.entries += 1
        self.expanded += uncompressed
        if compressed >= RATIO_FLOOR:
            self.ratio = max(self.ratio, uncompressed / compressed)
        self._size = uncompressed
        readable = method in (0, 8) and not flags & 1 and compressed > 0
        if readable and compressed >= _LOCAL_FULL.size and self.depth < MAX_NESTING:
            self._child = ZipStream(self.depth + 1, tree=self.tree)
        tree = self.tree
        if (readable and uncompressed and tree.sampling < tree.max_members and tree.left[0] > 0
                and not raw_name.endswith(b"/")):  # fmt: skip
            tree.sampling += 1
            tree.left[0] -= 1
            name = raw_name.decode("utf-8" if flags & 0x800 else "cp437", "replace")[:255]
            self._sampler = _Sampler(name, uncompressed)
        self._deflated = method == 8
        if self._deflated and (self._child is not None or self._sampler is not None):
            self._inflater = zlib.decompressobj(-15)
        self._skip = compressed
        if not compressed:
            self._end_entry()

    def _pass(self, data: bytes) -> None:
        """Give an entry's data to the zip it may hold and to its sample (inflated first when deflated)."""
        if self._deflated:
            if self._inflater is None:
                return  # no reader needs more of it inflated
            self._inflate(self._pending + data if self._pending else data)
        else:
            if self._sampler is not None:
                self._sampler.take(data)
            if self._child is not None:
                self._child.feed(data)
        child = self._child
        if child is not None and not child.alive:
            if child.entries:
                self._settle_child()
            else:
                self._child = None
        if self._inflater is not None and self._child is None and (self._sampler is None or not self._sampler.wants):
            self._inflater = None  # nobody needs more of this entry inflated
            self._pending = b""

    def _inflate(self, data: bytes) -> None:
        """Inflate in steps of bounded size, each read by the child and the sampler before the next."""
        inflater = self._inflater
        assert inflater is not None
        while data:
            child, sampler = self._child, self._sampler
            wants = sampler.wants if sampler is not None else 0
            if child is not None and child.alive:
                step = max(_PROBE if not child.entries else _STEP, wants)
            elif wants:
                step = wants
            else:
                break
            step = min(step, self.budget[0])
            if step <= 0:  # the budget is spent: what was read stays
                if child is not None:
                    child.alive = False
                if sampler is not None and wants:
                    self.tree.cut = True  # the sample stays as far as it was read
                    self.tree.members.append(sampler.member())
                    self._sampler = None
                data = b""
                break
            try:
                out = inflater.decompress(data, step)
            except zlib.error:
                if child is not None:
                    child.alive = False
                self._sampler = None  # a damaged member: clamd's affair
                data = b""
                break
            data = inflater.unconsumed_tail
            self.budget[0] -= len(out)
            if sampler is not None:
                sampler.take(out)
            if child is not None and child.alive:
                child.feed(out)
            if not out or inflater.eof:
                break
        self._pending = data

    def _end_entry(self) -> None:
        if self._child is not None:
            self._settle_child()
        sampler, self._sampler = self._sampler, None
        if sampler is not None:
            self.tree.members.append(sampler.member())
        self._inflater = None
        self._pending = b""

    def _settle_child(self) -> None:
        child = self._child
        if child is not None and child.entries:
            self.expanded += max(0, child.expanded - self._size)
            self.ratio = max(self.ratio, child.ratio)
        self._child = None
