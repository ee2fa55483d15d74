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
