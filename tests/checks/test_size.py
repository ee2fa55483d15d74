"""The size check through the pipeline: SIZE= at MAIL, the raw ceiling mid-body, the cap at end."""

from __future__ import annotations

from pathlib import Path

import pytest

from govmilter.checks.size import derived_raw_ceiling
from govmilter.model import Action, Mode, Stage
from govmilter.pipeline import CHECK_NAMES
from support.harness import Harness
from support.mimebuild import Attachment, b64, leaf, message, multipart, random_bytes, text, write_message

OTHERS = [name for name in CHECK_NAMES if name != "size"]
MIB = 1024 * 1024
LIMIT = 20 * MIB  # the default: 20 971 520 bytes


def harness(*settings: str) -> Harness:
    return Harness(list(settings), skip=OTHERS)


@pytest.fixture(scope="module")
def default() -> Harness:
    return harness()


def sample_metric(h: Harness, name: str, labels: dict[str, str] | None = None) -> float:
    value = h.metrics.registry.get_sample_value(name, labels or {})
    return value or 0.0


# ---- the cap at end of message, at the 20 MiB boundary ------------------------------------


def test_default_limit_is_20_mib(default: Harness) -> None:
    assert default.config.size.attachment_limit == 20_971_520


def test_one_kilobyte_under_the_cap_passes(default: Harness, tmp_path: Path) -> None:
    path = write_message(tmp_path / "under.eml", [Attachment(LIMIT - 1024)])
    result = default.scan(path)
    assert result.verdict.action is Action.ACCEPT
    assert result.tx.facts().attachment_bytes == LIMIT - 1024


def test_one_kilobyte_over_the_cap_is_refused_with_limit_size_and_regulation(
    default: Harness, tmp_path: Path
) -> None:
    path = write_message(tmp_path / "over.eml", [Attachment(LIMIT + 1024)])
    result = default.scan(path)
    verdict = result.verdict
    assert (verdict.action, verdict.code, verdict.enhanced, verdict.rule) == (
        Action.REJECT,
        "552",
        "5.3.4",
        "attachment-cap",
    )
    assert result.stage is Stage.EOM
    assert "20971520" in verdict.text and str(LIMIT + 1024) in verdict.text
    assert "QD 06/2022 Dieu 5.1" in verdict.text
    assert verdict.text.isascii() and "%" not in verdict.text


def test_two_attachments_that_each_pass_are_refused_together(default: Harness, tmp_path: Path) -> None:
    half = LIMIT // 2 + 512  # each under the cap, the sum 1 KiB over it
    path = write_message(
        tmp_path / "two.eml",
        [Attachment(half, "mot.pdf", seed=1), Attachment(half, "hai.docx", "application/msword", seed=2)],
    )
    result = default.scan(path)
    assert result.verdict.rule == "attachment-cap"
    assert result.tx.facts().attachment_bytes == LIMIT + 1024


def test_a_message_holding_exactly_the_cap_is_under_the_raw_ceiling(default: Harness, tmp_path: Path) -> None:
    path = write_message(tmp_path / "exact.eml", [Attachment(LIMIT)])
    assert path.stat().st_size < derived_raw_ceiling(LIMIT)
    assert default.scan(path).verdict.action is Action.ACCEPT


# ---- encodings count the decoded bytes --------------------------------------------------------

SMALL = 2 * MIB


@pytest.mark.parametrize("encoding", ["base64", "quoted-printable", "binary"])
@pytest.mark.parametrize(("delta", "refused"), [(-1024, False), (1024, True)])
def test_boundary_in_every_encoding(tmp_path: Path, encoding: str, delta: int, refused: bool) -> None:
    # quoted-printable of binary data is three times its size: the raw ceiling is raised out of the way
    h = harness(f"size.attachment_limit={SMALL}", f"size.raw_ceiling={10 * SMALL}")
    path = write_message(tmp_path / "m.eml", [Attachment(SMALL + delta, encoding=encoding)])
    result = h.scan(path)
    assert result.tx.facts().attachment_bytes == SMALL + delta
    assert (result.verdict.rule == "attachment-cap") is refused


def test_same_file_in_base64_and_quoted_printable_counts_the_same(default: Harness, tmp_path: Path) -> None:
    counts = []
    for encoding in ("base64", "quoted-printable"):
        path = write_message(tmp_path / f"{encoding}.eml", [Attachment(3 * MIB + 17, encoding=encoding, seed=5)])
        counts.append(default.scan(path).tx.facts().attachment_bytes)
    assert counts == [3 * MIB + 17, 3 * MIB + 17]


