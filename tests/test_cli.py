"""`govmilter scan --json` follows its contract: one JSON object, exit 0 whatever the verdict; the default
output is for people; `govmilter rules test` runs the province's samples."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from govmilter.pipeline import CHECK_NAMES
from support.harness import ROOT

SKIP = [arg for name in ("antivirus", "dnsbl") if name in CHECK_NAMES for arg in ("--skip", name)]


def scan(*args: str, stdin: bytes | None = None, json_output: bool = True) -> subprocess.CompletedProcess[bytes]:
    fmt = ["--json"] if json_output else []
    return subprocess.run(
        [sys.executable, "-m", "govmilter", "scan", *fmt, "--set", f'rules.dir="{ROOT / "rules"}"', *SKIP, *args],
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
    assert out["hits"] == []  # the score's own summary (rule "", score 0) is not a hit
    assert out["direction"] == "inbound" and "127.0.0.2 is not a trusted relay" in out["direction_reason"]
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


SPAM = (
    "From: a@example.com\nTo: user@bacninh.gov.vn\nSubject: =?utf-8?b?VGjDtG5nIGLDoW8=?=\n"
    "Message-ID: <c2@example.com>\nContent-Type: text/plain; charset=utf-8\n\n"
    "Thuốc viagra giá tốt. Nhân đôi bitcoin ngay.\n"
).encode()


def test_scan_for_people_says_what_it_judged_by_what_and_why() -> None:
    envelope = ["--mail-from", "a@example.com", "--rcpt", "user@bacninh.gov.vn"]
    result = scan(*envelope, "--client-ip", "203.0.113.9", "-", stdin=SPAM, json_output=False)
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    assert "config      none: the built-in defaults" in out
    assert f"rules       {ROOT / 'rules'} (version " in out
    assert "direction   inbound: client 203.0.113.9 is not a trusted relay" in out
    assert "content/pharma  continue  score +4  enforce" in out
    assert "body matched 'viagra'" in out, out  # Python's span, not the spaces a \\b rewrite takes in
    assert "score       7.0 (tag at 5, reject at 10)" in out
    assert "verdict     tag (at eom, by no check)" in out and "reply       250 (accepted)" in out
    assert "header      X-Spam-Flag: YES" in out
    # without --client-ip the scan plays this host, and says so
    local = scan(*envelope, "-", stdin=SPAM, json_output=False).stdout.decode()
    assert "direction   outbound: client 127.0.0.1 is a trusted relay" in local
    assert "it is also the gateway host" in local and "no --client-ip" in local
    # the spam rules score outbound mail too (a stolen account sends the spam it received)
    assert "content/pharma  continue  score +4  enforce" in local


def test_scan_shows_the_declared_and_true_type_of_attachments(tmp_path: Path) -> None:
    sample = ROOT / "rules" / "tests" / "renamed-iso.eml"
    envelope = ["--mail-from", "k@example.net", "--rcpt", "user@bacninh.gov.vn", "--client-ip", "203.0.113.9"]
    out = scan(*envelope, str(sample), json_output=False).stdout.decode()
    assert "'bao-cao.pdf'  declared application/pdf  true type application/x-iso9660-image" in out
    assert "attachments/disk-image-content  reject" in out and "reply       550 " in out


def rules_test(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "govmilter", "rules", "test", "--set", f'rules.dir="{ROOT / "rules"}"', *args,
         str(folder)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )


def test_the_provinces_regression_set_passes() -> None:
    """rules/tests/: every shipped sample gets the verdict its sidecar expects (run by `make test`)."""
    result = rules_test(ROOT / "rules" / "tests")
    assert result.returncode == 0, result.stdout + result.stderr
    samples = sorted((ROOT / "rules" / "tests").glob("*.eml"))
    assert len(samples) >= 12
    assert f"{len(samples)} samples: {len(samples)} passed, 0 failed" in result.stdout
    assert "skipped: antivirus, dnsbl, auth" in result.stdout


def test_rules_test_fails_on_a_wrong_expectation_and_says_why(tmp_path: Path) -> None:
    (tmp_path / "a.eml").write_bytes(SPAM)
    (tmp_path / "a.toml").write_text(
        'mail_from = "a@example.com"\nrcpts = ["user@bacninh.gov.vn"]\nexpect = "accept"\n'
        'must_hit = ["pharma", "vn-prize"]\nmust_not_hit = ["crypto-doubling"]\n'
    )
    (tmp_path / "b.eml").write_bytes(SPAM)  # no sidecar
    (tmp_path / "c.eml").write_bytes(SPAM)
    (tmp_path / "c.toml").write_text('mail_from = "a@example.com"\nrcpts = ["u@bacninh.gov.vn"]\nexpect = "maybe"\n')
    result = rules_test(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = {line.split()[1]: line for line in result.stdout.splitlines()[2:-1]}
    assert lines["a.eml"].startswith("FAIL")
    assert "expected accept, got tag; vn-prize did not fire; crypto-doubling fired" in lines["a.eml"]
    assert "no b.toml beside it" in lines["b.eml"]
    assert "expect = 'maybe'" in lines["c.eml"]
    assert "3 samples: 0 passed, 3 failed" in result.stdout
    (tmp_path / "a.toml").write_text('mail_from = "a@example.com"\nrcpts = ["u@bacninh.gov.vn"]\nexpect = "tag"\n')
    for name in ("b.eml", "c.eml", "c.toml"):
        (tmp_path / name).unlink()
    assert rules_test(tmp_path).returncode == 0
    assert rules_test(tmp_path / "nothing-here").returncode == 2
