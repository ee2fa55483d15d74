"""TOML mistakes in rule files come out in plain words, at their file and line, with a hint."""

from __future__ import annotations

from pathlib import Path

import pytest

from govmilter.pipeline import rule_compilers
from govmilter.ruleset import RuleErrors, load_ruleset


def problems_of(tmp_path: Path, text: str, name: str = "content.toml") -> str:
    (tmp_path / name).write_text(text, encoding="utf-8")
    with pytest.raises(RuleErrors) as caught:
        load_ruleset(tmp_path, rule_compilers())
    return str(caught.value)


RULE = '[[rule]]\nid = "x"\nscore = 1.0\n'


def test_an_unescaped_backslash_says_double_it_or_use_triple_quotes(tmp_path: Path) -> None:
    text = 'kind = "content"\n\n' + RULE + 'pattern = "\\d+ triệu"\n'
    message = problems_of(tmp_path, text)
    assert f"{tmp_path / 'content.toml'}:6:" in message
    assert "a backslash in a \"...\" string must be doubled" in message
    assert "'''" in message and 'pattern = "\\d+ triệu"' in message  # the hint and the line itself


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ('pattern = "khuyến mãi', "not closed on the line"),
        ("pattern = khuyến mãi", "text goes in quotes"),
        ("score 2.0", "a key without a value"),
        ("điểm = 2.0", "no accents"),
        ('target = ["body", "header"', "list [ ... ] is not closed"),
        ('id = "y"', "a key is given twice"),
    ],
)
def test_each_syntax_mistake_has_its_plain_sentence(tmp_path: Path, line: str, words: str) -> None:
    text = 'kind = "content"\n\n' + RULE + line + "\n"
    message = problems_of(tmp_path, text)
    assert "not valid TOML" in message and words in message, message
    assert ":6:" in message or ":7:" in message, message  # the line of the mistake, not line 1


def test_a_file_without_kind_is_told_what_to_write(tmp_path: Path) -> None:
    message = problems_of(tmp_path, RULE + 'pattern = "x"\n', "mine.toml")
    assert "mine.toml:1: the file has no kind" in message
    assert 'kind = "attachments"' in message and '"content"' in message
    assert "None" not in message


def test_an_unknown_kind_names_the_choices(tmp_path: Path) -> None:
    message = problems_of(tmp_path, 'kind = "contents"\n')
    assert 'kind = "contents" is not a kind of rule file: expected one of' in message and '"content"' in message
