"""Outbound rate limits: the rule files, the buckets (in process and in a real redis-server), the check."""

from __future__ import annotations

import logging
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from govmilter.__main__ import main
from govmilter.checks.ratelimit import admin
from govmilter.checks.ratelimit.buckets import Buckets, Charge, LocalBuckets, RedisBuckets
from govmilter.checks.ratelimit.rules import RatelimitRules, compile_rules
from govmilter.clients.redis import RedisScripts
from govmilter.metrics import Metrics
from govmilter.model import Action, Mode
from govmilter.pipeline import CHECK_NAMES
from govmilter.ruleset import RuleErrors, RuleFile
from stack import free_port
from support.harness import RULES, Harness
from support.redis_fixture import RedisServer, start_redis

ONLY = [name for name in CHECK_NAMES if name not in ("ratelimit", "content")]
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
ACCOUNT = "nguyenvana@bacninh.gov.vn"
EXTERNAL = [f"person{i}@example.com" for i in range(20)]
GOVERNMENT = [f"can.bo{i}@hanoi.gov.vn" for i in range(20)]

LIMITS = """
kind = "ratelimit"

[[limit]]
id = "external-minute"
key = "account"
count = "external-recipients"
rate = 10
period = "minute"

[[limit]]
id = "newsletter"
key = "account"
count = "external-recipients"
rate = 100
period = "minute"
accounts = ["BanTin@bacninh.gov.vn"]
replaces = "external-minute"
"""


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def rules_of(text: str) -> RatelimitRules:
    return compile_rules([RuleFile("ratelimit.toml", text, tomllib.loads(text))])


def problems_of(text: str) -> str:
    with pytest.raises(RuleErrors) as caught:
        rules_of(text)
    return str(caught.value)


def message(subject: str = "Cong van", body: str = "Kinh gui cac don vi.") -> bytes:
    return (
        f"From: <{ACCOUNT}>\r\nTo: <a@example.com>\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '-')}@bacninh.gov.vn>\r\n\r\n{body}\r\n"
    ).encode()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "rules"
    directory.mkdir()
    (directory / "ratelimit.toml").write_text(LIMITS)
    return directory


def node(rules_dir: Path, *overrides: str) -> Harness:
    return Harness(overrides=list(overrides), skip=ONLY, rules_dir=rules_dir)


def send(h: Harness, rcpts: list[str], account: str = ACCOUNT, body: str = "Kinh gui.", auth_user: str = "") -> Action:
    result = h.scan(message(body=body), mail_from=account, rcpts=rcpts, client_ip="127.0.0.1", auth_user=auth_user)
    return result.verdict.action


# --- the rule files -----------------------------------------------------------------------------------


def test_the_shipped_limits_load_and_defer_a_burst_of_external_recipients() -> None:
    rules = rules_of((RULES / "ratelimit.toml").read_text())
    hourly = rules.by_id("account-external-hour")
    assert hourly is not None and (hourly.rate, hourly.period, hourly.count) == (500, "hour", "external-recipients")
    daily = rules.by_id("account-external-day")
    assert daily is not None and daily.rate > hourly.rate and daily.period == "day"


@pytest.mark.parametrize(
    ("entry", "said"),
    [
        ('id = "a"', "missing rate"),
        ('id = "a"\nrate = 0', "rate = 0: expected a number above 0"),
        ('id = "a"\nrate = 5\nkey = "mailbox"', "key = 'mailbox': expected one of account, user, sender, ip, domain"),
        ('id = "a"\nrate = 5\nburst = 0', "burst = 0: expected at least 1"),
        ('id = "a"\nrate = 5\nreplaces = "b"', "replaces needs accounts"),
        ('id = "a"\nrate = 5\naccounts = ["x@y.vn"]\nreplaces = "nope"', "replaces = 'nope': no limit has this id"),
        ('id = "a"\nrate = 5\nhold_after = -1', "hold_after = -1: expected a whole number"),
        ('id = "a"\nrate = 5\nperiod = "week"', "period = 'week': expected one of second, minute, hour, day"),
    ],
)
def test_a_bad_limit_is_named_in_plain_words(entry: str, said: str) -> None:
    assert said in problems_of(f'kind = "ratelimit"\n[[limit]]\n{entry}\n')


def test_an_override_must_count_per_the_same_key() -> None:
    text = LIMITS.replace('accounts = ["BanTin@bacninh.gov.vn"]', 'accounts = ["bacninh.gov.vn"]\nkey = "domain"')
    text = text.replace('id = "newsletter"\nkey = "account"', 'id = "newsletter"')
    assert "that limit counts per account, this one per domain" in problems_of(text)


