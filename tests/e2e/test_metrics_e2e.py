"""The metrics endpoint of the real daemon while messages of every verdict pass through real Postfix.

Each case scrapes /metrics, sends one message, scrapes again and checks that exactly the
counters of that verdict moved, by exactly one message.
"""

from __future__ import annotations

import json
import smtplib
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from e2e.helpers import INTERNET_CLIENT, LISTED_CLIENT, TRUSTED_RELAY, message, unique
from stack import SYSTEM_CLAMAV_DB, Reply, Stack
from support.lab_clamd import EICAR
from support.virus_samples import EICAR_SIGNATURE, mail

FAULTY = Path(__file__).with_name("faulty_govmilter.py")  # X-Inject-Fault: adapter
FAULTY_CHECK = Path(__file__).with_name("faulty_check_govmilter.py")  # X-Inject-Fault: content
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
LAB_DATABASE = not any(SYSTEM_CLAMAV_DB.glob("*.c[lv]d"))
EOM_CHECKS = ("attachments", "antivirus", "content")  # run on every message that reaches end of data

Key = tuple[str, frozenset[tuple[str, str]]]


class Scrape:
    """One scrape of /metrics: every sample by name and labels."""

    def __init__(self, text: str):
        self.samples: dict[Key, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def get(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def total(self, name: str, **labels: str) -> float:
        """The sum over every series of `name` whose labels include `labels`."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and wanted <= ls)

    def series(self, name: str) -> dict[frozenset[tuple[str, str]], float]:
        return {ls: v for (n, ls), v in self.samples.items() if n == name}


def scrape(stack: Stack) -> Scrape:
    return Scrape(stack.scrape())


def changed(before: Scrape, after: Scrape, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """The series of `name` that moved, and by how much."""
    moved = {}
    for labels, value in after.series(name).items():
        delta = value - before.series(name).get(labels, 0.0)
        if delta:
            moved[labels] = delta
    return moved


def labels(**values: str) -> frozenset[tuple[str, str]]:
    return frozenset(values.items())


def health(stack: Stack) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"{stack.metrics_url}/health", timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f}s")
        time.sleep(0.2)


# --- one case per verdict ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    send: Callable[[Stack, str], Reply]
    reply: tuple[str, int, str]  # stage, code, enhanced status ("" when accepted)
    decided: tuple[str, str]  # (action, check) of govmilter_messages_total
    rule_hits: dict[tuple[str, str], float] = field(default_factory=dict)  # (check, rule) -> moved by
    counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)
    reaches_eom: bool = True


def inbound(data: bytes, client: str = INTERNET_CLIENT, **kwargs: Any) -> Callable[[Stack, str], Reply]:
    return lambda stack, marker: stack.send(
        "partner@example.com",
        ["user@bacninh.gov.vn"],
        data.replace(b"MARKER", marker.encode()),
        source_ip=client,
        **kwargs,
    )


def forward_out(stack: Stack, marker: str) -> Reply:
    data = message(
        marker,
        headers={"X-Sieve-Redirected-From": "officer@bacninh.gov.vn"},
        mail_from="officer@bacninh.gov.vn",
        to="partner@example.com",
    )
    return stack.send("officer@bacninh.gov.vn", ["partner@example.com"], data, source_ip=TRUSTED_RELAY)


CASES = [
    Case(
        "accept",
        inbound(message("MARKER")),
        ("done", 250, ""),
        ("accept", "none"),
        counters={
            ("govmilter_antivirus_scans_total", (("result", "clean"),)): 1,
            ("govmilter_spam_score_count", ()): 1,
            ("govmilter_attachment_bytes_count", ()): 1,
        },
    ),
    Case(
        "accept with a broken MIME structure",
        inbound(
            message("MARKER", body="--b\r\nContent-Type: text/plain\r\n\r\nKhong co ranh gioi ket thuc.\r\n").replace(
                b"Content-Type: text/plain; charset=utf-8", b'Content-Type: multipart/mixed; boundary="b"'
            )
        ),
        ("done", 250, ""),
        ("accept", "none"),
        counters={
            ("govmilter_mime_defects_total", (("defect", "unterminated-multipart"),)): 1,
            ("govmilter_mime_defects_total", ()): 1,
            ("govmilter_attachment_bytes_count", ()): 1,
        },
    ),
    Case(
        "declared size over the ceiling, at MAIL FROM",
        inbound(message("MARKER"), size=60_000_000),
        ("mail", 552, "5.3.4"),
        ("reject", "size"),
        rule_hits={("size", "declared-size"): 1},
        counters={("govmilter_antivirus_scans_total", ()): 0},
        reaches_eom=False,
    ),
    Case(
        "client on a DNS blocklist, at MAIL FROM",
        inbound(message("MARKER"), client=LISTED_CLIENT),
        ("mail", 550, "5.7.1"),
        ("reject", "dnsbl"),
        rule_hits={("dnsbl", "spamhaus-zen"): 1},
        counters={("govmilter_antivirus_scans_total", ()): 0},
        reaches_eom=False,
    ),
    Case(
        "outbound automatic forward",
        forward_out,
        ("data", 550, "5.7.520"),
        ("reject", "forwarding"),
        rule_hits={("forwarding", "outbound-sieve-redirect"): 1},
        counters={
            (
                "govmilter_forwarding_detected_total",
                (("direction", "outbound"), ("trace", "sieve-redirect"), ("action", "reject")),
            ): 1,
            ("govmilter_antivirus_scans_total", ()): 0,
        },
        reaches_eom=False,
    ),
    Case(
        "blocked attachment",
        inbound(mail("MARKER", [("cai-dat.bat", b"echo xin chao\r\n")])),
        ("data", 550, "5.7.1"),
        ("reject", "attachments"),
        rule_hits={("attachments", "blocked-extension"): 1},
        counters={("govmilter_antivirus_scans_total", ()): 0, ("govmilter_attachment_bytes_count", ()): 1},
    ),
    Case(
        "virus",
        inbound(mail("MARKER", [("tai-lieu.txt", EICAR)])),
        ("data", 554, "5.7.1"),
        ("reject", "antivirus"),
        rule_hits={("antivirus", "virus-found"): 1},
        counters={
            ("govmilter_antivirus_scans_total", (("result", "found"),)): 1,
            ("govmilter_antivirus_signatures_total", ()): 1,
            ("govmilter_spam_score_count", ()): 0,  # the pipeline stopped at the virus
        },
    ),
    Case(
        "spam (GTUBE)",
        inbound(message("MARKER", body=f"{GTUBE}\r\n")),
        ("data", 550, "5.7.1"),
        ("reject", "content"),
        rule_hits={("content", "gtube"): 1, ("content", "spam-score"): 1},
        counters={
            ("govmilter_antivirus_scans_total", (("result", "clean"),)): 1,
            ("govmilter_spam_score_count", ()): 1,
        },
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_counters_move_by_one_message_of_each_verdict(stack: Stack, case: Case) -> None:
    marker = unique("metrics")
    before = scrape(stack)
    reply = case.send(stack, marker)
    after = scrape(stack)

    stage, code, enhanced = case.reply
    assert (reply.stage, reply.code) == (stage, code), reply
    assert enhanced in reply.text, reply
    if case.decided == ("accept", "none"):
        assert "X-Govmilter" in stack.sink.find(marker).message

    # exactly one message decided, the way it was
    action, check = case.decided
    assert changed(before, after, "govmilter_messages_total") == {labels(action=action, check=check): 1}
    for name in ("govmilter_message_duration_seconds_count", "govmilter_message_size_bytes_count"):
        assert after.get(name) - before.get(name) == 1, name
    size_sum = after.get("govmilter_message_size_bytes_sum") - before.get("govmilter_message_size_bytes_sum")
    # refused at MAIL FROM: nothing of the message was seen yet; later: its headers at least
    assert size_sum == 0 if stage == "mail" else size_sum > 100, size_sum
    assert changed(before, after, "govmilter_internal_errors_total") == {}

    # each finding counted once under its check and rule
    hits = changed(before, after, "govmilter_rule_hits_total")
    for (hit_check, rule), moved in case.rule_hits.items():
        assert hits.get(labels(check=hit_check, rule=rule, mode="enforce")) == moved, hits
    for (name, wanted), moved in case.counters.items():
        assert after.total(name, **dict(wanted)) - before.total(name, **dict(wanted)) == moved, (name, wanted)

    # the checks that ran were timed; the checks after a refusal were not
    timed = {dict(ls)["check"] for ls in changed(before, after, "govmilter_check_duration_seconds_count")}
    if case.reaches_eom:
        assert "antivirus" in timed or check == "attachments"
        assert {"forwarding", "size", "attachments"} <= timed
    else:
        assert not timed & set(EOM_CHECKS), timed


def test_virus_is_counted_under_its_signature(stack: Stack) -> None:
    before = scrape(stack)
    reply = inbound(mail("MARKER", [("eicar.txt", EICAR)]))(stack, unique("sig"))
    after = scrape(stack)
    assert reply.code == 554, reply
    moved = changed(before, after, "govmilter_antivirus_signatures_total")
    assert list(moved.values()) == [1]
    (signature,) = (dict(ls)["signature"] for ls in moved)
    assert signature in reply.text
    if LAB_DATABASE:
        assert signature == EICAR_SIGNATURE


def test_dns_lookups_are_counted_by_zone_and_result(stack: Stack) -> None:
    before = scrape(stack)
    reply = inbound(message("MARKER"), client=LISTED_CLIENT)(stack, unique("dns"))
    after = scrape(stack)
    assert reply.code == 550, reply
    moved = changed(before, after, "govmilter_dns_lookups_total")
    zen = {dict(ls)["result"]: v for ls, v in moved.items() if dict(ls)["zone"] == "zen.spamhaus.org"}
    assert zen in ({"listed": 1}, {"cached": 1}), moved  # one lookup; a repeat within its TTL is cached
    dnsbl = [ls for ls in moved if dict(ls)["purpose"] == "dnsbl"]  # the auth check's lookups count by purpose too
    assert all(dict(ls)["result"] in {"listed", "clean", "cached", "timeout", "error", "skipped"} for ls in dnsbl)


# --- tempfail: clamd down, and /health ---------------------------------------------------------------------


@pytest.fixture
def clamd_stopped(stack: Stack) -> Iterator[Stack]:
    stack.clamd.stop()
    try:
        yield stack
    finally:
        if stack.clamd.proc is None:  # the test did not bring it back itself
            stack.clamd.start()


def test_health_reports_clamd_and_rules_while_all_is_well(stack: Stack) -> None:
    status, report = health(stack)
    assert status == 200, report
    assert report["ok"] is True
    assert report["antivirus"]["ok"] is True
    assert set(report["antivirus"]["clamd"].values()) == {"up"}
    now = scrape(stack)
    assert now.get("govmilter_ruleset_info", version=report["ruleset"]) == 1
    assert now.get("govmilter_rule_reload_successful") == 1
    for address in report["antivirus"]["clamd"]:
        assert now.get("govmilter_clamd_up", address=address) == 1
    assert now.total("govmilter_build_info") == 1
    assert now.get("process_cpu_seconds_total") > 0


def test_clamd_down_tempfails_and_shows_in_health_and_metrics(clamd_stopped: Stack) -> None:
    stack = clamd_stopped
    status, report = health(stack)
    assert status == 503 and report["ok"] is False, report
    (address,) = report["antivirus"]["clamd"]
    assert report["antivirus"]["clamd"][address] == "down"
    before = scrape(stack)
    assert before.get("govmilter_clamd_up", address=address) == 0  # the scrape probed: no mail needed

    reply = inbound(message("MARKER"))(stack, unique("noclamd"))
    after = scrape(stack)
    assert (reply.stage, reply.code) == ("data", 451), reply
    assert "4.7.1" in reply.text
    assert changed(before, after, "govmilter_messages_total") == {labels(action="tempfail", check="antivirus"): 1}
    scans = changed(before, after, "govmilter_antivirus_scans_total")
    assert sum(scans.values()) == 1 and labels(result="clean") not in scans, scans
    hits = changed(before, after, "govmilter_rule_hits_total")
    assert hits == {labels(check="antivirus", rule="scan-failed", mode="enforce"): 1}

    stack.clamd.start()
    status, report = health(stack)
    assert status == 200 and report["antivirus"]["clamd"] == {address: "up"}, report
    assert scrape(stack).get("govmilter_clamd_up", address=address) == 1


# --- internal errors, connections, rule reloads ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "fault", "where", "check"),
    [(FAULTY, "adapter", "eom", "adapter"), (FAULTY_CHECK, "content", "content", "content")],
    ids=["in the adapter", "in a check"],
)
def test_internal_errors_are_counted_where_they_happen(
    stack: Stack, entry: Path, fault: str, where: str, check: str
) -> None:
    original_entry = list(stack.govmilter.entry)
    stack.restart_milter(entry=[sys.executable, str(entry)])  # its HTTP endpoint is up before its socket
    try:
        before = scrape(stack)
        assert before.samples[("govmilter_internal_errors_total", labels(where=where))] == 0  # present from start
        reply = inbound(message("MARKER", headers={"X-Inject-Fault": fault}))(stack, unique("fault"))
        after = scrape(stack)
        assert reply.code == 451 and "4.3.0" in reply.text, reply
        assert changed(before, after, "govmilter_internal_errors_total") == {labels(where=where): 1}
        assert changed(before, after, "govmilter_messages_total") == {labels(action="tempfail", check=check): 1}
    finally:
        stack.restart_milter(entry=original_entry)


def test_connections_in_flight_follow_smtp_sessions(stack: Stack) -> None:
    def in_flight() -> float:
        return scrape(stack).get("govmilter_connections_in_flight")

    wait_for(lambda: in_flight() == 0, "no connection in flight before the test")
    client = smtplib.SMTP("127.0.0.1", stack.smtp_port, timeout=30, source_address=(INTERNET_CLIENT, 0))
    try:
        client.ehlo("client.example")
        client.mail("partner@example.com")  # the milter has been told of the connection by now
        assert in_flight() == 1
    finally:
        client.quit()
    wait_for(lambda: in_flight() == 0, "the connection closed in the milter")


def test_rule_reloads_are_counted_and_a_failure_shows(stack: Stack) -> None:
    broken = stack.rules_dir / "zz-metrics-broken.toml"
    before = scrape(stack)
    first = next(dict(ls)["version"] for ls in before.series("govmilter_ruleset_info"))
    broken.write_text('kind = "content"\n\n[[rule]\nid = "unterminated"\n')
    try:
        wait_for(lambda: scrape(stack).get("govmilter_rule_reload_successful") == 0, "the failed reload")
        failed = scrape(stack)
        assert (
            failed.get("govmilter_rule_reloads_total", outcome="failed")
            - before.get("govmilter_rule_reloads_total", outcome="failed")
            == 1
        )
        assert failed.get("govmilter_ruleset_info", version=first) == 1  # the previous rule set still serves
        status, report = health(stack)
        assert report["last_reload"] == "failed" and report["ruleset"] == first
        assert status == 200  # the previous rule set serves: the node stays in service
    finally:
        broken.unlink()
    wait_for(lambda: scrape(stack).get("govmilter_rule_reload_successful") == 1, "the reload after the fix")
    fixed = scrape(stack)
    assert (
        fixed.get("govmilter_rule_reloads_total", outcome="reloaded")
        - before.get("govmilter_rule_reloads_total", outcome="reloaded")
        == 1
    )
    # the directory is as it was: the version is the original one again, and it is the only one
    assert list(fixed.series("govmilter_ruleset_info")) == [labels(version=first)]
    assert fixed.get("govmilter_ruleset_loaded_timestamp_seconds") >= before.get(
        "govmilter_ruleset_loaded_timestamp_seconds"
    )
