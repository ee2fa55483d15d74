"""The size check through the pipeline: SIZE= at MAIL, the raw ceiling mid-body, the cap at end."""

from __future__ import annotations

from pathlib import Path

import pytest

from govmilter.checks.size import derived_raw_ceiling
from govmilter.model import Action, Mode, Stage
from govmilter.pipeline import CHECK_NAMES
from mimebuild import Attachment, leaf, message, multipart, random_bytes, text, write_message
from support import Harness

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
    assert result.tx.facts().attachment_bytes == 10500
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
