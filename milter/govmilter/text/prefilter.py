"""Literal prefilters for regular expressions, so most texts skip the regex engine.

A rule's pattern is parsed once at load; from the parse tree we derive a set of
literal strings such that every match of the pattern contains at least one of
them (the idea of RE2's prefilter). A text containing none of them cannot
match, and a substring test is far cheaper than Python's backtracking search,
which is what made content rules the slowest step on every message. When no
sound set can be derived, there is no prefilter and the regex always runs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from re import _constants as sre_constants  # type: ignore[attr-defined]  # re's own parser (3.11+)
from re import _parser as sre_parse  # type: ignore[attr-defined]
from typing import Any

MIN_LITERAL = 3  # shorter literals filter too little to be worth keeping
MAX_ALTERNATIVES = 64
# Characters of mail text, most common first (a rough background frequency). A literal's two
# rarest characters are looked for before the literal: a one-character search runs at memchr
# speed and stops at the first hit, and a text lacking either cannot contain the literal. The
# same idea as the rare-byte prefilter of Rust's regex crate.
COMMON = " etaoinshrdlcumwfgypbvkjxqz"


def fold(text: str) -> str:
    """Case folding at least as wide as re.IGNORECASE's (which also equates dotless i and I)."""
    return text.casefold().replace("\u0307", "").replace("\u0131", "i")


def rarest_two(literal: str) -> tuple[str, str]:
    """The literal's two rarest characters (the same one twice when it has only one)."""
    ranked = sorted(set(literal), key=lambda char: (-COMMON.find(char) if char in COMMON else -len(COMMON), char))
    return ranked[0], ranked[min(1, len(ranked) - 1)]


@dataclass(frozen=True)
class Prefilter:
    literals: tuple[str, ...]  # a match contains at least one of these
    folded: bool  # compare against fold(text): the pattern ignores case somewhere
    # each literal with its two rarest characters, derived from `literals`
    probes: tuple[tuple[str, str, str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "probes", tuple((literal, *rarest_two(literal)) for literal in self.literals))

    def may_match(self, text: str, folded: str) -> bool:
        haystack = folded if self.folded else text
        for literal, rarest, rare in self.probes:
            if rarest in haystack and rare in haystack and literal in haystack:
                return True
        return False


def build(regex: re.Pattern[str]) -> Prefilter | None:
    """The prefilter of a compiled pattern, or None when no sound one exists."""
    try:
        tree = sre_parse.parse(regex.pattern, regex.flags)
    except Exception:  # a pattern re accepted but the parser API does not: no prefilter
        return None
    folded = bool(regex.flags & re.IGNORECASE) or _has_local_ignorecase(tree)
    found = _required(list(tree), folded)
    if not found or len(found) > MAX_ALTERNATIVES or any(len(s) < MIN_LITERAL for s in found):
        return None
    return Prefilter(tuple(sorted(found)), folded)


def _has_local_ignorecase(items: Iterable[Any]) -> bool:
    for op, av in items:
        if op is sre_constants.SUBPATTERN:
            add_flags = av[1]
            if add_flags & re.IGNORECASE or _has_local_ignorecase(av[3]):
                return True
        elif op is sre_constants.BRANCH:
            if any(_has_local_ignorecase(branch) for branch in av[1]):
                return True
        elif op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT) or op is getattr(
            sre_constants, "POSSESSIVE_REPEAT", None
        ):
            if _has_local_ignorecase(av[2]):
                return True
        elif op in (sre_constants.ASSERT, sre_constants.ASSERT_NOT):
            if _has_local_ignorecase(av[1]):
                return True
        elif op is getattr(sre_constants, "ATOMIC_GROUP", None):
            if _has_local_ignorecase(av):
                return True
    return False


def _required(items: list[Any], lowercase: bool) -> set[str] | None:
    """Literal alternatives one of which every match of this sequence contains, or None."""
    best: set[str] | None = None
    run: list[str] = []

    def consider(candidate: set[str] | None) -> None:
        nonlocal best
        if candidate and (best is None or _strength(candidate) > _strength(best)):
            best = candidate

    for op, av in items:
        if op is sre_constants.LITERAL:
            char = chr(av)
            run.append(fold(char) if lowercase else char)
            continue
        if run:
            consider({"".join(run)})
            run = []
        if op is sre_constants.SUBPATTERN:
            consider(_required(list(av[3]), lowercase))
        elif op is sre_constants.BRANCH:
            alternatives: set[str] = set()
            for branch in av[1]:
                found = _required(list(branch), lowercase)
                if not found:
                    alternatives = set()
                    break
                alternatives |= found
            consider(alternatives or None)
        elif op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT) or op is getattr(
            sre_constants, "POSSESSIVE_REPEAT", None
        ):
            low, _high, item = av
            if low >= 1:
                consider(_required(list(item), lowercase))
        elif op is getattr(sre_constants, "ATOMIC_GROUP", None):
            consider(_required(list(av), lowercase))
        # anything else (classes, anchors, assertions, references) requires no literal
    if run:
        consider({"".join(run)})
    return best


def _strength(alternatives: set[str]) -> int:
    """Prefer sets whose shortest literal is longest: they filter best."""
    return min(len(s) for s in alternatives)