# --- the buckets of one process ------------------------------------------------------------------------


def charge(rules: RatelimitRules, limit_id: str, cost: float, subject: str = ACCOUNT) -> Charge:
    limit = rules.by_id(limit_id)
    assert limit is not None
    return Charge(limit, subject, cost)


def test_local_bucket_allows_the_burst_then_refills_at_the_rate() -> None:
    clock = Clock()
    rules = rules_of(LIMITS)
    buckets = LocalBuckets(100, 3600, 0, clock=clock)
    assert buckets.charge([charge(rules, "external-minute", 10)]).denied == -1
    denied = buckets.charge([charge(rules, "external-minute", 1)])
    assert denied.denied == 0 and denied.over == 1
    clock.now += 6  # 10 per minute: one back every 6 seconds
    assert buckets.charge([charge(rules, "external-minute", 1)]).denied == -1
    assert buckets.charge([charge(rules, "external-minute", 1)]).denied == 0


def test_all_or_nothing_a_denied_message_takes_no_token() -> None:
    rules = rules_of(LIMITS.replace('accounts = ["BanTin@bacninh.gov.vn"]\nreplaces = "external-minute"\n', ""))
    buckets = LocalBuckets(100, 3600, 0, clock=Clock())
    assert buckets.charge([charge(rules, "external-minute", 8)]).denied == -1
    outcome = buckets.charge([charge(rules, "newsletter", 5), charge(rules, "external-minute", 5)])
    assert outcome.denied == 1
    assert outcome.tokens[0] == 100  # the newsletter bucket was not charged for the deferred message


def test_the_process_buckets_are_bounded_least_recently_used_first() -> None:
    rules = rules_of(LIMITS)
    metrics = Metrics()
    buckets = LocalBuckets(3, 3600, 0, metrics, clock=Clock())
    for i in range(5):
        buckets.charge([charge(rules, "external-minute", 10, subject=f"user{i}@bacninh.gov.vn")])
    assert len(buckets) == 3
    assert metrics.registry.get_sample_value("govmilter_ratelimit_local_evictions_total") == 2
    # user0's bucket was dropped: it starts full again (the stated policy past the bound)
    assert buckets.charge([charge(rules, "external-minute", 10, subject="user0@bacninh.gov.vn")]).denied == -1
    assert buckets.charge([charge(rules, "external-minute", 1, subject="user4@bacninh.gov.vn")]).denied == 0


def test_hold_after_keeps_deferring_until_released() -> None:
    clock = Clock()
    rules = rules_of(
        LIMITS.replace('period = "minute"\n\n[[limit]]', 'period = "minute"\nhold_after = 15\n\n[[limit]]', 1)
    )
    buckets = LocalBuckets(100, 3600, 0, clock=clock)
    buckets.charge([charge(rules, "external-minute", 10)])
    assert buckets.charge([charge(rules, "external-minute", 10)]).newly_held is False
    assert buckets.charge([charge(rules, "external-minute", 10)]).newly_held is True  # 20 deferred >= 15
    clock.now += 3600  # the bucket is full again, the hold stays
    assert buckets.charge([charge(rules, "external-minute", 1)]).held == 0
    assert buckets.release(ACCOUNT) >= 1
    assert buckets.charge([charge(rules, "external-minute", 1)]).held == -1


# --- Redis: one limit for every node -----------------------------------------------------------------


def shared(server_url: str, prefix: str, metrics: Metrics | None = None, retry: float = 10.0) -> Buckets:
    metrics = metrics or Metrics()
    store = RedisBuckets(RedisScripts(server_url, 2.0, prefix), 3600, 0)
    return Buckets(LocalBuckets(100, 3600, 0, metrics), metrics, store, retry)


def test_two_nodes_share_one_bucket_in_redis(redis_server: RedisServer) -> None:
    rules = rules_of(LIMITS)
    node_a, node_b = shared(redis_server.url, "t:share:"), shared(redis_server.url, "t:share:")
    assert node_a.charge([charge(rules, "external-minute", 6)]).shared
    assert node_b.charge([charge(rules, "external-minute", 4)]).denied == -1
    outcome = node_a.charge([charge(rules, "external-minute", 1)])
    assert outcome.shared and outcome.denied == 0 and outcome.over == 1
    assert node_b.charge([charge(rules, "external-minute", 1)]).over == 2  # the mark is shared too


