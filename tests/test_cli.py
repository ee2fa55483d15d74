"""`govmilter scan` follows its contract: one JSON object, exit 0 whatever the verdict."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from govmilter.pipeline import CHECK_NAMES
from support.harness import ROOT

SKIP = [arg for name in ("antivirus", "dnsbl") if name in CHECK_NAMES for arg in ("--skip", name)]


def scan(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "govmilter", "scan", "--set", f'rules.dir="{ROOT / "rules"}"', *SKIP, *args],
        capture_output=True,
        input=stdin,
        cwd=ROOT,
    )


MESSAGE = b"From: a@example.com\nTo: user@bacninh.gov.vn\nSubject: hi\nMessage-ID: <c1@example.com>\n\nHello.\n"


def test_scan_prints_the_contract_fields(tmp_path: Path) -> None:
    path = tmp_path / "m.eml"
    path.write_bytes(MESSAGE)
    envelope = ["--mail-from", "a@example.com", "--rcpt", "user@bacninh.gov.vn", "--client-ip", "127.0.0.2"]
    result = scan(*envelope, str(path))
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["action"] == "accept"
    assert out["smtp_reply"] == ""
    assert isinstance(out["hits"], list)
    assert ["X-Govmilter", out["add_headers"][0][1]] == out["add_headers"][0]
    # one duration for every check that ran: all of them but the skipped ones, each a time in ms
    durations = out["duration_ms"]
    assert set(durations) == set(CHECK_NAMES) - set(SKIP[1::2]), durations
    assert all(isinstance(ms, float | int) and ms >= 0 for ms in durations.values()), durations


def test_scan_reads_stdin_and_reports_a_refusal_with_exit_0() -> None:
    result = scan("--mail-from", "", "--rcpt", "user@bacninh.gov.vn", "--size", "999999999", "-", stdin=MESSAGE)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["action"] == "reject"
    assert out["smtp_reply"].startswith("552 5.3.4 ")
    assert out["hits"][0]["check"] == "size"
    assert out["hits"][0]["mode"] == "enforce"


def test_scan_usage_error_exits_2() -> None:
    assert scan("--rcpt", "x@example.com", "-", stdin=MESSAGE).returncode == 2
    assert scan("--skip", "nosuchcheck", "--mail-from", "a@b", "--rcpt", "x@y", "-", stdin=MESSAGE).returncode == 2


def test_rules_keys_prints_the_block_each_kind_of_rule_file_carries() -> None:
    from govmilter.ruleset.schema import header_block

    result = subprocess.run(
        [sys.executable, "-m", "govmilter", "rules", "keys", "dnsbl"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip("\n") == header_block((ROOT / "rules" / "dnsbl.toml").read_text())
    unknown = subprocess.run(
        [sys.executable, "-m", "govmilter", "rules", "keys", "dnsbI"], capture_output=True, text=True, cwd=ROOT
    )
    assert unknown.returncode == 2
    assert "unknown kind 'dnsbI'" in unknown.stderr
