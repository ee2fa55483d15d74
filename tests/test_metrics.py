"""metrics.py: names follow the Prometheus conventions, labels stay bounded, every metric is observed."""

from __future__ import annotations

import functools
import itertools
import re
import shutil
import uuid
from pathlib import Path

import Milter
import pytest
from Milter.testctx import TestCtx as PymilterTestCtx
from prometheus_client import generate_latest
from prometheus_client.metrics import MetricWrapperBase

from govmilter.adapter import GovMilter
from govmilter.checks import CheckHooks
from govmilter.checks.auth.signing import keygen
from govmilter.config import load_config
from govmilter.metrics import ADAPTER_PLACES, MESSAGE_BUCKETS, RELOAD_OUTCOMES, Metrics
from govmilter.model import Action, Mode, Stage, Transaction, Verdict
from govmilter.pipeline import CHECK_NAMES
from govmilter.runtime import Runtime
from stack import free_port, wait_until
from support import mimebuild
from support.dns_fixture import LabDns
from support.harness import RULES, Harness
from support.lab_clamd import EICAR, LabClamd
from support.milter_ctx import NO_REPLY_BITS, RecordingCtx, drive

PACKAGE = Path(__file__).resolve().parent.parent / "milter" / "govmilter"
SNAKE = re.compile(r"^govmilter_[a-z][a-z0-9]*(_[a-z0-9]+)*$")
# label names whose values come from the code or the configuration, never from the wire
BOUNDED_LABELS = {
    "action",  # model.Action, or the forwarding outcome: reject | monitor | allowed
    "check",  # a check name from CHECK_TABLE, or none / adapter
    "rule",  # a rule id from the officers' rule files, or a fixed id of a check
    "mode",  # enforce | monitor
    "where",  # an adapter callback or a check name
    "defect",  # fixed defect names of the MIME walk
    "direction",  # inbound | outbound
    "trace",  # the fixed names of the forwarding traces
    "op",  # lookup | store
    "result",  # fixed result names of clamd scans and DNS lookups
    "address",  # a clamd address from [antivirus] clamd, not a client address
    "signature",  # ClamAV signature names, capped by the antivirus check (then "other")
    "zone",  # a DNS zone from rules/dnsbl.toml
    "purpose",  # the fixed purposes of a DNS lookup: dnsbl | spf | dkim | dmarc | arc
    "method",  # the fixed authentication methods: spf | dkim | dmarc | arc
    "domain",  # a signing domain from [dkim] keys, never a domain from the wire
    "version",  # one value at a time: the rule-set or the package version
    "outcome",  # reloaded | failed
    "python",  # the interpreter version
    "kind",  # the fixed kinds of impersonation finding (checks/impersonation/)
    "protected",  # a protected name from [domains] or rules/impersonation.toml, or "-"
    "reason",  # why a history record was dropped: queue_full | store_error | shutdown
}


def wrappers(metrics: Metrics) -> dict[str, MetricWrapperBase]:
    return {attr: value for attr, value in vars(metrics).items() if isinstance(value, MetricWrapperBase)}


def exposed_name(metric: MetricWrapperBase) -> str:
    # prometheus_client stores a counter's name without _total and has no public getter
    return str(metric._name) + ("_total" if metric._type == "counter" else "")


# --- conventions --------------------------------------------------------------------------------


def test_names_follow_prometheus_conventions() -> None:
    for attr, metric in wrappers(Metrics()).items():
        name, kind = exposed_name(metric), metric._type
        assert SNAKE.match(name), name
        assert not name.endswith(("_count", "_sum", "_bucket", "_created")), name
        assert not re.search(r"_(ms|milliseconds|microseconds|kb|mb|kilobytes|megabytes|percent)(_|$)", name), name
        if kind == "counter":
            assert name.endswith("_total"), name
        else:
            assert not name.endswith("_total"), f"{name}: only counters end in _total"
        if kind == "histogram":
            unitless = name == "govmilter_spam_score"  # a score has no unit
            assert unitless or name.endswith(("_seconds", "_bytes")), f"{name}: a histogram names its base unit"
        if "duration" in name or "time" in name:
            assert name.endswith(("_seconds", "_timestamp_seconds")), name
        if name.endswith("_info"):
            assert kind == "gauge" and metric._labelnames, name
        help_text = metric._documentation
        assert len(help_text) > 15 and not help_text.endswith("."), (attr, help_text)