def test_the_shared_bucket_refills(redis_server: RedisServer) -> None:
    rules = rules_of('kind = "ratelimit"\n[[limit]]\nid = "fast"\nrate = 20\nperiod = "second"\nburst = 1\n')
    node_a, node_b = shared(redis_server.url, "t:refill:"), shared(redis_server.url, "t:refill:")
    assert node_a.charge([charge(rules, "fast", 1)]).denied == -1
    time.sleep(0.2)  # 20 per second: at least 4 tokens back, capped at the burst of 1
    assert node_b.charge([charge(rules, "fast", 1)]).denied == -1


def test_a_flushed_script_cache_is_loaded_again(redis_server: RedisServer) -> None:
    rules = rules_of(LIMITS)
    buckets = shared(redis_server.url, "t:noscript:")
    assert buckets.charge([charge(rules, "external-minute", 1)]).shared
    redis.Redis.from_url(redis_server.url).script_flush()
    outcome = buckets.charge([charge(rules, "external-minute", 1)])
    assert outcome.shared and outcome.tokens[0] == pytest.approx(8, abs=0.1)


def test_redis_down_falls_back_per_node_counted_logged_and_resumes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rules = rules_of(LIMITS)
    server = start_redis(tmp_path)
    clock = Clock()
    metrics = Metrics()
    store = RedisBuckets(RedisScripts(server.url, 1.0, "t:outage:"), 3600, 0)
    buckets = Buckets(LocalBuckets(100, 3600, 0, metrics), metrics, store, retry_interval=30, clock=clock)
    assert buckets.charge([charge(rules, "external-minute", 10)]).shared  # the shared bucket is empty now
    server.stop()
    with caplog.at_level(logging.WARNING, "govmilter.ratelimit"):
        first = buckets.charge([charge(rules, "external-minute", 5)])
        second = buckets.charge([charge(rules, "external-minute", 5)])
        third = buckets.charge([charge(rules, "external-minute", 5)])
    # per-node limits: this node's own bucket is full, never blocked by the fault
    assert (first.shared, first.denied, second.denied, third.denied) == (False, -1, -1, 0)
    assert metrics.registry.get_sample_value("govmilter_ratelimit_fallbacks_total", {"op": "charge"}) == 3
    assert len([r for r in caplog.records if "ratelimit redis failed" in r.getMessage()]) == 1  # once per interval
    server = start_redis(tmp_path, port=server.port)  # Redis back, empty (no persistence)
    try:
        clock.now += 31
        back = buckets.charge([charge(rules, "external-minute", 10)])
        assert back.shared and back.denied == -1
        assert buckets.charge([charge(rules, "external-minute", 1)]).denied == 0  # shared limit again
    finally:
        server.stop()


def test_a_redis_that_is_not_there_never_blocks_mail() -> None:
    rules = rules_of(LIMITS)
    metrics = Metrics()
    buckets = shared(f"redis://127.0.0.1:{free_port()}/0", "t:none:", metrics)
    assert buckets.charge([charge(rules, "external-minute", 3)]).denied == -1
    assert buckets.mode == "local (redis paused)"


# --- the check, through the pipeline --------------------------------------------------------------------


def test_an_account_over_its_limit_is_deferred_with_the_limit_named(rules_dir: Path) -> None:
    h = node(rules_dir)
    assert send(h, EXTERNAL[:6]) is Action.ACCEPT
    assert send(h, EXTERNAL[6:10] + GOVERNMENT) is Action.ACCEPT  # government recipients are not counted
    result = h.scan(message(), mail_from=ACCOUNT, rcpts=EXTERNAL[10:11], client_ip="127.0.0.1")
    verdict = result.verdict
    assert (verdict.action, verdict.check, verdict.rule) == (Action.TEMPFAIL, "ratelimit", "external-minute")
    assert verdict.smtp_reply() == (
        "451 4.7.1 Vuot qua gioi han gui thu external-minute: 10 nguoi nhan ngoai co quan nha nuoc moi phut,"
        " thu se duoc gui lai sau (QD 06/2022 Dieu 8.3) - sending limit external-minute reached: 10 recipients"
        " outside government domains per minute, the message will be retried later"
    )
    samples = h.metrics.registry
    assert (
        samples.get_sample_value("govmilter_ratelimit_deferred_total", {"rule": "external-minute", "result": "limit"})
        == 1
    )
    assert samples.get_sample_value("govmilter_ratelimit_over_limit_accounts", {"rule": "external-minute"}) == 1
    assert send(h, GOVERNMENT) is Action.ACCEPT  # mail inside government domains still flows
    assert send(h, EXTERNAL[:10], account="tranthib@bacninh.gov.vn") is Action.ACCEPT  # another account