def test_inline_image_and_forwarded_message_attachments_count(tmp_path: Path) -> None:
    h = harness("size.attachment_limit=10000")
    inner = message(multipart(text("fwd"), leaf(random_bytes(6000), "application/pdf", "in.pdf")))
    body = multipart(
        text("xem"),
        leaf(random_bytes(4500), "image/png", disposition="inline"),
        b"Content-Type: message/rfc822\r\n\r\n" + inner,
    )
    result = h.scan(message(body))
    # the image, the forwarded message's file, and the rest of that message: its text and headers
    inner_headers = len(inner) - len(inner.split(b"\r\n\r\n", 1)[1])
    assert result.tx.facts().attachment_bytes > 10500 + len(b"fwd") + inner_headers // 2
    assert result.verdict.rule == "attachment-cap"


def test_uuencoded_file_in_the_text_counts(tmp_path: Path) -> None:
    import binascii

    payload = random_bytes(9000)
    lines = b"".join(binascii.b2a_uu(payload[i : i + 45]) for i in range(0, len(payload), 45))
    body = (b"Xem tep dinh kem:\nbegin 644 bang.xls\n" + lines + b"`\nend\n").replace(b"\n", b"\r\n")
    h = harness("size.attachment_limit=8000")
    result = h.scan(message(leaf(body, "text/plain", encoding="7bit", disposition="")))
    assert result.tx.facts().attachment_bytes == 9000
    assert result.verdict.rule == "attachment-cap"


# ---- early answers ----------------------------------------------------------------------------


def test_declared_size_above_the_ceiling_is_refused_at_mail_from(default: Harness) -> None:
    ceiling = derived_raw_ceiling(LIMIT)
    result = default.scan(message(text("nho")), mail_params={"SIZE": str(ceiling + 1)})
    assert result.stage is Stage.MAIL
    assert (result.verdict.code, result.verdict.enhanced, result.verdict.rule) == ("552", "5.3.4", "declared-size")
    assert str(ceiling + 1) in result.verdict.text and str(ceiling) in result.verdict.text
    assert "QD 06/2022 Dieu 5.1" in result.verdict.text
    assert result.tx.body_bytes == 0  # nothing of the body was read


def test_declared_size_under_the_ceiling_goes_on(default: Harness) -> None:
    result = default.scan(message(text("nho")), mail_params={"SIZE": str(derived_raw_ceiling(LIMIT))})
    assert result.verdict.action is Action.ACCEPT


def test_raw_ceiling_refuses_mid_body_without_reading_the_rest(tmp_path: Path) -> None:
    h = harness("size.raw_ceiling=300000")
    path = write_message(tmp_path / "big.eml", [Attachment(2 * MIB)])
    result = h.scan(path)
    assert result.stage is Stage.BODY
    assert result.verdict.rule == "raw-size"
    assert (result.verdict.code, result.verdict.enhanced) == ("552", "5.3.4")
    assert 300000 < result.tx.raw_size < 300000 + 2 * 65536  # stopped at the chunk that passed it
    assert "300000" in result.verdict.text and "20971520" in result.verdict.text


def test_a_message_of_exactly_the_raw_ceiling_passes_and_one_byte_more_is_refused() -> None:
    data = message(text("nho " * 50))
    size = harness().scan(data).tx.raw_size
    exact = harness(f"size.raw_ceiling={size}").scan(data)
    assert (exact.tx.raw_size, exact.verdict.action) == (size, Action.ACCEPT)  # the ceiling is allowed
    over = harness(f"size.raw_ceiling={size - 1}").scan(data)
    assert (over.stage, over.verdict.rule) == (Stage.BODY, "raw-size")


def test_configured_raw_ceiling_wins_over_the_derived_one() -> None:
    assert harness("size.raw_ceiling=12345").pipeline.checks[0].raw_ceiling == 12345
    assert harness().pipeline.checks[0].raw_ceiling == derived_raw_ceiling(LIMIT)


def test_derived_ceiling_leaves_room_for_base64_line_breaks_and_headers() -> None:
    # 20971520 * 4/3 * 78/76 = 28697869.4 -> 28697870, plus 2 MiB for headers and text
    assert derived_raw_ceiling(LIMIT) == 28_697_870 + 2_097_152
    assert derived_raw_ceiling(LIMIT) > LIMIT * 4 // 3 * 78 // 76


# ---- a walk cut short by a limit: parse_error_action ---------------------------------------


def deep_message(levels: int = 40) -> bytes:
    body = leaf(random_bytes(100), filename="a.bin")
    for level in range(levels):
        body = multipart(body, boundary=f"l{level}")
    return message(body)


def test_parse_error_accept_records_a_monitor_hit_and_accepts() -> None:
    h = harness("size.parse_error_action=accept")
    result = h.scan(deep_message())
    assert result.verdict.action is Action.ACCEPT
    hits = [hit for hit in result.tx.hits if hit.rule == "parse-error"]
    assert hits and hits[0].mode is Mode.MONITOR and "nesting-too-deep" in hits[0].reason


