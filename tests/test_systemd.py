"""The shipped service unit: systemd accepts it, and its exposure score stays at 2.0 or lower."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from support.harness import ROOT

UNIT = ROOT / "systemd" / "govmilter.service"
VENV_GOVMILTER = ROOT / ".venv" / "bin" / "govmilter"


@pytest.fixture
def unit(tmp_path: Path) -> Path:
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing (make test installs the systemd package)")
    # the unit names the installed path; verify checks that ExecStart exists, so point it here
    path = tmp_path / "govmilter.service"
    path.write_text(UNIT.read_text().replace("/opt/govmilter/bin/govmilter", str(VENV_GOVMILTER)))
    return path


def test_systemd_analyze_verify_accepts_the_unit(unit: Path) -> None:
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "govmilter.service" not in result.stderr, result.stderr  # no warning about our unit


def test_exposure_score_is_ok(unit: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)], capture_output=True, text=True
    )
    match = re.search(r"Overall exposure level for govmilter.service: ([0-9.]+) (\w+)", result.stdout)
    assert match, result.stdout + result.stderr
    score, verdict = float(match.group(1)), match.group(2)
    print(f"exposure {score} {verdict}")
    assert score <= 2.0 and verdict == "OK", result.stdout


def test_reload_validates_rules_and_the_service_runs_unprivileged() -> None:
    text = UNIT.read_text()
    assert re.search(r"^ExecReload=\S*govmilter rules check", text, re.M)
    assert re.search(r"^User=govmilter$", text, re.M)
    assert re.search(r"^CapabilityBoundingSet=$", text, re.M)


def test_the_unit_leaves_rule_files_to_the_daemon_and_waits_for_the_drain() -> None:
    from govmilter.config import MilterConfig
    from govmilter.runtime import ANSWER_WINDOW

    text = UNIT.read_text()
    # a broken rule file must not keep the daemon from starting on its last good copy
    assert not re.search(r"^ExecStartPre=.*rules check", text, re.M)
    assert re.search(r"^ExecStartPre=\S*govmilter config check$", text, re.M)
    stop = re.search(r"^TimeoutStopSec=(\d+)$", text, re.M)
    assert stop, "TimeoutStopSec must be set: systemd's default (90 s) is not a decision"
    assert int(stop.group(1)) > MilterConfig().shutdown_grace + ANSWER_WINDOW + 5
    assert re.search(r"^KillSignal=", text, re.M) is None  # SIGTERM, the signal that drains


def test_the_prometheus_drop_in_example_is_accepted_and_adds_to_the_allow_list(unit: Path) -> None:
    """packaging/examples/prometheus-allow.conf, installed as install-package.md says, next to the unit."""
    example = ROOT / "packaging" / "examples" / "prometheus-allow.conf"
    text = example.read_text()
    # IPAddressAllow= lines add to the unit's; an empty one would reset them (loopback, clamd, DNS cut off)
    allowed = re.findall(r"^IPAddressAllow=(.*)$", text, re.M)
    assert allowed and all(value.strip() for value in allowed), allowed
    assert not re.search(r"^IPAddressDeny=", text, re.M)
    drop_ins = unit.parent / "govmilter.service.d"
    drop_ins.mkdir()
    (drop_ins / "prometheus-allow.conf").write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert result.returncode == 0 and "prometheus-allow.conf" not in result.stderr, result.stderr
    assert "govmilter.service" not in result.stderr, result.stderr
    # the unit tells where the example is, and the package installs it there
    assert "/usr/share/doc/govmilter/examples/prometheus-allow.conf" in UNIT.read_text()
    build = (ROOT / "packaging" / "build-deb.sh").read_text()
    assert 'packaging/examples/*.conf "$STAGE/usr/share/doc/govmilter/examples/"' in build


def test_the_unit_has_no_runtime_directory_and_documents_installed_files() -> None:
    """The socket lives under Postfix's queue (a chrooted smtpd reaches it), not in /run: a
    RuntimeDirectory= would be made and never used. Documentation= names files the package installs."""
    text = UNIT.read_text()
    assert not re.search(r"^RuntimeDirectory", text, re.M)
    build = (ROOT / "packaging" / "build-deb.sh").read_text()
    docs = re.findall(r"^Documentation=file:///usr/share/doc/govmilter/(\S+)$", text, re.M)
    assert docs and len(docs) == len(re.findall(r"^Documentation=", text, re.M))
    for name in docs:
        assert re.search(rf"install -m 0644 .*\b{re.escape(name)}\b.*/usr/share/doc/govmilter/", build), name
