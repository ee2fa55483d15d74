"""The attachment-type policy through the pipeline, with the shipped rule file and small ones."""

from __future__ import annotations

import binascii
import io
import subprocess
import textwrap
import zipfile
from pathlib import Path

import pytest

from govmilter.checks.attachments import compile_rules, extensions_of, normalize_name, reply_name
from govmilter.model import Action, Mode
from govmilter.pipeline import CHECK_NAMES, rule_compilers
from govmilter.ruleset import RuleErrors, load_ruleset
from support.harness import RULES, Harness
from support.mimebuild import leaf, message, multipart, random_bytes, text

OTHERS = [name for name in CHECK_NAMES if name != "attachments"]
TESTFILES = Path("/usr/share/clamav-testfiles")
EXE = (TESTFILES / "clam.exe").read_bytes()  # a real PE file (ClamAV's harmless test program)
PDF = b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"
PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489") + bytes(40)


def zipped(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def encrypted(archive: bytes) -> bytes:
    """Set the encryption flag of every entry, as `zip -e` leaves it."""
    data = bytearray(archive)
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        position = data.find(signature)
        while position >= 0:
            data[position + offset] |= 1
            position = data.find(signature, position + 4)
    return bytes(data)


def mail(*attachments: tuple[bytes, str, str]) -> bytes:
    """A message with a text part and (content, file name, declared type) attachments."""
    parts = [leaf(data, kind, name) for data, name, kind in attachments]
    return message(multipart(text("Kinh gui anh chi, xin gui tep dinh kem."), *parts))


@pytest.fixture(scope="module")
def shipped() -> Harness:
    return Harness(skip=OTHERS)


def only(tmp_path: Path, rule: str) -> Harness:
    """A harness whose rule directory holds one attachments rule."""
    (tmp_path / "attachments.toml").write_text('kind = "attachments"\n\n' + textwrap.dedent(rule))
    return Harness(skip=OTHERS, rules_dir=tmp_path)


# ---- the shipped rule file --------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "name", "kind", "rule"),
    [
        (EXE, "setup.exe", "application/octet-stream", "executable-content"),
        (EXE, "hoa don.pdf", "application/pdf", "executable-content"),  # the name does not matter
        (EXE, "anh.jpg", "image/jpeg", "executable-content"),
        (b"#!/bin/sh\nrm -rf ~\n", "cai-dat.txt", "text/plain", "executable-content"),
        (b"@echo off\r\nstart calc\r\n", "chay.dat", "application/octet-stream", "executable-content"),
        (b'WScript.CreateObject("WScript.Shell").Run("calc")\r\n', "thu.vbs", "text/plain", "blocked-extension"),
        (b"var s = new ActiveXObject('WScript.Shell');\n", "Hoa_Don.JS", "application/javascript", "blocked-extension"),
        (random_bytes(4000), "ban-ghi.iso", "application/octet-stream", "blocked-extension"),
        (b"<html><script>location='http://x'</script></html>", "hoa-don.pdf", "application/pdf",
         "document-name-on-program"),
        (PDF, "hoadon.pdf.scr", "application/pdf", "blocked-extension"),
        (zipped({"thu muc/hoadon.exe": EXE}), "hoadon.zip", "application/zip", "program-in-archive"),
        (zipped({"a.txt": b"x", "b/cai.lnk": b"L"}), "b.zip", "application/zip", "program-in-archive"),
        (encrypted(zipped({"bao cao.pdf": PDF})), "mat.zip", "application/zip", "encrypted-archive"),
    ],
)
def test_shipped_rules_refuse(shipped: Harness, data: bytes, name: str, kind: str, rule: str) -> None:
    result = shipped.scan(mail((data, name, kind)))
    verdict = result.verdict
    assert (verdict.action, verdict.check, verdict.rule) == (Action.REJECT, "attachments", rule)
    assert (verdict.code, verdict.enhanced) == ("550", "5.7.1")
    assert verdict.text.isascii() and "%" not in verdict.text
    assert "QD 06/2022 Dieu 8.2" in verdict.text