def test_parse_error_tempfail() -> None:
    result = harness("size.parse_error_action=tempfail").scan(deep_message())
    assert (result.verdict.action, result.verdict.code, result.verdict.enhanced) == (Action.TEMPFAIL, "451", "4.6.0")


def test_parse_error_reject() -> None:
    result = harness("size.parse_error_action=reject").scan(deep_message())
    assert (result.verdict.action, result.verdict.code, result.verdict.enhanced) == (Action.REJECT, "554", "5.6.0")
    assert result.verdict.text.isascii()


def test_tolerated_defects_are_not_parse_errors() -> None:
    data = message(multipart(leaf(random_bytes(100), filename="a.bin")))
    unclosed = data[: data.rindex(b"--=_b")]
    result = harness("size.parse_error_action=reject").scan(unclosed)
    assert result.verdict.action is Action.ACCEPT
    assert "unterminated-multipart" in result.tx.facts().defects


# ---- metrics -----------------------------------------------------------------------------------


def test_attachment_bytes_and_defects_are_measured() -> None:
    h = harness()
    h.scan(message(multipart(leaf(random_bytes(5000), filename="a.bin"))))
    h.scan(deep_message())
    assert sample_metric(h, "govmilter_attachment_bytes_count") == 2
    assert sample_metric(h, "govmilter_attachment_bytes_sum") >= 5000
    assert sample_metric(h, "govmilter_mime_defects_total", {"defect": "nesting-too-deep"}) == 1


def test_refusals_are_counted_by_rule(tmp_path: Path) -> None:
    h = harness("size.attachment_limit=1000")
    h.scan(message(multipart(leaf(random_bytes(5000), filename="a.bin"))))
    labels = {"check": "size", "rule": "attachment-cap", "mode": "enforce"}
    assert sample_metric(h, "govmilter_rule_hits_total", labels) == 1
    assert sample_metric(h, "govmilter_messages_total", {"action": "reject", "check": "size"}) == 1


# ---- issue 14: every attachment class counts; ambiguous structure and header floods ---------


def yenc_text(payload: bytes) -> bytes:
    encoded = bytearray()
    for byte in payload:
        value = (byte + 42) & 255
        encoded += bytes((61, (value + 64) & 255)) if value in (0, 10, 13, 61) else bytes((value,))
    lines = b"\r\n".join(bytes(encoded[i : i + 128]) for i in range(0, len(encoded), 128))
    return b"=ybegin line=128 size=%d name=a.bin\r\n" % len(payload) + lines + b"\r\n=yend size=%d\r\n" % len(payload)


def data_uri_html(payload: bytes) -> bytes:
    return b'<p>xem anh</p><img src="data:image/png;base64,' + b64(payload) + b'">\r\n'


