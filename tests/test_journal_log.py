"""Under journald (the unit), the daemon's lines carry no timestamp or name of their own: journald
stamps both, and `journalctl` / mail.log would show them twice. Elsewhere they keep them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from govmilter.logfmt import daemon_formatter, stderr_is_journal
from support.harness import ROOT

SCRIPT = (
    "import logging\n"
    "from govmilter.__main__ import _setup_logging\n"
    "_setup_logging('debug')\n"
    "log = logging.getLogger('govmilter.test')\n"
    "log.debug('fine')\n"
    "log.info('started')\n"
    "log.warning('odd\\nline')\n"
    "log.error('broken')\n"
)
STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} govmilter\[\d+\] ")


def daemon_lines(tmp_path: Path, journal_stream: str | None) -> list[str]:
    """The lines `govmilter run`'s log handler writes to stderr, a file standing in for the journal."""
    out = tmp_path / "stderr"
    env = {key: value for key, value in os.environ.items() if key != "JOURNAL_STREAM"}
    with open(out, "wb") as stderr:
        if journal_stream == "this file":
            stat = os.fstat(stderr.fileno())
            journal_stream = f"{stat.st_dev}:{stat.st_ino}"
        if journal_stream is not None:
            env["JOURNAL_STREAM"] = journal_stream
        result = subprocess.run([sys.executable, "-c", SCRIPT], stderr=stderr, cwd=ROOT, env=env, timeout=60)
    assert result.returncode == 0
    return out.read_text().splitlines()


def test_under_journald_the_lines_have_no_timestamp_and_their_priority(tmp_path: Path) -> None:
    lines = daemon_lines(tmp_path, "this file")
    assert lines == [
        "<7>DEBUG govmilter.test: fine",
        "<6>INFO govmilter.test: started",
        "<4>WARNING govmilter.test: odd\\nline",  # still one line
        "<3>ERROR govmilter.test: broken",
    ]


def test_elsewhere_the_lines_keep_their_timestamp(tmp_path: Path) -> None:
    for journal_stream in (None, "1:2", "garbage"):  # no journal, or one stderr no longer is
        lines = daemon_lines(tmp_path, journal_stream)
        assert len(lines) == 4, lines
        assert all(STAMP.match(line) for line in lines), (journal_stream, lines)
        assert lines[1].endswith(" INFO govmilter.test: started") and not lines[1].startswith("<")


def test_stderr_is_journal_compares_device_and_inode(tmp_path: Path) -> None:
    with open(tmp_path / "f", "w") as handle:
        stat = os.fstat(handle.fileno())
        assert stderr_is_journal(handle, {"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}"})
        assert not stderr_is_journal(handle, {"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino + 1}"})
        assert not stderr_is_journal(handle, {})
        assert daemon_formatter(handle, {}).journal is False
    # a closed stream (no descriptor) is not the journal
    assert not stderr_is_journal(handle, {"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}"})
