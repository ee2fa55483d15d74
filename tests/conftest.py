"""Fixtures every test may use; tests/ and lab/ are on the path through pyproject's pytest `pythonpath`.

Also two rules of the run:

- No silent skips. A test that skips fails the run, unless it is marked `optional` and has
  "optional" in its name; optional tests that skipped are listed at the end of the run
  ("optional tests skipped: ..."). With CI=true nothing may skip, optional or not.
- Hypothesis profiles. "ci" (the default, and `make test`): derandomized, so a run is the same
  on every machine, and a failure prints the blob that replays it (@reproduce_failure). "fuzz"
  (HYPOTHESIS_PROFILE=fuzz, `make fuzz`): random, GOVMILTER_FUZZ_FACTOR (default 20) times the
  examples each property asks for, failures kept in .hypothesis/ and replayed first next time.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest
from hypothesis import settings

from support.clamd_fixture import clamd, clamd_factory  # noqa: F401 - fixtures: a private real clamd
from support.dns_fixture import lab_dns, silent_dns  # noqa: F401 - fixtures: a private real dnsmasq, a silent resolver

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# registered before any test module is imported: a test's own @settings inherits what it does not set
settings.register_profile("ci", derandomize=True, print_blob=True, database=None)
settings.register_profile("fuzz", derandomize=False, print_blob=True)  # the default database: .hypothesis/
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)
FUZZ_FACTOR = int(os.environ.get("GOVMILTER_FUZZ_FACTOR", "20"))

OPTIONAL_SKIPPED: list[tuple[str, str]] = []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "optional: may skip when what it needs is missing (its name says optional); never with CI=true"
    )


def pytest_report_header(config: pytest.Config) -> str:
    return f"hypothesis profile: {PROFILE}" + (f" (x{FUZZ_FACTOR} examples)" if PROFILE == "fuzz" else "")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("optional") is not None and "optional" not in item.name:
            raise pytest.UsageError(f"{item.nodeid} is marked optional: its name must say so")
        if PROFILE == "fuzz":
            _more_examples(item)


def _more_examples(item: pytest.Item) -> None:
    """Under the fuzz profile, FUZZ_FACTOR times the examples each property's own @settings asks."""
    function = getattr(item, "obj", None)
    if function is None or not hasattr(function, "hypothesis"):
        return
    own = getattr(function, "_hypothesis_internal_use_settings", None)
    if own is None:  # hypothesis changed where it keeps them: say so rather than fuzz quietly less
        raise pytest.UsageError(f"cannot raise the examples of {item.nodeid} for the fuzz profile")
    function._hypothesis_internal_use_settings = settings(own, max_examples=own.max_examples * FUZZ_FACTOR)


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, None, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = _skip_reason(report)
    if item.get_closest_marker("optional") is not None and not CI:
        OPTIONAL_SKIPPED.append((item.nodeid, reason))
        return
    report.outcome = "failed"
    why = "CI=true: nothing may skip" if CI else "a skip fails the run unless the test is marked optional"
    report.longrepr = f"skipped ({reason}); {why}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, None, None]:
    outcome = yield
    report: pytest.CollectReport = outcome.get_result()
    if report.skipped:  # a whole module skipped at import
        report.outcome = "failed"
        report.longrepr = f"module skipped ({_skip_reason(report)}); a skip fails the run"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if OPTIONAL_SKIPPED:
        terminalreporter.write_line(f"optional tests skipped: {len(OPTIONAL_SKIPPED)}")
        for nodeid, reason in OPTIONAL_SKIPPED:
            terminalreporter.write_line(f"  {nodeid}: {reason}")