CLASSES = {
    "text-csv": lambda p: leaf(p, "text/csv", encoding="base64", disposition=""),
    "yenc": lambda p: leaf(yenc_text(p), "text/plain", encoding="8bit", disposition=""),
    "data-uri": lambda p: leaf(data_uri_html(p), "text/html", encoding="7bit", disposition=""),
    # an attached .eml whose own body is 8bit text: its body counts
    "attached-message": lambda p: b"Content-Type: message/rfc822\r\n\r\nSubject: x\r\n\r\n"
    + (b"Noi dung thu chuyen tiep. " * 3 + b"x" * 20 + b"\r\n") * (len(p) // 100),
}


@pytest.mark.parametrize("kind", sorted(CLASSES))
@pytest.mark.parametrize(("size", "refused"), [(9000, True), (7000, False)])
def test_every_attachment_class_counts(kind: str, size: int, refused: bool) -> None:
    h = harness("size.attachment_limit=8000")
    result = h.scan(message(multipart(text("xin chao"), CLASSES[kind](random_bytes(size)))))
    assert result.tx.facts().attachment_bytes >= size
    assert (result.verdict.rule == "attachment-cap") is refused, result.verdict


def duplicated(second: bytes) -> bytes:
    part = b"Content-Type: text/plain\r\n" + second + b"\r\n\r\nTVqQAAMAAAAEAAAA\r\n"
    return message(multipart(text("xem"), part))


@pytest.mark.parametrize(
    ("second", "rule"),
    [
        (b"Content-Type: application/x-msdownload", "duplicate-content-type"),
        (
            b"Content-Transfer-Encoding: 7bit\r\nContent-Transfer-Encoding: base64",
            "duplicate-content-transfer-encoding",
        ),
        (b'Content-Disposition: inline\r\nContent-Disposition: attachment; filename="a.exe"',
         "duplicate-content-disposition"),
    ],
)
def test_ambiguous_fields_are_refused_by_default(default: Harness, second: bytes, rule: str) -> None:
    result = default.scan(duplicated(second))
    verdict = result.verdict
    assert (verdict.action, verdict.code, verdict.enhanced, verdict.rule) == (Action.REJECT, "554", "5.6.0", rule)
    assert verdict.text.isascii() and "%" not in verdict.text
    assert "khong hop le" in verdict.text and "malformed message" in verdict.text


def test_identical_duplicates_pass(default: Harness) -> None:
    assert default.scan(duplicated(b"Content-Type: TEXT/PLAIN")).verdict.action is Action.ACCEPT


def test_malformed_tempfail_and_accept() -> None:
    data = duplicated(b"Content-Type: application/zip")
    tempfail = harness("size.malformed_action=tempfail").scan(data).verdict
    assert (tempfail.action, tempfail.code, tempfail.enhanced) == (Action.TEMPFAIL, "451", "4.6.0")
    accepted = harness("size.malformed_action=accept").scan(data)
    assert accepted.verdict.action is Action.ACCEPT
    hits = [hit for hit in accepted.tx.hits if hit.rule == "duplicate-content-type"]
    assert hits and hits[0].mode is Mode.MONITOR  # logged and counted, never silent


def test_header_flood_gets_the_malformed_policy(default: Harness) -> None:
    fields = b"".join(b"X-Filler-%d: x\r\n" % i for i in range(2100))
    result = default.scan(fields + message(text("xin chao")))
    assert getattr(result.tx, "headers_truncated", False) or result.tx.scratch.get("headers_truncated")
    assert (result.verdict.rule, result.verdict.code, result.verdict.enhanced) == ("header-flood", "554", "5.6.0")


def test_parse_errors_are_refused_by_default(default: Harness) -> None:
    verdict = default.scan(deep_message()).verdict
    assert (verdict.rule, verdict.code, verdict.enhanced) == ("parse-error", "554", "5.6.0")


# ---- found by the mutation run (docs/mutation.md) ---------------------------------------------------


def test_a_small_declared_size_goes_on_past_mail_from(default: Harness) -> None:
    for declared in ("0", "1000"):
        result = default.scan(message(text("nho")), mail_params={"SIZE": declared})
        assert (result.stage, result.verdict.action) == (Stage.EOM, Action.ACCEPT), declared


def two_ambiguities_and_a_deep_part() -> bytes:
    """A duplicate Content-Type, a duplicate Content-Transfer-Encoding and nesting past the limit."""
    dup_type = b"Content-Type: text/plain\r\nContent-Type: application/zip\r\n\r\nTVqQ\r\n"
    dup_encoding = (
        b"Content-Type: text/plain\r\nContent-Transfer-Encoding: 7bit\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nTVqQ\r\n"
    )
    deep = leaf(random_bytes(100), filename="a.bin")
    for level in range(40):
        deep = multipart(deep, boundary=f"l{level}")
    return message(multipart(text("xem"), dup_type, dup_encoding, deep))


def size_rules(result: object) -> list[str]:
    return [hit.rule for hit in result.tx.hits if hit.check == "size"]  # type: ignore[attr-defined]


def test_an_accepted_malformed_message_records_every_finding() -> None:
    """Each ambiguity and the limit are monitor hits: the first one does not hide the others."""
    h = harness("size.malformed_action=accept", "size.parse_error_action=accept")
    result = h.scan(two_ambiguities_and_a_deep_part())
    assert result.verdict.action is Action.ACCEPT
    assert size_rules(result) == ["duplicate-content-type", "duplicate-content-transfer-encoding", "parse-error"]
    assert all(hit.mode is Mode.MONITOR for hit in result.tx.hits if hit.check == "size")


def test_the_first_refused_ambiguity_ends_the_size_check() -> None:
    h = harness("size.malformed_action=reject", "size.parse_error_action=tempfail")
    result = h.scan(two_ambiguities_and_a_deep_part())
    verdict = result.verdict
    assert (verdict.action, verdict.code, verdict.rule) == (Action.REJECT, "554", "duplicate-content-type")
    assert size_rules(result) == ["duplicate-content-type"]


def test_the_configured_reply_texts_are_the_ones_sent() -> None:
    h = harness("size.reply_text_declared_size='Thu qua lon: SIZE={declared} > {ceiling}'")
    result = h.scan(message(text("nho")), mail_params={"SIZE": "999999999"})
    ceiling = derived_raw_ceiling(LIMIT)
    assert result.verdict.text == f"Thu qua lon: SIZE=999999999 > {ceiling}"
