"""The reply a refused sender reads: the text, the reference the helpdesk looks up, the contact line.

Through the adapter and pymilter's test context here; through real Postfix (line limits, what an
SMTP client receives) in tests/e2e/test_replies_e2e.py.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import Milter
import pytest

from govmilter.config import ConfigError, load_config
from govmilter.replies import LINE, reply_lines
from govmilter.runtime import Runtime
from support.harness import RULES
from support.milter_ctx import RecordingCtx, adapter_runtime, drive

GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n"
FIELDS = [("From", "a@example.com"), ("To", "user@bacninh.gov.vn"), ("Subject", "x")]
CONTACT = "Lien he / contact: Trung tam CNTT, 0222 3822 000, hotro@bacninh.gov.vn"


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    yield from adapter_runtime(monkeypatch, f'milter.reply_contact="{CONTACT}"')


def test_a_short_text_stays_one_line_then_the_reference_then_the_contact() -> None:
    lines = reply_lines("Thu bi tu choi - refused", "4XyzAbc", CONTACT)
    assert lines[0] == "Thu bi tu choi - refused"
    assert lines[1].startswith("Ma tham chieu / reference: 4XyzAbc ")
    assert lines[2] == CONTACT
    assert reply_lines("refused", "", "") == ["refused"]


def test_a_long_filled_in_text_is_cut_into_lines_within_the_smtp_bound() -> None:
    name = "bao-cao-" + "x" * 700 + ".exe"  # a file name from the wire fills {name}
    text = f"Tep dinh kem bi chan: {name} (QD 06/2022 Dieu 8.2) - attachment refused: {name}"
    lines = reply_lines(text, "4XyzAbc", CONTACT)
    assert len(lines) <= 32  # libmilter's bound
    assert all(len(f"550-5.7.520 {line}\r\n") <= 512 for line in lines)  # RFC 5321 4.5.3.1.5
    assert all(len(line) <= LINE for line in lines)
    assert lines[-2].startswith("Ma tham chieu / reference: 4XyzAbc") and lines[-1] == CONTACT
    huge = reply_lines("word " * 5000, "4XyzAbc")
    assert len(huge) == 9 and huge[-2].endswith("...")  # 8 lines of text at most, then the reference


def test_a_refusal_at_end_of_message_carries_the_queue_id_and_the_contact(runtime: Runtime) -> None:
    ctx = RecordingCtx()
    assert drive(ctx, FIELDS, GTUBE, ip="127.0.0.3", queue_id="4XyzAbc") == Milter.REJECT
    code, enhanced, *lines = ctx.replies[-1]
    assert (code, enhanced) == ("550", "5.7.1")
    assert lines[0].startswith("Thu bi tu choi vi bi bo loc danh gia la thu rac")
    assert "gtube" not in lines[0]  # an outside sender: no internal rule ids
    assert lines[1].startswith("Ma tham chieu / reference: 4XyzAbc ")
    assert lines[2] == CONTACT


def test_a_refusal_before_postfix_gave_a_queue_id_gets_a_reference_the_log_line_carries(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = RecordingCtx()
    with caplog.at_level(logging.INFO, logger="govmilter.decision"):
        rc = drive(ctx, FIELDS, b"Hi.\r\n", ip="127.0.0.3", params=("SIZE=99999999",), queue_id="")
    assert rc == Milter.REJECT
    code, _, *lines = ctx.replies[-1]
    assert code == "552"
    found = re.match(r"Ma tham chieu / reference: (NOQUEUE-[B-Z2-9]{8}) ", lines[1])
    assert found, lines
    decision_lines = [r.getMessage() for r in caplog.records if r.name == "govmilter.decision"]
    assert any(f"queue_id={found.group(1)}" in line for line in decision_lines), decision_lines
    second = RecordingCtx()
    drive(second, FIELDS, b"Hi.\r\n", ip="127.0.0.3", params=("SIZE=99999999",), queue_id="")
    assert found.group(1) not in second.replies[-1][3]  # one reference per refusal


def test_the_contact_line_is_checked_when_the_configuration_is_read() -> None:
    with pytest.raises(ConfigError, match=r"\[milter\] reply_contact"):
        load_config(None, ['milter.reply_contact="50% off"'])
    with pytest.raises(ConfigError, match=r"\[milter\] reply_contact"):
        load_config(None, ['milter.reply_contact="Liên hệ"'])  # ASCII only, as every reply text


def test_scan_shows_the_lines_the_daemon_adds_to_a_refusal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from govmilter.__main__ import main

    eml = tmp_path / "gtube.eml"
    eml.write_bytes(b"From: a@example.com\nTo: u@bacninh.gov.vn\nSubject: x\n\n" + GTUBE)
    envelope = ["--client-ip", "203.0.113.5", "--mail-from", "a@example.com", "--rcpt", "u@bacninh.gov.vn"]
    skip = ["--skip", "antivirus", "--skip", "dnsbl", "--skip", "auth"]
    settings = ["--set", f'milter.reply_contact="{CONTACT}"', "--set", f'rules.dir="{RULES}"']
    assert main(["scan", *settings, *skip, *envelope, str(eml)]) == 0
    out = capsys.readouterr().out.splitlines()
    at = next(n for n, line in enumerate(out) if line.startswith("reply       550 5.7.1 "))
    assert out[at + 1].strip().startswith("Ma tham chieu / reference: <Postfix's queue id>")
    assert out[at + 2].strip() == CONTACT
