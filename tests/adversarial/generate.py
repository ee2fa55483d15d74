"""The adversarial corpus of issue 14: messages an attacker would send, and the verdict each must get.

Every case is built here, deterministically (fixed seeds, fixed boundaries, no clock, nothing
downloaded), at test time into a temporary directory: the repository holds the script, never
the messages (no virus scanner on a developer's machine quarantines a committed EICAR, and no
21 MiB file is committed). A case is

- the raw message (CRLF line ends, as Postfix hands it to a milter),
- its envelope: MAIL FROM, RCPT TO and the client address (127.0.0.1 plays the trusted
  internal relay, i.e. outbound; 127.0.0.3 an Internet client, i.e. inbound),
- the verdict it must get through the real stack: "refused" (any 5xx, and the enhanced code
  when one is named: 5.3.4 the size cap, 5.7.520 forwarding, 5.7.1 content, attachments and
  viruses, 5.6.0 malformed) or "delivered",
- a settings profile: "default" (config.example.toml) or "cap1m" (the attachment cap lowered to
  1 MiB, so that many "just past the bound" variants stay small; a few cases use the real 20 MiB).

Classes (the `cls` field), after the issue's list: flood (header flood), text (text budget and
memory), cap (what counts as an attachment), marking (state-secret markings, outbound), virus
(EICAR, clam.exe, GTUBE), bomb (archives), forwarding (list mail, the multipart/report label),
malformed (duplicate fields), log (log forging), pass (legitimate mail that must be delivered).

    cd tests && python -m adversarial.generate OUTDIR   # writes OUTDIR/<id>.eml and OUTDIR/manifest.json
"""

from __future__ import annotations

import argparse
import base64
import binascii
import io
import json
import random
import sys
import unicodedata
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

from support.mimebuild import b64, qp

SEED = 14
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
CLAM_EXE = Path("/usr/share/clamav-testfiles/clam.exe")
MIB = 1024 * 1024
CAP = 20 * MIB  # size.attachment_limit of config.example.toml
SMALL_CAP = MIB  # the "cap1m" profile
OLD_TEXT_BUDGET = MIB  # mime.Limits.text_budget before issue 14
OLD_MAX_HEADERS = 2000  # the adapter's MAX_HEADERS before issue 14

TRUSTED_RELAY = "127.0.0.1"
INTERNET_CLIENT = "127.0.0.3"
LOCAL_SENDER = "vanthu@bacninh.gov.vn"
LOCAL_RCPT = "nguyenvana@bacninh.gov.vn"
PARTNER = "partner@example.com"
GMAIL = "ban.cua.a@gmail.com"

LENIENT = {"size.malformed_action": '"accept"', "size.parse_error_action": '"accept"'}
PROFILES: dict[str, dict[str, str]] = {
    "default": {},
    "lenient": LENIENT,
    "cap1m": {"size.attachment_limit": str(SMALL_CAP)},
    "cap1m-lenient": {"size.attachment_limit": str(SMALL_CAP), **LENIENT},
}

Writer = Callable[[BinaryIO], None]


@dataclass(frozen=True)
class Case:
    id: str
    cls: str
    expect: str  # "refused" | "delivered"
    mail_from: str
    rcpts: tuple[str, ...]
    client_ip: str
    note: str
    enhanced: str = ""  # the enhanced status code(s) a refusal may carry, "5.7.1|5.6.0"; "" for any 5xx
    reason: str = ""  # a regular expression the reply text matches when it carries the first code
    profile: str = "default"
    big: bool = False
    writer: Writer = field(default=lambda out: None, repr=False, compare=False)

    @property
    def message_id(self) -> str:
        return f"{self.id}@adversarial.test"

    def write(self, directory: Path) -> Path:
        path = directory / f"{self.id}.eml"
        with path.open("wb") as out:
            self.writer(out)
        return path

    def manifest(self) -> dict[str, object]:
        record = asdict(self)
        record.pop("writer")
        record["message_id"] = self.message_id
        return record


# ---- wire-level building blocks ----------------------------------------------------------------


def crlf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\n", "\r\n")


def ew_b(text: str, charset: str = "utf-8", lang: str = "") -> str:
    """An RFC 2047 B encoded word (with an RFC 2231 language tag when `lang`)."""
    tag = f"{charset}*{lang}" if lang else charset
    return f"=?{tag}?B?{base64.b64encode(text.encode(charset)).decode()}?="


def ew_q(text: str, charset: str = "utf-8", lang: str = "") -> str:
    tag = f"{charset}*{lang}" if lang else charset
    out = []
    for byte in text.encode(charset):
        char = chr(byte)
        if char == " ":
            out.append("_")
        elif char.isascii() and (char.isalnum() or char in "!*+-/"):
            out.append(char)
        else:
            out.append(f"={byte:02X}")
    return f"=?{tag}?Q?{''.join(out)}?="


def rfc2231(value: str) -> str:
    """An RFC 2231 extended parameter value: utf-8'vi'percent-encoded."""
    return "utf-8'vi'" + "".join(
        chr(b) if chr(b).isascii() and (chr(b).isalnum() or chr(b) in "-._") else f"%{b:02X}" for b in value.encode()
    )


def top(
    cid: str,
    subject: str = "",
    frm: str = PARTNER,
    to: str = LOCAL_RCPT,
    extra: Sequence[str] = (),
    raw_subject: str | None = None,
    mime: bool = True,
) -> bytes:
    """The top header block (without the empty line): From, To, Subject, Date, Message-ID, extras."""
    if raw_subject is None:
        subject = subject or f"Bao cao {cid}"
        raw_subject = subject if subject.isascii() else ew_b(subject)
    lines = [
        f"From: <{frm}>",
        f"To: <{to}>",
        f"Subject: {raw_subject}",
        "Date: Mon, 23 Nov 2026 10:00:00 +0700",
        f"Message-ID: <{cid}@adversarial.test>",
    ]
    if mime:
        lines.append("MIME-Version: 1.0")
    lines += list(extra)
    return ("\r\n".join(lines) + "\r\n").encode()


def part(
    body: bytes,
    content_type: str = "text/plain; charset=utf-8",
    encoding: str = "8bit",
    disposition: str = "",
    extra: Sequence[str] = (),
) -> bytes:
    """One entity: its Content-* fields, an empty line, the body encoded as asked."""
    fields = [f"Content-Type: {content_type}"]
    if disposition:
        fields.append(f"Content-Disposition: {disposition}")
    if encoding:
        fields.append(f"Content-Transfer-Encoding: {encoding}")
    fields += list(extra)
    enc = encoding.lower()
    if enc == "base64":
        encoded = b64(body)
    elif enc == "quoted-printable":
        encoded = qp(body)
    else:
        encoded = body if body.endswith(b"\r\n") or not body else body + b"\r\n"
    return ("\r\n".join(fields) + "\r\n\r\n").encode() + encoded


def text_part(text: str, subtype: str = "plain", charset: str = "utf-8", encoding: str = "8bit") -> bytes:
    return part(crlf(text).encode(charset), f"text/{subtype}; charset={charset}", encoding)


def attachment(data: bytes, filename: str, content_type: str = "application/octet-stream", **kw: str) -> bytes:
    encoding = kw.get("encoding", "base64")
    name = kw.get("name_param", f'"{filename}"')
    disposition = kw.get("disposition", f'attachment; filename="{filename}"')
    return part(data, f"{content_type}; name={name}", encoding, disposition)


def multipart(boundary: str, *parts: bytes, subtype: str = "mixed", ct: str = "") -> bytes:
    """A multipart entity (its own Content-Type field first, unless `ct` is "" and ... given)."""
    head = ct or f'Content-Type: multipart/{subtype}; boundary="{boundary}"'
    out = [head.encode() + b"\r\n\r\nThis is a multi-part message in MIME format.\r\n"]
    for item in parts:
        out.append(f"--{boundary}\r\n".encode() + item + b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out)


def rfc822(inner: bytes, filename: str = "") -> bytes:
    disposition = f'attachment; filename="{filename}"' if filename else ""
    fields = ["Content-Type: message/rfc822"]
    if disposition:
        fields.append(f"Content-Disposition: {disposition}")
    return ("\r\n".join(fields) + "\r\n\r\n").encode() + inner


def inner_message(subject: str, entity: bytes, frm: str = "someone@example.net") -> bytes:
    head = f"From: <{frm}>\r\nTo: <{PARTNER}>\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n"
    return head.encode() + entity


def uuencode(data: bytes, name: str) -> bytes:
    lines = [f"begin 644 {name}".encode()]
    for i in range(0, len(data), 45):
        lines.append(binascii.b2a_uu(data[i : i + 45]).rstrip(b"\n"))
    lines += [b"`", b"end"]
    return b"\r\n".join(lines) + b"\r\n"


_YENC_SHIFT = bytes((b + 42) % 256 for b in range(256))


def yenc_lines(data: bytes, width: int = 128) -> Iterator[bytes]:
    for i in range(0, len(data), width):
        line = data[i : i + width].translate(_YENC_SHIFT)
        line = line.replace(b"=", b"=}").replace(b"\x00", b"=@").replace(b"\n", b"=J").replace(b"\r", b"=M")
        if line[:1] == b".":
            line = b"=n" + line[1:]  # '.' + 64: a leading dot escaped, as yEnc encoders do
        yield line + b"\r\n"


def yenc(data: bytes, name: str) -> bytes:
    crc = zlib.crc32(data)
    head = f"=ybegin line=128 size={len(data)} name={name}\r\n".encode()
    tail = f"=yend size={len(data)} crc32={crc:08x}\r\n".encode()
    return head + b"".join(yenc_lines(data)) + tail


def data_uri_html(data: bytes, mime: str = "image/png", prefix: str = "data:", sep: str = ";base64,") -> str:
    encoded = base64.b64encode(data).decode()
    wrapped = "\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))
    return f'<html><body><p>Anh minh hoa:</p><img src="{prefix}{mime}{sep}{wrapped}"></body></html>\n'


