"""The clamd commands of docs/install-package.md and docs/operating.md, run as written on a copy of
Debian's generated /etc/clamav/clamd.conf: clamd (clamconf) reads the new limits, and nothing
breaks it. An inline comment (what the docs once had) or an appended key that Debian's file
already sets (the first value wins) would fail here. The system's file is only read."""

from __future__ import annotations

import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from support.harness import ROOT

DEBIAN_CLAMD_CONF = Path("/etc/clamav/clamd.conf")
WANTED = {"StreamMaxLength": '"41943040"', "MaxFileSize": '"41943040"', "MaxThreads": '"24"',
          "AlertExceedsMax": '"yes"'}


def documented_commands(doc: str) -> str:
    """The shell lines of a doc from its `sed -i` on clamd.conf to its `grep -E` of the keys."""
    lines = (ROOT / "docs" / doc).read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if "sed -i -e 's/^StreamMaxLength" in line)
    end = next(i for i in range(start, len(lines)) if lines[i].lstrip().startswith("grep -E '^(StreamMaxLength"))
    return textwrap.dedent("\n".join(lines[start : end + 1]))


def clamconf(directory: Path) -> dict[str, str]:
    result = subprocess.run(["clamconf", "-c", str(directory)], capture_output=True, text=True, timeout=60)
    assert "ERROR" not in result.stdout + result.stderr, result.stdout + result.stderr
    values = {}
    for line in result.stdout.splitlines():
        found = re.match(r"(\w+) (?:= )?(.*)$", line)
        if found and found.group(1) in WANTED and found.group(1) not in values:  # the clamd.conf section first
            values[found.group(1)] = found.group(2).strip()
    return values


@pytest.fixture
def debian_conf(tmp_path: Path) -> Path:
    if not DEBIAN_CLAMD_CONF.is_file() or shutil.which("clamconf") is None:
        pytest.fail("clamav-daemon is not installed (bash lab/install-deps.sh): no Debian clamd.conf for the docs")
    shutil.copy(DEBIAN_CLAMD_CONF, tmp_path / "clamd.conf")
    return tmp_path


@pytest.mark.parametrize("doc", ["install-package.md", "operating.md"])
def test_the_documented_clamd_edit_gives_clamd_the_limits(debian_conf: Path, doc: str) -> None:
    before = clamconf(debian_conf)
    assert before["StreamMaxLength"] != WANTED["StreamMaxLength"]  # Debian's 25M, which the docs change
    conf = debian_conf / "clamd.conf"
    script = documented_commands(doc).replace("/etc/clamav/clamd.conf", str(conf))
    result = subprocess.run(["bash", "-e", "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    shown = result.stdout.split()
    for key in WANTED:  # the grep shows each key once
        assert shown.count(key) == 1, result.stdout
    assert clamconf(debian_conf) == WANTED
    # run twice (an operator repeating the step): still one line each
    subprocess.run(["bash", "-e", "-c", script], capture_output=True, text=True, timeout=60, check=True)
    text = conf.read_text()
    assert all(len(re.findall(rf"^{key} ", text, re.M)) == 1 for key in WANTED), text


def test_an_inline_comment_or_an_appended_key_is_what_the_docs_avoid(debian_conf: Path) -> None:
    """The two failures of the issue, seen by clamconf: the check above can fail."""
    conf = debian_conf / "clamd.conf"
    original = conf.read_text()
    conf.write_text(original + "StreamMaxLength 40M\n")  # appended: the first value (25M) wins
    assert clamconf(debian_conf)["StreamMaxLength"] == '"26214400"'
    conf.write_text(original.replace("StreamMaxLength 25M", "StreamMaxLength 40M  # above the ceiling"))
    result = subprocess.run(["clamconf", "-c", str(debian_conf)], capture_output=True, text=True, timeout=60)
    assert "Incorrect argument format for option StreamMaxLength" in result.stdout + result.stderr


def test_one_message_size_limit_everywhere() -> None:
    """The README, the docs and the doctor's fix all give Postfix the same message_size_limit."""
    sources = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "milter" / "govmilter" / "doctor.py"]
    values = {
        (path.name, value)
        for path in sources
        for value in re.findall(r"message_size_limit\s*=\s*(\d+)", path.read_text())
    }
    assert {value for _, value in values} == {"41943040"}, sorted(values)
    assert {"operating.md", "install-package.md", "doctor.py"} <= {name for name, _ in values}
