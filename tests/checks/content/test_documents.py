"""The text of attached documents (.txt, .docx/.xlsx/.pptx, .pdf) and the content rules that read it.

The files are real: Office files are built with zipfile, the PDF by hand (objects, xref
offsets computed), and read by the real zipfile/expat and poppler's pdftotext.
"""

from __future__ import annotations

import base64
import io
import zipfile
from typing import Any

import pytest

from govmilter import mime
from govmilter.checks.content import check as content
from govmilter.checks.content import documents as docs
from govmilter.model import Action, Mode, Part
from support.harness import Harness

OTHERS = ["forwarding", "attachments", "size", "antivirus", "dnsbl"]
OUTBOUND: dict[str, Any] = {
    "client_ip": "127.0.0.1",
    "mail_from": "a.nguyen@bacninh.gov.vn",
    "rcpts": ["partner@example.com"],
}
INBOUND: dict[str, Any] = {"client_ip": "127.0.0.3", "mail_from": "a@example.com", "rcpts": ["user@bacninh.gov.vn"]}
W = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
A = 'xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main"'
CONTENT_TYPES = '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"/>'


def office(members: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", CONTENT_TYPES)
        archive.writestr("_rels/.rels", "<Relationships/>")
        for name, text in members.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def docx(*paragraphs: list[str]) -> bytes:
    """Each paragraph a list of runs: Word splits a word across runs at every formatting change."""
    body = "".join(
        "<w:p>" + "".join(f"<w:r><w:t xml:space='preserve'>{run}</w:t></w:r>" for run in runs) + "</w:p>"
        for runs in paragraphs
    )
    return office({"word/document.xml": f"<?xml version='1.0'?><w:document {W}><w:body>{body}</w:body></w:document>"})


def xlsx(*strings: str) -> bytes:
    items = "".join(f"<si><t>{s}</t></si>" for s in strings)
    return office(
        {
            "xl/workbook.xml": "<workbook/>",
            "xl/sharedStrings.xml": f"<sst xmlns='http://schemas.openxmlformats.org/spreadsheetml/2006/main'>{items}</sst>",
            "xl/worksheets/sheet1.xml": "<worksheet><sheetData><row><c t='s'><v>0</v></c></row></sheetData>"
            "</worksheet>",
        }
    )


def pptx(text: str) -> bytes:
    slide = f"<p:sld xmlns:p='urn:p' {A}><a:p><a:r><a:t>{text}</a:t></a:r></a:p></p:sld>"
    return office({"ppt/presentation.xml": "<p/>", "ppt/slides/slide1.xml": slide})


def pdf(text: bytes, *, encrypt: bool = False) -> bytes:
    """A one-page PDF. Bytes 0x80 and 0x81 of `text` show Ố and Ậ (glyph names uni1ED0, uni1EAC)."""
    stream = b"BT /F1 24 Tf 72 700 Td (" + text + b") Tj ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding << /Type /Encoding"
        b" /BaseEncoding /WinAnsiEncoding /Differences [128 /uni1ED0 129 /uni1EAC] >> >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    extra = b" /Encrypt << /Filter /Standard /V 1 /R 2 /O <00> /U <00> /P -4 >> /ID [<00><00>]" if encrypt else b""
    out += b"trailer\n<< /Size %d /Root 1 0 R%s >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, extra, xref)
    return bytes(out)


MARKED_PDF = pdf(b"T\x80I M\x81T - Ke hoach so 5")  # TỐI MẬT
CLEAN_PDF = pdf(b"Huong dan doi mat khau")


def message(*attachments: tuple[str, str, bytes], body: str = "Gui anh tai lieu.") -> bytes:
    parts = [f"--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"]
    for name, kind, data in attachments:
        encoded = base64.encodebytes(data).decode()
        parts.append(
            f'--b\r\nContent-Type: {kind}\r\nContent-Disposition: attachment; filename="{name}"\r\n'
            f"Content-Transfer-Encoding: base64\r\n\r\n{encoded}\r\n"
        )
    return (
        "From: <a.nguyen@bacninh.gov.vn>\r\nTo: <partner@example.com>\r\nSubject: Tai lieu\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + "".join(parts) + "--b--\r\n"
    ).encode()


def harness(*overrides: str) -> Harness:
    return Harness(overrides=list(overrides), skip=OTHERS)


DEFAULT_BUDGET = docs.Budget()


def text_of(kind: str, data: bytes, budget: docs.Budget = DEFAULT_BUDGET) -> str:
    return "".join(docs.read_text(docs.Document("2", "f", kind, len(data)), io.BytesIO(data), budget))


# ---- extraction --------------------------------------------------------------------------------


def test_docx_text_joins_runs_and_ends_paragraphs() -> None:
    text = text_of("ooxml", docx(["Kế hoạch số 5"], ["TỐ", "I M", "ẬT"], ["a&lt;b&gt; &amp; c"]))
    assert text.splitlines()[:3] == ["Kế hoạch số 5", "TỐI MẬT", "a<b> & c"]


def test_xlsx_and_pptx_text() -> None:
    assert "TUYỆT MẬT" in text_of("ooxml", xlsx("Bảng lương", "TUYỆT MẬT"))
    assert "TỐI MẬT" in text_of("ooxml", pptx("TỐI MẬT"))


def test_pdf_text_through_pdftotext() -> None:
    assert "TỐI MẬT - Ke hoach so 5" in text_of("pdf", MARKED_PDF)


def test_plain_text_in_utf8_and_utf16() -> None:
    assert text_of("text", "TỐI MẬT\n".encode()) == "TỐI MẬT\n"
    assert text_of("text", "TỐI MẬT\n".encode("utf-16")) == "TỐI MẬT\n"


@pytest.mark.parametrize(
    ("kind", "data", "budget", "reason"),
    [
        ("pdf", pdf(b"T\x80I M\x81T", encrypt=True), docs.Budget(), "encrypted"),
        ("pdf", b"%PDF-1.4\n" + b"\x00garbage" * 50, docs.Budget(), "damaged"),
        ("pdf", MARKED_PDF, docs.Budget(max_bytes=5), "too-large"),  # pdftotext writes more than that
        ("pdf", MARKED_PDF, docs.Budget(seconds=1e-6), "timeout"),
        ("ooxml", docx(["x" * 5000]), docs.Budget(max_bytes=1000), "too-large"),
        ("ooxml", b"PK\x03\x04 not really a zip", docs.Budget(), "damaged"),
        ("text", b"x" * 5000, docs.Budget(max_bytes=100), "too-large"),
        ("encrypted-ooxml", docs.OLE2 + b"\x00" * 100, docs.Budget(), "encrypted"),
    ],
)
def test_unreadable_documents_say_why(kind: str, data: bytes, budget: docs.Budget, reason: str) -> None:
    with pytest.raises(docs.Unreadable) as caught:
        text_of(kind, data, budget)
    assert str(caught.value) == reason


def test_office_xml_with_a_dtd_is_refused_not_expanded() -> None:
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE w [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
        f"<w:document {W}><w:body><w:p><w:r><w:t>&b;</w:t></w:r></w:p></w:body></w:document>"
    )
    with pytest.raises(docs.Unreadable, match="damaged"):
        text_of("ooxml", office({"word/document.xml": bomb}))


def test_a_compression_bomb_stops_at_the_budget() -> None:
    members = {"word/document.xml": f"<w:document {W}><w:body><w:p><w:r><w:t>" + "0" * 20_000_000 + "</w:t>"}
    data = office(members)
    assert len(data) < 100_000
    with pytest.raises(docs.Unreadable, match="too-large"):
        text_of("ooxml", data, docs.Budget(max_bytes=1_000_000))


def part(path: str, kind: str, filename: str, data: bytes, disposition: str = "attachment") -> Part:
    names: tuple[str, ...] = ()
    if data.startswith(b"PK"):
        names = tuple(zipfile.ZipFile(io.BytesIO(data)).namelist())
    return Part(path, kind, filename, disposition, "base64", len(data), True, head=data[:512], archive_names=names)


def test_documents_are_known_by_their_true_type() -> None:
    plain_zip = io.BytesIO()
    with zipfile.ZipFile(plain_zip, "w") as archive:
        archive.writestr("photo.jpg", b"x")
    parts = [
        part("2", "application/octet-stream", "a.bin", MARKED_PDF),  # a PDF whatever its name
        part("3", "application/pdf", "fake.pdf", b"MZ not a pdf"),  # no PDF whatever its name
        part("4", "application/octet-stream", "x.docx", docx(["a"])),
        part("5", "application/zip", "x.zip", plain_zip.getvalue()),
        part("6", "text/plain", "notes.txt", b"hello"),
        part("7", "application/octet-stream", "notes.TXT", b"hello"),
        part("8", "text/plain", "", b"body text", disposition=""),  # the message's own text
        part("9", "application/octet-stream", "secret.docx", docs.OLE2 + b"\x00" * 32),
    ]
    assert [(d.path, d.kind) for d in docs.documents(parts)] == [
        ("2", "pdf"),
        ("4", "ooxml"),
        ("6", "text"),
        ("7", "text"),
        ("9", "encrypted-ooxml"),
    ]


# ---- the content rule that reads them -----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind", "data"),
    [
        ("ke-hoach.docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
         docx(["Kế hoạch"], ["TỐI\u00a0", "MẬT"])),
        ("bang.xlsx", "application/octet-stream", xlsx("Số liệu", "TUYỆT MẬT")),
        ("trinh-chieu.pptx", "application/octet-stream", pptx("ТỐІ МẬТ")),  # Cyrillic look-alikes too
        ("van-ban.pdf", "application/pdf", MARKED_PDF),
        ("ghi-chu.txt", "text/plain", "Ghi chú\nMẬT\n".encode()),
    ],
)  # fmt: skip
def test_a_marking_only_inside_a_document_is_refused_outbound(name: str, kind: str, data: bytes) -> None:
    result = harness().scan(message((name, kind, data)), **OUTBOUND)
    assert result.verdict.refuses and result.verdict.rule == "secret-marking-body", result.verdict
    assert "document matched" in result.verdict.reason


