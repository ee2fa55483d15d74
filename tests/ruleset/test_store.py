"""The last good rule set: kept on disk at every load, served at a start whose rule files are broken.

Real files all the way: a rule directory, a state directory, the daemon's Runtime, a message judged
by the rules that serve.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from govmilter.config import load_config
from govmilter.pipeline import rule_compilers
from govmilter.ruleset import RuleErrors, RuleStore
from govmilter.runtime import Runtime
from support.harness import RULES, Harness

# a content rule only the old (good) rule set has: a message with this subject is refused by it
MARKER_RULE = """
[[rule]]
id = "last-good-marker"
target = "header"
header = "Subject"
pattern = "lastgoodmarker"
score = 100
"""
BROKEN = 'pattern = "lastgood(marker"'


def rule_dir(tmp_path: Path) -> Path:
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules, ignore=shutil.ignore_patterns("tests"))
    spam = rules / "content-spam.toml"
    spam.write_text(spam.read_text(encoding="utf-8") + MARKER_RULE, encoding="utf-8")
    return rules


def break_rules(rules: Path) -> None:
    spam = rules / "content-spam.toml"
    spam.write_text(spam.read_text(encoding="utf-8").replace('pattern = "lastgoodmarker"', BROKEN), encoding="utf-8")


def content_ids(store: RuleStore) -> set[str]:
    return {rule.id for rule in store.current().get("content").rules}


def runtime(rules: Path, last_good: Path) -> Runtime:
    config = load_config(
        None,
        [f'rules.dir="{rules}"', f'rules.last_good_dir="{last_good}"', 'metrics.listen=""', "network.gateway_host=[]"],
    )
    return Runtime(config, skip=["antivirus", "dnsbl"])


def test_every_load_keeps_a_copy_and_a_broken_start_serves_it_until_fixed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rules = rule_dir(tmp_path)
    last_good = tmp_path / "state" / "last-good-rules"
    last_good.parent.mkdir()

    first = runtime(rules, last_good)  # a good start writes the copy
    good_version = first.rules.current().version
    assert (last_good / "current").resolve() == last_good / good_version
    kept = {p.name: p.read_bytes() for p in (last_good / "current").glob("*.toml")}
    assert kept == {p.name: p.read_bytes() for p in rules.glob("*.toml")}
    assert first.health()["last_reload"] == "initial" and "rules" not in first.health()

    break_rules(rules)
    with caplog.at_level(logging.ERROR, logger="govmilter.rules"):
        restarted = runtime(rules, last_good)  # the restart that used to refuse to start
    store = restarted.rules
    assert store.current().version == good_version and "last-good-marker" in content_ids(store)
    errors = store.fallback
    assert isinstance(errors, RuleErrors)
    line = next(n for n, t in enumerate((rules / "content-spam.toml").read_text().splitlines(), 1) if BROKEN in t)
    problem = f"{rules / 'content-spam.toml'}:{line}: last-good-marker: pattern is not a valid regular expression"
    assert problem in str(errors)
    logged = [r.getMessage() for r in caplog.records if "start=fallback" in r.getMessage()]
    assert len(logged) == 1 and problem in logged[0] and str(last_good / good_version) in logged[0]
    # loudly: metric, /health degraded with the errors
    metrics = restarted.metrics.registry
    assert metrics.get_sample_value("govmilter_rules_fallback") == 1
    assert metrics.get_sample_value("govmilter_rule_reload_successful") == 0
    health = restarted.health()
    assert health["ok"] is False and health["last_reload"] == "fallback"
    assert health["rules"]["ok"] is False and health["rules"]["serving"] == str(last_good / good_version)
    assert any(problem in e for e in health["rules"]["errors"])
    json.dumps(health)  # what /health serves

    # a message is judged by the old rules: the marker rule refuses it
    harness = Harness(rules_dir=last_good / "current", skip=["antivirus", "dnsbl"])
    assert harness.ruleset.version == good_version
    result = harness.scan(b"From: <a@example.com>\r\nSubject: lastgoodmarker\r\n\r\nhello\r\n")
    assert "last-good-marker" in str(result.as_json())

    # the broken directory is not copied, and the watcher keeps reading the real one
    assert store.reload_if_changed() == "unchanged"
    assert (last_good / "current").resolve().name == good_version
    spam = rules / "content-spam.toml"
    spam.write_text(spam.read_text().replace(BROKEN, 'pattern = "lastgoodfixed"'), encoding="utf-8")
    assert store.reload_if_changed() == "reloaded"  # the first fixed save takes over
    assert store.fallback is None and store.current().version != good_version
    assert metrics.get_sample_value("govmilter_rules_fallback") == 0
    assert metrics.get_sample_value("govmilter_rule_reload_successful") == 1
    assert restarted.health().get("rules") is None and restarted.health()["last_reload"] == "reloaded"
    # ... and becomes the new last good copy, the old one removed
    assert (last_good / "current").resolve().name == store.current().version
    assert sorted(p.name for p in last_good.iterdir()) == sorted(["current", store.current().version])


def test_a_broken_start_without_a_copy_fails_naming_every_error(tmp_path: Path) -> None:
    rules = rule_dir(tmp_path)
    break_rules(rules)
    (rules / "odd.toml").write_text('kind = "nothing"\n')
    with pytest.raises(RuleErrors) as failed:
        RuleStore(rules, rule_compilers(), last_good=tmp_path / "missing-parent" / "last-good")
    text = str(failed.value)
    assert "pattern is not a valid regular expression" in text and "odd.toml:1: kind" in text
    assert "cannot start: no last good copy in" in text
    with pytest.raises(RuleErrors, match="last_good_dir is off"):
        RuleStore(rules, rule_compilers(), last_good="")


def test_a_copy_that_cannot_be_written_leaves_the_rules_serving(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rules = rule_dir(tmp_path)
    with caplog.at_level(logging.WARNING, logger="govmilter.rules"):
        store = RuleStore(rules, rule_compilers(), last_good=tmp_path / "no-such-parent" / "last-good")
    assert store.fallback is None and "last-good-marker" in content_ids(store)
    assert any("cannot keep the last good copy" in r.getMessage() for r in caplog.records)
    assert not (tmp_path / "no-such-parent").exists()  # nothing created above the state directory


def test_a_broken_kept_copy_is_reported_with_the_directory_errors(tmp_path: Path) -> None:
    rules = rule_dir(tmp_path)
    last_good = tmp_path / "last-good"
    RuleStore(rules, rule_compilers(), last_good=last_good)
    kept = (last_good / "current").resolve()
    (kept / "content-spam.toml").write_text('kind = "content"\n[[rule]]\nid = "x"\npattern = "("\nscore = 1\n')
    break_rules(rules)
    with pytest.raises(RuleErrors, match="the last good copy does not load either"):
        RuleStore(rules, rule_compilers(), last_good=last_good)
