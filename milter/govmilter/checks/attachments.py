"""The attachment-type policy: what may not travel as an attachment (QD 06/2022 Dieu 8.2).

The officers' rule file (`kind = "attachments"`) lists rules of six kinds:

- `true-type`: the content's real type, found by libmagic from its first
  bytes, whatever the file is called (`application/vnd.microsoft.portable-executable`);
  disk images by the signatures they keep deeper (an ISO's at 32 KiB, a VHD's footer);
  with `in_archives = true` the files inside zips too (sampled by the walk: mime/archives.py);
- `extension`: the file name's last extension (`exe`, `js`, `lnk`, `iso`);
- `mismatch`: a name that promises a document (`.pdf`) on content of a listed type;
- `double-extension`: a decoy extension before a dangerous one (`hoadon.pdf.exe`),
  and names that use Unicode direction controls to hide their real ending;
- `archive-extension`: names inside a zip, read from its central directory;
- `encrypted-archive`: a zip whose entries are encrypted (antivirus cannot look inside);
- `archive-bomb`: a zip that expands past `max_expanded` bytes, or holds an entry of
  meaningful size (archive.RATIO_FLOOR) compressed more than `max_ratio` times, or whose
  directory could not be read whole (`unreadable = true`, the default: its names and
  sizes were not all seen, so neither this rule nor `archive-extension` could judge it).
  All from the central directory: nothing is extracted, and the bomb is refused before
  clamd is asked to unpack it.

Every rule has an id, a description and `mode = "enforce" | "monitor"`. The
check reads only the MIME walk's facts: nothing is decoded again here.
"""

from __future__ import annotations

import fnmatch
import logging
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import magic

from govmilter.checks import CheckHooks
from govmilter.config import AttachmentsConfig, Config
from govmilter.metrics import Metrics
from govmilter.model import Action, ArchiveMember, Mode, Part, Stage, Transaction, Verdict
from govmilter.ruleset import RuleErrors, RuleFile, RuleProblem, parse_mode
from govmilter.ruleset.schema import REQUIRED, Key, Schema, id_problem

log = logging.getLogger("govmilter.attachments")

RULE_KIND = "attachments"

# what each kind of rule needs: its required list keys and its words in the reply
_NEEDS: dict[str, tuple[str, ...]] = {
    "true-type": ("types",),
    "extension": ("extensions",),
    "mismatch": ("extensions", "types"),
    "double-extension": ("extensions",),
    "archive-extension": ("extensions",),
    "encrypted-archive": (),
    "archive-bomb": (),
}
_WORDS: dict[str, tuple[str, str]] = {  # the reply's words, Vietnamese without jargon, then English
    "true-type": ("loai tep bi cam", "file type not allowed"),
    "extension": ("duoi tep bi cam", "file extension not allowed"),
    "mismatch": ("ten tep khong dung voi noi dung that cua tep", "file name does not match its content"),
    "double-extension": ("ten tep an duoi that cua tep", "file name disguises its extension"),
    "archive-extension": ("tep nen chua tep bi cam", "archive contains a file that is not allowed"),
    "encrypted-archive": ("tep nen dat mat khau, khong kiem tra duoc", "encrypted archive"),
    "archive-bomb": ("tep nen bung ra qua lon khi giai nen", "archive expands too far (zip bomb)"),
}
SCHEMA = Schema(
    RULE_KIND,
    "rule",
    (
        Key("id", "text", REQUIRED, "unique name: the log, the metric label and the X-Govmilter-Monitor header"),
        Key("description", "text", REQUIRED, "what the rule is for"),
        Key("mode", "enforce | monitor", '"enforce"', "enforce: refuse (550 5.7.1); monitor: log, count and tag only"),
        Key(
            "match",
            " | ".join(_NEEDS),
            REQUIRED,
            'true-type: the content\'s real type by libmagic, whatever the name: needs types (MIME types; shell '
            'patterns such as "application/x-*" allowed)\n'
            "extension: the last extension of the file name: needs extensions\n"
            "mismatch: a name ending in one of extensions on content of one of types\n"
            'double-extension: one of decoys followed by one of extensions ("hoadon.pdf.exe"), and any name using '
            "Unicode direction controls to hide its ending; without decoys, any short extension counts as a decoy\n"
            "archive-extension: a name inside a zip (read from its directory, never extracted) ending in one of "
            "extensions\n"
            "encrypted-archive: a zip with encrypted entries: antivirus cannot scan inside\n"
            "archive-bomb: a zip that would expand too far, read from its directory (never extracted): "
            "max_expanded, max_ratio, unreadable",
        ),
        Key("types", "list of text", "[]", "libmagic MIME types, shell patterns allowed"),
        Key(
            "in_archives",
            "true or false",
            "false",
            "true-type only: also the files inside zip archives (zips in zips too), typed from their first bytes "
            "and the places a disk image keeps its signature, as an attachment is; read within the message's "
            "64 MiB inflate budget, the first 64 files of an archive and 256 of the message (later ones by "
            "their names, with archive-extension); not the parts of an Office file (.docx, .xlsx, .odt...), "
            "which no one opens one by one",
        ),
        Key(
            "extensions",
            "list of text",
            "[]",
            "without the dot, lower-case; names are compared the way Windows reads them: case-insensitive, "
            "trailing dots and spaces ignored",
        ),
        Key("decoys", "list of text", "[]", "double-extension: the extensions used as a disguise"),
        Key(
            "max_expanded",
            "integer",
            "0",
            "archive-bomb only: bytes all entries expand to (0: no limit)",
        ),
        Key(
            "max_ratio",
            "number",
            "0",
            "archive-bomb only: uncompressed / compressed size of one entry, counted for entries of 64 KiB "
            "compressed or more (0: no limit)",
        ),
        Key(
            "unreadable",
            "true or false",
            "true",
            "archive-bomb only: a zip whose directory could not be read whole (broken, larger than the 128 KiB "
            "kept, more than 1000 names) matches too: its names and sizes were not seen",
        ),
    ),
)
_BOMB_KEYS = frozenset({"max_expanded", "max_ratio", "unreadable"})

