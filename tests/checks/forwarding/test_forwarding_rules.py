"""The forwarding rule file: what compiles, what is refused with file:line, how the allow-list matches."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from govmilter.checks.forwarding.rules import DEFAULT_SCORES, ForwardingRules, Pattern, compile_rules
from govmilter.model import Mode
from govmilter.pipeline import rule_compilers
from govmilter.ruleset import RuleErrors, RuleFile, load_ruleset
from support.harness import RULES


def rule_file(text: str, path: str = "rules/forwarding.toml") -> RuleFile:
    return RuleFile(path, text, tomllib.loads(text))


def test_the_shipped_file_compiles() -> None:
    text = (RULES / "forwarding.toml").read_text(encoding="utf-8")
    rules = compile_rules([rule_file(text)])
    assert rules.mode is Mode.ENFORCE
    assert rules.score_threshold == 5.0
    assert dict(rules.scores) == dict(DEFAULT_SCORES)
    assert rules.allow == ()


def test_no_file_means_enforce_with_defaults() -> None:
    assert compile_rules([]) == ForwardingRules()


def test_monitor_scores_and_allow_entries() -> None:
    rules = compile_rules(
        [
            rule_file(
                """
kind = "forwarding"
mode = "monitor"
score_threshold = 4
[scores]
arc = 0
received-for = 2.5
[[allow]]
id = "app-1"
description = "x"
senders = ["noreply@dichvucong.gov.vn"]
recipients = ["Partner.Example.COM."]
"""
            ),
            rule_file('kind = "forwarding"\n[[allow]]\nid = "app-2"\nforwarders = ["fwd@hanoi.gov.vn"]\n', "b.toml"),
        ]
    )
    assert rules.mode is Mode.MONITOR and rules.score_threshold == 4.0
    assert rules.scores["arc"] == 0.0 and rules.scores["received-for"] == 2.5 and rules.scores["resent"] == 1.0
    assert [entry.id for entry in rules.allow] == ["app-1", "app-2"]
    app1 = rules.allow[0]
    assert app1.matches(["noreply@dichvucong.gov.vn"], ["x@mail.partner.example.com"], "")
    assert not app1.matches(["other@dichvucong.gov.vn"], ["x@partner.example.com"], "")
    assert not app1.matches(["noreply@dichvucong.gov.vn"], ["x@partner.example.com", "y@gmail.com"], "")
    assert rules.allowed([], ["z@gmail.com"], "FWD@Hanoi.gov.vn") is rules.allow[1]
    assert rules.allowed([], ["z@gmail.com"], "other@hanoi.gov.vn") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('kind = "forwarding"\nmode = "block"\n', "mode = 'block'"),
        ('kind = "forwarding"\nscore_threshold = -1\n', "score_threshold"),
        ('kind = "forwarding"\nscore_threshold = "5"\n', "score_threshold"),
        ('kind = "forwarding"\n[scores]\nspf = 1.0\n', "unknown evidence 'spf'"),
        ('kind = "forwarding"\n[scores]\narc = -2\n', "arc = -2"),
        ('kind = "forwarding"\nthreshold = 5\n', "unknown key 'threshold'"),
        ('kind = "forwarding"\n[[allow]]\ndescription = "no id"\nsenders = ["a@b.c"]\n', "id: missing"),
        ('kind = "forwarding"\n[[allow]]\nid = "has space"\nsenders = ["a@b.c"]\n', "id = 'has space'"),
        ('kind = "forwarding"\n[[allow]]\nid = "empty"\n', "needs senders, recipients or forwarders"),
        ('kind = "forwarding"\n[[allow]]\nid = "bad"\nsenders = "a@b.c"\n', "senders must be a list"),
        ('kind = "forwarding"\n[[allow]]\nid = "bad"\nrecipients = ["gov..vn"]\n', "neither an address"),
        ('kind = "forwarding"\n[[allow]]\nid = "bad"\nsenders = ["user@"]\n', "not an address"),
        ('kind = "forwarding"\n[[allow]]\nid = "bad"\nsender = ["a@b.c"]\n', "unknown key 'sender'"),
        ('kind = "forwarding"\nallow = 3\n', "array of tables"),
    ],
)
def test_mistakes_are_refused(text: str, message: str) -> None:
    with pytest.raises(RuleErrors) as caught:
        compile_rules([rule_file(text)])
    assert message in str(caught.value)


def test_duplicates_across_files_are_refused() -> None:
    first = rule_file('kind = "forwarding"\nmode = "monitor"\n[[allow]]\nid = "x"\nsenders = ["a@b.c"]\n', "a.toml")
    second = rule_file('kind = "forwarding"\nmode = "enforce"\n[[allow]]\nid = "x"\nsenders = ["d@e.f"]\n', "b.toml")
    with pytest.raises(RuleErrors) as caught:
        compile_rules([first, second])
    text = str(caught.value)
    assert "mode is already set in a.toml" in text
    assert "b.toml:4: x: duplicate allow id" in text


def test_errors_name_file_and_line_through_the_loader(tmp_path: Path) -> None:
    (tmp_path / "forwarding.toml").write_text(
        'kind = "forwarding"\n\n[[allow]]\nid = "ok"\nsenders = ["a@b.c"]\n\n'
        '[[allow]]\nid = "broken"\nrecipients = []\n'
    )
    with pytest.raises(RuleErrors) as caught:
        load_ruleset(tmp_path, rule_compilers())
    assert f"{tmp_path / 'forwarding.toml'}:8: broken: an allow entry needs" in str(caught.value)


def test_patterns() -> None:
    assert Pattern.parse("gov.vn").matches("a@so.hanoi.gov.vn")
    assert not Pattern.parse("gov.vn").matches("a@evilgov.vn")
    assert Pattern.parse("@example.com").matches("x@example.com")
    assert Pattern.parse("bắcgiang.gov.vn").matches("a@xn--bcgiang-hq4c.gov.vn")
    assert Pattern.parse("App@Example.com").matches("app+tag@example.com.")
    assert not Pattern.parse("app@example.com").matches("app@sub.example.com")
    assert not Pattern.parse("example.com").matches("")
