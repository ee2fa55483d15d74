"""The documentation stays true to the code.

- docs/metrics.md has one table row per metric of govmilter/metrics.py, with its type and
  labels, and no row for a metric that does not exist;
- docs/operating.md has one row per configuration key (config.py's dataclasses and
  config.example.toml), under the heading of its table, with the default the code uses;
- each kind of rule file has its key block, printed from the code's schema, at the top of one
  file of rules/ (and that block only), the key table of docs/officers.md names the schema's
  keys, and every compiler accepts exactly the keys of its schema;
- every relative link of README.md and docs/*.md reaches an existing file and heading, and
  every repository path written in backticks exists;
- no file of the repository points to notes outside it: a clone stands alone.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.metrics import MetricWrapperBase

from govmilter.config import Config
from govmilter.metrics import Metrics
from govmilter.pipeline import rule_compilers, rule_schemas
from govmilter.ruleset import RuleErrors, RuleFile
from govmilter.ruleset.schema import header_block, id_problem

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]

# Configuration keys that docs/operating.md may leave out, each with its reason. Empty today:
# every key is documented.
UNDOCUMENTED_KEYS: dict[tuple[str, str], str] = {}

# Paths in backticks that name a file the reader creates, not one of the repository.
EXAMPLE_PATHS = {
    "rules/content-local.toml": "officers.md: the new rule file of the worked example",
}


# --- reading Markdown -----------------------------------------------------------------------------


def prose_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) outside fenced code blocks and indented code."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced and not line.startswith("    "):
            yield number, line


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    found: set[str] = set()
    for _, line in prose_lines(page.read_text()):
        match = re.match(r"^#{1,6} (.+?)\s*#*$", line)
        if match:
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def without_code_spans(line: str) -> str:
    return re.sub(r"`[^`]*`", "", line)


# --- (a) metrics -------------------------------------------------------------------------------


def exported() -> dict[str, tuple[str, set[str]]]:
    """name as exposed -> (type, labels), for every metric govmilter defines."""
    result: dict[str, tuple[str, set[str]]] = {}
    for value in vars(Metrics()).values():
        if isinstance(value, MetricWrapperBase):
            # prometheus_client keeps a counter's name without _total and has no public getter
            name = str(value._name) + ("_total" if value._type == "counter" else "")
            result[name] = (str(value._type), {str(label) for label in value._labelnames})
    return result


def test_metrics_page_lists_every_metric_with_its_type_and_labels() -> None:
    text = (DOCS / "metrics.md").read_text()
    rows: dict[str, tuple[str, set[str]]] = {}
    for match in re.finditer(r"^\| `(govmilter_\w+)` \| (\w+) \|([^|]*)\|", text, re.M):
        assert match.group(1) not in rows, f"docs/metrics.md: two rows for {match.group(1)}"
        rows[match.group(1)] = (match.group(2), set(re.findall(r"`(\w+)`", match.group(3))))
    metrics = exported()
    assert metrics, "no metric found in govmilter.metrics"
    for name, row in metrics.items():
        assert name in rows, f"docs/metrics.md has no table row for {name}"
        assert rows[name] == row, f"docs/metrics.md row of {name}: {rows[name]}, the code has {row}"
    assert set(rows) <= set(metrics), f"docs/metrics.md documents metrics that do not exist: {set(rows) - set(metrics)}"
    # a metric named anywhere in the docs exists (the tables of other pages and the queries too)
    for page in PAGES:
        for name in set(re.findall(r"\bgovmilter_[a-z_]+[a-z]", page.read_text())):
            base = re.sub(r"_(bucket|count|sum)$", "", name)
            assert base in metrics, f"{page.name} names {name}, which govmilter does not export"


# --- (b) configuration keys ----------------------------------------------------------------------


def documented_keys() -> dict[tuple[str, str], str]:
    """(table, key) -> the default cell of its row in docs/operating.md."""
    rows: dict[tuple[str, str], str] = {}
    table = None
    for _, line in prose_lines((DOCS / "operating.md").read_text()):
        if line.startswith("#"):
            heading = re.match(r"^#{2,4} `\[(\w+)\]`\s*$", line)
            table = heading.group(1) if heading else None
            continue
        row = re.match(r"^\| `(\w+)` \| ([^|]*?) \|", line)
        if table and row:
            assert (table, row.group(1)) not in rows, f"docs/operating.md: [{table}] {row.group(1)} twice"
            rows[(table, row.group(1))] = row.group(2)
    return rows


def code_defaults() -> dict[tuple[str, str], Any]:
    defaults: dict[tuple[str, str], Any] = {}
    config = Config()
    for table in dataclasses.fields(Config):
        if table.name == "source":
            continue
        section = getattr(config, table.name)
        for key in dataclasses.fields(section):
            value = getattr(section, key.name)
            defaults[(table.name, key.name)] = list(value) if isinstance(value, tuple) else value
    return defaults


def example_keys() -> dict[tuple[str, str], Any]:
    data = tomllib.loads((ROOT / "config.example.toml").read_text())
    return {(table, key): value for table, keys in data.items() for key, value in keys.items()}


def test_operating_page_documents_every_configuration_key() -> None:
    documented = documented_keys()
    code = code_defaults()
    example = example_keys()
    assert documented and code and example
    for key in sorted(set(code) | set(example)):
        if key in UNDOCUMENTED_KEYS:
            continue
        assert key in documented, f"docs/operating.md has no row for [{key[0]}] {key[1]}"
    for key in sorted(documented):
        assert key in code, f"docs/operating.md documents [{key[0]}] {key[1]}, which config.py does not have"
    for key in sorted(UNDOCUMENTED_KEYS):
        assert key in code, f"the exception for [{key[0]}] {key[1]} names a key that does not exist"
        assert key not in documented, f"[{key[0]}] {key[1]} is documented: drop its exception"


def test_documented_and_example_defaults_are_the_code_defaults() -> None:
    code = code_defaults()
    for key, cell in documented_keys().items():
        literal = re.match(r"^`([^`]*)`", cell.strip())
        if literal is None:  # a default too long for the table, written out where it is explained
            continue
        value = tomllib.loads(f"v = {literal.group(1)}")["v"]
        where = f"docs/operating.md: [{key[0]}] {key[1]}"
        assert value == code[key], f"{where} default {value!r}, the code has {code[key]!r}"
    for key, value in example_keys().items():
        assert key in code, f"config.example.toml: [{key[0]}] {key[1]} is not a key of config.py"
        assert value == code[key], f"config.example.toml: [{key[0]}] {key[1]} = {value!r}, the default is {code[key]!r}"


# --- (b2) rule keys --------------------------------------------------------------------------------


def rule_files_by_kind() -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for path in sorted((ROOT / "rules").glob("*.toml")):
        found.setdefault(tomllib.loads(path.read_text())["kind"], []).append(path)
    return found


def test_each_kind_of_rule_file_carries_the_key_block_of_its_schema_once() -> None:
    schemas = rule_schemas()
    by_kind = rule_files_by_kind()
    assert set(schemas) == set(by_kind) == {"forwarding", "attachments", "dnsbl", "auth", "content", "ratelimit",
                                                 "impersonation"}
    for kind, schema in schemas.items():
        blocks = {path: header_block(path.read_text()) for path in by_kind[kind]}
        holders = [path for path, block in blocks.items() if block is not None]
        assert len(holders) == 1, f"kind {kind}: the key block is in {holders}, expected in exactly one file"
        assert blocks[holders[0]] == schema.header(), (
            f"{holders[0].relative_to(ROOT)}: the key block is not the schema's; replace it with the output"
            f" of `govmilter rules help {kind}`:\n{schema.header()}"
        )
        header = holders[0].read_text().split("\nkind = ")[0]
        assert header.count("# --- keys: ") == 1, f"{holders[0]}: one key block, at the top"
        for other in by_kind[kind]:
            if other not in holders:  # the other files of the kind point to the one that describes
                assert holders[0].name in other.read_text(), f"{other.name} does not name {holders[0].name}"


def test_officers_key_table_names_the_keys_of_each_schema() -> None:
    schemas = rule_schemas()
    rows: dict[str, set[str]] = {}
    for _, line in prose_lines((DOCS / "officers.md").read_text()):
        row = re.match(r"^\| `(\w+)` \| `(rules/[\w.-]+)` \| (.*) \|$", line)
        if row and row.group(1) in schemas:
            holder = ROOT / row.group(2)
            assert header_block(holder.read_text()) is not None, f"officers.md: {row.group(2)} has no key block"
            rows[row.group(1)] = {name.strip("[]") for name in re.findall(r"`([^`]+)`", row.group(3))}
    assert set(rows) == set(schemas), "docs/officers.md: one row per kind of rule file"
    for kind, schema in schemas.items():
        declared = schema.names | (schema.file_names - {"kind"})
        assert rows[kind] == declared, f"docs/officers.md, kind {kind}: {sorted(rows[kind] ^ declared)}"


@pytest.mark.parametrize(
    "kind", ["forwarding", "attachments", "dnsbl", "auth", "content", "ratelimit", "impersonation"]
)
def test_each_compiler_accepts_exactly_the_keys_of_its_schema(kind: str) -> None:
    """An entry and a file with every declared key draw no "unknown key"; one more key does."""
    schema = rule_schemas()[kind]
    compile_rules = rule_compilers()[kind]

    def unknown_keys(file_data: dict[str, Any], entry: dict[str, Any]) -> list[str]:
        data = {"kind": kind, **file_data, schema.table: [{"id": "x", **entry}]}
        try:
            compile_rules([RuleFile(f"rules/{kind}.toml", "", data)])
        except RuleErrors as exc:
            return [p.message for p in exc.problems if "unknown key" in p.message]
        return []

    every_file_key = {key.name: None for key in schema.file_keys}
    every_entry_key = {key.name: None for key in schema.keys if key.name != "id"}
    assert unknown_keys(every_file_key, every_entry_key) == []
    assert any("'not_a_key'" in m for m in unknown_keys({}, {"not_a_key": 1}))
    assert any("'not_a_key'" in m for m in unknown_keys({"not_a_key": 1}, {}))


@pytest.mark.parametrize("kind", ["forwarding", "attachments", "dnsbl", "content", "ratelimit", "impersonation"])
@pytest.mark.parametrize("bad", ["", "bad id", "é", "a" * 65, "-x", 7])
def test_every_kind_refuses_a_bad_rule_id_with_the_same_words(kind: str, bad: object) -> None:
    schema = rule_schemas()[kind]
    data = {"kind": kind, schema.table: [{"id": bad}]}
    with pytest.raises(RuleErrors) as error:
        rule_compilers()[kind]([RuleFile(f"rules/{kind}.toml", "", data)])
    assert any(id_problem(bad) in p.message for p in error.value.problems), error.value.problems


# --- (c) links and paths -----------------------------------------------------------------------------


def test_pages_exist() -> None:
    names = {page.name for page in PAGES}
    assert {"README.md", "operating.md", "officers.md", "metrics.md", "design.md", "performance.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_reach_a_file_and_a_heading(page: Path) -> None:
    for number, line in prose_lines(page.read_text()):
        for target in re.findall(r"\[[^\]]*\]\(([^)\s]+)\)", without_code_spans(line)):
            if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            where = (page.parent / path).resolve() if path else page
            assert where.exists(), f"{page.name}:{number}: link to {target}: no such file"
            assert where.is_relative_to(ROOT), f"{page.name}:{number}: link to {target} leaves the repository"
            if anchor:
                assert where.suffix == ".md", f"{page.name}:{number}: anchor into a file that is not Markdown"
                assert anchor in anchors(where), f"{page.name}:{number}: link to {target}: no such heading"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_repository_paths_in_backticks_exist(page: Path) -> None:
    text = page.read_text()
    prefixes = "milter|tests|lab|bench|rules|monitoring|systemd|docs|packaging"
    for number, line in enumerate(text.splitlines(), 1):
        for path in re.findall(rf"`((?:{prefixes})/[^`\s]*)`", line):
            path = path.rstrip(".,:;")
            if "*" in path or path in EXAMPLE_PATHS:
                continue
            assert (ROOT / path).exists(), f"{page.name}:{number}: `{path}` does not exist"


FILE_SUFFIXES = frozenset({"service", "toml", "sock", "conf", "deb", "log", "eml", "md", "yml"})


def test_module_paths_in_backticks_exist() -> None:
    """`govmilter.x.y` names a module, or an attribute of one, that exists."""
    package = ROOT / "milter"
    for page in PAGES:
        for dotted in set(re.findall(r"`(govmilter(?:\.\w+)+)`", page.read_text())):
            if dotted.rsplit(".", 1)[1] in FILE_SUFFIXES:  # a file name (`govmilter.service`), not a module
                continue
            parts = dotted.split(".")
            prefixes = [package.joinpath(*parts[:n]) for n in range(len(parts), 1, -1)]
            found = any(p.with_suffix(".py").exists() or (p / "__init__.py").exists() for p in prefixes)
            assert found, f"{page.name}: `{dotted}` names no module"


# --- (d) a clone stands alone -----------------------------------------------------------------


SKIP_DIRS = {".git", ".venv", ".stack", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", "build"}
# written split so that this file does not match itself
OUTSIDE = ("../" + "shared", "/work/" + "shared", "LAB" + ".md", "ARCHITECTURE" + ".md", "FORWARDING" + ".md")


def project_files() -> Iterator[Path]:
    for directory, subdirs, files in os.walk(ROOT):
        subdirs[:] = [d for d in subdirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        for name in files:
            yield Path(directory) / name


def test_no_file_points_outside_the_repository() -> None:
    offenders = []
    for path in project_files():
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for needle in OUTSIDE:
            if needle in text:
                offenders.append(f"{path.relative_to(ROOT)}: {needle}")
    assert not offenders, offenders
