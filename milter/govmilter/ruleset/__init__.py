"""Rule files -> a compiled, immutable RuleSet, held by a store that reloads it atomically.

store.py loads the `*.toml` files of the rule directory, hands each kind to the
compiler of the check that owns it, collects every problem as `file:line: rule-id:
message`, and swaps the new RuleSet in one reference; schema.py declares the keys
of a kind of rule file (type, default, meaning) and validates every rule id;
entries.py is the entry validation shared by the kinds that are lists of patterns
(dnsbl, content).
"""

from __future__ import annotations

from govmilter.model import RuleSet
from govmilter.ruleset.store import (
    EMPTY,
    Compiler,
    RuleErrors,
    RuleFile,
    RuleProblem,
    RuleStore,
    directory_digest,
    load_ruleset,
    parse_mode,
)

__all__ = [
    "EMPTY",
    "Compiler",
    "RuleErrors",
    "RuleFile",
    "RuleProblem",
    "RuleSet",
    "RuleStore",
    "directory_digest",
    "load_ruleset",
    "parse_mode",
]