@pytest.mark.parametrize(
    ("data", "name", "kind"),
    [
        (PDF, "bao cao.pdf", "application/pdf"),
        (PNG, "anh.png", "image/png"),
        (zipped({"[Content_Types].xml": b"<x/>", "word/document.xml": b"<w/>"}), "to trinh.docx",
         "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
        (zipped({"bao cao.pdf": PDF, "bang.xlsx": b"PK"}), "ho so.zip", "application/zip"),
        (b"ten,tuoi\r\nA,30\r\n", "danh sach.csv", "text/csv"),
        (PDF, "bao.cao.2024.pdf", "application/pdf"),  # dots in a name are not a double extension
        (PDF, "baocao.pdf.zip.pdf", "application/pdf"),
        # libmagic calls any file whose first byte is 0xEB a "DOS executable (COM)": not a program
        (b"\xeb\x01\x90\r" + random_bytes(5000, seed=198), "du lieu.dat", "application/octet-stream"),
    ],
)
def test_shipped_rules_let_documents_through(shipped: Harness, data: bytes, name: str, kind: str) -> None:
    result = shipped.scan(mail((data, name, kind)))
    assert result.verdict.action is Action.ACCEPT, result.as_json()


def test_vietnamese_name_in_reply_is_ascii(shipped: Harness) -> None:
    verdict = shipped.scan(mail((EXE, "hóa đơn tháng 5.pdf", "application/pdf"))).verdict
    assert "hoa don thang 5.pdf" in verdict.text
    assert verdict.text.isascii()


def test_executable_inside_a_forwarded_message(shipped: Harness) -> None:
    inner = mail((EXE, "x.pdf", "application/pdf"))
    outer = message(multipart(text("chuyen tiep"), b"Content-Type: message/rfc822\r\n\r\n" + inner))
    assert shipped.scan(outer).verdict.rule == "executable-content"


def test_uuencoded_program_in_a_text_body(shipped: Harness) -> None:
    lines = b"".join(binascii.b2a_uu(EXE[i : i + 45]) for i in range(0, len(EXE), 45))
    body = (b"Tep kem theo:\nbegin 644 hoadon.pdf\n" + lines + b"`\nend\n").replace(b"\n", b"\r\n")
    result = shipped.scan(message(leaf(body, "text/plain", encoding="7bit", disposition="")))
    assert result.verdict.rule == "executable-content"


def test_real_clamav_test_zip_holds_a_program(shipped: Harness) -> None:
    result = shipped.scan(mail(((TESTFILES / "clam.zip").read_bytes(), "clam.zip", "application/zip")))
    assert result.verdict.rule == "program-in-archive"


# ---- each kind of rule alone --------------------------------------------------------------


def test_mismatch_alone(tmp_path: Path) -> None:
    h = only(
        tmp_path,
        """
        [[rule]]
        id = "pdf-on-program"
        description = "a pdf name on a program"
        match = "mismatch"
        extensions = ["pdf"]
        types = ["application/*executable*", "application/x-dosexec"]
        """,
    )
    assert h.scan(mail((EXE, "hoa don.pdf", "application/pdf"))).verdict.rule == "pdf-on-program"
    assert h.scan(mail((EXE, "setup.exe", "application/octet-stream"))).verdict.action is Action.ACCEPT
    assert h.scan(mail((PDF, "that.pdf", "application/pdf"))).verdict.action is Action.ACCEPT


@pytest.mark.parametrize(
    ("name", "refused"),
    [
        ("hoadon.pdf.exe", True),
        ("HOADON.PDF.EXE", True),
        ("hoadon.pdf.exe. ", True),  # Windows ignores trailing dots and spaces
        ("hoadon.pdf      .exe", True),
        ("hoa\u202efdp.exe", True),  # shows as "hoaexe.pdf"
        ("hoadon.exe", False),
        ("bao.cao.2024.exe", False),  # "2024" is not one of the decoys
        ("hoadon.pdf.zip", False),
    ],
)
def test_double_extension_alone(tmp_path: Path, name: str, refused: bool) -> None:
    h = only(
        tmp_path,
        """
        [[rule]]
        id = "double"
        description = "decoy extension"
        match = "double-extension"
        decoys = ["pdf", "doc"]
        extensions = ["exe"]
        """,
    )
    verdict = h.scan(mail((PDF, name, "application/pdf"))).verdict
    assert (verdict.rule == "double") is refused


def test_encrypted_archive_in_monitor_mode_is_tagged_not_refused(tmp_path: Path) -> None:
    h = only(
        tmp_path,
        """
        [[rule]]
        id = "encrypted"
        description = "encrypted archives, watched only"
        mode = "monitor"
        match = "encrypted-archive"
        """,
    )
    result = h.scan(mail((encrypted(zipped({"a.pdf": PDF})), "a.zip", "application/zip")))
    assert result.verdict.action is Action.ACCEPT
    assert [(hit.rule, hit.mode) for hit in result.tx.hits] == [("encrypted", Mode.MONITOR)]
    assert ("X-Govmilter-Monitor", "check=attachments rule=encrypted would=reject") in result.verdict.headers
    labels = {"check": "attachments", "rule": "encrypted", "mode": "monitor"}
    assert h.metrics.registry.get_sample_value("govmilter_rule_hits_total", labels) == 1


def test_monitor_hits_are_kept_when_an_enforced_rule_refuses(tmp_path: Path) -> None:
    h = only(
        tmp_path,
        """
        [[rule]]
        id = "watch-zip"
        description = "watch every zip"
        mode = "monitor"
        match = "extension"
        extensions = ["zip"]

        [[rule]]
        id = "no-exe"
        description = "no programs"
        match = "true-type"
        types = ["application/vnd.microsoft.portable-executable", "application/x-dosexec"]
        """,
    )
    result = h.scan(mail((zipped({"a.txt": b"x"}), "a.zip", "application/zip"), (EXE, "b.bin", "x/y")))
    assert result.verdict.rule == "no-exe"
    assert [hit.rule for hit in result.tx.hits] == ["watch-zip", "no-exe"]


def test_inline_parts_without_names_are_checked_by_true_type(tmp_path: Path) -> None:
    h = only(
        tmp_path,
        """
        [[rule]]
        id = "no-exe"
        description = "no programs"
        match = "true-type"
        types = ["application/vnd.microsoft.portable-executable", "application/x-dosexec"]
        """,
    )
    data = message(multipart(text("x"), leaf(EXE, "image/png", disposition="inline")))
    assert h.scan(data).verdict.rule == "no-exe"


# ---- the rule file is validated at load --------------------------------------------------


def test_shipped_rule_file_compiles_with_every_kind() -> None:
    ruleset = load_ruleset(RULES, rule_compilers())
    compiled = ruleset.get("attachments")
    assert {rule.match for rule in compiled.rules} == {
        "true-type",
        "extension",
        "mismatch",
        "double-extension",
        "archive-extension",
        "encrypted-archive",
        "archive-bomb",
    }
    assert all(rule.description for rule in compiled.rules)


def test_rule_file_errors_name_file_line_and_rule(tmp_path: Path) -> None:
    (tmp_path / "attachments.toml").write_text(
        textwrap.dedent(
            """\
            kind = "attachments"
            colour = "red"

            [[rule]]
            id = "a"
            description = "fine"
            match = "extension"
            extensions = ["exe"]

            [[rule]]
            id = "a"
            description = "same id again"
            match = "extension"
            extensions = ["exe"]

            [[rule]]
            id = "no-list"
            description = "extension without extensions"
            match = "extension"

            [[rule]]
            id = "bad-mode"
            description = "x"
            mode = "block"
            match = "encrypted-archive"

            [[rule]]
            id = "bad-match"
            description = "x"
            match = "size"

            [[rule]]
            id = "no-description"
            match = "encrypted-archive"
            typo = 1
            """
        )
    )
    with pytest.raises(RuleErrors) as caught:
        load_ruleset(tmp_path, {"attachments": compile_rules})
    lines = str(caught.value).splitlines()
    path = str(tmp_path / "attachments.toml")
    assert f"{path}:1: unknown key 'colour' (expected kind and [[rule]] tables)" in lines
    assert f"{path}:5: a: duplicate rule id" in lines  # line_of finds the first `id = "a"`
    assert any(line.startswith(f"{path}:17: no-list:") and "extensions" in line for line in lines)
    assert any(line.startswith(f"{path}:22: bad-mode:") and "'block'" in line for line in lines)
    assert any(line.startswith(f"{path}:28: bad-match:") and "'size'" in line for line in lines)
    assert any(line.startswith(f"{path}:33: no-description:") and "description" in line for line in lines)
    assert any(line.startswith(f"{path}:33: no-description:") and "'typo'" in line for line in lines)


def test_no_attachment_rules_means_nothing_is_refused(tmp_path: Path) -> None:
    (tmp_path / "attachments.toml").write_text('kind = "attachments"\n')
    h = Harness(skip=OTHERS, rules_dir=tmp_path)
    assert h.scan(mail((EXE, "setup.exe", "application/octet-stream"))).verdict.action is Action.ACCEPT


# ---- names --------------------------------------------------------------------------------


def test_name_helpers() -> None:
    assert normalize_name("Hoa\u202eFDP.EXE. . ") == "hoafdp.exe"
    assert extensions_of("thu muc/bao.cao.pdf") == ["cao", "pdf"]
    assert extensions_of("README") == []
    assert reply_name("báo cáo 100%.pdf") == "bao cao 100_.pdf"
    assert reply_name("") == "khong ten/unnamed"


# ---- zip bombs -------------------------------------------------------------------------------


def test_zip_bomb_is_refused_from_its_directory(shipped: Harness) -> None:
    from support.zipbomb import zip_of_zeros

    for size in (2 << 30, 128 << 20):  # past max_expanded; under it but past max_ratio
        verdict = shipped.scan(mail((zip_of_zeros(size), "bang-luong.zip", "application/zip"))).verdict
        assert (verdict.action, verdict.rule, verdict.code) == (Action.REJECT, "archive-bomb", "550")
        assert "zip bomb" in verdict.text and "bang-luong.zip" in verdict.text


def test_office_documents_are_no_bombs(shipped: Harness) -> None:
    buffer = io.BytesIO()
    rows = "".join(f'<row r="{i}"><c r="A{i}"><v>{i}</v></c><c r="B{i}" s="1"/></row>' for i in range(1, 200_001))
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("xl/worksheets/sheet1.xml", f"<worksheet><sheetData>{rows}</sheetData></worksheet>")
        archive.writestr("xl/styles.xml", "<styleSheet>" + "<xf/>" * 30_000 + "</styleSheet>")
    name, kind = "so-lieu.xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    assert shipped.scan(mail((buffer.getvalue(), name, kind))).verdict.action is Action.ACCEPT


def test_an_unreadable_directory_is_refused_not_passed(tmp_path: Path) -> None:
    h = only(
        tmp_path,
        """
        [[rule]]
        id = "bomb"
        description = "x"
        match = "archive-bomb"
        max_expanded = 1000000
        """,
    )
    archive = zipped({"a.txt": b"x"})
    truncated = archive[: archive.index(b"PK\x01\x02")] + b"\0" * 30  # the directory is gone
    verdict = h.scan(mail((truncated, "a.zip", "application/zip"))).verdict
    assert (verdict.rule, verdict.action) == ("bomb", Action.REJECT)
    assert "archive-broken" in h.scan(mail((truncated, "a.zip", "application/zip"))).verdict.reason
    h_off = only(
        tmp_path,
        """
        [[rule]]
        id = "bomb"
        description = "x"
        match = "archive-bomb"
        max_expanded = 1000000
        unreadable = false
        """,
    )
    assert h_off.scan(mail((truncated, "a.zip", "application/zip"))).verdict.action is Action.ACCEPT


def test_archive_bomb_rules_are_validated(tmp_path: Path) -> None:
    (tmp_path / "attachments.toml").write_text(
        textwrap.dedent(
            """\
            kind = "attachments"

            [[rule]]
            id = "bad id!"
            description = "x"
            match = "encrypted-archive"

            [[rule]]
            id = "neg"
            description = "x"
            match = "archive-bomb"
            max_expanded = -1
            max_ratio = "many"

            [[rule]]
            id = "stray"
            description = "x"
            match = "extension"
            extensions = ["exe"]
            max_ratio = 10

            [[rule]]
            id = "nothing"
            description = "x"
            match = "archive-bomb"
            unreadable = false
            """
        )
    )
    with pytest.raises(RuleErrors) as caught:
        load_ruleset(tmp_path, {"attachments": compile_rules})
    text = str(caught.value)
    assert "bad id!: id = 'bad id!'" in text
    assert "neg: max_expanded = -1" in text and "neg: max_ratio = 'many'" in text
    assert "stray: max_ratio is only for match = 'archive-bomb'" in text
    assert "nothing: match = 'archive-bomb' needs" in text


# ---- true types deeper than the head: disk images ----------------------------------------


def iso_image(tmp_path: Path, udf: bool = False) -> bytes:
    """A real ISO 9660 (or UDF bridge) image, made by genisoimage (lab/install-deps.sh)."""
    source = tmp_path / "cd"
    source.mkdir(exist_ok=True)
    (source / "hoadon.exe").write_bytes(EXE)
    out = tmp_path / ("udf.iso" if udf else "cd.iso")
    subprocess.run(["genisoimage", "-quiet", *(["-udf"] if udf else []), "-o", str(out), str(source)], check=True)
    return out.read_bytes()


def vhd_footer(size: int) -> bytes:
    """The 512-byte footer of a fixed VHD (Microsoft's VHD specification), checksum included."""
    footer = bytearray(512)
    footer[0:8] = b"conectix"
    footer[8:12] = (2).to_bytes(4, "big")  # features
    footer[12:16] = (0x00010000).to_bytes(4, "big")  # version 1.0
    footer[16:24] = b"\xff" * 8  # data offset: none (fixed disk)
    footer[28:32] = b"win "
    footer[40:48] = footer[48:56] = size.to_bytes(8, "big")
    footer[60:64] = (2).to_bytes(4, "big")  # disk type: fixed
    footer[64:68] = (~sum(footer) & 0xFFFFFFFF).to_bytes(4, "big")
    return bytes(footer)


def vhdx_header() -> bytes:
    """The start of a VHDX: the file type identifier, its creator, then the headers at 64 KiB."""
    return b"vhdxfile" + "Microsoft Windows 10.0".encode("utf-16-le") + bytes(70000)


@pytest.mark.parametrize("udf", [False, True])
def test_an_iso_named_as_a_report_is_refused_by_its_true_type(shipped: Harness, tmp_path: Path, udf: bool) -> None:
    image = iso_image(tmp_path, udf)
    assert image[32769:32774] == b"CD001" and len(image) > 36 * 1024
    result = shipped.scan(mail((image, "bao-cao.pdf", "application/pdf")))
    verdict = result.verdict
    assert (verdict.action, verdict.rule) == (Action.REJECT, "disk-image-content"), result.as_json()
    assert "application/x-iso9660-image" in verdict.reason


def test_an_iso_is_typed_even_after_the_head_budget_is_spent(shipped: Harness, tmp_path: Path) -> None:
    # 200 decoys of 8 KiB spend the message's 1 MiB head budget: the ISO then gets a 512-byte
    # head, and its descriptor at 32 KiB is still read
    decoys = [(random_bytes(9000, seed=n), f"anh{n}.jpg", "image/jpeg") for n in range(130)]
    image = iso_image(tmp_path)
    result = shipped.scan(mail(*decoys, (image, "bao-cao.pdf", "application/pdf")))
    assert (result.verdict.action, result.verdict.rule) == (Action.REJECT, "disk-image-content"), result.as_json()


def test_a_fixed_vhd_is_typed_by_its_footer(shipped: Harness) -> None:
    disk = random_bytes(100_000, seed=7)
    image = disk + vhd_footer(len(disk))
    result = shipped.scan(mail((image, "so-lieu.pdf", "application/pdf")))
    verdict = result.verdict
    assert (verdict.action, verdict.rule) == (Action.REJECT, "disk-image-content"), result.as_json()
    assert "application/x-virtualbox-vhd" in verdict.reason


def test_a_vhdx_is_typed_by_its_signature(shipped: Harness) -> None:
    result = shipped.scan(mail((vhdx_header(), "bang-tinh.xlsx", "application/octet-stream")))
    verdict = result.verdict
    assert (verdict.action, verdict.rule) == (Action.REJECT, "disk-image-content"), result.as_json()
    assert "application/x-virtualbox-vhdx" in verdict.reason


def test_a_fat_floppy_image_is_typed(shipped: Harness, tmp_path: Path) -> None:
    image = tmp_path / "floppy.img"
    image.write_bytes(bytes(1440 * 1024))
    subprocess.run(["/usr/sbin/mkfs.vfat", str(image)], check=True, capture_output=True)
    result = shipped.scan(mail((image.read_bytes(), "tai-lieu.doc", "application/msword")))
    assert (result.verdict.action, result.verdict.rule) == (Action.REJECT, "disk-image-content"), result.as_json()


def test_the_deep_signatures_do_not_turn_documents_into_images(shipped: Harness) -> None:
    # a large PDF and a large text with their own bytes at 32 KiB and at the end: what they are
    pdf = PDF + random_bytes(80_000, seed=3) + b"\n%%EOF\n"
    words = ("Kinh gui cac don vi, xin gui bao cao. " * 3000).encode()
    for data, name, kind in ((pdf, "bao cao.pdf", "application/pdf"), (words, "ghi chu.txt", "text/plain")):
        result = shipped.scan(mail((data, name, kind)))
        assert result.verdict.action is Action.ACCEPT, result.as_json()


def test_true_type_reads_the_probes_whatever_the_head_says() -> None:
    from govmilter.checks.attachments import true_type

    # a PDF whose bytes at 32 KiB are an ISO volume descriptor (a polyglot): the image wins
    probes = ((32768, b"\x01CD001\x01\x00"),)
    assert true_type(PDF, probes) == "application/x-iso9660-image"
    assert true_type(PDF, ((32768, b"\x01XX001\x01\x00"),)) == "application/pdf"
    assert true_type(b"\x00" * 600, (), vhd_footer(1 << 20)) == "application/x-virtualbox-vhd"
