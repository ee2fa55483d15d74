"""Disk images inside zip archives, found by content (their true type), not only by name.

Real images made by genisoimage, zipped by Python's zipfile (stored and deflated) and by
Info-ZIP's zip where it matters; the walk samples each member's head and the ISO/UDF offsets as
the bytes pass (mime/archives.py), within the archive's inflate budget.
"""

from __future__ import annotations

import io
import subprocess
import tomllib
import zipfile
from pathlib import Path

import pytest

from govmilter.checks.attachments import compile_rules
from govmilter.mime import archives, walk
from govmilter.mime.archives import MAX_MEMBERS, ZipStream
from govmilter.model import Action
from govmilter.pipeline import CHECK_NAMES
from govmilter.ruleset import RuleErrors, RuleFile
from support.harness import Harness
from support.mimebuild import leaf, message, multipart, random_bytes, text

OTHERS = [name for name in CHECK_NAMES if name != "attachments"]
PDF = b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"


def iso_image(tmp_path: Path, udf: bool = False) -> bytes:
    source = tmp_path / "cd"
    source.mkdir(exist_ok=True)
    (source / "huong-dan.txt").write_text("Tai lieu huong dan.\n" * 200)
    out = tmp_path / ("udf.iso" if udf else "cd.iso")
    subprocess.run(["genisoimage", "-quiet", *(["-udf"] if udf else []), "-o", str(out), str(source)], check=True)
    return out.read_bytes()


def zipped(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def mail(data: bytes, name: str = "ho-so.zip") -> bytes:
    return message(multipart(text("Kinh gui, xin gui ho so."), leaf(data, "application/zip", name)))


@pytest.fixture(scope="module")
def shipped() -> Harness:
    return Harness(skip=OTHERS)


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED], ids=["stored", "deflated"])
@pytest.mark.parametrize("udf", [False, True], ids=["iso9660", "udf"])
def test_an_iso_named_as_a_report_inside_a_zip_is_refused(
    shipped: Harness, tmp_path: Path, method: int, udf: bool
) -> None:
    image = iso_image(tmp_path, udf)
    archive = zipped({"thu-moi.docx": random_bytes(5000, seed=1), "bao-cao.pdf": image}, method)
    result = shipped.scan(mail(archive))
    verdict = result.verdict
    assert (verdict.action, verdict.rule) == (Action.REJECT, "disk-image-content"), result.as_json()
    assert "archive member 'bao-cao.pdf': true type application/x-iso9660-image" in verdict.reason


def test_an_iso_in_a_zip_in_a_zip_is_refused(shipped: Harness, tmp_path: Path) -> None:
    inner = zipped({"tai-lieu/bao-cao.pdf": iso_image(tmp_path)})
    result = shipped.scan(mail(zipped({"ho-so-2026.zip": inner})))
    assert (result.verdict.action, result.verdict.rule) == (Action.REJECT, "disk-image-content"), result.as_json()


def test_an_iso_zipped_by_info_zip_is_refused(shipped: Harness, tmp_path: Path) -> None:
    (tmp_path / "bao-cao.pdf").write_bytes(iso_image(tmp_path))
    out = tmp_path / "ho-so.zip"
    subprocess.run(["zip", "-q", "-9", str(out), "bao-cao.pdf"], cwd=tmp_path, check=True)
    result = shipped.scan(mail(out.read_bytes()))
    assert (result.verdict.action, result.verdict.rule) == (Action.REJECT, "disk-image-content"), result.as_json()


def test_documents_in_a_zip_pass(shipped: Harness) -> None:
    pdf = PDF + random_bytes(60_000, seed=3) + b"\n%%EOF\n"
    words = ("Kinh gui cac don vi, xin gui bao cao. " * 3000).encode()
    for method in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        result = shipped.scan(mail(zipped({"bao cao.pdf": pdf, "ghi chu.txt": words, "anh.jpg": b""}, method)))
        assert result.verdict.action is Action.ACCEPT, result.as_json()