def test_the_authenticated_user_is_the_account(rules_dir: Path) -> None:
    h = node(rules_dir)
    assert send(h, EXTERNAL[:10], account="alias@bacninh.gov.vn", auth_user="nva") is Action.ACCEPT
    result = h.scan(message(), mail_from="other@bacninh.gov.vn", rcpts=EXTERNAL[:1], client_ip="203.0.113.9",
                    auth_user="NVA")  # fmt: skip
    assert result.verdict.action is Action.TEMPFAIL


def test_inbound_mail_is_not_limited_by_outbound_limits(rules_dir: Path) -> None:
    h = node(rules_dir)
    for _ in range(3):
        result = h.scan(message(), mail_from="x@example.com", rcpts=[f"u{i}@bacninh.gov.vn" for i in range(10)])
        assert result.verdict.action is Action.ACCEPT


def test_a_per_account_override_replaces_the_general_limit(rules_dir: Path) -> None:
    h = node(rules_dir)
    for batch in range(5):
        assert send(h, EXTERNAL, account="bantin@BACNINH.gov.vn") is Action.ACCEPT, batch
    assert send(h, EXTERNAL, account="bantin@bacninh.gov.vn") is Action.TEMPFAIL  # 100 used


def test_more_recipients_than_the_burst_is_refused_for_good(rules_dir: Path) -> None:
    h = node(rules_dir)
    result = h.scan(message(), mail_from=ACCOUNT, rcpts=EXTERNAL[:11], client_ip="127.0.0.1")
    assert result.verdict.smtp_reply().startswith("550 5.5.3 Thu co qua nhieu nguoi nhan cho gioi han external-minute")
    assert send(h, EXTERNAL[:10]) is Action.ACCEPT  # nothing was taken


def test_monitor_mode_records_and_never_defers(rules_dir: Path) -> None:
    (rules_dir / "ratelimit.toml").write_text(
        LIMITS.replace('period = "minute"\n', 'period = "minute"\nmode = "monitor"\n', 1)
    )
    h = node(rules_dir)
    assert send(h, EXTERNAL[:10]) is Action.ACCEPT
    result = h.scan(message(), mail_from=ACCOUNT, rcpts=EXTERNAL[:3], client_ip="127.0.0.1")
    assert result.verdict.action is Action.ACCEPT
    assert [(v.rule, v.mode) for v in result.tx.hits if v.check == "ratelimit"] == [("external-minute", Mode.MONITOR)]


def test_a_message_refused_by_an_earlier_check_takes_no_token(rules_dir: Path) -> None:
    (rules_dir / "attachments.toml").write_text((RULES / "attachments.toml").read_text())
    h = Harness(skip=[n for n in ONLY if n != "attachments"], rules_dir=rules_dir)
    exe = (
        f"From: <{ACCOUNT}>\r\nSubject: x\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        "--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=run.exe\r\n\r\n"
        "MZ\x90\x00\r\n--b--\r\n"
    ).encode()
    refused = h.scan(exe, mail_from=ACCOUNT, rcpts=EXTERNAL[:10], client_ip="127.0.0.1")
    assert refused.verdict.check == "attachments" and refused.verdict.action is Action.REJECT
    assert send(h, EXTERNAL[:10]) is Action.ACCEPT  # the whole burst is still there


# --- outbound spam --------------------------------------------------------------------------------------


def test_outbound_spam_has_its_own_threshold(rules_dir: Path) -> None:
    h = node(rules_dir, "content.outbound_tag_threshold=5.0", "content.outbound_reject_threshold=2000.0")
    outbound = h.scan(message(body=GTUBE), mail_from=ACCOUNT, rcpts=GOVERNMENT[:1], client_ip="127.0.0.1")
    assert outbound.verdict.action is Action.ACCEPT
    assert ("X-Spam-Flag", "YES") in outbound.verdict.headers
    inbound = h.scan(message(body=GTUBE), mail_from="x@example.com", rcpts=["u@bacninh.gov.vn"])
    assert inbound.verdict.action is Action.REJECT


def test_tagged_outbound_spam_counts_spam_factor_times(rules_dir: Path) -> None:
    h = node(rules_dir, "content.outbound_reject_threshold=2000.0", "ratelimit.spam_factor=5.0")
    assert send(h, EXTERNAL[:2], body=GTUBE) is Action.ACCEPT  # 2 recipients x 5 = the whole burst
    assert send(h, EXTERNAL[:1]) is Action.TEMPFAIL
    assert h.metrics.registry.get_sample_value("govmilter_ratelimit_spam_charged_total") == 1


