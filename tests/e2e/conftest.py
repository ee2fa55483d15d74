"""The real loopback stack (Postfix, clamd, dnsmasq, sink, govmilter), once per test session."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lab"))

from stack import Stack


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)


def _lab_available() -> str | None:
    if os.geteuid() != 0:
        return "the loopback stack runs Postfix and must start as root"
    for tool in ("postfix", "clamd", "dnsmasq"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            return f"{tool} is not installed (make test installs it)"
    return None


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    reason = _lab_available()
    if reason:
        pytest.fail(reason)  # never skip silently: e2e tests are part of the suite
    # not under pytest's tmp: that is root-only, and the postfix user must reach its files
    root = Path(tempfile.mkdtemp(prefix="govmilter-e2e-"))
    lab = Stack(root)
    try:
        lab.start()
        yield lab
    finally:
        lab.stop()
        if not os.environ.get("GOVMILTER_KEEP_STACK"):
            shutil.rmtree(root, ignore_errors=True)
