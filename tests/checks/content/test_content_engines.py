"""No content rule can stall mail: RE2 for what it can run, a time limit for the rest."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_content import INBOUND, custom, harness, message, rule_file, rules_hit

from govmilter.checks.content.check import ContentRules, compile_rules
from govmilter.ruleset import RuleErrors
from support.harness import RULES

ROOT = Path(__file__).resolve().parents[3]
OFFICER_RULE = """
[[rule]]
id = "officer-aab"
pattern = '''(a+)+b'''
score = 1.0
"""
LINE = "a" * 28  # 2^28 backtracking steps for Python's re: 18 s


def test_the_officer_pattern_costs_milliseconds_per_message(tmp_path: Path) -> None:
    scanner = custom(tmp_path, OFFICER_RULE)
    body = f"Kính gửi các đơn vị\r\n{LINE}\r\n"
    scanner.scan(message("test", body), **INBOUND).close()  # warm
    start = time.perf_counter()
    for _ in range(20):
        result = scanner.scan(message("test", body), **INBOUND)
        assert "officer-aab" not in rules_hit(result)
        result.close()
    assert (time.perf_counter() - start) / 20 < 0.05  # the whole scan; the content check is ~0.1 ms
    result = scanner.scan(message("test", body + "aab\r\n"), **INBOUND)
    assert "officer-aab" in rules_hit(result)
    result.close()


def test_rules_check_flags_nested_repetition_and_refuses_it_on_the_fallback_engine() -> None:
    compiled = compile_rules([rule_file('kind = "content"\n' + OFFICER_RULE)])
    assert isinstance(compiled, ContentRules) and len(compiled.rules) == 1
    assert any("repetition inside a repetition" in w.message for w in compiled.warnings)
    slow = OFFICER_RULE.replace("(a+)+b", "(?<!x)(a+)+b")
    with pytest.raises(RuleErrors, match="repetition inside a repetition"):
        compile_rules([rule_file('kind = "content"\n' + slow)])


def test_rules_check_names_the_fallback_engine_and_its_time_limit(tmp_path: Path) -> None:
    for path in RULES.glob("*.toml"):
        (tmp_path / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "officer.toml").write_text('kind = "content"\n' + OFFICER_RULE.replace("officer-aab", "officer-2")
                                           .replace("(a+)+b", r"khuyến mãi(?! nội bộ)"), encoding="utf-8")  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "govmilter", "rules", "check", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stdout.splitlines() if "officer-2" in x)
    assert "officer.toml:" in line and "negative lookahead" in line and "time limit" in line
    assert "pattern_time_limit_ms" in line


def test_a_rule_past_its_time_limit_is_skipped_counted_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # (a|aa)+ is ambiguous in a way the shape check does not see: the time limit is what holds
    rules = """
[[rule]]
id = "slow-one"
pattern = '''(?!z)(a|aa)+b'''
score = 1.0

[[rule]]
id = "fast-one"
pattern = '''kính gửi'''
score = 2.0
"""
    (tmp_path / "content.toml").write_text('kind = "content"\n' + rules, encoding="utf-8")
    scanner = harness(tmp_path, "content.pattern_time_limit_ms=30")
    start = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="govmilter.content"):
        result = scanner.scan(message("x", f"Kính gửi\r\n{'a' * 60}\r\n"), **INBOUND)
    elapsed = time.perf_counter() - start
    hits = rules_hit(result)
    result.close()
    assert "fast-one" in hits and "slow-one" not in hits
    assert elapsed < 2.0
    assert scanner.metrics.content_rules_skipped.labels(rule="slow-one")._value.get() == 1
    assert any("rule=slow-one skipped" in r.getMessage() for r in caplog.records)
    # the time is per message: the next message gets its own
    result = scanner.scan(message("x", "aab"), **INBOUND)
    assert "slow-one" in rules_hit(result)
    result.close()