def test_refused_outbound_spam_still_counts_against_the_account(rules_dir: Path) -> None:
    h = node(rules_dir, "ratelimit.spam_factor=10.0")
    refused = h.scan(message(body=GTUBE), mail_from=ACCOUNT, rcpts=EXTERNAL[:1], client_ip="127.0.0.1")
    assert (refused.verdict.check, refused.verdict.rule) == ("content", "spam-score")
    assert send(h, EXTERNAL[:1]) is Action.TEMPFAIL  # the spam used up the account's 10


# --- govmilter ratelimit status | release -----------------------------------------------------------------


def test_status_and_release_through_the_command_line(
    rules_dir: Path, redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    (rules_dir / "ratelimit.toml").write_text(
        LIMITS.replace('period = "minute"\n', 'period = "minute"\nhold_after = 5\n', 1)
    )
    sets = [f'ratelimit.redis_url="{redis_server.url}"', 'ratelimit.redis_prefix="t:cli:"', f'rules.dir="{rules_dir}"']
    h = node(rules_dir, *sets)
    assert send(h, EXTERNAL[:10]) is Action.ACCEPT
    assert send(h, EXTERNAL[:5]) is Action.TEMPFAIL  # 5 deferred while over: held
    args = [a for s in sets for a in ("--set", s)]
    assert main(["ratelimit", "status", *args]) == 0
    out = capsys.readouterr().out
    assert f"external-minute              {ACCOUNT}" in out and f"account  {ACCOUNT}" in out
    assert main(["ratelimit", "status", *args, ACCOUNT.upper()]) == 0
    assert "HELD" in capsys.readouterr().out
    other = node(rules_dir, *sets)  # another node: held there too
    assert send(other, EXTERNAL[:1]) is Action.TEMPFAIL
    assert main(["ratelimit", "release", *args, ACCOUNT]) == 0
    assert "2 hold(s) and over-limit mark(s) removed" in capsys.readouterr().out
    store = RedisScripts(redis_server.url, 2.0, "t:cli:")
    states = admin.status(store, rules_of(LIMITS), ACCOUNT)
    assert not any(s.held or s.over_for > 0 for s in states)


def test_status_without_redis_says_it_cannot_read_the_daemons(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ratelimit", "status", "--set", f'rules.dir="{RULES}"']) == 1
    assert "cannot read" in capsys.readouterr().out


def test_a_scan_from_the_command_line_never_takes_shared_tokens(
    tmp_path: Path, rules_dir: Path, redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    eml = tmp_path / "m.eml"
    eml.write_bytes(message())
    sets = [f'ratelimit.redis_url="{redis_server.url}"', 'ratelimit.redis_prefix="t:scan:"', f'rules.dir="{rules_dir}"']
    args = [a for s in sets for a in ("--set", s)]
    rcpts = [a for r in EXTERNAL[:5] for a in ("--rcpt", r)]
    assert main(["scan", *args, "--skip", "antivirus", "--mail-from", ACCOUNT, *rcpts, str(eml)]) == 0
    capsys.readouterr()
    assert RedisScripts(redis_server.url, 2.0, "t:scan:").keys("*") == []


def test_health_says_which_buckets_answer(rules_dir: Path) -> None:
    h = node(rules_dir, f'ratelimit.redis_url="redis://127.0.0.1:{free_port()}/0"')
    (check,) = [c for c in h.pipeline.checks if c.name == "ratelimit"]
    assert check.health() == {"ok": True, "buckets": "redis", "local_buckets": 0}
    assert send(h, EXTERNAL[:3]) is Action.ACCEPT  # Redis is not there: this node's bucket
    assert check.health() == {"ok": True, "buckets": "local (redis paused)", "local_buckets": 1}


def test_scan_shows_the_outbound_thresholds_for_outbound_mail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    eml = tmp_path / "m.eml"
    eml.write_bytes(message())
    common = ["--set", f'rules.dir="{RULES}"', "--set", "content.outbound_reject_threshold=8.0", "--skip", "antivirus"]
    common += ["--skip", "dnsbl", "--skip", "auth", "--mail-from", ACCOUNT, "--rcpt", "a@example.com"]
    assert main(["scan", *common, "--client-ip", "127.0.0.1", str(eml)]) == 0
    assert "(tag at 5, reject at 8)" in capsys.readouterr().out
    assert main(["scan", *common, "--client-ip", "203.0.113.9", str(eml)]) == 0
    assert "(tag at 5, reject at 10)" in capsys.readouterr().out