def test_clean_documents_go_out() -> None:
    data = message(
        ("huong-dan.docx", "application/octet-stream", docx(["Hướng dẫn: tài liệu tối mật không gửi qua thư"])),
        ("mat-khau.pdf", "application/pdf", CLEAN_PDF),
        ("mat-do-dan-so.xlsx", "application/octet-stream", xlsx("Mật độ dân số", "1.200 người/km2")),
    )
    result = harness().scan(data, **OUTBOUND)
    assert result.verdict.action is Action.ACCEPT, result.verdict
    assert [h.rule for h in result.tx.hits if h.rule == "document-unreadable"] == []


def test_inbound_mail_reads_no_document(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    real = mime.extract
    monkeypatch.setattr(mime, "extract", lambda *a, **k: calls.append(a) or real(*a, **k))
    result = harness().scan(message(("ke-hoach.docx", "application/octet-stream", docx(["TỐI MẬT"]))), **INBOUND)
    assert result.verdict.action is Action.ACCEPT and calls == []
    harness().scan(message(("ke-hoach.docx", "application/octet-stream", docx(["TỐI MẬT"]))), **OUTBOUND)
    assert len(calls) == 1


def test_unreadable_document_is_monitored_by_default_and_can_refuse() -> None:
    data = message(("mat.pdf", "application/pdf", pdf(b"T\x80I M\x81T", encrypt=True)))
    result = harness().scan(data, **OUTBOUND)
    assert result.verdict.action is Action.ACCEPT
    hit = next(h for h in result.tx.hits if h.rule == "document-unreadable")
    assert hit.mode is Mode.MONITOR and "encrypted" in hit.reason and "mat.pdf" in hit.reason
    assert ("X-Govmilter-Monitor", "check=content rule=document-unreadable would=reject") in result.verdict.headers
    refused = harness("content.document_unreadable=reject").scan(data, **OUTBOUND)
    assert refused.verdict.refuses and refused.verdict.rule == "document-unreadable"
    assert refused.verdict.smtp_reply().startswith("550 5.7.1 ") and refused.verdict.smtp_reply().isascii()


def test_document_budgets_come_from_the_configuration() -> None:
    two = message(
        ("a.docx", "application/octet-stream", docx(["Kế hoạch"])),
        ("b.docx", "application/octet-stream", docx(["TỐI MẬT"])),
    )
    result = harness("content.document_max_count=1").scan(two, **OUTBOUND)
    reasons = [h.reason for h in result.tx.hits if h.rule == "document-unreadable"]
    assert result.verdict.action is Action.ACCEPT and len(reasons) == 1 and "too-many-documents" in reasons[0]
    big = message(("a.txt", "text/plain", b"x" * 5000 + "\nTỐI MẬT\n".encode()))
    result = harness("content.document_max_bytes=1000").scan(big, **OUTBOUND)
    assert [h.reason.rsplit(": ", 1)[1] for h in result.tx.hits if h.rule == "document-unreadable"] == ["too-large"]


def test_rule_targets_may_be_a_list_and_are_checked(tmp_path: Any) -> None:
    from govmilter.ruleset import RuleErrors

    (tmp_path / "c.toml").write_text(
        'kind = "content"\n[[rule]]\nid = "both"\ntarget = ["body", "document"]\npattern = "secretword"\nscore = 3\n'
    )
    h = Harness(overrides=[f'rules.dir="{tmp_path}"'], skip=OTHERS)
    result = h.scan(message(("a.txt", "text/plain", b"the secretword")), **OUTBOUND)
    assert [v.rule for v in result.tx.hits if v.rule == "both"] == ["both"]
    bad = 'kind = "content"\n[[rule]]\nid = "bad"\ntarget = ["body", "pdf"]\npattern = "x"\nscore = 1\n'
    (tmp_path / "c.toml").write_text(bad)
    with pytest.raises(RuleErrors, match="target"):
        Harness(overrides=[f'rules.dir="{tmp_path}"'], skip=OTHERS)
    assert content.TARGETS == ("header", "body", "attachment-name", "document", "link", "link-domain")


def test_config_refuses_a_bad_unreadable_policy() -> None:
    from govmilter.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="document_unreadable"):
        load_config(None, ["content.document_unreadable=accept"])
    with pytest.raises(ConfigError, match="document_memory"):
        load_config(None, ["content.document_memory=1000"])