def noise(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def printable_lines(size: int, seed: int) -> bytes:
    """`size` bytes of 8bit text lines (letters, digits, commas): a CSV or a log."""
    rng = random.Random(seed)
    alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789,;"
    row = bytes(rng.choice(alphabet) for _ in range(198)) + b"\r\n"
    # vary the rows cheaply: a counter at the start of each
    out = bytearray()
    n = 0
    while len(out) < size:
        out += b"%08d," % n + row[9:]
        n += 1
    return bytes(out[:size])


FILLER_VI = "Báo cáo tình hình thực hiện nhiệm vụ quý III năm 2026 của Sở Thông tin và Truyền thông.\n"


def filler_text(chars: int) -> str:
    """Vietnamese official prose of at least `chars` characters, whole lines."""
    return FILLER_VI * (chars // len(FILLER_VI) + 1)


def _exe() -> bytes:
    """A small DOS/PE program (harmless: it is never run): what libmagic calls application/x-dosexec."""
    if CLAM_EXE.exists():
        return CLAM_EXE.read_bytes()
    header = bytearray(b"MZ" + b"\x90\x00" * 29 + b"\x00" * 2)
    header += b"\x00" * (0x3C - len(header)) + (0x40).to_bytes(4, "little")
    return bytes(header) + b"PE\x00\x00" + b"\x4c\x01" + b"\x00" * 200


# ---- documents: .docx/.xlsx/.pptx and .pdf with text -----------------------------------------------


def _zip(files: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as archive:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=(2026, 11, 23, 10, 0, 0))
            info.compress_type = method
            archive.writestr(info, data)
    return buf.getvalue()


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def docx(paragraphs: Sequence[Sequence[str]], header: str = "") -> bytes:
    """A minimal Word document; each paragraph is a list of runs (a stamp may be split across runs)."""
    ns = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
    rels_ns = 'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"'
    body = "".join(
        "<w:p>" + "".join(f'<w:r><w:t xml:space="preserve">{_xml_escape(r)}</w:t></w:r>' for r in runs) + "</w:p>"
        for runs in paragraphs
    )
    header_ref = '<w:sectPr><w:headerReference w:type="default" r:id="rIdH"/></w:sectPr>' if header else ""
    files = {
        "[Content_Types].xml": (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/word/document.xml" ContentType="application/'
            'vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/>'
            + (
                '<Override PartName="/word/header1.xml" ContentType="application/'
                'vnd.openxmlformats-officedocument.wordprocessingml.header+xml"/>'
                if header
                else ""
            )
            + "</Types>"
        ).encode(),
        "_rels/.rels": (
            b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            b'<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            b'<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
            b'relationships/officeDocument" Target="word/document.xml"/></Relationships>'
        ),
        "word/document.xml": (
            f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><w:document {ns} {rels_ns}>'
            f"<w:body>{body}{header_ref}</w:body></w:document>"
        ).encode(),
    }
    if header:
        files["word/_rels/document.xml.rels"] = (
            b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            b'<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            b'<Relationship Id="rIdH" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
            b'relationships/header" Target="header1.xml"/></Relationships>'
        )
        files["word/header1.xml"] = (
            f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><w:hdr {ns}>'
            f"<w:p><w:r><w:t>{_xml_escape(header)}</w:t></w:r></w:p></w:hdr>"
        ).encode()
    return _zip(files)


def xlsx(strings: Sequence[str]) -> bytes:
    main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    rel = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    cells = "".join(f'<row r="{i + 1}"><c r="A{i + 1}" t="s"><v>{i}</v></c></row>' for i in range(len(strings)))
    shared = "".join(f"<si><t>{_xml_escape(s)}</t></si>" for s in strings)
    files = {
        "[Content_Types].xml": (
            b'<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/'
            b'content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
            b'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/>'
            b'<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.'
            b'spreadsheetml.sheet.main+xml"/><Override PartName="/xl/worksheets/sheet1.xml" ContentType='
            b'"application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
            b'<Override PartName="/xl/sharedStrings.xml" ContentType="application/vnd.openxmlformats-'
            b'officedocument.spreadsheetml.sharedStrings+xml"/></Types>'
        ),
        "_rels/.rels": (
            '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/'
            f'package/2006/relationships"><Relationship Id="rId1" Type="{rel}/officeDocument" '
            'Target="xl/workbook.xml"/></Relationships>'
        ).encode(),
        "xl/workbook.xml": (
            f'<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="{main}" xmlns:r="{rel}"><sheets>'
            '<sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>'
        ).encode(),
        "xl/_rels/workbook.xml.rels": (
            '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/'
            f'package/2006/relationships"><Relationship Id="rId1" Type="{rel}/worksheet" '
            f'Target="worksheets/sheet1.xml"/><Relationship Id="rId2" Type="{rel}/sharedStrings" '
            'Target="sharedStrings.xml"/></Relationships>'
        ).encode(),
        "xl/worksheets/sheet1.xml": (
            f'<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="{main}"><sheetData>{cells}'
            "</sheetData></worksheet>"
        ).encode(),
        "xl/sharedStrings.xml": (
            f'<?xml version="1.0" encoding="UTF-8"?><sst xmlns="{main}" count="{len(strings)}" '
            f'uniqueCount="{len(strings)}">{shared}</sst>'
        ).encode(),
    }
    return _zip(files)


def pptx(texts: Sequence[str]) -> bytes:
    p = "http://schemas.openxmlformats.org/presentationml/2006/main"
    a = "http://schemas.openxmlformats.org/drawingml/2006/main"
    rel = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    runs = "".join(f"<a:p><a:r><a:t>{_xml_escape(t)}</a:t></a:r></a:p>" for t in texts)
    files = {
        "[Content_Types].xml": (
            b'<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/'
            b'content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
            b'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/>'
            b'<Override PartName="/ppt/presentation.xml" ContentType="application/vnd.openxmlformats-'
            b'officedocument.presentationml.presentation.main+xml"/><Override PartName="/ppt/slides/slide1.xml" '
            b'ContentType="application/vnd.openxmlformats-officedocument.presentationml.slide+xml"/></Types>'
        ),
        "_rels/.rels": (
            '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/'
            f'package/2006/relationships"><Relationship Id="rId1" Type="{rel}/officeDocument" '
            'Target="ppt/presentation.xml"/></Relationships>'
        ).encode(),
        "ppt/presentation.xml": (
            f'<?xml version="1.0" encoding="UTF-8"?><p:presentation xmlns:p="{p}" xmlns:r="{rel}">'
            '<p:sldIdLst><p:sldId id="256" r:id="rId1"/></p:sldIdLst></p:presentation>'
        ).encode(),
        "ppt/_rels/presentation.xml.rels": (
            '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/'
            f'package/2006/relationships"><Relationship Id="rId1" Type="{rel}/slide" '
            'Target="slides/slide1.xml"/></Relationships>'
        ).encode(),
        "ppt/slides/slide1.xml": (
            f'<?xml version="1.0" encoding="UTF-8"?><p:sld xmlns:p="{p}" xmlns:a="{a}"><p:cSld><p:spTree>'
            f"<p:sp><p:txBody>{runs}</p:txBody></p:sp></p:spTree></p:cSld></p:sld>"
        ).encode(),
    }
    return _zip(files)


def pdf(lines: Sequence[str], compress: bool = False) -> bytes:
    """A one-page PDF whose text is drawn with a Type0 font and extracted through its ToUnicode map."""
    chars = sorted({c for line in lines for c in line})
    cid = {c: i + 1 for i, c in enumerate(chars)}
    ops = ["BT", "/F1 14 Tf", "72 770 Td"]
    for line in lines:
        ops.append("<" + "".join(f"{cid[c]:04X}" for c in line) + "> Tj")
        ops.append("0 -20 Td")
    ops.append("ET")
    content = "\n".join(ops).encode()
    bfchar = "\n".join(f"<{cid[c]:04X}> <{c.encode('utf-16-be').hex().upper()}>" for c in chars)
    cmap = (
        "/CIDInit /ProcSet findresource begin\n12 dict begin\nbegincmap\n"
        "/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def\n"
        "/CMapName /Adobe-Identity-UCS def\n/CMapType 2 def\n"
        "1 begincodespacerange\n<0000> <FFFF>\nendcodespacerange\n"
        f"{len(chars)} beginbfchar\n{bfchar}\nendbfchar\n"
        "endcmap\nCMapName currentdict /CMap defineresource pop\nend\nend\n"
    ).encode()

    def stream(data: bytes) -> bytes:
        if compress:
            data = zlib.compress(data)
            return b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(data) + data + b"\nendstream"
        return b"<< /Length %d >>\nstream\n" % len(data) + data + b"\nendstream"

    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 4 0 R >> >>"
        b" /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type0 /BaseFont /ArialMT /Encoding /Identity-H /DescendantFonts [6 0 R]"
        b" /ToUnicode 7 0 R >>",
        stream(content),
        b"<< /Type /Font /Subtype /CIDFontType2 /BaseFont /ArialMT /CIDSystemInfo << /Registry (Adobe)"
        b" /Ordering (Identity) /Supplement 0 >> /FontDescriptor 8 0 R /DW 600 >>",
        stream(cmap),
        b"<< /Type /FontDescriptor /FontName /ArialMT /Flags 32 /FontBBox [0 -200 1000 900] /ItalicAngle 0"
        b" /Ascent 900 /Descent -200 /CapHeight 700 /StemV 80 >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


# ---- archives that expand past any sane bound ------------------------------------------------------

_ZERO_BLOCK = bytes(MIB)
_CACHE: dict[str, bytes] = {}


def zeros_zip_entry(mib: int) -> tuple[bytes, int]:
    """The deflate stream of `mib` MiB of zeros (built by repeating one flushed block) and its CRC."""
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = comp.compress(_ZERO_BLOCK) + comp.flush(zlib.Z_FULL_FLUSH)
    final = zlib.compressobj(9, zlib.DEFLATED, -15)
    last = final.compress(_ZERO_BLOCK) + final.flush()
    crc = 0
    for _ in range(mib):
        crc = zlib.crc32(_ZERO_BLOCK, crc)
    return block * (mib - 1) + last, crc


def raw_zip(entries: Sequence[tuple[str, bytes, int, int]]) -> bytes:
    """A zip from (name, deflate data, uncompressed size, crc) entries, written by hand (sizes < 4 GiB)."""
    out = bytearray()
    central = bytearray()
    for name, data, size, crc in entries:
        encoded = name.encode()
        offset = len(out)
        common = (20).to_bytes(2, "little") + (0).to_bytes(2, "little") + (8).to_bytes(2, "little")
        common += (0).to_bytes(4, "little") + crc.to_bytes(4, "little")
        common += len(data).to_bytes(4, "little") + size.to_bytes(4, "little")
        common += len(encoded).to_bytes(2, "little") + (0).to_bytes(2, "little")
        out += b"PK\x03\x04" + common + encoded + data
        central += b"PK\x01\x02" + (20).to_bytes(2, "little") + common
        central += (0).to_bytes(2, "little") * 3 + (0).to_bytes(4, "little") + offset.to_bytes(4, "little")
        central += encoded
    start = len(out)
    out += central
    n = len(entries).to_bytes(2, "little")
    out += b"PK\x05\x06" + b"\x00" * 4 + n + n + len(central).to_bytes(4, "little") + start.to_bytes(4, "little")
    out += b"\x00\x00"
    return bytes(out)


def bomb_zip(mib: int, name: str = "data.bin") -> bytes:
    key = f"zip-{mib}-{name}"
    if key not in _CACHE:
        data, crc = zeros_zip_entry(mib)
        _CACHE[key] = raw_zip([(name, data, mib * MIB, crc)])
    return _CACHE[key]


def many_entry_bomb(entries: int, mib_each: int) -> bytes:
    data, crc = zeros_zip_entry(mib_each)
    return raw_zip([(f"bang-{i:04d}.csv", data, mib_each * MIB, crc) for i in range(entries)])


def nested_bomb(inner: int, mib_each: int) -> bytes:
    child = bomb_zip(mib_each)
    return _zip({f"phan-{i}.zip": child for i in range(inner)}, zipfile.ZIP_STORED)


def gzip_bomb(mib: int) -> bytes:
    data, crc = zeros_zip_entry(mib)
    size = (mib * MIB) % (1 << 32)
    head = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    return head + data + crc.to_bytes(4, "little") + size.to_bytes(4, "little")


def docx_bomb(mib: int) -> bytes:
    """A .docx whose document.xml expands to `mib` MiB (of spaces: text, not zeros)."""
    head = b'<?xml version="1.0"?><w:document><w:body><w:p><w:r><w:t>'
    spaces = b" " * MIB
    first = zlib.compressobj(9, zlib.DEFLATED, -15)
    stream = first.compress(head) + first.flush(zlib.Z_FULL_FLUSH)
    middle = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = middle.compress(spaces) + middle.flush(zlib.Z_FULL_FLUSH)
    last = zlib.compressobj(9, zlib.DEFLATED, -15)
    stream += block * (mib - 1) + last.compress(spaces) + last.flush()
    crc = zlib.crc32(head)
    for _ in range(mib):
        crc = zlib.crc32(spaces, crc)
    entries = [
        ("[Content_Types].xml", zlib.compress(b"<Types/>")[2:-4], 8, zlib.crc32(b"<Types/>")),
        ("word/document.xml", stream, len(head) + mib * MIB, crc),
    ]
    return raw_zip(entries)


# what the images carry: harmless, so that clamd passes them and only their true type refuses them
DISK_PAYLOAD = b"tep tin vo hai trong anh dia\n" * 64


def disk_iso() -> bytes:
    """An ISO 9660 image by hand: 16 empty sectors, a primary volume descriptor, a terminator."""
    sector = 2048
    primary = bytearray(sector)
    primary[0:7] = b"\x01CD001\x01"
    primary[40:72] = b"BAO_CAO".ljust(32)
    primary[80:88] = (19).to_bytes(4, "little") + (19).to_bytes(4, "big")  # volume space size
    terminator = bytearray(sector)
    terminator[0:7] = b"\xffCD001\x01"
    return bytes(16 * sector) + bytes(primary) + bytes(terminator) + bytes(sector) + DISK_PAYLOAD


def disk_vhd() -> bytes:
    """A fixed VHD: the raw disk, then its 512-byte footer (cookie "conectix")."""
    disk = DISK_PAYLOAD + bytes(65536)
    footer = bytearray(512)
    footer[0:8] = b"conectix"
    footer[8:16] = (2).to_bytes(4, "big") + (0x00010000).to_bytes(4, "big")
    footer[16:24] = b"\xff" * 8
    footer[28:32] = b"win "
    footer[40:56] = len(disk).to_bytes(8, "big") * 2
    footer[60:64] = (2).to_bytes(4, "big")
    footer[64:68] = (~sum(footer) & 0xFFFFFFFF).to_bytes(4, "big")
    return disk + bytes(footer)


def disk_vhdx() -> bytes:
    """The start of a VHDX: its file type identifier and creator, then the rest of the first 64 KiB."""
    return b"vhdxfile" + "Microsoft Windows".encode("utf-16-le") + bytes(65536 - 42) + DISK_PAYLOAD


# ---- the cases --------------------------------------------------------------------------------------

CASES: list[Case] = []


def add(
    cid: str,
    cls: str,
    expect: str,
    writer: Writer | bytes,
    *,
    inbound: bool = True,
    mail_from: str | None = None,
    rcpts: Sequence[str] = (),
    client_ip: str = "",
    enhanced: str = "",
    note: str = "",
    profile: str = "default",
    big: bool = False,
) -> None:
    reason = _reason(cid, cls) if enhanced.startswith("5.7.1") else ""
    if enhanced and (cls in ("flood", "malformed") or "-dup-" in cid):
        # A header flood and a duplicated field are defects of their own: refusing them as
        # malformed (size.malformed_action, 5.6.0) is as right as the refusal the content earns.
        enhanced += "|5.6.0"
    if enhanced and cls == "flood" and not ("subject" in cid or "sieve" in cid):
        # A twin under the "lenient" profile (malformed_action and parse_error_action = accept)
        # must be refused for the content itself: the MIME walk and clamd read the whole header
        # block from the spool. (The header checks look fields up among the first
        # max_header_fields only: a Subject or a trace past them is judged by the flood policy
        # alone, so those cases have no twin.)
        twin = Case(
            id=f"{cid}-lenient",
            cls=cls,
            expect=expect,
            mail_from=mail_from if mail_from is not None else (PARTNER if inbound else LOCAL_SENDER),
            rcpts=tuple(rcpts or ((LOCAL_RCPT,) if inbound else (PARTNER,))),
            client_ip=client_ip or (INTERNET_CLIENT if inbound else TRUSTED_RELAY),
            note=f"{note} (malformed and parse-error policies set to accept: the content must still be refused)",
            enhanced=enhanced.removesuffix("|5.6.0"),
            reason=reason,
            profile="lenient" if profile == "default" else f"{profile}-lenient",
            big=big,
            writer=_renamed(_as_writer(writer), f"<{cid}@", f"<{cid}-lenient@"),
        )
    else:
        twin = None
    writer = _as_writer(writer)
    CASES.append(
        Case(
            id=cid,
            cls=cls,
            expect=expect,
            mail_from=mail_from if mail_from is not None else (PARTNER if inbound else LOCAL_SENDER),
            rcpts=tuple(rcpts or ((LOCAL_RCPT,) if inbound else (PARTNER,))),
            client_ip=client_ip or (INTERNET_CLIENT if inbound else TRUSTED_RELAY),
            note=note,
            enhanced=enhanced,
            reason=reason,
            profile=profile,
            big=big,
            writer=writer,
        )
    )
    if twin is not None:
        CASES.append(twin)


def _as_writer(writer: Writer | bytes) -> Writer:
    if not isinstance(writer, bytes):
        return writer
    data = writer

    def write_bytes(out: BinaryIO) -> None:
        out.write(data)

    return write_bytes


def _renamed(writer: Writer, old: str, new: str) -> Writer:
    """The same message under another Message-ID (a twin case is a message of its own)."""

    def write(out: BinaryIO) -> None:
        buffer = io.BytesIO()
        writer(buffer)
        out.write(buffer.getvalue().replace(old.encode(), new.encode(), 1))

    return write


def _reason(cid: str, cls: str) -> str:
    """What the reply of a 5.7.1 refusal must say, from the case: the marking, the virus, GTUBE, the file."""
    if "gtube" in cid:
        return "thu rac"  # content: the spam score (GTUBE scores 1000)
    if "eicar" in cid:
        return "virus"
    if "clamexe" in cid or "exe" in cid:
        return "virus|Tep dinh kem"  # clamd or the attachment-type rules, whichever judges first
    if cls in ("marking", "text") or "marking" in cid:
        return "dau mat"
    return ""


def outbound_top(cid: str, subject: str = "", **kw: object) -> bytes:
    return top(cid, subject, frm=LOCAL_SENDER, to=PARTNER, **kw)  # type: ignore[arg-type]


def message(head: bytes, entity: bytes) -> bytes:
    return head + entity


def fillers(count: int, style: str = "plain", start: int = 0) -> bytes:
    """`count` harmless header fields: the flood that used to push the real ones out of sight."""
    if style == "folded":
        return b"".join(b"X-Filler-%05d: padding\r\n\tcontinued on a second line\r\n" % i for i in range(count))
    if style == "wide":
        return b"".join(b"X-Filler-%05d: %s\r\n" % (i, b"p" * 120) for i in range(count))
    if style == "mixed":
        names = (b"X-Note", b"x-note", b"Comments", b"Keywords", b"X-Mailer-Info")
        return b"".join(b"%s: filler %d\r\n" % (names[i % len(names)], start + i) for i in range(count))
    return b"".join(b"X-Filler-%05d: padding\r\n" % (start + i) for i in range(count))


def eicar_multipart(cid: str, name: str = "readme.txt") -> bytes:
    return multipart(
        f"=_{cid}",
        text_part("Kinh gui anh chi, xin xem tep dinh kem.\n"),
        attachment(EICAR, name, "text/plain"),
    )


def _flood_cases() -> None:
    cls = "flood"
    n = OLD_MAX_HEADERS + 1
    body = eicar_multipart("flood")
    # the multipart's Content-Type is a top-level field placed after the flood
    ct, rest = body.split(b"\r\n\r\n", 1)
    for style, count in (("plain", n), ("plain", OLD_MAX_HEADERS - 1), ("folded", n), ("mixed", 5000)):
        cid = f"flood-eicar-ct-{style}-{count}"
        add(
            cid,
            cls,
            "refused",
            top(cid) + fillers(count, style) + ct + b"\r\n\r\n" + rest,
            enhanced="5.7.1",
            note=f"{count} {style} filler fields, then the Content-Type of a multipart holding EICAR",
        )
    cid = "flood-eicar-ct-lowercase"
    add(
        cid,
        cls,
        "refused",
        top(cid) + fillers(n) + ct.replace(b"Content-Type", b"cOnTeNt-TyPe") + b"\r\n\r\n" + rest,
        enhanced="5.7.1",
        note="the flood, then a Content-Type field in mixed case",
    )
    cid = "flood-eicar-bytes"
    add(
        cid,
        cls,
        "refused",
        top(cid) + fillers(1500, "wide") + ct + b"\r\n\r\n" + rest,
        enhanced="5.7.1",
        note="1500 wide fields (200 KB of header: past the walk's 128 KiB header bound), then the Content-Type",
    )
    exe = multipart(f"=_{cid}x", text_part("Hoa don.\n"), attachment(_exe(), "hoadon.pdf", "application/pdf"))
    ct, rest = exe.split(b"\r\n\r\n", 1)
    cid = "flood-exe-as-pdf"
    add(
        cid,
        cls,
        "refused",
        top(cid) + fillers(n) + ct + b"\r\n\r\n" + rest,
        enhanced="5.7.1",
        note="the flood, then the Content-Type of a multipart with a program named hoadon.pdf",
    )
    for name, cte, encoded in (
        ("base64", b"base64", b64(GTUBE + b"\r\n")),
        ("qp", b"quoted-printable", b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-=\r\nANTI-UBE-TEST-EMAIL*C.34X\r\n"),
    ):
        cid = f"flood-gtube-cte-{name}"
        head = top(cid, extra=["Content-Type: text/plain; charset=us-ascii"])
        add(
            cid,
            cls,
            "refused",
            head + fillers(n) + b"Content-Transfer-Encoding: " + cte + b"\r\n\r\n" + encoded,
            enhanced="5.7.1",
            note=f"GTUBE in a {name} body whose Content-Transfer-Encoding comes after the flood",
        )
    for count in (n, 3000):
        cid = f"flood-subject-marking-{count}"
        head = top(cid, raw_subject=None, frm=LOCAL_SENDER, to=PARTNER)
        head = b"\r\n".join(line for line in head.split(b"\r\n") if not line.startswith(b"Subject:"))
        add(
            cid,
            cls,
            "refused",
            head
            + fillers(count)
            + f"Subject: {ew_b('[TỐI MẬT] Kế hoạch')}\r\n".encode()
            + b"Content-Type: text/plain; charset=utf-8\r\n\r\nKinh gui.\r\n",
            inbound=False,
            enhanced="5.7.1",
            note=f"outbound, the only Subject ([TỐI MẬT]) after {count} filler fields",
        )
    cid = "flood-sieve-outbound"
    add(
        cid,
        cls,
        "refused",
        top(cid, frm=LOCAL_RCPT, to=GMAIL, extra=["Content-Type: text/plain; charset=utf-8"])
        + fillers(n)
        + f"X-Sieve-Redirected-From: <{LOCAL_RCPT}>\r\n\r\nNoi dung thu.\r\n".encode(),
        inbound=False,
        mail_from=LOCAL_RCPT,
        rcpts=[GMAIL],
        enhanced="5.7.520",
        note="outbound Sieve redirect to gmail.com, its trace after the flood",
    )
    cid = "flood-sieve-inbound"
    add(
        cid,
        cls,
        "refused",
        top(cid, extra=["Content-Type: text/plain; charset=utf-8"])
        + fillers(n, "mixed")
        + b"X-Sieve: Pigeonhole Sieve 0.5.19\r\nX-Sieve-Redirected-From: an@company-mail.vn\r\n\r\nNoi dung.\r\n",
        enhanced="5.7.520",
        note="inbound Sieve redirect by a company mailbox, its trace after the flood",
    )
    cid = "flood-big-attachment"

    def write_flood_big(out: BinaryIO) -> None:
        boundary = b"=_flood_big"
        out.write(top(cid) + fillers(n))
        out.write(b'Content-Type: multipart/mixed; boundary="' + boundary + b'"\r\n\r\n')
        out.write(b"--" + boundary + b"\r\n" + text_part("Ho so.\n") + b"\r\n")
        out.write(b"--" + boundary + b"\r\n")
        out.write(b'Content-Type: application/pdf; name="hoso.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n')
        rng = random.Random(SEED)
        left = CAP + MIB
        while left > 0:
            block = rng.randbytes(min(57 * 1024, left))
            left -= len(block)
            out.write(b64(block))
        out.write(b"--" + boundary + b"--\r\n")

    add(
        cid,
        cls,
        "refused",
        write_flood_big,
        enhanced="5.3.4",
        big=True,
        note="21 MiB attachment whose multipart Content-Type comes after the flood",
    )


def _text_cases() -> None:
    cls = "text"
    long = filler_text(OLD_TEXT_BUDGET + 4096)
    cid = "text-marking-after-budget"
    add(
        cid,
        cls,
        "refused",
        outbound_top(cid) + text_part(long + "TỐI MẬT\n"),
        inbound=False,
        enhanced="5.7.1",
        note="outbound, TỐI MẬT on the line after 1 MiB of text in one 8bit part",
    )
    cid = "text-marking-after-budget-base64"
    add(
        cid,
        cls,
        "refused",
        outbound_top(cid) + text_part(long + "\nMẬT\n", encoding="base64"),
        inbound=False,
        enhanced="5.7.1",
        note="outbound, a bare MẬT line after 1 MiB of base64 text",
    )
    cid = "text-marking-after-budget-qp-html"
    html = "<html><body>" + "".join(f"<p>{line}</p>" for line in long.splitlines()[:12000])
    add(
        cid,
        cls,
        "refused",
        outbound_top(cid) + text_part(html + "<p>TUYỆT MẬT</p></body></html>\n", "html", encoding="quoted-printable"),
        inbound=False,
        enhanced="5.7.1",
        note="outbound HTML (QP) with TUYỆT MẬT after 1 MiB",
    )
    half = filler_text(600 * 1024)
    cid = "text-marking-third-part"
    add(
        cid,
        cls,
        "refused",
        outbound_top(cid) + multipart(f"=_{cid}", text_part(half), text_part(half, "html"), text_part("TỐI MẬT\n")),
        inbound=False,
        enhanced="5.7.1",
        note="outbound, two 600 KiB text parts, then TỐI MẬT in a third",
    )
    cid = "text-gtube-after-budget"
    add(
        cid,
        cls,
        "refused",
        top(cid) + text_part(long + GTUBE.decode() + "\n"),
        enhanced="5.7.1",
        note="inbound GTUBE after 1 MiB of text",
    )
    cid = "text-gtube-second-part"
    add(
        cid,
        cls,
        "refused",
        top(cid) + multipart(f"=_{cid}", text_part(long), text_part(GTUBE.decode() + "\n", encoding="base64")),
        enhanced="5.7.1",
        note="inbound GTUBE in a second part after a 1 MiB first part",
    )
    # the stamp straddling the old budget and a 64 KiB window boundary
    for offset in (OLD_TEXT_BUDGET - 3, 65536 - 4, 4 * 65536 - 2):
        cid = f"text-marking-straddles-{offset}"
        pad = "x" * 63 + "\n"
        body = pad * (offset // len(pad)) + "." * (offset % len(pad))
        # TỐI is 5 bytes in UTF-8: the stamp starts a few bytes before `offset` (bytes = chars: ASCII pad)
        add(
            cid,
            cls,
            "refused",
            outbound_top(cid) + text_part(body + "TỐI MẬT\n" + pad * 20),
            inbound=False,
            enhanced="5.7.1",
            note=f"outbound, TỐI MẬT across byte {offset}",
        )
    cid = "text-ff-then-marking"
    ff = (b"\xff" * 1022 + b"\r\n") * 1000
    add(
        cid,
        cls,
        "refused",
        outbound_top(cid) + part(ff + "TỐI MẬT\r\n".encode()),
        inbound=False,
        enhanced="5.7.1",
        note="outbound, 1 MB of 0xFF bytes in a utf-8 text part, then TỐI MẬT",
    )
    cid = "text-utf16-marking-after-budget"
    add(
        cid,
        cls,
        "refused",
        outbound_top(cid)
        + part(crlf(filler_text(600 * 1024) + "TỐI MẬT\n").encode("utf-16"), "text/plain; charset=utf-16", "base64"),
        inbound=False,
        enhanced="5.7.1",
        note="outbound UTF-16 text (1.2 MB) ending in TỐI MẬT",
    )


def _cap_cases() -> None:
    cls = "cap"
    over = SMALL_CAP + 64 * 1024
    under = SMALL_CAP - 64 * 1024
    kw: dict[str, str] = {"profile": "cap1m", "enhanced": "5.3.4"}
    data = noise(over, SEED)
    cid = "cap-control-base64-over"
    add(
        cid,
        cls,
        "refused",
        top(cid) + multipart(f"=_{cid}", text_part("Ho so.\n"), attachment(data, "hoso.pdf")),
        note="control: a named base64 attachment 64 KiB over the cap",
        **kw,
    )
    cid = "cap-control-uuencode-over"
    add(
        cid,
        cls,
        "refused",
        top(cid) + text_part("Tep:\n" + uuencode(data, "hoso.pdf").decode()),
        note="control: uuencode in the text, 64 KiB over the cap",
        **kw,
    )
    cid = "cap-yenc-over"
    add(
        cid,
        cls,
        "refused",
        top(cid) + part(b"Tep dinh kem:\r\n" + yenc(data, "hoso.pdf")),
        note="a yEnc block in the body text, 64 KiB over the cap",
        **kw,
    )
    cid = "cap-yenc-in-second-text-part"
    add(
        cid,
        cls,
        "refused",
        top(cid) + multipart(f"=_{cid}", text_part("Xem phan sau.\n"), part(yenc(data, "a.bin"))),
        note="a yEnc block in a second text/plain part",
        **kw,
    )
    cid = "cap-yenc-multipart-parts"
    half = len(data) // 2
    block1 = (
        f"=ybegin part=1 total=2 line=128 size={len(data)} name=a.bin\r\n=ypart begin=1 end={half}\r\n".encode()
        + b"".join(yenc_lines(data[:half]))
        + f"=yend size={half} part=1\r\n".encode()
    )
    block2 = (
        f"=ybegin part=2 total=2 line=128 size={len(data)} name=a.bin\r\n"
        f"=ypart begin={half + 1} end={len(data)}\r\n".encode()
        + b"".join(yenc_lines(data[half:]))
        + f"=yend size={len(data) - half} part=2\r\n".encode()
    )
    add(
        cid,
        cls,
        "refused",
        top(cid) + part(block1 + b"\r\n" + block2),
        note="a multi-part yEnc file (=ypart) in the body text",
        **kw,
    )
    for name, prefix, sep, mime in (
        ("png", "data:", ";base64,", "image/png"),
        ("upper", "DATA:", ";BASE64,", "IMAGE/PNG"),
        ("octet", "data:", ";base64,", "application/octet-stream"),
        ("params", "data:", ";charset=utf-8;name=a.png;base64,", "image/png"),
    ):
        cid = f"cap-data-uri-{name}"
        add(
            cid,
            cls,
            "refused",
            top(cid) + text_part(data_uri_html(data, mime, prefix, sep), "html"),
            note=f"an inline image as a {prefix}{mime}{sep} URI in HTML, 64 KiB over the cap",
            **kw,
        )
    cid = "cap-data-uri-qp-html"
    add(
        cid,
        cls,
        "refused",
        top(cid) + text_part(data_uri_html(data), "html", encoding="quoted-printable"),
        note="the data: URI in an HTML part that is itself quoted-printable",
        **kw,
    )
    cid = "cap-data-uri-css"
    encoded = base64.b64encode(data).decode()
    css = (
        f'<html><head><style>body {{ background: url("data:image/png;base64,{encoded}") }}</style></head>'
        "<body>Xin chao</body></html>"
    )
    add(
        cid,
        cls,
        "refused",
        top(cid) + text_part(css + "\n", "html", encoding="base64"),
        note="a data: URI in CSS (url(...)) inside a base64 HTML part",
        **kw,
    )
    cid = "cap-data-uri-alternative"
    add(
        cid,
        cls,
        "refused",
        top(cid)
        + multipart(
            f"=_{cid}", text_part("Xem ban HTML.\n"), text_part(data_uri_html(data), "html"), subtype="alternative"
        ),
        note="the data: URI in the HTML half of a multipart/alternative",
        **kw,
    )
    inner_body = printable_lines(over, SEED + 1)
    for name, wrap in (
        ("attached", lambda inner: rfc822(inner, "thu.eml")),
        ("inline", rfc822),
    ):
        cid = f"cap-eml-8bit-{name}"
        inner = inner_message("Bang so lieu", part(inner_body, "text/plain; charset=us-ascii"))
        add(
            cid,
            cls,
            "refused",
            top(cid) + multipart(f"=_{cid}", text_part("Chuyen tiep.\n"), wrap(inner)),
            note=f"an {name} message/rfc822 whose own body is 8bit text 64 KiB over the cap",
            **kw,
        )
    cid = "cap-eml-nested-twice"
    inner = inner_message("Lop 2", part(inner_body, "text/plain; charset=us-ascii"))
    middle = inner_message("Lop 1", multipart(f"=_{cid}m", text_part("Lop giua.\n"), rfc822(inner)))
    add(
        cid,
        cls,
        "refused",
        top(cid) + multipart(f"=_{cid}", text_part("Xem.\n"), rfc822(middle, "a.eml")),
        note="an 8bit text body two message/rfc822 levels down",
        **kw,
    )
    cid = "cap-digest"
    entries = b"".join(
        f"--=_{cid}\r\n\r\n".encode()
        + inner_message(f"So {i}", part(printable_lines(over // 4 + 1024, SEED + 20 + i)))
        + b"\r\n"
        for i in range(4)
    )
    digest = (f'Content-Type: multipart/digest; boundary="=_{cid}"\r\n\r\n').encode() + entries
    digest += f"--=_{cid}--\r\n".encode()
    add(
        cid,
        cls,
        "refused",
        top(cid) + digest,
        note="a multipart/digest of four messages (default type message/rfc822), 8bit bodies",
        **kw,
    )
    cid = "cap-csv-noname"
    add(
        cid,
        cls,
        "refused",
        top(cid) + multipart(f"=_{cid}", text_part("So lieu.\n"), part(inner_body, "text/csv; charset=us-ascii")),
        note="a text/csv leaf with no file name, 8bit, 64 KiB over the cap",
        **kw,
    )
    cid = "cap-xml-noname"
    add(
        cid,
        cls,
        "refused",
        top(cid)
        + multipart(f"=_{cid}", text_part("So lieu.\n"), part(inner_body, "application/xml", "quoted-printable")),
        note="an application/xml leaf, no name, no disposition, quoted-printable",
        **kw,
    )
    cid = "cap-pass-second-text-plain"
    add(
        cid,
        "pass",
        "delivered",
        top(cid) + multipart(f"=_{cid}", text_part("Noi dung.\n"), part(inner_body, "text/plain; charset=us-ascii")),
        note="a second inline text/plain leaf over the cap: body text by the README's definition (the text checks"
        " read all of it), not an attachment",
        profile="cap1m",
    )
    cid = "cap-dup-ct-text-first"
    add(
        cid,
        cls,
        "refused",
        top(cid)
        + multipart(
            f"=_{cid}",
            text_part("Ho so.\n"),
            part(data, "text/plain", "base64", extra=['Content-Type: application/octet-stream; name="hoso.bin"']),
        ),
        note="one part, two Content-Type fields: text/plain first, application/octet-stream second",
        **kw,
    )
    cid = "cap-dup-disposition"
    add(
        cid,
        cls,
        "refused",
        top(cid)
        + multipart(
            f"=_{cid}",
            text_part("Ho so.\n"),
            part(
                inner_body, "text/plain", "8bit", "inline", extra=['Content-Disposition: attachment; filename="sl.csv"']
            ),
        ),
        note="two Content-Disposition fields: inline first, attachment second",
        **kw,
    )
    cid = "cap-dup-ct-top-level"
    inner = multipart(f"=_{cid}", text_part("Ho so.\n"), attachment(data, "hoso.pdf"))
    ct, rest = inner.split(b"\r\n\r\n", 1)
    add(
        cid,
        cls,
        "refused",
        top(cid, extra=["Content-Type: text/plain; charset=utf-8"]) + ct + b"\r\n\r\n" + rest,
        note="two top-level Content-Type fields: text/plain first, the multipart second",
        **kw,
    )
    cid = "cap-control-just-over"
    add(
        cid,
        cls,
        "refused",
        top(cid) + multipart(f"=_{cid}", text_part("x\n"), attachment(noise(SMALL_CAP + 1, 2), "a.pdf")),
        note="control: one byte over the cap",
        **kw,
    )
    # what must still pass under the same cap
    kw = {"profile": "cap1m"}
    cid = "cap-pass-just-under"
    add(
        cid,
        "pass",
        "delivered",
        top(cid) + multipart(f"=_{cid}", text_part("x\n"), attachment(noise(SMALL_CAP - 1024, 3), "a.pdf")),
        note="an attachment 1 KiB under the cap",
        **kw,
    )
    cid = "cap-pass-alternative-body"
    prose = filler_text(700 * 1024)
    add(
        cid,
        "pass",
        "delivered",
        top(cid)
        + multipart(
            f"=_{cid}",
            text_part(prose),
            text_part(f"<html><body><pre>{prose}</pre></body></html>", "html"),
            subtype="alternative",
        ),
        note="a 1.4 MiB body as plain + HTML alternative: body text, not attachments",
        **kw,
    )
    cid = "cap-pass-long-body"
    add(
        cid,
        "pass",
        "delivered",
        top(cid) + text_part(filler_text(SMALL_CAP + 200 * 1024)),
        note="a body text longer than the cap: the message's own text is not an attachment",
        **kw,
    )
    cid = "cap-pass-yenc-under"
    add(
        cid,
        "pass",
        "delivered",
        top(cid) + part(b"Tep:\r\n" + yenc(noise(under, 4), "a.bin")),
        note="a yEnc block 64 KiB under the cap",
        **kw,
    )
    cid = "cap-pass-eml-under"
    inner = inner_message("Bang", part(printable_lines(under, 5), "text/plain; charset=us-ascii"))
    add(
        cid,
        "pass",
        "delivered",
        top(cid) + multipart(f"=_{cid}", text_part("Chuyen tiep.\n"), rfc822(inner, "thu.eml")),
        note="an attached message 64 KiB under the cap",
        **kw,
    )
    # the real 20 MiB cap: few, big
    big_kw = {"enhanced": "5.3.4", "big": True}

    def big_writer(head: bytes, pieces: Callable[[BinaryIO], None]) -> Writer:
        def write(out: BinaryIO) -> None:
            out.write(head)
            pieces(out)

        return write

    def noise_blocks(total: int, seed: int) -> Iterator[bytes]:
        rng = random.Random(seed)
        left = total
        while left > 0:
            block = rng.randbytes(min(57 * 1024, left))
            left -= len(block)
            yield block

    size = CAP + MIB
    cid = "cap20-yenc"

    def yenc_big(out: BinaryIO) -> None:
        boundary = f"=_{cid}"
        out.write(f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n--{boundary}\r\n'.encode())
        out.write(b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nTep:\r\n")
        out.write(f"=ybegin line=128 size={size} name=hoso.pdf\r\n".encode())
        crc = 0
        for block in noise_blocks(size, 7):
            crc = zlib.crc32(block, crc)
            out.write(b"".join(yenc_lines(block)))
        out.write(f"=yend size={size} crc32={crc:08x}\r\n--{boundary}--\r\n".encode())

    add(cid, cls, "refused", big_writer(top(cid), yenc_big), note="21 MiB as yEnc in the body text", **big_kw)
    cid = "cap20-data-uri"

    def data_uri_big(out: BinaryIO) -> None:
        out.write(b"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n")
        out.write(b'<html><body><img src="data:image/png;base64,\r\n')
        for block in noise_blocks(size, 8):
            out.write(b64(block))
        out.write(b'"></body></html>\r\n')

    add(cid, cls, "refused", big_writer(top(cid), data_uri_big), note="a 21 MiB data: URI image in HTML", **big_kw)
    cid = "cap20-eml-8bit"

    def eml_big(out: BinaryIO) -> None:
        boundary = f"=_{cid}"
        out.write(f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n--{boundary}\r\n'.encode())
        out.write(text_part("Chuyen tiep.\n") + f"\r\n--{boundary}\r\n".encode())
        out.write(rfc822(inner_message("So lieu", b"Content-Type: text/plain; charset=us-ascii\r\n\r\n"), "a.eml"))
        row = printable_lines(MIB, 9)
        for _ in range(size // MIB):
            out.write(row)
        out.write(f"\r\n--{boundary}--\r\n".encode())

    add(
        cid,
        cls,
        "refused",
        big_writer(top(cid), eml_big),
        note="an attached .eml whose own body is 21 MiB of 8bit text",
        **big_kw,
    )
    cid = "cap20-csv-noname"

    def csv_big(out: BinaryIO) -> None:
        boundary = f"=_{cid}"
        out.write(f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n--{boundary}\r\n'.encode())
        out.write(text_part("So lieu.\n") + f"\r\n--{boundary}\r\n".encode())
        out.write(b"Content-Type: text/csv; charset=us-ascii\r\n\r\n")
        row = printable_lines(MIB, 10)
        for _ in range(size // MIB):
            out.write(row)
        out.write(f"\r\n--{boundary}--\r\n".encode())

    add(cid, cls, "refused", big_writer(top(cid), csv_big), note="a 21 MiB text/csv leaf without a name", **big_kw)
    cid = "cap20-dup-ct"

    def dup_big(out: BinaryIO) -> None:
        boundary = f"=_{cid}"
        out.write(f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n--{boundary}\r\n'.encode())
        out.write(text_part("Ho so.\n") + f"\r\n--{boundary}\r\n".encode())
        out.write(
            b'Content-Type: text/plain\r\nContent-Type: application/pdf; name="hoso.pdf"\r\n'
            b"Content-Transfer-Encoding: base64\r\n\r\n"
        )
        for block in noise_blocks(size, 11):
            out.write(b64(block))
        out.write(f"--{boundary}--\r\n".encode())

    add(
        cid,
        cls,
        "refused",
        big_writer(top(cid), dup_big),
        note="21 MiB base64 in a part with two Content-Type fields (text/plain first)",
        **big_kw,
    )
    cid = "pass-19mib-attachment"

    def pass_big(out: BinaryIO) -> None:
        boundary = f"=_{cid}"
        out.write(f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n--{boundary}\r\n'.encode())
        out.write(text_part("Kinh gui ho so du thau.\n") + f"\r\n--{boundary}\r\n".encode())
        out.write(
            b'Content-Type: application/pdf; name="ho-so-du-thau.pdf"\r\nContent-Disposition: attachment;'
            b' filename="ho-so-du-thau.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
        )
        for block in noise_blocks(19 * MIB, 12):
            out.write(b64(block))
        out.write(f"--{boundary}--\r\n".encode())

    add(
        cid,
        "pass",
        "delivered",
        big_writer(top(cid), pass_big),
        big=True,
        note="a 19 MiB PDF attachment: under the 20 MiB cap",
    )


STAMPS = ("[TỐI MẬT] Kế hoạch triển khai", "TUYỆT MẬT: phương án", "[MẬT] Báo cáo quý III")
SPACES = {
    "nbsp": "\u00a0",
    "nnbsp": "\u202f",
    "figure-space": "\u2007",
    "ideographic-space": "\u3000",
    "em-space": "\u2003",
    "line-separator": "\u2028",
    "tab": "\t",
    "double-space": "  ",
}
INVISIBLE = {
    "zwsp": "\u200b",
    "zwj": "\u200d",
    "zwnj": "\u200c",
    "soft-hyphen": "\u00ad",
    "cgj": "\u034f",
    "word-joiner": "\u2060",
    "rlm": "\u200f",
    "lrm": "\u200e",
    "bom": "\ufeff",
    "mongolian-vs": "\u180e",
    "hangul-filler": "\u3164",
    "variation-selector": "\ufe0f",
}


def cyrillic(text: str) -> str:
    """Latin capitals swapped for Cyrillic look-alikes (Ậ kept as А + its marks)."""
    table = {"M": "\u041c", "T": "\u0422", "A": "\u0410", "O": "\u041e", "I": "\u0406", "E": "\u0415"}
    decomposed = unicodedata.normalize("NFD", text)
    return "".join(table.get(c, c) for c in decomposed)


def variants() -> dict[str, str]:
    """Spellings of the stamp 'TỐI MẬT' that a reader still reads as the stamp."""
    out = {f"sp-{name}": f"TỐI{sp}MẬT" for name, sp in SPACES.items()}
    out |= {f"in-{name}": f"TỐI M{ch}ẬT" for name, ch in INVISIBLE.items()}
    out |= {
        "bidi-override": "TỐI \u202eTẬM\u202c",  # displayed "TỐI MẬT"
        "bidi-isolate": "\u2066TỐI MẬT\u2069",
        "bidi-embed": "TỐI \u202aMẬT\u202c",
        "cgj-between-letters": "T\u034fỐ\u034fI M\u034fẬ\u034fT",
        "nfd": unicodedata.normalize("NFD", "TỐI MẬT"),
        "cyrillic": cyrillic("TỐI MẬT"),
        "greek": "\u03a4ỐΙ \u039cẬ\u03a4",
        "fullwidth": "ＴỐＩ ＭẬＴ",
        "math-bold": "\U0001d413ỐI \U0001d40cẬ\U0001d413",
        "spaced": "T Ố I  M Ậ T",
        "spaced-nbsp": "T\u00a0Ố\u00a0I M\u00a0Ậ\u00a0T",
        "combining-tone-order": "TÔ\u0301I MÂ\u0323T",
    }
    return out


def _marking_cases() -> None:
    cls = "marking"
    kw: dict[str, object] = {"inbound": False, "enhanced": "5.7.1"}
    plain = "Kính gửi Quý đối tác,\nXin gửi kế hoạch.\n"
    # subject: encodings of the stamp
    for i, stamp in enumerate(STAMPS):
        cid = f"marking-subject-control-{i}"
        add(cid, cls, "refused", outbound_top(cid, stamp) + text_part(plain), note=f"control: Subject {stamp}", **kw)
    subjects = {
        "q": ew_q("[TỐI MẬT] Kế hoạch"),
        "q-upper-charset": ew_q("[TỐI MẬT] Kế hoạch", "UTF-8"),
        "split-words": ew_b("[TỐI") + "\r\n " + ew_b(" MẬT] Kế hoạch"),
        "split-mid-letter": ew_q("[TỐI M", "utf-8") + " " + ew_q("ẬT] Kế hoạch", "utf-8"),
        "rfc2231-lang-b": ew_b("[TỐI MẬT] Kế hoạch", lang="vi"),
        "rfc2231-lang-q": ew_q("TUYỆT MẬT: phương án", "UTF-8", lang="VI-VN"),
        "rfc2231-lang-split": ew_b("[MẬT]", lang="vi") + " " + ew_b("Báo cáo", lang="vi"),
        "windows-1258": ew_b(to_1258("[TỐI MẬT] Kế hoạch"), "windows-1258"),
        "raw-8bit": "[TỐI MẬT] Kế hoạch",
        "folded-between": "[TỐI\r\n MẬT] Kế hoạch",
        "utf-16-word": ew_b("[TỐI MẬT] Kế hoạch", "utf-16"),
    }
    for name, raw in subjects.items():
        cid = f"marking-subject-{name}"
        head = top(cid, raw_subject=raw, frm=LOCAL_SENDER, to=PARTNER)
        add(cid, cls, "refused", head + text_part(plain), note=f"Subject stamp, {name}", **kw)
    for name, spelled in variants().items():
        cid = f"marking-subject-{name}"
        add(
            cid,
            cls,
            "refused",
            outbound_top(cid, f"[{spelled}] Kế hoạch") + text_part(plain),
            note=f"Subject [TỐI MẬT] spelled {name}",
            **kw,
        )
    for name, subject in (
        ("period-after", "MẬT. Báo cáo quý III"),
        ("period-end", "Báo cáo quý III - MẬT."),
        ("comma-after", "MẬT, Báo cáo"),
        ("exclamation", "TUYỆT MẬT! phương án"),
        ("spaced-bare", "[M Ậ T] Báo cáo"),
        ("cgj-bare", "[M\u034fẬT] Báo cáo"),
        ("nbsp-dash", "Báo cáo\u00a0-\u00a0MẬT\u00a0"),
    ):
        cid = f"marking-subject-{name}"
        add(cid, cls, "refused", outbound_top(cid, subject) + text_part(plain), note=f"Subject {subject!r}", **kw)
    # the Subject of an attached message: mail programs show it with the content
    attached_subjects = {
        "plain": "[TỐI MẬT] Kế hoạch",
        "b": ew_b("[TỐI MẬT] Kế hoạch"),
        "lang": ew_b("MẬT", lang="vi"),
        "folded": "Báo cáo\r\n TUYỆT MẬT",
    }
    for name, raw in attached_subjects.items():
        cid = f"marking-attached-subject-{name}"
        inner = inner_message(raw, b"Content-Type: text/plain; charset=utf-8\r\n\r\nXem.\r\n")
        add(
            cid,
            cls,
            "refused",
            outbound_top(cid) + multipart(f"=_{cid}", text_part("Chuyển tiếp.\n"), rfc822(inner, "thu.eml")),
            note=f"stamp only in the Subject of an attached message, {name}",
            **kw,
        )
    cid = "pass-attached-subject-password"
    inner = inner_message(ew_b("Đổi mật khẩu hộp thư"), b"Content-Type: text/plain; charset=utf-8\r\n\r\nXem.\r\n")
    add(
        cid,
        "pass",
        "delivered",
        outbound_top(cid) + multipart(f"=_{cid}", text_part("Chuyển tiếp.\n"), rfc822(inner, "thu.eml")),
        note="an attached message about a password: no stamp",
        inbound=False,
    )
    # body: the stamp on a line of its own, in every encoding and spelling
    stamp_body = "UBND TỈNH BẮC NINH\n{stamp}\nKẾ HOẠCH số 12/KH-UBND\n"
    for enc in ("8bit", "base64", "quoted-printable"):
        cid = f"marking-body-{enc}"
        add(
            cid,
            cls,
            "refused",
            outbound_top(cid) + text_part(stamp_body.format(stamp="TỐI MẬT"), encoding=enc),
            note=f"body stamp, {enc}",
            **kw,
        )
    cid = "marking-body-qp-soft-break-inside"
    qp_body = b"UBND T=E1=BB=88NH B=E1=BA=AEC NINH\r\nT=E1=BB=90I M=\r\n=E1=BA=ACT\r\nK=E1=BA=BE HO=E1=BA=A0CH\r\n"
    add(
        cid,
        cls,
        "refused",
        outbound_top(cid) + part(qp_body, encoding="", extra=["Content-Transfer-Encoding: quoted-printable"]),
        note="body stamp cut by a QP soft line break",
        **kw,
    )
    for charset in ("windows-1258", "utf-16", "utf-16-le"):
        cid = f"marking-body-charset-{charset}"
        text = stamp_body.format(stamp="TỐI MẬT")
        if charset == "windows-1258":
            text = to_1258(text)
        data = crlf(text).encode(charset)
        add(
            cid,
            cls,
            "refused",
            outbound_top(cid) + part(data, f"text/plain; charset={charset}", "base64"),
            note=f"body stamp in {charset}",
            **kw,
        )
    for name, spelled in variants().items():
        cid = f"marking-body-{name}"
        add(
            cid,
            cls,
            "refused",
            outbound_top(cid) + text_part(stamp_body.format(stamp=spelled)),
            note=f"body stamp TỐI MẬT spelled {name}",
            **kw,
        )
    for name, line in (
        ("bare-period", "MẬT."),
        ("bare-spaced", "M Ậ T"),
        ("bare-nbsp", "\u00a0MẬT\u00a0"),
        ("bare-cyrillic", cyrillic("MẬT")),
        ("bare-bracket-zwsp", "[\u200bMẬT\u200b]"),
        ("tuyet-period", "TUYỆT MẬT."),
    ):
        cid = f"marking-body-{name}"
        add(
            cid,
            cls,
            "refused",
            outbound_top(cid) + text_part(stamp_body.format(stamp=line)),
            note=f"body stamp line {line!r}",
            **kw,
        )
    # HTML
    htmls = {
        "unclosed-head": "<html><head><title>Ke hoach</title><body><p>UBND</p><p>TỐI MẬT</p></body></html>",
        "unclosed-head-meta": "<html><head><meta charset=utf-8><p>TỐI MẬT</p>",
        "head-only": "<head><style>p{color:red}</style><p align=center><b>TUYỆT MẬT</b></p>",
        "tags-between": "<p><b>TỐI</b> <i>MẬT</i></p>",
        "nbsp-entity": "<p>TỐI&nbsp;MẬT</p>",
        "numeric-entities": "<p>T&#7888;I M&#x1EAC;T</p>",
        "named-entities": "<p>T&Ocirc;&#769;I M&Acirc;&#803;T</p>",
        "span-letters": "<p><span>T</span><span>Ố</span><span>I</span> <span>M</span><span>Ậ</span><span>T</span></p>",
        "table-cell": "<table><tr><td>UBND</td><td>TỐI MẬT</td></tr></table>",
        "comment-before": "<!-- </head> --><p>TỐI MẬT</p>",
        "uppercase-tags": "<HTML><HEAD><TITLE>x</TITLE><BODY><P>TỐI MẬT</P>",
        "bare-mat-div": "<div>UBND</div><div style='border:1px solid red'>MẬT</div><div>Kế hoạch</div>",
        "hidden-junk-display": "<p>TỐI M<span style='display:none'>xyz</span>ẬT</p>",
        "hidden-junk-font-size": "<p>TUYỆT M<font style='font-size:0'>.</font>ẬT</p>",
        "hidden-junk-attribute": "<p>TỐI <b hidden>w</b>MẬT</p>",
        "hidden-stamp": "<p>Xem <span style='display:none'>TỐI MẬT</span> nhé</p>",
    }
    for name, html in htmls.items():
        cid = f"marking-html-{name}"
        add(cid, cls, "refused", outbound_top(cid) + text_part(html + "\n", "html"), note=f"HTML stamp: {name}", **kw)
    cid = "marking-html-only-in-alternative"
    add(
        cid,
        cls,
        "refused",
        outbound_top(cid)
        + multipart(
            f"=_{cid}",
            text_part("Kính gửi.\n"),
            text_part("<p>TỐI MẬT</p>", "html", encoding="base64"),
            subtype="alternative",
        ),
        note="the stamp only in the HTML half of an alternative",
        **kw,
    )
    cid = "marking-html-unclosed-head-base64-related"
    related = multipart(
        f"=_{cid}r",
        text_part("<html><head><title>x</title><p>TỐI MẬT</p>", "html", encoding="base64"),
        attachment(b"\x89PNG\r\n\x1a\n" + bytes(64), "logo.png", "image/png"),
        subtype="related",
    )
    add(
        cid,
        cls,
        "refused",
        outbound_top(cid) + multipart(f"=_{cid}", text_part("Xem.\n"), related),
        note="unclosed <head> in a base64 HTML inside multipart/related inside mixed",
        **kw,
    )
    # attached message and documents
    cid = "marking-attached-eml"
    inner = inner_message("Ke hoach", text_part(stamp_body.format(stamp="TỐI MẬT")), frm=LOCAL_SENDER)
    add(
        cid,
        cls,
        "refused",
        outbound_top(cid) + multipart(f"=_{cid}", text_part("Chuyển tiếp.\n"), rfc822(inner, "ke-hoach.eml")),
        note="the stamp in the body of an attached message",
        **kw,
    )
    docs = {
        "txt": (crlf(stamp_body.format(stamp="TỐI MẬT")).encode(), "ke-hoach.txt", "text/plain; charset=utf-8"),
        "txt-utf16": (
            crlf(stamp_body.format(stamp="TUYỆT MẬT")).encode("utf-16"),
            "ke-hoach.txt",
            "text/plain; charset=utf-16",
        ),
        "txt-octet": (crlf(stamp_body.format(stamp="TỐI MẬT")).encode(), "ke-hoach.txt", "application/octet-stream"),
        "docx": (
            docx([["UBND TỈNH BẮC NINH"], ["TỐI MẬT"], ["KẾ HOẠCH"]]),
            "ke-hoach.docx",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        ),
        "docx-split-runs": (
            docx([["UBND"], ["TỐI ", "M", "ẬT"], ["KẾ HOẠCH"]]),
            "ke-hoach.docx",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        ),
        "docx-page-header": (
            docx([["KẾ HOẠCH số 12"]], header="TUYỆT MẬT"),
            "ke-hoach.docx",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        ),
        "docx-as-octet": (docx([["TỐI MẬT"]]), "ke-hoach.docx", "application/octet-stream"),
        "xlsx": (
            xlsx(["Bảng lương", "TỐI MẬT"]),
            "bang.xlsx",
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        ),
        "pptx": (
            pptx(["TUYỆT MẬT", "Phương án"]),
            "slide.pptx",
            "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        ),
        "pdf": (pdf(["UBND TỈNH BẮC NINH", "TỐI MẬT", "KẾ HOẠCH"]), "ke-hoach.pdf", "application/pdf"),
        "pdf-flate": (
            pdf(["UBND TỈNH BẮC NINH", "TUYỆT MẬT", "KẾ HOẠCH"], compress=True),
            "ke-hoach.pdf",
            "application/pdf",
        ),
    }
    for name, (data, filename, ctype) in docs.items():
        cid = f"marking-doc-{name}"
        add(
            cid,
            cls,
            "refused",
            outbound_top(cid)
            + multipart(f"=_{cid}", text_part("Kính gửi, xin xem tệp.\n"), attachment(data, filename, ctype)),
            note=f"the stamp only inside a {name} attachment named {filename}",
            **kw,
        )
    cid = "marking-doc-docx-in-eml"
    inner = inner_message(
        "Ke hoach", multipart(f"=_{cid}i", text_part("Xem.\n"), attachment(docs["docx"][0], "kh.docx", docs["docx"][2]))
    )
    add(
        cid,
        cls,
        "refused",
        outbound_top(cid) + multipart(f"=_{cid}", text_part("Chuyển.\n"), rfc822(inner, "a.eml")),
        note="a stamped .docx inside an attached message",
        **kw,
    )
    # file names
    names = {
        "utf8-quoted": ('"Kế hoạch TỐI MẬT.pdf"', 'attachment; filename="Kế hoạch TỐI MẬT.pdf"'),
        "rfc2231": (f"*={rfc2231('Kế hoạch TỐI MẬT.pdf')}", f"attachment; filename*={rfc2231('Kế hoạch TỐI MẬT.pdf')}"),
        "rfc2047": (
            f'"{ew_b("tuyệt mật - phương án.docx")}"',
            f'attachment; filename="{ew_b("tuyệt mật - phương án.docx")}"',
        ),
        "rfc2231-continued": (
            '"x.pdf"',
            "attachment;\r\n filename*0*=utf-8''K%E1%BA%BF%20ho%E1%BA%A1ch%20T%E1%BB%90I;\r\n"
            " filename*1*=%20M%E1%BA%ACT.pdf",
        ),
        "underscore": ('"ke_hoach_tối_mật.pdf"', 'attachment; filename="ke_hoach_tối_mật.pdf"'),
        "nfd": (
            f'"{unicodedata.normalize("NFD", "TỐI MẬT.pdf")}"',
            f'attachment; filename="{unicodedata.normalize("NFD", "TỐI MẬT.pdf")}"',
        ),
        "name-param-only": ('"TUYỆT MẬT - phương án.pdf"', ""),
        "rfc2047-lang": (
            f'"{ew_b("Kế hoạch TỐI MẬT.pdf", lang="vi")}"',
            f'attachment; filename="{ew_b("Kế hoạch TỐI MẬT.pdf", lang="vi")}"',
        ),
    }
    body_pdf = pdf(["Kế hoạch số 12"])
    for name, (name_param, disposition) in names.items():
        cid = f"marking-filename-{name}"
        ctype = (
            "application/pdf; name=" + name_param
            if not name_param.startswith("*=")
            else ("application/pdf; name" + name_param)
        )
        add(
            cid,
            cls,
            "refused",
            outbound_top(cid)
            + multipart(f"=_{cid}", text_part("Kính gửi.\n"), part(body_pdf, ctype, "base64", disposition)),
            note=f"the stamp only in the attachment's file name ({name})",
            **kw,
        )


_TONES = "\u0300\u0301\u0303\u0309\u0323"


def to_1258(text: str) -> str:
    """Vietnamese as windows-1258 writes it: base letters precomposed, tone marks as combining marks."""
    out = []
    for char in unicodedata.normalize("NFC", text):
        parts = unicodedata.normalize("NFD", char)
        tones = "".join(c for c in parts if c in _TONES)
        out.append(unicodedata.normalize("NFC", "".join(c for c in parts if c not in _TONES)) + tones)
    return "".join(out)


MUST_PASS_SUBJECTS = [
    "HƯỚNG DẪN ĐỔI MẬT KHẨU HỘP THƯ CÔNG VỤ",
    "Mật khẩu mới của bạn",
    "MẬT KHẨU: đổi định kỳ",
    "QUY CHẾ BẢO MẬT THÔNG TIN",
    "Bảo vệ bí mật nhà nước",
    "Không gửi tài liệu tối mật qua thư",
    "Mật ong rừng Bắc Kạn",
    "MẬT MÃ - tập huấn",
    "Tôi mất điện thoại",
    "Mật độ dân số năm 2026",
    "MẬT ĐỘ DÂN SỐ TỈNH BẮC NINH",
    "Đổi MẬT\u00a0KHẨU hộp thư",
    "BẢO MẬT.",
]
MUST_PASS_BODIES = {
    "password": "Kính gửi các đồng chí,\nĐề nghị đổi mật khẩu định kỳ.\nMẬT KHẨU MỚI: từ 8 ký tự trở lên.\n",
    "secret-guide": (
        "HƯỚNG DẪN BẢO VỆ BÍ MẬT NHÀ NƯỚC\nTài liệu mật được phân thành ba độ: Mật, Tối mật và Tuyệt mật.\n"
        "Không gửi tài liệu tối mật, tuyệt mật qua thư điện tử.\n"
    ),
    "honey": "Hợp tác xã giới thiệu sản phẩm mật ong rừng và mật mía.\n",
    "density": "Mật độ dân số bình quân 1.700 người/km2; MẬT ĐỘ xây dựng 40%.\n",
    "security": "QUY CHẾ BẢO MẬT THÔNG TIN\nBẢO MẬT.\nBí mật công tác.\n",
    "nbsp-password": "Đổi MẬT\u00a0KHẨU trước ngày 30.\n",
    "russian": "ДОГОВОР О СОТРУДНИЧЕСТВЕ\nМАТЕРИАЛЫ КОНФЕРЕНЦИИ\nМАТ\n",
    "spaced-acronym": "C Ộ N G  H Ò A  X Ã  H Ộ I  C H Ủ  N G H Ĩ A  V I Ệ T  N A M\n",
    "toi-mat": "Tôi mất chìa khóa tủ hồ sơ, đề nghị cấp lại.\n",
}


def _pass_cases() -> None:
    cls = "pass"
    for i, subject in enumerate(MUST_PASS_SUBJECTS):
        cid = f"pass-subject-{i:02d}"
        add(
            cid,
            cls,
            "delivered",
            outbound_top(cid, subject) + text_part("Kính gửi.\n"),
            inbound=False,
            note=f"outbound Subject {subject!r}",
        )
    for name, body in MUST_PASS_BODIES.items():
        cid = f"pass-body-{name}"
        add(cid, cls, "delivered", outbound_top(cid) + text_part(body), inbound=False, note=f"outbound body: {name}")
        cid = f"pass-html-{name}"
        html = "<html><head><title>x</title><body>" + "".join(f"<p>{line}</p>" for line in body.splitlines())
        add(
            cid,
            cls,
            "delivered",
            outbound_top(cid) + text_part(html + "\n", "html"),
            inbound=False,
            note=f"outbound HTML, unclosed head: {name}",
        )
    guide = MUST_PASS_BODIES["secret-guide"].splitlines()
    for name, (data, filename, ctype) in {
        "docx": (
            docx([[line] for line in guide]),
            "huong-dan-bao-mat.docx",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        ),
        "pdf": (pdf(guide), "huong-dan-bao-mat.pdf", "application/pdf"),
        "txt": (crlf(MUST_PASS_BODIES["password"]).encode(), "doi-mat-khau.txt", "text/plain; charset=utf-8"),
        "xlsx": (
            xlsx(["Mật độ dân số", "Mật ong"]),
            "so-lieu.xlsx",
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        ),
        "filename-guide": (pdf(["Hướng dẫn"]), "Hướng dẫn bảo vệ bí mật nhà nước.pdf", "application/pdf"),
        "filename-password": (pdf(["x"]), "Đổi mật khẩu.pdf", "application/pdf"),
        "zip-docs": (
            _zip({"bao-cao.docx": docx([["Báo cáo"]]), "so-lieu.csv": b"a,b\r\n1,2\r\n" * 2000}),
            "ho-so.zip",
            "application/zip",
        ),
    }.items():
        cid = f"pass-doc-{name}"
        add(
            cid,
            cls,
            "delivered",
            outbound_top(cid)
            + multipart(f"=_{cid}", text_part("Kính gửi, xin xem tệp.\n"), attachment(data, filename, ctype)),
            inbound=False,
            note=f"outbound attachment {filename}",
        )
    cid = "pass-inbound-marking"
    add(
        cid,
        cls,
        "delivered",
        top(cid, "[TỐI MẬT] Kế hoạch") + text_part("TỐI MẬT\n"),
        note="inbound mail with a stamp: the rule is outbound only",
    )
    cid = "pass-ff-bytes"
    add(
        cid,
        cls,
        "delivered",
        top(cid) + part((b"\xff" * 1022 + b"\r\n") * 1000),
        note="inbound, 1 MB of 0xFF bytes in a utf-8 text part (memory class): delivered",
    )
    cid = "pass-many-headers"
    add(
        cid,
        cls,
        "delivered",
        top(cid, extra=["Content-Type: text/plain; charset=utf-8"]) + fillers(300, "mixed") + b"\r\nNoi dung.\r\n",
        note="300 ordinary header fields",
    )
    cid = "pass-clean-inbound"
    add(
        cid,
        cls,
        "delivered",
        top(cid)
        + multipart(
            f"=_{cid}",
            text_part(MUST_PASS_BODIES["password"]),
            attachment(pdf(["Công văn số 12"]), "cong-van.pdf", "application/pdf"),
        ),
        note="plain official mail with a PDF",
    )


def _virus_cases() -> None:
    cls = "virus"
    kw: dict[str, str] = {"enhanced": "5.7.1"}
    samples = [("eicar", EICAR, "readme.txt", "text/plain")]
    if CLAM_EXE.exists():
        samples.append(("clamexe", CLAM_EXE.read_bytes(), "bao-cao.dat", "application/octet-stream"))
    for tag, data, name, ctype in samples:
        structures: dict[str, bytes] = {
            "base64": multipart("=_v", text_part("Xem.\n"), attachment(data, name, ctype)),
            "qp": multipart("=_v", text_part("Xem.\n"), attachment(data, name, ctype, encoding="quoted-printable")),
            "uuencode": text_part("Tep:\n" + uuencode(data, name).decode()),
            "yenc": part(b"Tep:\r\n" + yenc(data, name)),
            "data-uri": text_part(data_uri_html(data, "application/octet-stream"), "html"),
            "eml": multipart(
                "=_v",
                text_part("Chuyen.\n"),
                rfc822(inner_message("x", multipart("=_vi", text_part("y\n"), attachment(data, name, ctype))), "a.eml"),
            ),
            "digest": (
                b'Content-Type: multipart/digest; boundary="=_d"\r\n\r\n--=_d\r\n\r\n'
                + inner_message("x", multipart("=_vi", text_part("y\n"), attachment(data, name, ctype)))
                + b"\r\n--=_d--\r\n"
            ),
            "zip": multipart(
                "=_v", text_part("Xem.\n"), attachment(_zip({name: data}), "tai-lieu.zip", "application/zip")
            ),
            "nested-6": _nest(attachment(data, name, ctype), 6),
            "upper-cte": multipart("=_v", text_part("Xem.\n"), attachment(data, name, ctype, encoding="BASE64")),
            "folded-ct": (
                b'Content-Type:\r\n multipart/mixed;\r\n\tboundary="=_v"\r\n\r\n--=_v\r\n'
                + text_part("Xem.\n")
                + b"\r\n--=_v\r\n"
                + attachment(data, name, ctype)
                + b"\r\n--=_v--\r\n"
            ),
            "unterminated": (
                b'Content-Type: multipart/mixed; boundary="=_v"\r\n\r\n--=_v\r\n'
                + text_part("Xem.\n")
                + b"\r\n--=_v\r\n"
                + attachment(data, name, ctype)
            ),
            "after-budget": multipart(
                "=_v", text_part(filler_text(OLD_TEXT_BUDGET + 1024)), attachment(data, name, ctype)
            ),
            "dup-ct-text-first": multipart(
                "=_v",
                text_part("Xem.\n"),
                part(
                    data,
                    "text/plain; charset=us-ascii",
                    "base64",
                    extra=[f'Content-Type: application/octet-stream; name="{name}"'],
                ),
            ),
            "dup-boundary-param": (
                b'Content-Type: multipart/mixed; boundary="=_a"; boundary="=_v"\r\n\r\n'
                b"--=_a\r\n"
                + text_part("a\n")
                + b"\r\n--=_v\r\n"
                + attachment(data, name, ctype)
                + b"\r\n--=_v--\r\n--=_a--\r\n"
            ),
        }
        if tag == "eicar":
            structures["inline-8bit-body"] = part(EICAR + b"\r\n", "text/plain; charset=us-ascii", "7bit")
            structures["x-uuencode-cte"] = multipart(
                "=_v",
                text_part("Xem.\n"),
                part(
                    uuencode(data, name),
                    f'application/octet-stream; name="{name}"',
                    "x-uuencode",
                    f'attachment; filename="{name}"',
                ),
            )
        for sname, entity in structures.items():
            cid = f"virus-{tag}-{sname}"
            add(cid, cls, "refused", top(cid) + entity, note=f"{tag} as {sname}", **kw)
    # disk images (the way programs are smuggled past scanners) renamed as documents, carrying a
    # harmless file so that only their true type can refuse them: it is read past the head (an
    # ISO's volume descriptor at 32 KiB, a VHD's footer at the end)
    images = {
        "iso-as-pdf": (disk_iso(), "bao-cao.pdf", "application/pdf"),
        "vhd-as-xlsx": (disk_vhd(), "so-lieu.xlsx", "application/vnd.ms-excel"),
        "vhdx-as-docx": (disk_vhdx(), "to-trinh.docx", "application/octet-stream"),
    }
    for tag, (data, name, ctype) in images.items():
        for sname, entity in {
            "base64": multipart("=_v", text_part("Xem.\n"), attachment(data, name, ctype)),
            "uuencode": text_part("Tep:\n" + uuencode(data, name).decode()),
        }.items():
            cid = f"virus-{tag}-{sname}"
            add(cid, cls, "refused", top(cid) + entity, note=f"a disk image ({tag}) as {sname}", **kw)
    gtubes: dict[str, bytes] = {
        "plain": text_part(GTUBE.decode() + "\n"),
        "base64": text_part(GTUBE.decode() + "\n", encoding="base64"),
        "qp-soft-break": part(
            GTUBE[:30] + b"=\r\n" + GTUBE[30:] + b"\r\n",
            "text/plain",
            "",
            extra=["Content-Transfer-Encoding: quoted-printable"],
        ),
        "html": text_part(f"<html><head><title>x</title><body><p>{GTUBE.decode()}</p>", "html"),
        "html-only-alternative": multipart(
            "=_g",
            text_part("Xin chao.\n"),
            text_part(f"<p>{GTUBE.decode()}</p>", "html", encoding="base64"),
            subtype="alternative",
        ),
        "attached-eml": multipart("=_g", text_part("Xem.\n"), rfc822(inner_message("x", text_part(GTUBE.decode())))),
        "utf-16": part(crlf(GTUBE.decode() + "\n").encode("utf-16"), "text/plain; charset=utf-16", "base64"),
        "upper-cte": part(b64(GTUBE), "text/plain", "").replace(
            b"\r\n\r\n", b"\r\nCONTENT-TRANSFER-ENCODING: BASE64\r\n\r\n", 1
        ),
    }
    for name, entity in gtubes.items():
        cid = f"virus-gtube-{name}"
        add(cid, cls, "refused", top(cid) + entity, note=f"inbound GTUBE, {name}", **kw)
    cid = "virus-gtube-subject-encoded-body-folded-ct"
    add(
        cid,
        cls,
        "refused",
        top(cid, extra=["Content-Type: text/plain;\r\n\tcharset=utf-8", "Content-Transfer-Encoding:\r\n base64"])
        + b"\r\n"
        + b64(GTUBE),
        note="GTUBE base64 with folded Content-* fields",
        **kw,
    )


def _nest(leaf: bytes, depth: int) -> bytes:
    entity = multipart("=_n0", text_part("Xem.\n"), leaf)
    for level in range(1, depth):
        entity = multipart(f"=_n{level}", entity, subtype="mixed" if level % 2 else "related")
    return entity


def _bomb_cases() -> None:
    cls = "bomb"
    bombs = {
        "zip-2gib-zeros": (lambda: bomb_zip(2048), "so-lieu.zip", "application/zip"),
        "zip-many-entries": (lambda: many_entry_bomb(300, 4), "bang.zip", "application/zip"),
        "zip-nested": (lambda: nested_bomb(10, 200), "phan.zip", "application/zip"),
        "gzip-1gib": (lambda: gzip_bomb(1024), "nhat-ky.log.gz", "application/gzip"),
        "docx-1gib-xml": (
            lambda: docx_bomb(1024),
            "bao-cao.docx",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        ),
        "zip-named-pdf": (lambda: bomb_zip(2048), "so-lieu.pdf", "application/pdf"),
    }
    for name, (build, filename, ctype) in bombs.items():
        cid = f"bomb-{name}"

        def write(
            out: BinaryIO,
            cid: str = cid,
            build: Callable[[], bytes] = build,
            filename: str = filename,
            ctype: str = ctype,
        ) -> None:
            out.write(
                top(cid) + multipart(f"=_{cid}", text_part("Xem so lieu.\n"), attachment(build(), filename, ctype))
            )

        add(cid, cls, "refused", write, note=f"{filename}: a compression bomb ({name})")
    cid = "bomb-zip-in-eml"

    def write_eml(out: BinaryIO) -> None:
        inner = inner_message(
            "so lieu", multipart("=_bi", text_part("x\n"), attachment(bomb_zip(2048), "a.zip", "application/zip"))
        )
        out.write(top(cid) + multipart(f"=_{cid}", text_part("Chuyen.\n"), rfc822(inner, "a.eml")))

    add(cid, cls, "refused", write_eml, note="the 2 GiB zip inside an attached message")


def _forwarding_cases() -> None:
    cls = "forwarding"
    list_sender = "thaoluan-bounces+nguyenvana=bacninh.gov.vn@lists.example.org"
    list_head = [
        "List-Id: Thao luan <thaoluan.lists.example.org>",
        "List-Post: <mailto:thaoluan@lists.example.org>",
        "Precedence: list",
        "Content-Type: text/plain; charset=utf-8",
    ]
    received_list = (
        "Received: from lists.example.org (lists.example.org [203.0.113.40])\r\n"
        "\tby mx1.bacninh.gov.vn (Postfix) with ESMTPS id 4Qk51Zt\r\n"
        "\tfor <nguyenvana@bacninh.gov.vn>; Mon, 23 Nov 2026 09:51:11 +0700\r\n"
    )
    traces = {
        "sieve-gmail": "X-Sieve-Redirected-From: someone@gmail.com",
        "sieve-gov": "X-Sieve-Redirected-From: <tranthib@bacninh.gov.vn>",
        "delivered-to-gmail": "Delivered-To: someone@gmail.com",
        "exchange-autoforwarded": "X-MS-Exchange-Organization-AutoForwarded: true",
        "zimbra-forwarded": "X-Zimbra-Forwarded: someone@example.org",
        "resent": "Resent-From: someone@example.org\r\nResent-To: thaoluan@lists.example.org",
        "forwarded-to": "X-Forwarded-To: thaoluan@lists.example.org\r\nX-Forwarded-For: someone@gmail.com",
    }
    # a post to a public list that carries a forwarding trace: the list copy to each subscriber is delivered
    for name, trace in traces.items():
        cid = f"fwd-list-copy-{name}"
        head = received_list.encode() + top(
            cid,
            "[thaoluan] Hoi thao",
            frm="member@example.org",
            to="thaoluan@lists.example.org",
            extra=[trace, *list_head],
        )
        add(
            cid,
            cls,
            "delivered",
            head + b"\r\nNoi dung thu.\r\n",
            mail_from=list_sender,
            note=f"a list copy (List-Id, list bounce sender) carrying {name}: the trace is the post's way to the list",
        )
    for name, sender, extra in (
        ("listid-only", "member@example.org", list_head),
        ("bounce-only", "thaoluan-bounces@lists.example.org", ["Content-Type: text/plain; charset=utf-8"]),
        ("owner-sender", "owner-thaoluan@lists.example.org", ["Content-Type: text/plain; charset=utf-8"]),
        (
            "googlegroups",
            "thaoluan+bncBDV@googlegroups.com",
            [
                "List-ID: <thaoluan.googlegroups.com>",
                "Mailing-list: list thaoluan@googlegroups.com",
                "Content-Type: text/plain; charset=utf-8",
            ],
        ),
        (
            "lowercase-listid",
            list_sender,
            ["list-id: <thaoluan.lists.example.org>", "Content-Type: text/plain; charset=utf-8"],
        ),
        (
            "folded-listid",
            list_sender,
            ["List-Id:\r\n <thaoluan.lists.example.org>", "Content-Type: text/plain; charset=utf-8"],
        ),
    ):
        cid = f"fwd-list-{name}"
        head = top(
            cid,
            "[thaoluan] Hoi thao",
            frm="member@example.org",
            to="thaoluan@lists.example.org",
            extra=["X-Sieve-Redirected-From: someone@gmail.com", *extra],
        )
        add(
            cid,
            cls,
            "delivered",
            head + b"\r\nNoi dung thu.\r\n",
            mail_from=sender,
            note=f"list mail ({name}) with a Sieve trace of the post: delivered",
        )
    # forwarding of list mail is still forwarding
    cid = "fwd-list-copy-via-srs-forwarder"
    head = top(cid, "[thaoluan] Hoi thao", frm="member@example.org", to="thaoluan@lists.example.org", extra=list_head)
    add(
        cid,
        cls,
        "refused",
        head + b"\r\nNoi dung.\r\n",
        mail_from="SRS0=q9Wz=TU=lists.example.org=thaoluan-bounces@forwarder.example.net",
        enhanced="5.7.520",
        note="a list copy re-sent by a non-government SRS forwarder into a gov mailbox",
    )
    cid = "fwd-list-member-redirect-inbound"
    sieve = "X-Sieve-Redirected-From: an@company-mail.vn\r\n"
    head = (sieve + received_list.replace("nguyenvana@bacninh.gov.vn", "an@company-mail.vn")).encode() + top(
        cid, "[thaoluan] Hoi thao", frm="member@example.org", to="thaoluan@lists.example.org", extra=list_head
    )
    add(
        cid,
        cls,
        "refused",
        head + b"\r\nNoi dung.\r\n",
        mail_from="thaoluan-bounces+an=company-mail.vn@lists.example.org",
        enhanced="5.7.520",
        note="the list delivered to an@company-mail.vn, whose Sieve redirected it here: the list's own copy forwarded",
    )
    cid = "fwd-list-redirected-outbound"
    head = top(
        cid,
        "[thaoluan] Hoi thao",
        frm="member@example.org",
        to="thaoluan@lists.example.org",
        extra=[f"X-Sieve-Redirected-From: <{LOCAL_RCPT}>", *list_head],
    )
    add(
        cid,
        cls,
        "refused",
        head + b"\r\nNoi dung.\r\n",
        inbound=False,
        mail_from=list_sender,
        rcpts=[GMAIL],
        enhanced="5.7.520",
        note="a gov mailbox redirects list mail it received to gmail.com (sender kept)",
    )
    cid = "fwd-listid-forged-outbound"
    head = top(
        cid,
        "Ho so",
        frm=LOCAL_RCPT,
        to=GMAIL,
        extra=[
            f"X-Sieve-Redirected-From: <{LOCAL_RCPT}>",
            "List-Id: <x.example.org>",
            "Content-Type: text/plain; charset=utf-8",
        ],
    )
    add(
        cid,
        cls,
        "refused",
        head + b"\r\nNoi dung.\r\n",
        inbound=False,
        mail_from=LOCAL_RCPT,
        rcpts=[GMAIL],
        enhanced="5.7.520",
        note="outbound Sieve redirect with a List-Id the user's mailbox added itself",
    )
    # the multipart/report label
    pdf_part = attachment(pdf(["Ho so"]), "ho-so.pdf", "application/pdf")
    for name, ctype in (
        ("report", 'multipart/report; report-type=delivery-status; boundary="=_r"'),
        ("report-mdn", 'multipart/report; report-type=disposition-notification; boundary="=_r"'),
        ("report-upper", 'MULTIPART/REPORT; REPORT-TYPE=DELIVERY-STATUS; boundary="=_r"'),
        ("report-folded", 'multipart/report;\r\n\treport-type=delivery-status;\r\n\tboundary="=_r"'),
    ):
        cid = f"fwd-label-{name}"
        entity = multipart("=_r", text_part("Ho so.\n"), pdf_part, ct=f"Content-Type: {ctype}")
        head = top(cid, "Ho so", frm=LOCAL_RCPT, to=GMAIL, extra=[f"X-Sieve-Redirected-From: <{LOCAL_RCPT}>"])
        add(
            cid,
            cls,
            "refused",
            head + entity,
            inbound=False,
            mail_from=LOCAL_RCPT,
            rcpts=[GMAIL],
            enhanced="5.7.520",
            note=f"outbound Sieve redirect labelled {name} (a PDF inside), non-null sender",
        )
    cid = "fwd-label-report-with-status-part"
    status = part(
        b"Reporting-MTA: dns; mail.bacninh.gov.vn\r\n\r\nFinal-Recipient: rfc822; x@example.com\r\n"
        b"Action: failed\r\nStatus: 5.0.0\r\n",
        "message/delivery-status",
        "",
    )
    entity = multipart(
        "=_r",
        text_part("Ho so.\n"),
        status,
        pdf_part,
        ct='Content-Type: multipart/report; report-type=delivery-status; boundary="=_r"',
    )
    head = top(cid, "Ho so", frm=LOCAL_RCPT, to=GMAIL, extra=[f"X-Sieve-Redirected-From: <{LOCAL_RCPT}>"])
    add(
        cid,
        cls,
        "refused",
        head + entity,
        inbound=False,
        mail_from=LOCAL_RCPT,
        rcpts=[GMAIL],
        enhanced="5.7.520",
        note="a forged report with a delivery-status part, non-null sender, Sieve trace",
    )
    cid = "fwd-label-report-srs-inbound"
    entity = multipart(
        "=_r",
        text_part("Da doc.\n"),
        part(
            b"Reporting-UA: client.example.com\r\nFinal-Recipient: rfc822; partner@example.com\r\n"
            b"Disposition: manual-action/MDN-sent-manually; displayed\r\n",
            "message/disposition-notification",
            "",
        ),
        ct='Content-Type: multipart/report; report-type=disposition-notification; boundary="=_r"',
    )
    add(
        cid,
        cls,
        "refused",
        top(cid, "Read: Ke hoach") + entity,
        mail_from="SRS0=q9Wz=TU=example.com=partner@forwarder.example.net",
        enhanced="5.7.520",
        note="a read receipt through an SRS forwarder (the old corpus case ex-dsn-srs-inbound): a forward",
    )
    # what must pass: real reports, vacation replies, list posts
    dsn = multipart(
        "=_dsn",
        text_part("This is the mail system at host mx1.bacninh.gov.vn.\nThe message could not be delivered.\n"),
        part(
            b"Reporting-MTA: dns; mx1.bacninh.gov.vn\r\n\r\nFinal-Recipient: rfc822; khongco@bacninh.gov.vn\r\n"
            b"Action: failed\r\nStatus: 5.1.1\r\n",
            "message/delivery-status",
            "",
        ),
        part(
            b"From: <partner@example.com>\r\nSubject: Hop tac\r\nX-Sieve-Redirected-From: x@gmail.com\r\n",
            "text/rfc822-headers",
            "",
        ),
        ct='Content-Type: multipart/report; report-type=delivery-status; boundary="=_dsn"',
    )
    cid = "pass-dsn-outbound-null-sender"
    add(
        cid,
        "pass",
        "delivered",
        top(cid, "Undelivered Mail Returned to Sender", frm="MAILER-DAEMON@mx1.bacninh.gov.vn", to=PARTNER) + dsn,
        inbound=False,
        mail_from="",
        rcpts=[PARTNER],
        note="a real DSN of ours (null sender) to an outside sender",
    )
    cid = "pass-dsn-inbound-null-sender"
    add(
        cid,
        "pass",
        "delivered",
        top(cid, "Undelivered Mail Returned to Sender", frm="MAILER-DAEMON@example.com") + dsn,
        mail_from="",
        note="a real DSN from outside (null sender) carrying the returned headers with a trace",
    )
    for name, extra in (
        (
            "zimbra",
            ["X-Zimbra-Forwarded: nguyenvana@bacninh.gov.vn", "Auto-Submitted: auto-replied (zimbra; vacation)"],
        ),
        ("rfc3834", ["Auto-Submitted: auto-replied", "Precedence: bulk"]),
        (
            "exchange-oof",
            [
                "X-MS-Exchange-Organization-AutoForwarded: false",
                "Auto-Submitted: auto-generated",
                "X-Auto-Response-Suppress: All",
            ],
        ),
    ):
        cid = f"pass-vacation-{name}"
        head = top(
            cid,
            "Vắng mặt: Báo giá",
            frm=LOCAL_RCPT,
            to=PARTNER,
            extra=[*extra, "In-Reply-To: <20261120090500.1@example.com>", "Content-Type: text/plain; charset=utf-8"],
        )
        add(
            cid,
            "pass",
            "delivered",
            head + "\r\nTôi vắng mặt đến ngày 30.\r\n".encode(),
            inbound=False,
            mail_from=LOCAL_RCPT,
            note=f"an out-of-office reply ({name})",
        )
    cid = "pass-list-post-inbound"
    add(
        cid,
        "pass",
        "delivered",
        received_list.encode()
        + top(
            cid,
            "[thaoluan] Hoi thao",
            frm="member@example.org",
            to="thaoluan@lists.example.org",
            extra=["Delivered-To: thaoluan@lists.example.org", *list_head],
        )
        + b"\r\nNoi dung.\r\n",
        mail_from=list_sender,
        note="a real list post copy from a Mailman list",
    )
    cid = "pass-list-outbound-local-server"
    add(
        cid,
        "pass",
        "delivered",
        top(
            cid,
            "[congdong] Gop y",
            frm=PARTNER,
            to="congdong@lists.bacninh.gov.vn",
            extra=[
                "List-Id: Cong dong <congdong.lists.bacninh.gov.vn>",
                "Precedence: list",
                "Content-Type: text/plain; charset=utf-8",
            ],
        )
        + b"\r\nNoi dung.\r\n",
        inbound=False,
        mail_from="congdong-bounces@lists.bacninh.gov.vn",
        rcpts=["member@example.org"],
        note="our list server sends a post to an outside subscriber",
    )
    cid = "pass-manual-forward"
    add(
        cid,
        "pass",
        "delivered",
        top(cid, "Fwd: Hop tac", frm="tranthib@sotttt.bacninh.gov.vn", to=GMAIL)
        + text_part("---------- Forwarded message ---------\nFrom: partner@example.com\n\nNoi dung.\n"),
        inbound=False,
        mail_from="tranthib@sotttt.bacninh.gov.vn",
        rcpts=[GMAIL],
        note="a forward by hand",
    )


def _malformed_cases() -> None:
    cls = "malformed"
    exe = _exe()
    entities = {
        "dup-ct-exe": multipart(
            "=_m",
            text_part("Xem.\n"),
            part(exe, "text/plain", "base64", extra=['Content-Type: application/x-msdownload; name="setup.exe"']),
        ),
        "dup-ct-exe-reversed": multipart(
            "=_m",
            text_part("Xem.\n"),
            part(exe, 'application/x-msdownload; name="setup.exe"', "base64", extra=["Content-Type: text/plain"]),
        ),
        "dup-disposition-exe": multipart(
            "=_m",
            text_part("Xem.\n"),
            part(
                exe,
                "application/octet-stream",
                "base64",
                "inline",
                extra=['Content-Disposition: attachment; filename="setup.exe"'],
            ),
        ),
        "dup-cte-eicar": multipart(
            "=_m",
            text_part("Xem.\n"),
            part(
                b64(EICAR).rstrip(b"\r\n"),
                'text/plain; name="ghi-chu.txt"',
                "7bit",
                extra=["Content-Transfer-Encoding: base64"],
            ),
        ),
        "dup-cte-eicar-reversed": multipart(
            "=_m",
            text_part("Xem.\n"),
            part(EICAR, 'text/plain; name="ghi-chu.txt"', "base64", extra=["Content-Transfer-Encoding: 7bit"]),
        ),
        "dup-filename-exe": multipart(
            "=_m",
            text_part("Xem.\n"),
            part(
                exe,
                'application/octet-stream; name="bao-cao.pdf"; name="setup.exe"',
                "base64",
                'attachment; filename="bao-cao.pdf"; filename="setup.exe"',
            ),
        ),
    }
    for name, entity in entities.items():
        cid = f"malformed-{name}"
        add(
            cid,
            cls,
            "refused",
            top(cid) + entity,
            note=f"{name}: judged under every reading, or malformed",
            enhanced="5.7.1",
        )
    cid = "malformed-top-dup-ct-eicar"
    inner = multipart("=_m", text_part("Xem.\n"), attachment(EICAR, "ghi-chu.txt", "text/plain"))
    ct, rest = inner.split(b"\r\n\r\n", 1)
    add(
        cid,
        cls,
        "refused",
        top(cid, extra=["Content-Type: text/plain; charset=utf-8"]) + ct + b"\r\n\r\n" + rest,
        note="two top-level Content-Type fields, EICAR under the second reading",
        enhanced="5.7.1",
    )


def _log_cases() -> None:
    cid = "log-forged-mail-from"
    add(
        cid,
        "log",
        "delivered",
        top(cid) + text_part("Xin chao.\n"),
        mail_from='"x action=accept check=- rule=- queue_id=FORGED client=10.0.0.1"@example.com',
        note="MAIL FROM that reads as decision-line fields: delivered, logged quoted (checked by the test)",
    )


def build_cases() -> list[Case]:
    """Every case, in a stable order; nothing is written yet."""
    CASES.clear()
    for builder in (
        _flood_cases,
        _text_cases,
        _cap_cases,
        _marking_cases,
        _pass_cases,
        _virus_cases,
        _bomb_cases,
        _forwarding_cases,
        _malformed_cases,
        _log_cases,
    ):
        builder()
    ids = [c.id for c in CASES]
    duplicates = {i for i in ids if ids.count(i) > 1}
    assert not duplicates, duplicates
    return list(CASES)


def generate(directory: Path, cases: Sequence[Case] | None = None) -> dict[str, Path]:
    """Write every case's message into `directory`, with manifest.json; returns id -> path."""
    directory.mkdir(parents=True, exist_ok=True)
    cases = list(cases) if cases is not None else build_cases()
    paths = {case.id: case.write(directory) for case in cases}
    manifest = [case.manifest() for case in cases]
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False), encoding="utf-8")
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--only", default="", help="a case id prefix")
    args = parser.parse_args(argv)
    cases = [c for c in build_cases() if c.id.startswith(args.only)]
    paths = generate(args.outdir, cases)
    total = sum(p.stat().st_size for p in paths.values())
    print(f"{len(paths)} cases, {total / MIB:.1f} MiB in {args.outdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