def test_without_in_archives_a_true_type_rule_reads_the_attachment_only(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    rule = '[[rule]]\nid = "img"\ndescription = "d"\nmatch = "true-type"\ntypes = ["application/x-iso9660-image"]\n'
    (rules / "attachments.toml").write_text('kind = "attachments"\n' + rule)
    data = mail(zipped({"bao-cao.pdf": iso_image(tmp_path)}))
    assert Harness(skip=OTHERS, rules_dir=rules).scan(data).verdict.action is Action.ACCEPT
    (rules / "attachments.toml").write_text('kind = "attachments"\n' + rule + "in_archives = true\n")
    assert Harness(skip=OTHERS, rules_dir=rules).scan(data).verdict.rule == "img"


def test_in_archives_is_only_for_true_type_rules(tmp_path: Path) -> None:
    head = 'kind = "attachments"\n[[rule]]\nid = "x"\ndescription = "d"\nmatch = "extension"\nextensions = ["iso"]\n'
    cases = (("in_archives = true\n", "only for match = 'true-type'"), ('in_archives = "y"\n', "true or false"))
    for extra, words in cases:
        with pytest.raises(RuleErrors, match=words):
            compile_rules([RuleFile("a.toml", head + extra, tomllib.loads(head + extra))])


# ---- the sampling itself, fed in small chunks as the walk does -----------------------------


def stream_of(data: bytes, chunk: int = 1000, budget: list[int] | None = None) -> ZipStream:
    stream = ZipStream(budget=budget)
    for start in range(0, len(data), chunk):
        stream.feed(data[start : start + chunk])
    return stream


def test_members_are_sampled_at_their_head_and_iso_offsets(tmp_path: Path) -> None:
    image = iso_image(tmp_path)
    for method in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        members = {m.name: m for m in stream_of(zipped({"a.txt": b"hello", "b.pdf": image}, method)).members}
        assert members["a.txt"].head == b"hello" and members["a.txt"].probes == ()
        probe = dict(members["b.pdf"].probes)
        assert probe[32768] == image[32768:32776] and probe[36864] == image[36864:36872]
        assert members["b.pdf"].head == image[: archives.MEMBER_HEAD]
        # the end (a VHD footer's place) only when the member was read to its end: stored
        assert members["b.pdf"].end == (image[-512:] if method == zipfile.ZIP_STORED else b"")


def test_a_deflated_member_is_inflated_only_as_far_as_its_sample_needs() -> None:
    big = random_bytes(4 << 20, seed=9)  # incompressible: inflating all of it would cost 4 MiB
    budget = [archives.INFLATE_BUDGET]
    stream = stream_of(zipped({"big.bin": big}), chunk=65536, budget=budget)
    assert [m.name for m in stream.members] == ["big.bin"]
    spent = archives.INFLATE_BUDGET - budget[0]
    assert archives.MEMBER_REACH <= spent < 2 * archives.MEMBER_REACH + 4096


def test_a_sample_past_the_budget_makes_the_archive_unreadable(
    shipped: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = iso_image(tmp_path)
    stream = stream_of(zipped({"b.pdf": image}), budget=[20000])  # the descriptor sits at 32 KiB
    assert stream.cut
    (member,) = stream.members
    assert member.head == image[: archives.MEMBER_HEAD] and member.probes == ()
    # through the walk: the stated policy is the archive-bomb rule's unreadable = true
    monkeypatch.setattr(archives, "INFLATE_BUDGET", 20000)
    result = shipped.scan(mail(zipped({"bao-cao.pdf": image})))
    verdict = result.verdict
    assert (verdict.action, verdict.rule) == (Action.REJECT, "archive-bomb"), result.as_json()
    assert "archive-inflate-budget" in verdict.reason


def test_only_the_first_members_are_sampled() -> None:
    archive = zipped({f"f{n}.txt": b"x" * 10 for n in range(MAX_MEMBERS + 10)})
    assert len(stream_of(archive).members) == MAX_MEMBERS


def test_the_samples_and_the_inflate_budget_are_the_messages_not_each_archives() -> None:
    """900 small zips of 64 members held 156 MB of samples and inflated 2 GB in one walk: the bounds
    are per message now (MESSAGE_MEMBERS samples, INFLATE_BUDGET bytes), past them names and clamd judge."""
    archive = zipped({f"f{n}.txt": bytes(40000) for n in range(MAX_MEMBERS)})
    many = message(multipart(text("Kinh gui."), *[leaf(archive, "application/zip", f"a{n}.zip") for n in range(40)]))
    facts = walk([many[i : i + 65536] for i in range(0, len(many), 65536)])
    try:
        sampled = [len(part.archive_members) for part in facts.parts if part.archive_names]
        assert len(sampled) == 40 and sum(sampled) == archives.MESSAGE_MEMBERS
        assert sampled[:4] == [MAX_MEMBERS] * 4 and sampled[-1] == 0  # the first ones whole, then none
        assert all(len(part.archive_names) == MAX_MEMBERS for part in facts.parts if part.archive_names)  # named
    finally:
        facts.close()


def test_an_archive_after_one_that_spent_the_messages_inflate_budget_is_not_readable_whole(
    shipped: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(archives, "INFLATE_BUDGET", 40000)  # one sample (36 KiB) and a little more
    first = zipped({"so-lieu.bin": random_bytes(50000, seed=3)})
    second = zipped({"bao-cao.pdf": iso_image(tmp_path)})
    both = message(multipart(text("Kinh gui."), leaf(first, "application/zip", "a.zip"),
                             leaf(second, "application/zip", "b.zip")))  # fmt: skip
    verdict = shipped.scan(both).verdict
    assert (verdict.action, verdict.rule) == (Action.REJECT, "archive-bomb")
    assert verdict.reason.startswith("part 3: ") and "archive-inflate-budget" in verdict.reason  # b.zip, not a.zip


def test_a_fat_floppy_image_inside_a_zip_is_refused(shipped: Harness, tmp_path: Path) -> None:
    image = tmp_path / "floppy.img"
    image.write_bytes(bytes(1440 * 1024))
    subprocess.run(["/usr/sbin/mkfs.vfat", str(image)], check=True, capture_output=True)
    result = shipped.scan(mail(zipped({"tai-lieu.doc": image.read_bytes()})))
    verdict = result.verdict
    assert (verdict.action, verdict.rule) == (Action.REJECT, "disk-image-content"), result.as_json()
    assert "application/x-ima" in verdict.reason


def test_members_are_typed_by_libmagic_for_a_rule_of_other_types(tmp_path: Path) -> None:
    # the shipped rule lists disk images only, so members without a disk image's signature are not
    # typed (an .xlsx is a zip of dozens of XML files); a rule listing PDFs types every member
    rules = tmp_path / "rules"
    rules.mkdir()
    rule = 'id = "pdf"\ndescription = "d"\nmatch = "true-type"\ntypes = ["application/pdf"]\nin_archives = true\n'
    (rules / "attachments.toml").write_text('kind = "attachments"\n[[rule]]\n' + rule)
    harness = Harness(skip=OTHERS, rules_dir=rules)
    result = harness.scan(mail(zipped({"ghi-chu.txt": PDF + random_bytes(3000, seed=4)})))
    assert result.verdict.rule == "pdf", result.as_json()
    assert "archive member 'ghi-chu.txt': true type application/pdf" in result.verdict.reason


@pytest.mark.parametrize(
    ("name", "refused"),
    [("bao-cao.xlsx", False), ("Bao-Cao.DOCX", False), ("bao-cao.xlsx.zip", True), ("ho-so", True)],
)
def test_the_parts_of_an_office_file_are_not_sampled(
    shipped: Harness, tmp_path: Path, name: str, refused: bool
) -> None:
    # Word and Excel open these, not Explorer: nobody double-clicks a file inside them, and
    # sampling the sheets of every spreadsheet cost milliseconds (archives.OFFICE_PACKAGES)
    archive = zipped({"[Content_Types].xml": b"<Types/>", "xl/media/image1.png": iso_image(tmp_path)})
    result = shipped.scan(mail(archive, name))
    assert (result.verdict.rule == "disk-image-content") is refused, result.as_json()
