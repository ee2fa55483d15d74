"""The declared keys of each kind of rule file: name, type, default and meaning, once.

Each check that owns a kind of rule file declares its `Schema` beside its compiler.
The compiler takes the accepted key names from it (an unknown key is reported), every
rule id is validated by `id_problem` here, `govmilter rules help KIND` prints the
schema, and the key block at the top of the kind's rule file in rules/ is the
printed schema (tests/test_docs.py keeps the block, and the key table of
docs/officers.md, equal to it).
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass

# ids become metric labels, header text and SMTP reply text: short and plain ASCII
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

REQUIRED = "required"  # the default of a key that must be given

BLOCK_START = "# --- keys: printed by `govmilter rules help {kind}` from the code; do not edit here ---"
BLOCK_END = "# --- end of keys ---"


def id_problem(value: object) -> str:
    """"" for a valid rule id; otherwise the problem, the same words for every kind of rule file."""
    if isinstance(value, str) and ID_RE.match(value):
        return ""
    if value is None:
        return "id: missing; each entry needs its own id = \"...\" (letters, digits, '.', '_' or '-', at most 64)"
    return f"id = {value!r}: expected letters, digits, '.', '_' or '-' (at most 64)"


@dataclass(frozen=True)
class Key:
    name: str
    type: str  # how it is written: "text", "number", "true or false", "list of text", "a | b | c"...
    default: str  # as written in the file, or REQUIRED
    meaning: str  # for the officer; may run over several lines

    def describe(self) -> list[str]:
        """The key as lines of the rule-file header (without the leading '#')."""
        head = f"{self.type}, {self.default}" if self.default == REQUIRED else f"{self.type}, default {self.default}"
        indent = " " * 21
        lines = textwrap.wrap(f"  {self.name:<18} {head}", 99, subsequent_indent=indent + "  ")
        for paragraph in self.meaning.split("\n"):
            lines += textwrap.wrap(paragraph, 99, initial_indent=indent, subsequent_indent=indent) or [""]
        return lines


@dataclass(frozen=True)
class Schema:
    kind: str
    table: str  # the [[table]] of the entries ("rule", "zone", "allow")
    keys: tuple[Key, ...]  # the keys of one entry
    file_keys: tuple[Key, ...] = ()  # keys at the top level of the file, beside `kind` and the table

    @property
    def names(self) -> frozenset[str]:
        """The keys an entry may have."""
        return frozenset(key.name for key in self.keys)

    @property
    def file_names(self) -> frozenset[str]:
        """The keys the file itself may have: kind, the entries' table and the file keys."""
        return frozenset({"kind", self.table, *(key.name for key in self.file_keys)})

    def header(self) -> str:
        """The key block of the rule file's header comment."""
        lines = [BLOCK_START.format(kind=self.kind)]
        if self.file_keys:
            lines.append("# At the top level of the file (at most one file sets each):")
            for key in self.file_keys:
                lines += ["#" + line for line in key.describe()]
        lines.append(f"# Each [[{self.table}]]:")
        for key in self.keys:
            lines += ["#" + line for line in key.describe()]
        lines.append(BLOCK_END)
        return "\n".join(line.rstrip() for line in lines)


def header_block(text: str) -> str | None:
    """The key block of a rule file's text, or None when it has none."""
    start = text.find("# --- keys: ")
    if start < 0:
        return None
    end = text.find(BLOCK_END, start)
    return text[start : end + len(BLOCK_END)] if end >= 0 else text[start:]
