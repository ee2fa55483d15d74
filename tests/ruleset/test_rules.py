"""Rule files as an officer meets them: line numbers, `rules check`, and reload while running."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import pytest

from govmilter.__main__ import main
from govmilter.checks.content.check import ContentRules
from govmilter.pipeline import rule_compilers
from govmilter.ruleset import RuleErrors, RuleFile, RuleSet, RuleStore, load_ruleset
from support.harness import RULES

CONTENT = """kind = "content"

# a comment with [[rule]] in it is not a table
[[rule]]
id = "first"
pattern = "alpha"
score = 1

[[ rule ]]
id = "second"
description = "the table header may have spaces"

pattern = "beta"
score = 2
"""

NEW_RULE = """
[[rule]]
id = "added-live"
target = "header"
header = "Subject"
pattern = "gamma"
score = 3
"""


def rule_file(text: str) -> RuleFile:
    return RuleFile("rules/x.toml", text, tomllib.loads(text))


def test_lines_of_entries_and_keys() -> None:
    rf = rule_file(CONTENT)
    assert rf.entry_line("rule", 0) == 4
    assert rf.entry_line("rule", 1) == 9
    assert rf.entry_line("rule", 1, "pattern") == 13
    assert rf.entry_line("rule", 0, "pattern") == 6  # not the second entry's
    assert rf.entry_line("rule", 1, "mode") == 9  # absent key: the entry itself
    assert rf.entry_line("rule", 5) == 1
    assert rf.key_line("kind") == 1
    assert rf.line_of("second") == 10


def test_the_shipped_rule_directory_is_valid() -> None:
    ruleset = load_ruleset(RULES, rule_compilers())
    assert {"dnsbl", "content"} <= set(ruleset.compiled)
    assert len(ruleset.version) == 12


def copy_rules(tmp_path: Path) -> Path:
    target = tmp_path / "rules"
    shutil.copytree(RULES, target)
    return target


def test_rules_check_names_every_broken_rule(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = copy_rules(tmp_path)
    spam = rules / "content-spam.toml"
    spam.write_text(spam.read_text(encoding="utf-8").replace("(?:viagra|", "(?:viagra|(", 1), encoding="utf-8")
    dnsbl = rules / "dnsbl.toml"
    dnsbl.write_text(dnsbl.read_text().replace('type = "rhsbl"', 'type = "rbl"', 1))
    assert main(["rules", "check", str(rules)]) == 1
    err = capsys.readouterr().err
    pattern_line = next(n for n, line in enumerate(spam.read_text().splitlines(), 1) if "viagra" in line)
    type_line = next(n for n, line in enumerate(dnsbl.read_text().splitlines(), 1) if 'type = "rbl"' in line)
    assert f"{spam}:{pattern_line}: pharma: pattern is not a valid regular expression" in err
    assert f"{dnsbl}:{type_line}: spamhaus-dbl-sender: type = 'rbl': expected one of ip, rhsbl, uribl" in err


def test_rules_check_accepts_the_shipped_rules(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "check", str(RULES)]) == 0
    assert ": OK, version " in capsys.readouterr().out


class Reloads:
    def __init__(self) -> None:
        self.seen: list[tuple[str, RuleSet | None, RuleErrors | None]] = []

    def __call__(self, outcome: str, ruleset: RuleSet | None, errors: RuleErrors | None) -> None:
        self.seen.append((outcome, ruleset, errors))


def content_ids(store: RuleStore) -> list[str]:
    rules = store.current().get("content")
    assert isinstance(rules, ContentRules)
    return [rule.id for rule in rules.rules]


def test_an_added_rule_is_reloaded_and_a_broken_one_keeps_the_old_set(tmp_path: Path) -> None:
    rules = copy_rules(tmp_path)
    reloads = Reloads()
    store = RuleStore(rules, rule_compilers(), on_reload=reloads)
    original = store.current()
    assert store.reload_if_changed() == "unchanged"

    spam = rules / "content-spam.toml"
    spam.write_text(spam.read_text(encoding="utf-8") + NEW_RULE, encoding="utf-8")
    assert store.reload_if_changed() == "reloaded"
    assert "added-live" in content_ids(store)
    assert store.current().version != original.version
    working = store.current()

    spam.write_text(spam.read_text(encoding="utf-8").replace('pattern = "gamma"', 'pattern = "gam(ma"'))
    assert store.reload_if_changed() == "failed"
    assert store.current() is working  # the old rules stay active
    outcome, _, errors = reloads.seen[-1]
    assert outcome == "failed" and errors is not None
    line = next(n for n, text in enumerate(spam.read_text().splitlines(), 1) if "gam(ma" in text)
    assert f"{spam}:{line}: added-live: pattern is not a valid regular expression" in str(errors)
    assert store.reload_if_changed() == "unchanged"  # the same broken content is not retried

    spam.write_text(spam.read_text(encoding="utf-8").replace('pattern = "gam(ma"', 'pattern = "gamma"'))
    assert store.reload_if_changed() == "reloaded"
    assert store.current().version == working.version  # the version is the content's hash
    assert [o for o, _, _ in reloads.seen] == ["reloaded", "failed", "reloaded"]


def test_a_kind_that_is_not_a_string_is_an_error_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "odd.toml").write_text('kind = ["content"]\n')
    with pytest.raises(RuleErrors, match=r"odd.toml:1: kind = \['content'\]: expected one of"):
        load_ruleset(tmp_path, rule_compilers())
