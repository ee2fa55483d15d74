"""Configuration: strict loading, errors that name the file, table and key, overrides."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import tomllib
import typing
from pathlib import Path

import pytest

from govmilter.config import Config, ConfigError, load_config
from support.harness import ROOT

EXAMPLE = ROOT / "config.example.toml"


def test_example_config_loads_with_the_documented_values() -> None:
    config = load_config(EXAMPLE)
    assert config.domains.local == ("bacninh.gov.vn",)
    assert config.domains.government == ("gov.vn",)
    assert config.network.trusted_relays == ("127.0.0.1/32",)  # exactly the mailbox servers, no range
    assert config.milter.socket == "unix:/var/spool/postfix/govmilter/govmilter.sock"
    assert config.metrics.listen == "127.0.0.1:9101"
    assert config.size.attachment_limit == 20 * 1024 * 1024


def test_example_config_matches_the_built_in_defaults() -> None:
    example = load_config(EXAMPLE)
    defaults = load_config(None)
    for table in ("milter", "domains", "network", "rules", "forwarding", "size", "antivirus", "dnsbl", "content"):
        assert getattr(example, table) == getattr(defaults, table), table


def test_example_config_documents_every_key() -> None:
    documented = tomllib.loads(EXAMPLE.read_text())
    for table in dataclasses.fields(Config):
        if table.name == "source":
            continue
        keys = {f.name for f in dataclasses.fields(typing.get_type_hints(Config)[table.name])}
        missing = keys - set(documented.get(table.name, {}))
        assert not missing, f"config.example.toml [{table.name}] lacks {sorted(missing)}"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "govmilter.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[milter]\nsockt = 'unix:/x'\n", "[milter] unknown key 'sockt'"),
        ("[miltr]\nsocket = 'unix:/x'\n", "unknown table [miltr]"),
        ("[size]\nattachment_limit = '20M'\n", "[size] attachment_limit: expected an integer"),
        ("[antivirus]\nstrategy = 'random'\n", "[antivirus] strategy = 'random': expected one of"),
        ("[network]\ntrusted_relays = ['10.0.0.0/33']\n", "[network] trusted_relays"),
        ("[milter]\nsocket = '/tmp/x.sock'\n", "[milter] socket"),
        ("[content]\ntag_threshold = 9.0\nreject_threshold = 5.0\n", "[content] reject_threshold"),
        ("[domains\n", "not valid TOML"),
    ],
)
def test_errors_name_file_table_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(path) in str(error.value)
    assert expected in str(error.value)


def test_overrides_set_one_value_with_toml_or_bare_values() -> None:
    config = load_config(None, ["size.attachment_limit=1024", "rules.dir=/srv/rules", 'domains.local=["a.gov.vn"]'])
    assert config.size.attachment_limit == 1024
    assert config.rules.dir == "/srv/rules"
    assert config.domains.local == ("a.gov.vn",)


def test_override_with_unknown_key_is_an_error() -> None:
    with pytest.raises(ConfigError, match="unknown key 'attachment_limt'"):
        load_config(None, ["size.attachment_limt=1"])


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "govmilter", *args], capture_output=True, text=True, cwd=ROOT)


def test_config_check_names_the_typo_and_exits_2(tmp_path: Path) -> None:
    path = write(tmp_path, "[dnsbl]\nresolvr = '127.0.0.1'\n")
    result = run_cli("config", "check", "--config", str(path))
    assert result.returncode == 2
    assert "[dnsbl] unknown key 'resolvr'" in result.stderr


def test_config_check_prints_a_summary_and_exits_0() -> None:
    result = run_cli("config", "check", "--config", str(EXAMPLE), "--set", "size.attachment_limit=5000")
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout
    assert "5000 bytes" in result.stdout


# --- reply texts ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("antivirus.reply_text_virus='virus {sigature}'", r"\[antivirus\] reply_text_virus: unknown placeholder"),
        ("size.reply_text_attachment_cap='{limit:x} bytes'", r"\[size\] reply_text_attachment_cap: .*plain"),
        ("dnsbl.reply_text='{zone!r}'", r"\[dnsbl\] reply_text: .*plain"),
        ("content.reply_text_spam='{score.__class__}'", r"\[content\] reply_text_spam: .*plain"),
        ("attachments.reply_text='unclosed {name'", r"\[attachments\] reply_text:"),
        ('forwarding.reply_text="two\\nlines"', r"\[forwarding\] reply_text: a reply text is one line"),
        ("forwarding.reply_text_inbound=''", r"\[forwarding\] reply_text_inbound: a reply text is one line"),
        ("antivirus.reply_text_virus='virus {signature} 100%'", r"printable ASCII without '%'"),
        ("size.reply_text_parse_error='Thư quá lớn'", r"\[size\] reply_text_parse_error: .*printable ASCII"),
        ("content.reply_text_unreadable='{rule}'", r"unknown placeholder \{rule\} \(this text may use: none\)"),
    ],
)
def test_a_reply_text_with_a_name_its_check_does_not_fill_in_is_a_configuration_error(
    item: str, expected: str
) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config(None, [item])


def test_every_reply_text_default_fills_in_only_its_own_names() -> None:
    from govmilter.config import _TEMPLATES, template_names

    config = Config()
    for (table, key), allowed in _TEMPLATES.items():
        text = getattr(getattr(config, table), key)
        assert template_names(text) <= allowed, (table, key)
    keys = {
        (table.name, key.name)
        for table in dataclasses.fields(Config)
        if table.name != "source"
        for key in dataclasses.fields(typing.get_type_hints(Config)[table.name])
        if key.name.startswith("reply_text")
    }
    assert keys == set(_TEMPLATES), "every reply_text* key is checked as a template, and only those"


def test_a_configured_reply_text_is_the_one_the_check_answers_with() -> None:
    from govmilter.checks.antivirus.check import found
    from govmilter.checks.size import build as build_size
    from govmilter.metrics import Metrics

    config = load_config(None, ["size.reply_text_attachment_cap='Qua {found} > {limit} {{x}}'"])
    check = build_size(config, Metrics())
    assert check.replies.reply_text_attachment_cap == "Qua {found} > {limit} {{x}}"
    from govmilter.checks.size import over_cap

    assert over_cap(check.replies, 10, 11).text == "Qua 11 > 10 {x}"
    assert found("Eicar-Signature", "virus {signature}!").text == "virus Eicar-Signature!"