# Unicode controls that reorder how a name is shown ("abc\u202efdp.exe" reads "abcexe.pdf")
_DIRECTION_CONTROLS = re.compile("[\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_EXTENSION_LIKE = re.compile(r"^[a-z0-9]{1,5}$")
_REPLY_UNSAFE = re.compile(r"[^A-Za-z0-9._()+=@, -]")


@dataclass(frozen=True)
class AttachmentRule:
    id: str
    description: str
    mode: Mode
    match: str
    types: tuple[str, ...] = ()  # libmagic MIME types, shell patterns allowed ("application/x-*exec*")
    extensions: frozenset[str] = frozenset()
    decoys: frozenset[str] = frozenset()  # double-extension: the extensions used as a disguise
    max_expanded: int = 0  # archive-bomb: bytes all entries expand to (0: no limit)
    max_ratio: float = 0.0  # archive-bomb: compression ratio of one entry (0: no limit)
    unreadable: bool = True  # archive-bomb: a directory that could not be read whole matches
    in_archives: bool = False  # true-type: the members of zips too (their samples: Part.archive_members)


@dataclass(frozen=True)
class AttachmentRules:
    rules: tuple[AttachmentRule, ...] = ()
    # every in_archives rule lists disk-image types only: a zip member that shows no disk image's
    # signature is not typed at all (libmagic costs ~0.2 ms a member; an .xlsx is a zip of dozens)
    members_disk_images_only: bool = True


def compile_rules(files: Sequence[RuleFile]) -> AttachmentRules:
    problems: list[RuleProblem] = []
    rules: list[AttachmentRule] = []
    seen: set[str] = set()
    for rule_file in files:
        for key in sorted(set(rule_file.data) - SCHEMA.file_names):
            problems.append(rule_file.problem("", f"unknown key {key!r} (expected kind and [[rule]] tables)"))
        entries = rule_file.data.get("rule", [])
        if not isinstance(entries, list):
            problems.append(rule_file.problem("", "rule must be an array of tables: [[rule]]"))
            continue
        for entry in entries:
            rule = _compile_one(rule_file, entry, seen, problems)
            if rule is not None:
                rules.append(rule)
    if problems:
        raise RuleErrors(problems)
    members_disk_images_only = all(
        set(rule.types) <= DISK_IMAGE_TYPES for rule in rules if rule.in_archives
    )
    return AttachmentRules(tuple(rules), members_disk_images_only)


def _compile_one(
    rule_file: RuleFile, entry: Any, seen: set[str], problems: list[RuleProblem]
) -> AttachmentRule | None:
    if not isinstance(entry, dict):
        problems.append(rule_file.problem("", "each [[rule]] must be a table"))
        return None
    rule_id = entry.get("id")
    problem = id_problem(rule_id)  # ids are metric labels, header text and SMTP reply text
    if not isinstance(rule_id, str) or not rule_id.strip():
        problems.append(rule_file.problem("", problem))
        return None
    found = len(problems)
    if problem:
        problems.append(rule_file.problem(rule_id, problem))
    if rule_id in seen:
        problems.append(rule_file.problem(rule_id, "duplicate rule id"))
    seen.add(rule_id)
    for key in sorted(set(entry) - SCHEMA.names):
        problems.append(rule_file.problem(rule_id, f"unknown key {key!r}"))
    description = entry.get("description")
    if not isinstance(description, str) or not description.strip():
        problems.append(rule_file.problem(rule_id, "description is missing"))
    mode = parse_mode(entry.get("mode"), rule_file, rule_id, problems)
    match = entry.get("match")
    if match not in _NEEDS:
        problems.append(rule_file.problem(rule_id, f"match = {match!r}: expected one of {', '.join(_NEEDS)}"))
        return None
    lists: dict[str, tuple[str, ...]] = {}
    for key in ("types", "extensions", "decoys"):
        value = entry.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            problems.append(rule_file.problem(rule_id, f"{key} must be a list of non-empty strings"))
            value = []
        lists[key] = tuple(v.strip().lower() for v in value)
    for key in _NEEDS[match]:
        if not lists[key]:
            problems.append(rule_file.problem(rule_id, f"match = {match!r} needs a non-empty {key} list"))
    bomb = _bomb_limits(rule_file, rule_id, entry, match, problems)
    in_archives = entry.get("in_archives", False)
    if not isinstance(in_archives, bool):
        problems.append(rule_file.problem(rule_id, f"in_archives = {in_archives!r}: expected true or false"))
    elif in_archives and match != "true-type":
        problems.append(rule_file.problem(rule_id, "in_archives is only for match = 'true-type'"))
    if len(problems) > found:
        return None
    return AttachmentRule(
        id=rule_id,
        description=str(description).strip(),
        mode=mode,
        match=match,
        types=lists["types"],
        extensions=frozenset(e.lstrip(".") for e in lists["extensions"]),
        decoys=frozenset(e.lstrip(".") for e in lists["decoys"]),
        max_expanded=bomb[0],
        max_ratio=bomb[1],
        unreadable=bomb[2],
        in_archives=in_archives is True,
    )


def _bomb_limits(
    rule_file: RuleFile, rule_id: str, entry: dict[str, Any], match: str, problems: list[RuleProblem]
) -> tuple[int, float, bool]:
    """max_expanded, max_ratio and unreadable of an archive-bomb rule (only there)."""
    present = sorted(_BOMB_KEYS & set(entry))
    if match != "archive-bomb":
        for key in present:
            problems.append(rule_file.problem(rule_id, f"{key} is only for match = 'archive-bomb'"))
        return 0, 0.0, True
    expanded = entry.get("max_expanded", 0)
    if isinstance(expanded, bool) or not isinstance(expanded, int) or expanded < 0:
        problems.append(rule_file.problem(rule_id, f"max_expanded = {expanded!r}: expected bytes, a whole number >= 0"))
        expanded = 0
    ratio = entry.get("max_ratio", 0)
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or ratio < 0 or ratio != ratio:
        problems.append(rule_file.problem(rule_id, f"max_ratio = {ratio!r}: expected a number >= 0"))
        ratio = 0
    unreadable = entry.get("unreadable", True)
    if not isinstance(unreadable, bool):
        problems.append(rule_file.problem(rule_id, f"unreadable = {unreadable!r}: expected true or false"))
        unreadable = True
    if not expanded and not ratio and not unreadable:
        message = "match = 'archive-bomb' needs max_expanded, max_ratio or unreadable"
        problems.append(rule_file.problem(rule_id, message))
    return int(expanded), float(ratio), unreadable


def normalize_name(filename: str) -> str:
    """The name as Windows would act on it: lower-case, direction controls gone, no trailing dots."""
    return _DIRECTION_CONTROLS.sub("", filename).strip().rstrip(". ").lower()


def extensions_of(name: str) -> list[str]:
    """The dot-separated endings of a normalized name, last one last ("a.pdf.exe" -> ["pdf", "exe"])."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    pieces = [p.strip() for p in base.split(".")]
    return pieces[1:] if len(pieces) > 1 else []


# Disk images that Windows opens with a double click, typed deeper than the head (the walk keeps
# the bytes: mime/walker.py PROBES and END). libmagic names them; for VHDX it knows the format but
# gives no MIME type, so the name shared-mime-info uses is given here.
ISO_DESCRIPTORS = (b"CD001", b"BEA01", b"NSR02", b"NSR03")  # ISO 9660, UDF, at byte 1 of sectors 16-18
VHD_COOKIE = b"conectix"  # a VHD's footer, the last 512 bytes (and, dynamic VHDs, also the first)
VHDX_SIGNATURE = b"vhdxfile"  # a VHDX's file type identifier, at 0
VHDX_TYPE = "application/x-virtualbox-vhdx"


def _libmagic(data: bytes) -> str:
    try:
        return str(magic.from_buffer(data, mime=True)).lower()
    except Exception:  # libmagic on hostile bytes: unknown type, the other rules still apply
        log.warning("libmagic failed on a part head", exc_info=True)
        return ""


def true_type(head: bytes, probes: Sequence[tuple[int, bytes]] = (), end: bytes = b"") -> str:
    """libmagic's MIME type of a file from its first bytes ("" when it cannot tell).

    An ISO 9660 or UDF image is told by its volume descriptor at 32 KiB (`probes`: libmagic
    gets those bytes at their offsets), a fixed VHD by its footer (`end`, the last 512 bytes),
    a VHDX by its first 8 bytes: whatever the head says, these formats win, so that an image
    named bao-cao.pdf is typed as the image it is.
    """
    if not head:
        return ""
    if head.startswith(VHDX_SIGNATURE):
        return VHDX_TYPE
    if any(data[1:6] in ISO_DESCRIPTORS for _offset, data in probes):
        last = max(offset + len(data) for offset, data in probes)
        deep = bytearray(last)  # only the descriptors: a polyglot's head (a PDF's) must not hide them
        for offset, data in probes:
            deep[offset : offset + len(data)] = data
        kind = _libmagic(bytes(deep))
        if kind not in GENERIC_TYPES:
            return kind
    if end[-512:].startswith(VHD_COOKIE):
        kind = _libmagic(end[-512:])
        if kind not in GENERIC_TYPES:
            return kind
    kind = _libmagic(head)
    if kind == "application/x-dosexec" and not head.startswith(b"MZ"):
        # libmagic's guess "DOS executable (COM)" from a first byte 0xEB or 0xE9 alone: it fires on
        # one compressed or encrypted file in a hundred, and 16-bit programs no longer run anyway
        return "application/octet-stream"
    return kind


# what true_type() tells from signatures deeper than a head, or from a boot sector
DISK_IMAGE_TYPES = frozenset(
    {
        "application/x-iso9660-image",
        "application/x-udf-image",
        "application/x-ima",
        "application/x-virtualbox-vhd",
        VHDX_TYPE,
    }
)
GENERIC_TYPES = frozenset({"", "application/octet-stream", "text/plain", "inode/x-empty", "application/x-empty"})


def reply_name(filename: str) -> str:
    """A file name fit for an SMTP reply: ASCII, no '%', bounded."""
    # Vietnamese without diacritics: marks fall away in NFKD; d-with-stroke has no decomposition
    spelled = filename.replace("\u0111", "d").replace("\u0110", "D")
    ascii_name = unicodedata.normalize("NFKD", spelled).encode("ascii", "ignore").decode()
    return _REPLY_UNSAFE.sub("_", ascii_name)[:80] or "khong ten/unnamed"


@dataclass
class _Subject:
    """One attachment as the rules see it."""

    part: Part
    name: str
    extensions: list[str]
    _type: str | None = None
    _member_types: tuple[tuple[str, str], ...] | None = None

    @property
    def true_type(self) -> str:
        if self._type is None:
            part = self.part
            end = part.end or (part.head[-512:] if part.decoded_size <= len(part.head) else b"")
            self._type = true_type(part.head, part.probes, end)
        return self._type

    def member_types(self, disk_images_only: bool) -> tuple[tuple[str, str], ...]:
        """(name, true type) of each zip member the walk sampled ("" for a member not typed)."""
        if self._member_types is None:
            self._member_types = tuple(
                (member.name, true_type(member.head, member.probes, member.end))
                if not disk_images_only or _disk_image_signature(member)
                else (member.name, "")
                for member in self.part.archive_members
            )
        return self._member_types


def _disk_image_signature(member: ArchiveMember) -> bool:
    """The member shows a sign of a disk image that libmagic types (DISK_IMAGE_TYPES): else it is none."""
    head = member.head
    return (
        any(data[1:6] in ISO_DESCRIPTORS for _offset, data in member.probes)
        or head.startswith((VHDX_SIGNATURE, VHD_COOKIE))
        or member.end[-512:].startswith(VHD_COOKIE)
        or head[:1] in (b"\xeb", b"\xe9")  # a boot sector's jump: FAT images (application/x-ima)
        or head[510:512] == b"\x55\xaa"  # a boot sector's signature: FAT, partitioned images
    )


def _matches(rule: AttachmentRule, subject: _Subject, disk_images_only: bool = False) -> str:
    """Why the rule matches this attachment ("" when it does not)."""
    last = subject.extensions[-1] if subject.extensions else ""
    if rule.match == "true-type":
        kind = subject.true_type
        if kind and any(fnmatch.fnmatchcase(kind, pattern) for pattern in rule.types):
            return f"true type {kind}"
        if rule.in_archives:
            for inner, kind in subject.member_types(disk_images_only):
                if kind and any(fnmatch.fnmatchcase(kind, pattern) for pattern in rule.types):
                    return f"archive member {inner!r}: true type {kind}"
    elif rule.match == "extension":
        if last in rule.extensions:
            return f"extension .{last}"
    elif rule.match == "mismatch":
        if last in rule.extensions:
            kind = subject.true_type
            if kind and any(fnmatch.fnmatchcase(kind, pattern) for pattern in rule.types):
                return f"name .{last} on content {kind}"
    elif rule.match == "double-extension":
        if _DIRECTION_CONTROLS.search(subject.part.filename):
            return "direction control characters in the name"
        if len(subject.extensions) >= 2 and last in rule.extensions:
            decoy = subject.extensions[-2]
            if decoy in rule.decoys or (not rule.decoys and _EXTENSION_LIKE.match(decoy)):
                return f"double extension .{decoy}.{last}"
    elif rule.match == "archive-extension":
        for inner in subject.part.archive_names:
            endings = extensions_of(normalize_name(inner))
            if endings and endings[-1] in rule.extensions and not inner.endswith("/"):
                return f"archive member {inner!r}"
    elif rule.match == "encrypted-archive":
        if subject.part.archive_encrypted:
            return "encrypted archive"
    elif rule.match == "archive-bomb":
        part = subject.part
        if rule.max_expanded and part.archive_expanded > rule.max_expanded:
            return f"archive expands to {part.archive_expanded} bytes (> {rule.max_expanded})"
        if rule.max_ratio and part.archive_ratio > rule.max_ratio:
            return f"archive entry compressed {part.archive_ratio:.0f} times (> {rule.max_ratio:g})"
        if rule.unreadable and part.archive_unreadable:
            return f"archive directory not readable whole ({part.archive_unreadable})"
    return ""


class AttachmentsCheck(CheckHooks):
    name = "attachments"
    stages = frozenset({Stage.EOM})

    def __init__(self, metrics: Metrics, reply_text: str = AttachmentsConfig.reply_text):
        self.metrics = metrics
        self.reply_text = reply_text

    def run(self, stage: Stage, tx: Transaction) -> Sequence[Verdict]:
        compiled: AttachmentRules | None = tx.ruleset.get(RULE_KIND)
        if not compiled or not compiled.rules:
            return []
        monitored: list[Verdict] = []
        # the types the rules made the check read, for the decision record (history: what was attached)
        typed: dict[str, str] = tx.scratch.setdefault("true_types", {})
        for subject in _subjects(tx.facts().parts):
            refusal = None
            for rule in compiled.rules:
                why = _matches(rule, subject, compiled.members_disk_images_only)
                if not why:
                    continue
                verdict = _verdict(rule, subject, why, self.reply_text)
                if verdict.refuses:
                    refusal = verdict
                    break
                monitored.append(verdict)
            if subject._type:
                typed[subject.part.path] = subject._type
            if refusal is not None:
                return [*monitored, refusal]  # the first enforced finding decides
        return monitored


def _subjects(parts: Iterable[Part]) -> Iterable[_Subject]:
    for part in parts:
        # the body text of an attached message is no subject; its files are, counted or not
        if part.is_attachment or part.filename or part.content_type not in ("text/plain", "text/html"):
            name = normalize_name(part.filename)
            yield _Subject(part, name, extensions_of(name))


def _verdict(rule: AttachmentRule, subject: _Subject, why: str, template: str) -> Verdict:
    words_vi, words_en = _WORDS[rule.match]
    name = reply_name(subject.part.filename)
    return Verdict(
        Action.REJECT,
        "attachments",
        rule=rule.id,
        code="550",
        enhanced="5.7.1",
        text=template.format(what_vi=words_vi, what_en=words_en, name=name),
        mode=rule.mode,
        reason=f"part {subject.part.path}: {why} ({rule.description})",
    )


def build(config: Config, metrics: Metrics) -> AttachmentsCheck:
    return AttachmentsCheck(metrics, config.attachments.reply_text)
