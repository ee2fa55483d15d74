"""pytest fixtures for a real, private clamd (imported by tests/conftest.py).

`clamd`: one per test session, on a unix socket and on a loopback TCP port, for
tests that only scan. `clamd_factory`: a fresh instance per call, for tests that
stop it, restart it or need other settings (a small StreamMaxLength).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support.lab_clamd import CLAMD, LabClamd, free_port


def _require_clamd() -> None:
    if not Path(CLAMD).exists():
        pytest.fail(f"{CLAMD} is not installed (make test installs clamav-daemon)")


@pytest.fixture(scope="session")
def clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabClamd]:
    _require_clamd()
    with LabClamd(tmp_path_factory.mktemp("clamd"), tcp_port=free_port()) as server:
        yield server


ClamdFactory = Callable[..., LabClamd]


@pytest.fixture
def clamd_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClamdFactory]:
    _require_clamd()
    started: list[LabClamd] = []

    def make(**kwargs: object) -> LabClamd:
        server = LabClamd(tmp_path_factory.mktemp("clamd"), **kwargs)  # type: ignore[arg-type]
        started.append(server)
        server.start()
        return server

    yield make
    for server in started:
        server.stop()
