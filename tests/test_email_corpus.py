"""CPython's own email test corpus through the pipeline: no message may end in a tempfail.

tests/email_corpus/ holds a copy of CPython's `Lib/test/test_email/data` (its
README names the version and the license): the messages the standard
library's parser is tested with (broken boundaries, odd charsets, nested
rfc822, missing headers) and some binary files (images, sounds) that are no
mail at all. It is shipped with the tests, so these tests never skip. Each one
goes through the daemon's pipeline as inbound and as outbound mail: without
clamd and DNS in-process, with a real clamd and a real DNS server, and a
handful through the `govmilter scan` command. A parse problem may be recorded,
never answered with a tempfail; the action counts are printed at the end of
the module.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from govmilter.model import Action
from govmilter.pipeline import CHECK_NAMES
from support.dns_fixture import LabDns, lab_dns  # noqa: F401 - fixture: a real DNS server on loopback
from support.harness import ROOT, RULES, Harness
from support.lab_clamd import LabClamd

CORPUS = Path(__file__).parent / "email_corpus"
FILES = sorted(p for p in CORPUS.iterdir() if p.is_file() and p.name.startswith(("msg_", "python.", "sndhdr.")))
SERVICE_CHECKS = [name for name in ("antivirus", "dnsbl") if name in CHECK_NAMES]

# (client IP, MAIL FROM, RCPT): an internal relay to the outside; an Internet client to a local
# mailbox (127.0.0.5 is on no test blocklist). Outbound goes first: a message accepted inbound is
# remembered, and the same Message-ID leaving again would rightly count as a redirect.
ENVELOPES = {
    "outbound": ("127.0.0.1", "officer@bacninh.gov.vn", "partner@example.com"),
    "inbound": ("127.0.0.5", "sender@example.com", "user@bacninh.gov.vn"),
}
ACTIONS: dict[str, Counter[str]] = {}


@pytest.fixture(scope="module", autouse=True)
def report_actions(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    lines = [
        f"email corpus ({len(FILES)} files) {name}: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
        for name, counts in sorted(ACTIONS.items())
    ]
    if capture is None or reporter is None:
        print("\n".join(lines))
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        for line in lines:
            reporter.write_line(line)


def internal_errors(harness: Harness) -> float:
    return sum(
        sample.value
        for metric in harness.metrics.registry.collect()
        if metric.name == "govmilter_internal_errors"
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


def run_corpus(harness: Harness, label: str) -> dict[tuple[str, str], str]:
    """Every file, both directions; fails on any tempfail or internal error, naming the file."""
    counts = ACTIONS.setdefault(label, Counter())
    outcome: dict[tuple[str, str], str] = {}
    problems = []
    for direction, (client, sender, rcpt) in ENVELOPES.items():
        for path in FILES:
            before = internal_errors(harness)
            result = harness.scan(path, mail_from=sender, rcpts=[rcpt], client_ip=client)
            action = result.verdict.action
            counts[f"{direction}-{action.value}"] += 1
            outcome[(path.name, direction)] = action.value
            if action is Action.TEMPFAIL or internal_errors(harness) != before:
                problems.append(f"{path.name} {direction}: {result.verdict.smtp_reply()} ({result.verdict.reason})")
            assert action in (Action.ACCEPT, Action.REJECT, Action.DISCARD, Action.TEMPFAIL)
    assert not problems, "\n".join(problems)
    return outcome


@pytest.fixture(scope="module")
def without_services() -> dict[tuple[str, str], str]:
    return run_corpus(Harness(skip=SERVICE_CHECKS), "without clamd and DNS")


def test_the_corpus_is_complete() -> None:
    messages = [p for p in FILES if p.name.startswith("msg_")]
    assert len(messages) == 48, f"{len(messages)} messages in {CORPUS}, 48 shipped"
    assert len(FILES) == 65
    assert all(CORPUS / name in FILES for name in CLI_SAMPLES)


def test_no_tempfail_without_services(without_services: dict[tuple[str, str], str]) -> None:
    assert len(without_services) == 2 * len(FILES)
    # most of the corpus is ordinary mail: a pipeline that refused it all would be broken too
    accepted = [key for key, action in without_services.items() if action == "accept"]
    assert len(accepted) >= len(without_services) // 2


def test_no_tempfail_with_real_clamd_and_dns(clamd: LabClamd, lab_dns: LabDns) -> None:  # noqa: F811
    harness = Harness([f'antivirus.clamd=["{clamd.address}"]', f"dns.port={lab_dns.port}"])
    outcome = run_corpus(harness, "with clamd and DNS")
    assert len(outcome) == 2 * len(FILES)
    # the services were really asked: every accepted message was scanned clean (its second run, in
    # the other direction, is a copy and reuses that answer), names were looked up
    accepted = sum(1 for action in outcome.values() if action == "accept")
    sample = harness.metrics.registry.get_sample_value
    clean = sample("govmilter_antivirus_scans_total", {"result": "clean"})
    reused = sample("govmilter_antivirus_cache_total", {"result": "hit"})
    assert clean is not None and reused is not None and clean > 0 and reused > 0
    assert clean + reused == accepted
    lookups = [
        sample.value
        for metric in harness.metrics.registry.collect()
        if metric.name == "govmilter_dns_lookups"
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels["result"] in ("clean", "listed")
    ]
    assert sum(lookups) > 0


# a few through the real command: plain, multipart with a broken boundary, nested rfc822, binary junk
CLI_SAMPLES = ["msg_01.txt", "msg_15.txt", "msg_16.txt", "msg_35.txt", "msg_45.txt", "python.gif"]


@pytest.mark.parametrize("name", CLI_SAMPLES)
def test_govmilter_scan_command(name: str, without_services: dict[tuple[str, str], str]) -> None:
    path = CORPUS / name
    client, sender, rcpt = ENVELOPES["inbound"]
    result = subprocess.run(
        [sys.executable, "-m", "govmilter", "scan", "--json", "--set", f'rules.dir="{RULES}"',
         *[arg for check in SERVICE_CHECKS for arg in ("--skip", check)],
         "--client-ip", client, "--mail-from", sender, "--rcpt", rcpt, str(path)],
        capture_output=True,
        cwd=ROOT,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["action"] != "tempfail", out
    assert out["action"] == without_services[(name, "inbound")]  # the command and the pipeline agree
