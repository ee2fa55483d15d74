"""Attack: silence a refusing rule on the time-limited fallback engine by feeding it slow text first.

The shipped secret-marking-attachment rule (outbound, reject) had a negative lookahead, so it ran on
`regex` with [content] pattern_time_limit_ms per message. Three zips listing 260 long names each that
contain "mật" (the rule's prefilter literal) but no marking spend that time; the attachment named
"TỐI MẬT" after them went out before the fix. A reject rule that could not finish now refuses; and
the shipped rule now runs on RE2 (its lookahead became an exception, `unless`), so the same filler
costs it nothing and it refuses by its pattern. The old pattern stays here as an officer's rule."""

from __future__ import annotations

import base64
import io
import logging
import zipfile
from typing import Any

import pytest

from govmilter.model import Action, Mode
from govmilter.pipeline import CHECK_NAMES
from support.harness import Harness

OUTBOUND: dict[str, Any] = {
    "client_ip": "127.0.0.1",
    "mail_from": "a.nguyen@bacninh.gov.vn",
    "rcpts": ["partner@example.com"],
}
ONLY_CONTENT = [name for name in CHECK_NAMES if name != "content"]


def _filler_zip() -> str:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index in range(260):  # the central directory stays within the walker's zip tail (128 KiB)
            archive.writestr(f"{index}" + "tốimật" * 42 + ".txt", b"")
    return base64.encodebytes(buffer.getvalue()).decode().replace("\n", "\r\n")


def _message(zips: int, marked_name: str = "T%E1%BB%90I%20M%E1%BA%ACT.bin") -> bytes:
    archive = _filler_zip()
    parts = "".join(
        f'--b\r\nContent-Type: application/zip\r\nContent-Disposition: attachment; filename="tl{k}.zip"\r\n'
        f"Content-Transfer-Encoding: base64\r\n\r\n{archive}\r\n"
        for k in range(zips)
    )
    return (
        "From: <a.nguyen@bacninh.gov.vn>\r\nTo: <partner@example.com>\r\nSubject: tai lieu\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nxem tep\r\n'
        + parts
        + "--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; "
        f"filename*=utf-8''{marked_name}\r\nContent-Transfer-Encoding: base64\r\n\r\nAAAA\r\n--b--\r\n"
    ).encode()


# the shipped rule of earlier versions: a negative lookahead, on the fallback engine
OLD_PATTERN = (
    r"(?:^|[\W_])(?:TUYỆT|TỐI)[\s_.-]*MẬT(?:[\W_]|$)|(?i:^(?!.*(?:hướng[\s_.-]*dẫn|quy[\s_.-]*(?:định|chế)))"
    r".*?(?:^|[\W_])(?:tuyệt|tối)[\s_.-]*mật(?:[\W_]|$))"
)
OLD_RULE = f"""kind = "content"
[[rule]]
id = "secret-marking-attachment"
target = "attachment-name"
pattern = '''{OLD_PATTERN}'''
case_sensitive = true
direction = "outbound"
action = "reject"
"""


def test_the_shipped_rule_refuses_by_its_pattern_whatever_the_filler() -> None:
    harness = Harness(overrides=["content.pattern_time_limit_ms=20"], skip=ONLY_CONTENT)
    result = harness.scan(_message(3), **OUTBOUND)
    verdict = result.verdict
    result.close()
    assert verdict.action is Action.REJECT and verdict.rule == "secret-marking-attachment", verdict
    assert "matched" in verdict.reason and "unchecked" not in verdict.reason
    assert harness.metrics.content_rules_skipped.labels(rule="secret-marking-attachment")._value.get() == 0


def test_slow_filler_names_do_not_let_a_marked_attachment_out(
    caplog: pytest.LogCaptureFixture, tmp_path: Any
) -> None:
    (tmp_path / "content.toml").write_text(OLD_RULE, encoding="utf-8")
    harness = Harness(overrides=["content.pattern_time_limit_ms=20"], skip=ONLY_CONTENT, rules_dir=tmp_path)
    with caplog.at_level(logging.WARNING, logger="govmilter.content"):
        result = harness.scan(_message(3), **OUTBOUND)
    verdict = result.verdict
    result.close()
    assert harness.metrics.content_rules_skipped.labels(rule="secret-marking-attachment")._value.get() == 1
    assert verdict.action is Action.REJECT and verdict.rule == "secret-marking-attachment", verdict
    assert verdict.mode is Mode.ENFORCE and "refused unchecked" in verdict.reason
    assert any("rule=secret-marking-attachment skipped" in r.getMessage() for r in caplog.records)


def test_a_message_the_rule_finishes_on_is_judged_by_the_pattern() -> None:
    harness = Harness(overrides=[], skip=ONLY_CONTENT)
    clean = _message(0, "Huong%20dan.bin")
    result = harness.scan(clean, **OUTBOUND)
    assert result.verdict.action is Action.ACCEPT, result.verdict
    result.close()
    result = harness.scan(_message(0), **OUTBOUND)
    assert result.verdict.refuses and "matched" in result.verdict.reason
    result.close()


def test_a_score_rule_past_its_time_limit_is_only_left_out(tmp_path: Any) -> None:
    (tmp_path / "content.toml").write_text(
        'kind = "content"\n[[rule]]\nid = "slow-score"\npattern = \'\'\'(?!z)(a|aa)+b\'\'\'\nscore = 3.0\n',
        encoding="utf-8",
    )
    harness = Harness(overrides=["content.pattern_time_limit_ms=20"], skip=ONLY_CONTENT, rules_dir=tmp_path)
    raw = (
        "From: <s@example.com>\r\nTo: <user@bacninh.gov.vn>\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain\r\n\r\n" + "a" * 60 + "\r\n"
    ).encode()
    result = harness.scan(raw, client_ip="127.0.0.3")
    assert result.verdict.action is Action.ACCEPT, result.verdict
    result.close()
