"""`govmilter doctor` on the loopback stack: it passes there, and fails naming clamd when clamd stops."""

from __future__ import annotations

import subprocess

from stack import VENV_BIN, Stack


def doctor(stack: Stack) -> subprocess.CompletedProcess[str]:
    args = [str(VENV_BIN / "python"), "-m", "govmilter", "doctor", "--config", str(stack.govmilter.write_config())]
    for key, value in stack.govmilter.settings.items():
        args += ["--set", f"{key}={value}"]
    args += ["--postconf-dir", str(stack.postfix.etc)]
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def test_doctor_passes_on_the_stack_and_fails_naming_clamd_once_it_stops(stack: Stack) -> None:
    result = doctor(stack)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("OK   smtpd_milters: names unix:") for line in lines), result.stdout
    assert any(line.startswith("OK   blocklist zen.spamhaus.org") for line in lines), result.stdout
    # the lab's test database has no date (WARN); the system's official one has (OK)
    assert any(
        line.startswith((f"WARN clamd {stack.clamd.address}:", f"OK   clamd {stack.clamd.address}:")) for line in lines
    )
    stack.clamd.stop()
    try:
        stopped = doctor(stack)
    finally:
        stack.clamd.start()
    assert stopped.returncode == 1, stopped.stdout
    failed = [line for line in stopped.stdout.splitlines() if line.startswith("FAIL")]
    assert failed and all(line.startswith(f"FAIL clamd {stack.clamd.address}: no answer") for line in failed), failed
