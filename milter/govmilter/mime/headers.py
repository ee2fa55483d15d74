"""The few MIME header fields the walk needs, parsed from one entity's header block.

Content-Type, Content-Disposition and Content-Transfer-Encoding, with their
parameters: quoted strings, RFC 2231 continuations and charsets
(`filename*0*=utf-8''...`), and RFC 2047 encoded words in file names
(`name="=?UTF-8?B?...?="`, as Outlook writes them). Bad values give a
defined result (the RFC 2045 defaults) and a defect name, never an exception.

The first of repeated fields is used, but two Content-Type,
Content-Transfer-Encoding or Content-Disposition fields of one entity whose
values read differently are ambiguous: mail clients differ on which one wins,
so what the checks judge may not be what the reader sees. That is a defect
("duplicate-content-type", ...), which the size check answers with its
malformed policy. Repeats that read the same are harmless and pass.

The same holds for a parameter given twice in one field with different values
(`boundary="=_a"; boundary="=_v"`: this walk, Python's email package and clamd
take the first, other readers the last), and for an RFC 2231 form of a parameter
(`filename*=utf-8''a.exe`) beside a plain one (`filename="a.txt"`) that says
something else: the defect "duplicate-parameter".
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email.errors import MessageError
from email.header import decode_header, make_header
from urllib.parse import unquote_to_bytes

_TOKEN_TYPE = re.compile(r"^[!#$%&'*+.^_`|~0-9a-z-]+/[!#$%&'*+.^_`|~0-9a-z-]+$")
_SECTION = re.compile(r"^([^*]+)\*(?:(\d{1,3})(\*)?|)$")  # name*, name*0, name*0*
_MAX_PARAMS = 64
_MAX_SECTIONS = 64
# the fields whose repetition with another value makes an entity ambiguous
AMBIGUOUS_FIELDS = ("content-type", "content-transfer-encoding", "content-disposition")
DUPLICATE_PARAMETER = "duplicate-parameter"
DUPLICATE_DEFECTS = frozenset({*(f"duplicate-{name}" for name in AMBIGUOUS_FIELDS), DUPLICATE_PARAMETER})


@dataclass(frozen=True)
class EntityHeaders:
    content_type: str = "text/plain"  # lower-case
    params: tuple[tuple[str, str], ...] = ()  # Content-Type parameters, names lower-case
    disposition: str = ""  # "attachment", "inline" or ""
    filename: str = ""
    transfer_encoding: str = ""  # lower-case, "" when absent
    defects: tuple[str, ...] = ()

    def param(self, name: str) -> str:
        for key, value in self.params:
            if key == name:
                return value
        return ""

    @property
    def boundary(self) -> str:
        return self.param("boundary")

    @property
    def charset(self) -> str:
        return self.param("charset").strip().lower()


def parse_entity(block: bytes, default_type: str = "text/plain") -> EntityHeaders:
    """Read the header block of one MIME entity (the bytes before its empty line)."""
    repeated: dict[str, list[str]] = {}
    fields = unfold(block, repeated)
    defects: list[str] = [f"duplicate-{name}" for name, values in repeated.items() if _differ(name, values)]
    content_type = default_type
    params: list[tuple[str, str]] = []
    conflicts: list[str] = []
    raw_type = fields.get("content-type")
    if raw_type is not None:
        value, params = parse_parameters(raw_type, conflicts)
        value = value.lower()
        if _TOKEN_TYPE.match(value):
            content_type = value
        else:
            # RFC 2045 says text/plain; a part we cannot type is counted as a file instead
            content_type = "application/octet-stream"
            defects.append("bad-content-type")
    disposition = ""
    disposition_params: list[tuple[str, str]] = []
    raw_disposition = fields.get("content-disposition")
    if raw_disposition is not None:
        disposition, disposition_params = parse_parameters(raw_disposition, conflicts)
        disposition = disposition.lower()
    if conflicts:
        defects.append(DUPLICATE_PARAMETER)
    filename = _first(disposition_params, "filename") or _first(params, "name")
    encoding = fields.get("content-transfer-encoding", "").strip().lower()
    return EntityHeaders(content_type, tuple(params), disposition, filename, encoding, tuple(defects))


def header_fields(block: bytes) -> Iterator[tuple[str, str]]:
    """Every field of a header block in order, unfolded: (lower-case name, value). UTF-8 is allowed (RFC 6532)."""
    name = ""
    value: list[str] = []
    for raw in block.split(b"\n"):
        line = raw.rstrip(b"\r").decode("utf-8", "replace")
        if line[:1] in (" ", "\t") and name:
            value.append(line)
            continue
        if name:
            yield name, "".join(value).strip()
        key, colon, rest = line.partition(":")
        name = key.strip().lower() if colon else ""
        value = [rest]
    if name:
        yield name, "".join(value).strip()


def unfold(block: bytes, repeated: dict[str, list[str]] | None = None) -> dict[str, str]:
    """The first value of each field, unfolded; names lower-case.

    With `repeated`, every value of an AMBIGUOUS_FIELDS field that occurs more than once
    is collected there (first value first).
    """
    fields: dict[str, str] = {}
    for name, value in header_fields(block):
        if name not in fields:
            fields[name] = value
        elif repeated is not None and name in AMBIGUOUS_FIELDS:
            values = repeated.setdefault(name, [fields[name]])
            if len(values) < _MAX_PARAMS:
                values.append(value)
    return fields


def _differ(name: str, values: list[str]) -> bool:
    """Do repeated values of one field read differently (main value case-insensitive, parameters)?"""
    if name == "content-transfer-encoding":
        return len({value.strip().lower() for value in values}) > 1
    readings = set()
    for value in values:
        main, params = parse_parameters(value)
        # a charset label is case-insensitive; a boundary or a file name is not
        cased = ((key, text.lower() if key == "charset" else text) for key, text in params)
        readings.add((main.strip().lower(), tuple(sorted(cased))))
    return len(readings) > 1


def parse_parameters(value: str, conflicts: list[str] | None = None) -> tuple[str, list[tuple[str, str]]]:
    """`main; a=1; b="x y"` -> ("main", [("a", "1"), ("b", "x y")]) with RFC 2231 applied.

    The first of repeated parameters is used. With `conflicts`, the name of each parameter
    that reads differently in another occurrence is appended there: the same name twice
    with other values, the same RFC 2231 section twice with other values, or a plain
    value beside an RFC 2231 one that decodes to something else. Identical repeats pass.
    """
    pieces = _split(value)
    main = pieces[0].strip() if pieces else ""
    plain: dict[str, str] = {}
    sections: dict[str, dict[int, tuple[str, bool]]] = {}
    clash: set[str] = set()
    for piece in pieces[1 : 1 + _MAX_PARAMS]:
        key, eq, raw = piece.partition("=")
        key = key.strip().lower()
        if not eq or not key:
            continue
        raw = raw.strip()
        text = _unquote(raw) if raw.startswith('"') else raw
        match = _SECTION.match(key)
        if match is None:
            known = plain.setdefault(key, text)
            if not _same(key, known, text):
                clash.add(key)
            continue
        name, number, star = match.groups()
        section = 0 if number is None else int(number)  # name*=charset'lang'value is section 0
        entry = (text, True if number is None else bool(star))
        parts = sections.setdefault(name, {})
        if section in parts:
            if parts[section][1] != entry[1] or not _same(name, parts[section][0], entry[0]):
                clash.add(name)
        elif len(parts) < _MAX_SECTIONS:
            parts[section] = entry
    result = {key: decode_header_value(text) for key, text in plain.items()}
    for name, parts in sections.items():
        joined = _join_sections(parts)
        if name in result and not _same(name, result[name], joined):
            clash.add(name)  # `filename="a.txt"; filename*=utf-8''a.exe`: readers pick either
        result[name] = joined  # the extended form wins
    if conflicts is not None:
        conflicts.extend(sorted(clash))
    return main, list(result.items())


def _same(name: str, one: str, other: str) -> bool:
    """Two values of one parameter read alike (a charset label is case-insensitive)."""
    if name == "charset":
        return one.strip().lower() == other.strip().lower()
    return one == other


def _split(value: str) -> list[str]:
    """Split on semicolons outside quoted strings."""
    pieces: list[str] = []
    current: list[str] = []
    quoted = False
    escaped = False
    for char in value:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ";" and not quoted:
            pieces.append("".join(current))
            current = []
            continue
        current.append(char)
    pieces.append("".join(current))
    return pieces


def _unquote(raw: str) -> str:
    body = raw[1:-1] if len(raw) >= 2 and raw.endswith('"') else raw[1:]
    return re.sub(r"\\(.)", r"\1", body)


def _join_sections(parts: dict[int, tuple[str, bool]]) -> str:
    charset = "utf-8"
    data = bytearray()
    for number in sorted(parts):
        text, encoded = parts[number]
        if encoded:
            if number == 0 and text.count("'") >= 2:
                charset, _, text = text.split("'", 2)
            data += unquote_to_bytes(text)
        else:
            data += text.encode("utf-8", "replace")
    return decode_bytes(bytes(data), charset)


def decode_bytes(data: bytes, charset: str) -> str:
    """Decode with a declared charset; unknown or non-text codecs fall back to UTF-8."""
    return data.decode(text_codec(charset) or "utf-8", "replace")


def text_codec(charset: str) -> str:
    """The codec name for a charset label, or "" if Python has no text codec of that name."""
    label = charset.strip().strip('"').lower()
    if not label:
        return ""
    try:
        info = codecs.lookup(label)
    except (LookupError, ValueError):
        return ""
    # base64_codec, rot13 and the like are codecs too, but not text encodings
    if not getattr(info, "_is_text_encoding", True):
        return ""
    return info.name


# RFC 2231 section 5: an encoded word's charset may carry a language, `=?UTF-8*vi?B?...?=`
_LANGUAGE_TAG = re.compile(r"=\?([^?*\s]+)\*[^?\s]*\?")


def decode_header_value(value: str) -> str:
    """An RFC 2047 value (a header field, a file name) as text; the value itself when it cannot be decoded."""
    if any("\udc80" <= ch <= "\udcff" for ch in value):
        # raw 8-bit bytes carried as surrogates: read them as UTF-8
        try:
            value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        except UnicodeEncodeError:  # other lone surrogates: drop them
            value = value.encode("utf-8", "replace").decode("utf-8")
    if "=?" not in value:
        return value
    if "*" in value:
        value = _LANGUAGE_TAG.sub(r"=?\1?", value)
    try:
        return str(make_header(decode_header(value)))
    # CharsetError (a MessageError): a charset label that is not ASCII, "=?\xffutf-8?B?...?="
    except (ValueError, LookupError, UnicodeError, AssertionError, MessageError):
        return value


def _first(params: list[tuple[str, str]], name: str) -> str:
    for key, value in params:
        if key == name:
            return value
    return ""
