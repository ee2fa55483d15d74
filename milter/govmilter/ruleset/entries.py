"""Reading `[[table]]` entries of rule files strictly, every problem with file:line: rule-id.

The dnsbl and content compilers share this: an unknown key, a wrong type, a
missing or repeated id is reported at the line where it stands, and reading
goes on so that `govmilter rules check` lists every problem at once.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from govmilter.model import Mode
from govmilter.ruleset import RuleFile, RuleProblem
from govmilter.ruleset.schema import ID_RE, Schema, id_problem

__all__ = ["ID_RE", "REPLY_RE", "Entry", "entries"]
# SMTP reply text: printable ASCII, and never '%' (libmilter would drop the reply)
REPLY_RE = re.compile(r"^[\x20-\x24\x26-\x7e]{1,400}$")


@dataclass
class Entry:
    """One `[[table]]` entry of one file, and the problem list its reading adds to."""

    file: RuleFile
    table: str
    index: int
    data: dict[str, Any]
    id: str
    problems: list[RuleProblem]

    def problem(self, message: str, key: str = "") -> None:
        self.problems.append(self.file.entry_problem(self.table, self.index, self.id, message, key))

    def text(self, key: str, default: str = "", *, required: bool = False) -> str:
        value = self.data.get(key)
        if value is None:
            if required:
                self.problem(f"missing {key}")
            return default
        if not isinstance(value, str) or (required and not value.strip()):
            self.problem(f"{key} = {value!r}: expected a non-empty string", key)
            return default
        return value

    def number(self, key: str, default: float) -> float:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.problem(f"{key} = {value!r}: expected a number", key)
            return default
        return float(value)

    def flag(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            self.problem(f"{key} = {value!r}: expected true or false", key)
            return default
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        value = self.data.get(key, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problem(f"{key} = {value!r}: expected a string or a list of strings", key)
            return ()
        return tuple(value)

    def choice(self, key: str, choices: Sequence[str], default: str) -> str:
        value = self.data.get(key, default)
        if value not in choices:
            self.problem(f"{key} = {value!r}: expected one of {', '.join(choices)}", key)
            return default
        return str(value)

    def mode(self) -> Mode:
        return Mode(self.choice("mode", ("enforce", "monitor"), "enforce"))

    def reply(self, key: str = "reply") -> str:
        value = self.text(key)
        if value and not REPLY_RE.match(value):
            self.problem(f"{key}: SMTP reply text must be printable ASCII without '%', at most 400 characters", key)
            return ""
        return value


def entries(files: Sequence[RuleFile], schema: Schema, problems: list[RuleProblem]) -> Iterator[Entry]:
    """Every `[[table]]` entry of every file, after checking file keys, ids and entry keys."""
    table, allowed = schema.table, schema.names
    seen: dict[str, str] = {}
    for rule_file in files:
        for key in rule_file.data:
            if key not in schema.file_names:
                message = f"unknown key {key!r} (expected kind and [[{table}]])"
                problems.append(RuleProblem(rule_file.path, rule_file.key_line(key), "", message))
        items = rule_file.data.get(table, [])
        if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
            message = f"{table} must be [[{table}]] tables"
            problems.append(RuleProblem(rule_file.path, rule_file.key_line(table), "", message))
            continue
        for index, item in enumerate(items):
            raw_id = item.get("id")
            rule_id = raw_id if isinstance(raw_id, str) else ""
            entry = Entry(rule_file, table, index, item, rule_id, problems)
            problem = id_problem(raw_id)
            if problem:
                entry.problem(problem, "id")
                continue
            if raw_id in seen:
                entry.problem(f"duplicate id (first defined in {seen[raw_id]})", "id")
                continue
            seen[raw_id] = f"{rule_file.path}:{rule_file.entry_line(table, index, 'id')}"
            for key in item:
                if key not in allowed:
                    entry.problem(f"unknown key {key!r}; expected one of {', '.join(sorted(allowed))}", key)
            yield entry