def test_the_exposition_is_valid_text_format() -> None:
    """Every family parses back with prometheus_client's own parser, HELP and TYPE included."""
    from prometheus_client.parser import text_string_to_metric_families

    metrics = Metrics()
    metrics.messages.labels(action="reject", check="size").inc()
    metrics.message_duration.observe(0.004)
    metrics.set_build_info("0.1.0")
    metrics.set_ruleset("abc123")
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(metrics.registry).decode())}
    assert families["govmilter_messages"].type == "counter"
    assert families["govmilter_message_duration_seconds"].type == "histogram"
    for attr, metric in wrappers(metrics).items():
        family = metric._name
        assert family in families, attr
        assert families[family].documentation == metric._documentation


def test_labels_are_bounded_names() -> None:
    for metric in wrappers(Metrics()).values():
        unknown = set(metric._labelnames) - BOUNDED_LABELS
        assert not unknown, f"{exposed_name(metric)} has labels {unknown}: is each value bounded?"
        assert len(metric._labelnames) <= 3, exposed_name(metric)


def test_message_duration_buckets_are_fine_below_50_ms() -> None:
    """The benchmark reads p50/p99 of this histogram: interpolation error must stay small."""
    metrics = Metrics()
    bounds = sorted(b for b in MESSAGE_BUCKETS if b <= 0.05)
    assert len(bounds) >= 12
    assert bounds[0] <= 0.001 and bounds[-1] == 0.05
    for low, high in itertools.pairwise(bounds):
        assert high - low <= 0.010 + 1e-12, (low, high)
    metrics.message_duration.observe(0.0042)
    text = generate_latest(metrics.registry).decode()
    assert 'govmilter_message_duration_seconds_bucket{le="0.004"} 0.0' in text
    assert 'govmilter_message_duration_seconds_bucket{le="0.005"} 1.0' in text


# --- every metric is observed -----------------------------------------------------------------------

# Families that move only on events this test does not make, each with the test that makes it.
NOT_DRIVEN_HERE = {
    "content_rules_skipped": "a rule pattern spending its time limit (only the backtracking fallback engine can, "
    "and it takes seconds of CPU): tests/checks/content/test_content_engines.py",
    "dmarc_policy": "a DMARC failure needs a published _dmarc TXT record; this test's DNS holds A records only: "
    "tests/checks/auth/test_auth.py",
    "clamd_signatures_time": "the lab clamd's own test signatures carry no build date in VERSION (no series then, "
    "by design): tests/checks/antivirus/test_antivirus.py",
    # the shipped limits start at 500 external recipients an hour: a deferral needs limits of a test's own
    "ratelimit_deferred": "an account over a limit: tests/checks/ratelimit/test_ratelimit.py",
    "ratelimit_over_limit": "an account over a limit: tests/checks/ratelimit/test_ratelimit.py",
    "ratelimit_spam_charged": "outbound spam from an account: tests/checks/ratelimit/test_ratelimit.py",
    "ratelimit_local_evictions": "more subjects than local_max_keys: tests/checks/ratelimit/test_ratelimit.py",
}


def _samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in metrics.registry.collect()
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def _moved(before: dict[tuple[str, tuple[tuple[str, str], ...]], float], metrics: Metrics) -> set[str]:
    """The families (by Metrics attribute) with a series that is new or has another value than before."""
    changed = {name for key, value in _samples(metrics).items() if before.get(key) != value for name in [key[0]]}
    moved = set()
    for attr, metric in wrappers(metrics).items():
        family = str(metric._name)
        if any(name == family or name.startswith(family + "_") for name in changed):
            moved.add(attr)
    return moved


