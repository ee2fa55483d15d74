"""`govmilter rules help [KIND]`: the keys printed are the keys the loader accepts (one schema per kind)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from govmilter.__main__ import main
from govmilter.pipeline import rule_compilers, rule_schemas
from govmilter.ruleset import RuleErrors, load_ruleset
from govmilter.ruleset.schema import header_block
from support.harness import RULES

KEY_LINE = re.compile(r"^#  ([a-z0-9_\[\]]+) +\S")


def printed_keys(out: str) -> set[str]:
    return {m.group(1).strip("[]") for line in out.splitlines() if (m := KEY_LINE.match(line))}


@pytest.mark.parametrize("kind", sorted(rule_schemas()))
def test_help_prints_the_keys_the_loader_accepts(kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "help", kind]) == 0
    out = capsys.readouterr().out
    schema = rule_schemas()[kind]
    assert printed_keys(out) == schema.names | {key.name for key in schema.file_keys}
    assert out.startswith(f"# --- keys: printed by `govmilter rules help {kind}`")


def test_keys_stays_an_alias_of_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "help", "content"]) == 0
    printed = capsys.readouterr().out
    assert main(["rules", "keys", "content"]) == 0
    assert capsys.readouterr().out == printed


def test_help_without_kind_prints_every_kind(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "help"]) == 0
    out = capsys.readouterr().out
    for kind in rule_schemas():
        assert f"`govmilter rules help {kind}`" in out


def test_an_unknown_kind_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "help", "contents"]) == 2
    assert "unknown kind 'contents'" in capsys.readouterr().err


def test_every_shipped_header_is_the_print_out(capsys: pytest.CaptureFixture[str]) -> None:
    blocks = {}
    for path in RULES.glob("*.toml"):
        block = header_block(path.read_text(encoding="utf-8"))
        if block:
            blocks[block.split("`govmilter rules help ")[1].split("`")[0]] = block
    assert set(blocks) == set(rule_schemas())
    for kind, block in blocks.items():
        assert main(["rules", "help", kind]) == 0
        assert capsys.readouterr().out.rstrip("\n") == block


def test_a_key_help_does_not_print_is_refused_and_the_error_lists_the_printed_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["rules", "help", "content"]) == 0
    printed = printed_keys(capsys.readouterr().out)
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "c.toml").write_text('kind = "content"\n[[rule]]\nid = "x"\npattern = "a"\nscore = 1\nnosuch = 1\n')
    with pytest.raises(RuleErrors) as caught:
        load_ruleset(rules, rule_compilers())
    message = str(caught.value)
    assert "unknown key 'nosuch'; expected one of " in message
    listed = set(message.split("expected one of ")[1].split("\n")[0].split(", "))
    assert listed == printed