def test_every_metric_family_moves_under_real_traffic(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, clamd: LabClamd, lab_dns: LabDns
) -> None:
    """A metric defined and never set is a dashboard panel that stays empty forever.

    Real transactions through the adapter, every check on (the private clamd and dnsmasq), the rules
    reloaded, Redis away, a check that fails, a start on the last good rules: every family gets a
    sample, but the few NOT_DRIVEN_HERE.
    """
    assert set(NOT_DRIVEN_HERE) <= set(wrappers(Metrics()))
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules)
    key = tmp_path / "dkim.pem"
    keygen("bacninh.gov.vn", "s1", "rsa", str(key))
    settings = [
        f'rules.dir="{rules}"',
        f'rules.last_good_dir="{tmp_path / "last-good"}"',
        f'antivirus.clamd=["{clamd.address}"]',
        f"dns.port={lab_dns.port}",
        f'forwarding.redis_url="redis://127.0.0.1:{free_port()}/0"',  # nothing listens: Redis is away
        f'ratelimit.redis_url="redis://127.0.0.1:{free_port()}/0"',  # the rate limits fall back per node
        f'dkim.keys=[{{domain="bacninh.gov.vn", selector="s1", key_file="{key}"}}]',
        f'history.path="{tmp_path / "history.sqlite"}"',
    ]
    monkeypatch.setattr(PymilterTestCtx, "default_opts", [Milter.CURR_ACTS, 0x1FFFFF & ~NO_REPLY_BITS, 0, 0])
    # 10.1.2.3: the mailbox server the outbound transactions below come from
    config = load_config(None, ['metrics.listen=""', "network.gateway_host=[]",
                                'network.trusted_relays=["127.0.0.1/32", "10.1.2.3/32"]', *settings])
    baseline = Metrics()
    baseline.declare_checks(CHECK_NAMES)
    before = _samples(baseline)
    runtime = Runtime(config)
    monkeypatch.setattr(Milter, "factory", functools.partial(GovMilter, runtime))
    history = runtime.start_history()  # as `govmilter run` does: the decision records to a SQLite store
    assert history is not None

    gtube = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
    head = [("From", "<vanthu@example.com>"), ("To", "<user@bacninh.gov.vn>"), ("Subject", "Bao cao")]
    clean = mimebuild.message(
        mimebuild.multipart(mimebuild.text("Kinh gui."), mimebuild.leaf(b"So lieu quy 3.\n" * 50, filename="a.txt"))
    )
    fields, _, body = clean.partition(b"\r\n\r\n")
    mime_fields = [tuple(f.decode().split(": ", 1)) for f in fields.split(b"\r\n")]
    transactions = [
        # inbound, clean, with an attachment: scanned, then scanned again from the cache
        dict(fields=[*head, ("Message-ID", "<m1@example.com>"), *mime_fields], body=body),
        dict(fields=[*head, ("Message-ID", "<m2@example.com>"), *mime_fields], body=body),
        dict(fields=head, body=f"{gtube}\r\n".encode()),  # content: GTUBE
        dict(fields=head, body=b"Hi.\r\n", params=("SIZE=900000000",)),  # size at MAIL FROM
        dict(fields=[*head, ("Content-Type", "multipart/mixed; boundary=b")], body=b"--b\r\n\r\nx\r\n"),  # defects
        dict(fields=head, body=EICAR + b"\r\n"),  # antivirus: found
        dict(fields=head, body=b"Hi.\r\n", ip="127.0.0.2"),  # listed by the lab's zen.spamhaus.org
        # impersonation: a state body's name on an outside address
        dict(fields=[("From", "Cuc Thue <thue@example.com>"), ("To", "<user@bacninh.gov.vn>"), ("Subject", "Thue")],
             body=b"Hi.\r\n"),
        # outbound from a government mailbox: signed with DKIM
        dict(fields=[("From", "<vanthu@bacninh.gov.vn>"), ("To", "<x@example.org>"), ("Subject", "Cong van")],
             body=b"Kinh gui.\r\n", sender="vanthu@bacninh.gov.vn", rcpts=("x@example.org",), ip="10.1.2.3"),
        # an automatic forward from a government mailbox to the Internet
        dict(fields=[("X-Sieve-Redirected-From", "vanthu@bacninh.gov.vn"), ("From", "<a@example.com>"),
                     ("Message-ID", "<m1@example.com>"), ("Subject", "Chuyen tiep")],
             body=b"Chuyen tiep.\r\n", sender="vanthu@bacninh.gov.vn", rcpts=("x@gmail.com",), ip="10.1.2.3"),
    ]  # fmt: skip
    for tx in transactions:
        drive(RecordingCtx(), **tx)  # type: ignore[arg-type]

    class Failing(CheckHooks):  # our own bug inside a check: counted, answered 451
        name = "failing"
        stages = frozenset({Stage.HEADERS})

        def run(self, stage: Stage, tx: Transaction) -> list[Verdict]:
            raise ZeroDivisionError("a bug")

    runtime.pipeline.__init__([*runtime.pipeline.checks, Failing()], runtime.metrics)  # type: ignore[misc]
    assert drive(RecordingCtx(), head, b"Hi.\r\n") == Milter.TEMPFAIL
    (rules / "extra.toml").write_text('kind = "content"\n')
    assert runtime.rules.reload_if_changed() == "reloaded"
    assert history.flush(30)
    wait_until(lambda: bool(runtime.metrics.registry.get_sample_value("govmilter_history_store_bytes")), 30, "size")
    history.stop()
    moved = _moved(before, runtime.metrics)

    # a start on the last good copy of rules that no longer load
    (rules / "broken.toml").write_text('kind = "content"\n[[rule\n')
    restarted = Runtime(config)
    assert restarted.metrics.registry.get_sample_value("govmilter_rules_fallback") == 1
    moved |= _moved(before, restarted.metrics) & {"rules_fallback"}

    expected = set(wrappers(runtime.metrics)) - set(NOT_DRIVEN_HERE)
    assert expected - moved == set(), "families that no real transaction moved"
    assert set(NOT_DRIVEN_HERE) & moved == set(), "driven here after all: take them off NOT_DRIVEN_HERE"


def test_adapter_places_are_the_adapter_callbacks() -> None:
    adapter = (PACKAGE / "adapter.py").read_text()
    places = set(re.findall(r'@guarded\("(\w+)"\)', adapter)) | set(re.findall(r'_remember_failure\("(\w+)"', adapter))
    assert places and places <= set(ADAPTER_PLACES), places - set(ADAPTER_PLACES)


# --- series that alerts watch exist from the start ------------------------------------------------------


def test_alerted_series_exist_at_zero_before_any_event() -> None:
    metrics = Metrics()
    metrics.declare_checks(["size", "antivirus"])
    text = generate_latest(metrics.registry).decode()
    for outcome in RELOAD_OUTCOMES:
        assert f'govmilter_rule_reloads_total{{outcome="{outcome}"}} 0.0' in text
    for place in ADAPTER_PLACES:
        assert f'govmilter_internal_errors_total{{where="{place}"}} 0.0' in text
    for check in ("size", "antivirus"):
        assert f'govmilter_internal_errors_total{{where="{check}"}} 0.0' in text
        assert f'govmilter_messages_total{{action="tempfail",check="{check}"}} 0.0' in text


def test_runtime_reports_reloads_version_and_failure(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    config = load_config(None, [f'rules.dir="{rules}"', "antivirus.enabled=false", "dnsbl.enabled=false",
                                'rules.last_good_dir=""'])  # never the host's /var/lib/govmilter
    runtime = Runtime(config)
    metrics = runtime.metrics

    def value(name: str, labels: dict[str, str] | None = None) -> float | None:
        return metrics.registry.get_sample_value(name, labels or {})

    first = runtime.rules.current().version
    assert value("govmilter_ruleset_info", {"version": first}) == 1
    assert value("govmilter_rule_reload_successful") == 1
    loaded_at = value("govmilter_ruleset_loaded_timestamp_seconds")
    assert loaded_at and loaded_at > 1.7e9
    for check in runtime.pipeline.checks:  # the per-check series the alerts watch
        assert value("govmilter_messages_total", {"action": "tempfail", "check": check.name}) == 0

    (rules / "broken.toml").write_text('kind = "content"\n[[rule\n')
    assert runtime.rules.reload_if_changed() == "failed"
    assert value("govmilter_rule_reload_successful") == 0
    assert value("govmilter_rule_reloads_total", {"outcome": "failed"}) == 1
    assert value("govmilter_ruleset_info", {"version": first}) == 1  # the previous set still serves
    assert runtime.health()["last_reload"] == "failed"

    (rules / "broken.toml").unlink()
    (rules / "extra.toml").write_text('kind = "content"\n')
    assert runtime.rules.reload_if_changed() == "reloaded"
    second = runtime.rules.current().version
    assert second != first
    assert value("govmilter_rule_reload_successful") == 1
    assert value("govmilter_rule_reloads_total", {"outcome": "reloaded"}) == 1
    assert value("govmilter_ruleset_info", {"version": second}) == 1
    assert value("govmilter_ruleset_info", {"version": first}) is None  # one version series at a time


# --- label values never come from the wire ----------------------------------------------------------------


def _hostile_messages(marker: str) -> list[dict[str, object]]:
    """One of each verdict the service-free checks give, every wire field carrying the marker."""
    headers = (
        f"From: <{marker}@example.com>\r\nTo: <{marker}@bacninh.gov.vn>\r\nSubject: {marker}\r\n"
        f"Message-ID: <{marker}@example.com>\r\nX-Mailer: {marker}\r\n"
    )
    gtube = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
    return [
        {"message": headers + "\r\nXin chao.\r\n", "mail_from": f"{marker}@example.com"},
        {"message": headers + f"\r\n{gtube}\r\n", "mail_from": f"{marker}@example.com"},
        {
            "message": headers + "\r\nXin chao.\r\n",
            "mail_from": f"{marker}@example.com",
            "mail_params": {"SIZE": "900000000"},
        },
        {  # an outbound automatic forward from a government mailbox to the Internet
            "message": f"X-Sieve-Redirected-From: {marker}@bacninh.gov.vn\r\n" + headers + "\r\nChuyen tiep.\r\n",
            "mail_from": f"{marker}@bacninh.gov.vn",
            "rcpts": (f"{marker}@gmail.com",),
            "client_ip": "10.1.2.3",
        },
        {  # a hostile MIME structure: defects are counted by kind
            "message": headers
            + 'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
            + f"Content-Type: text/plain; charset={marker}\r\n\r\n{marker}\r\n",
            "mail_from": f"{marker}@example.com",
        },
    ]


def _series(harness: Harness) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in harness.metrics.registry.collect():
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_label_values_never_carry_wire_data_and_series_do_not_grow() -> None:
    # 10.1.2.3: the mailbox server of the outbound transactions
    harness = Harness(['network.trusted_relays=["127.0.0.1/32", "10.1.2.3/32"]'], skip=["antivirus", "dnsbl"])
    markers: list[str] = []

    def round_of_messages() -> None:
        marker = f"wire{uuid.uuid4().hex[:10]}"
        markers.append(marker)
        for fields in _hostile_messages(marker):
            harness.scan(**fields)  # type: ignore[arg-type]

    round_of_messages()
    series_after_one = set(_series(harness))
    for _ in range(4):
        round_of_messages()
    series = _series(harness)
    assert set(series) == series_after_one, "new series appeared for messages that differ only in wire data"

    actions = {a.value for a in Action}
    checks = {*CHECK_NAMES, "none", "adapter"}
    for (name, labels), _value in series.items():
        for label, value in labels:
            assert not any(m in value for m in markers), f"{name}{{{label}={value!r}}} came from the wire"
            if label == "check":
                assert value in checks, (name, value)
            if label == "action" and name.startswith("govmilter_messages"):
                assert value in actions, (name, value)
            if label == "mode":
                assert value in {m.value for m in Mode}, (name, value)

    # the verdicts above were counted: one of each per round
    rounds = len(markers)
    assert series[("govmilter_messages_total", (("action", "reject"), ("check", "size")))] == rounds
    assert series[("govmilter_messages_total", (("action", "reject"), ("check", "forwarding")))] == rounds
    assert series[("govmilter_messages_total", (("action", "reject"), ("check", "content")))] == rounds
    forwards = [v for (n, _), v in series.items() if n == "govmilter_forwarding_detected_total"]
    assert sum(forwards) == rounds
    assert series[("govmilter_spam_score_count", ())] >= rounds
    assert sum(v for (n, _), v in series.items() if n == "govmilter_mime_defects_total") >= rounds
