"""Officers' regular expressions on an engine that cannot stall mail.

A rule pattern is written in Python's syntax (the syntax of the rule files since the
start) and parsed by Python's own parser; the parse tree is then written out again in
RE2's syntax and run by RE2 (google-re2), whose time is linear in the text whatever
the pattern: `(a+)+b` costs the same microseconds as `ab`. Python's meaning is kept
where the two engines differ: `\\w`, `\\d`, `\\s` and `\\b` are Unicode (RE2's are
ASCII), `$` also matches before a final line break, `.` never matches a line break
unless the pattern says `(?s)`, and letter case is folded for Vietnamese letters too.

A pattern that needs what RE2 lacks (a lookahead or lookbehind, a backreference, an
atomic group, a `\\b` next to something that may be a letter or not) runs on the
`regex` package instead, with a time limit per message: when the limit is spent the
rule is skipped for that message (counted and logged by the content check: a score
rule is left out, a reject rule refuses the message unchecked). `rules check` names
the engine of each such pattern and why, and refuses nested repetition such as `(a+)+` there, the shape that backtracks
catastrophically.

Nothing here runs Python's `re` on mail: the compiled `re.Pattern` is kept only for
the literal prefilter (text/prefilter.py), which reads its parse tree.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from re import _constants as C  # type: ignore[attr-defined]  # re's own parser (3.11+)
from re import _parser as P  # type: ignore[attr-defined]
from typing import TYPE_CHECKING, Any

import re2  # type: ignore[import-untyped]

from govmilter.lazy import lazy_module

if TYPE_CHECKING:
    import regex  # type: ignore[import-untyped]
else:  # the fallback engine: loaded when a pattern needs it (no shipped rule does)
    regex = lazy_module("regex")

__all__ = ["FALLBACK", "LINEAR", "Pattern", "PatternError", "PatternTimeout", "compile_pattern"]

LINEAR = "re2"  # the linear-time engine
FALLBACK = "regex"  # the backtracking engine with a time limit
RE2_MAX_REPEAT = 1000  # RE2 refuses counted repetition above this
RE2_MAX_MEM = 32 << 20  # bytes of compiled program and DFA cache per pattern

# Python's Unicode classes written as RE2 classes (without the brackets). \p{L}\p{N} and \p{Nd}
# say what \w and \d mean, but in RE2's Unicode version, which may be newer than the running
# Python's: a letter Python does not know yet is \W to it, so \W, \D and \b (a sender's separator)
# would match less on RE2. Those letters are added back wherever a class leaves out \w or \d (newer).
WORD = r"\p{L}\p{N}_"  # str.isalnum() or "_": what \w means for a str pattern
DIGIT = r"\p{Nd}"  # str.isdecimal()
SPACE = r"\t-\r\x{1c}-\x{20}\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}"
ASCII_WORD, ASCII_DIGIT, ASCII_SPACE = r"0-9A-Za-z_", r"0-9", r"\t-\r "
_CATEGORIES = {
    C.CATEGORY_WORD: (WORD, ASCII_WORD, False),
    C.CATEGORY_NOT_WORD: (WORD, ASCII_WORD, True),
    C.CATEGORY_DIGIT: (DIGIT, ASCII_DIGIT, False),
    C.CATEGORY_NOT_DIGIT: (DIGIT, ASCII_DIGIT, True),
    C.CATEGORY_SPACE: (SPACE, ASCII_SPACE, False),
    C.CATEGORY_NOT_SPACE: (SPACE, ASCII_SPACE, True),
}
# re.IGNORECASE equates i, I, dotless ı and dotted İ (re/_casefix.py); RE2's case folding does not
# fold ı or İ, so "vıagra" would pass a rule "viagra" that Python's re caught
DOTTED_I = "Iiı\u0130"
# the one character that is not \w but whose case partner is (U+0345 folds to ι): under (?i) RE2's
# \W leaves it out, Python's holds it
FOLDS_TO_WORD = "(?-i:\\x{345})"
_REPEATS = (C.MAX_REPEAT, C.MIN_REPEAT, getattr(C, "POSSESSIVE_REPEAT", None))
_RANGE_SCAN = 4096  # a class range longer than this is not classified character by character
_BLOCK = 0x4000  # code points classified at a time by newer()


@functools.cache
def newer(name: str) -> str:
    """The characters RE2 puts in WORD or DIGIT (its Unicode tables) that the running Python's \\w or
    \\d leave out (letters and digits of a Unicode version newer than Python's), as RE2 class ranges.
    Python's \\W is RE2's plus these: a sender's separator must not fall between the two versions."""
    # in blocks of code points, the ones Python's class takes out first: the whole range at once
    # (a string of every code point, then RE2's list of matches) took ~95 MB of RSS at start-up
    python = re.compile(r"\w" if name == WORD else r"\d")
    ours = re2.compile(f"[{name}]")
    codes: list[int] = []
    for start in (*range(0, 0xD800, _BLOCK), *range(0xE000, 0x110000, _BLOCK)):
        block = "".join(map(chr, range(start, min(start + _BLOCK, 0xD800 if start < 0xD800 else 0x110000))))
        left = python.sub("", block)
        codes += (ord(bytes(m).decode()) for m in ours.findall(left.encode()))
    ranges: list[tuple[int, int]] = []
    for code in codes:
        if ranges and code == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], code)
        else:
            ranges.append((code, code))
    return "".join(_char(low) + (f"-{_char(high)}" if high > low else "") for low, high in ranges)


class PatternError(ValueError):
    """The pattern cannot be used; str() says why in plain words."""


class PatternTimeout(Exception):
    """A fallback pattern spent its time limit on this text."""


class _Unsupported(Exception):
    """RE2 cannot express this pattern with Python's meaning; the message names the feature."""


@dataclass(frozen=True)
class Pattern:
    """A compiled rule pattern: `search` returns the matched text or None."""

    source: str
    python: re.Pattern[str]  # for the prefilter and validation only: never run on mail
    engine: str  # LINEAR or FALLBACK
    why: str  # for FALLBACK: the feature RE2 lacks, in plain words
    translated: str  # the RE2 pattern ("" for FALLBACK)
    _re2: Any
    _regex: Any
    # the RE2 groups that hold a character a \b rewrite took in at the start (end) of the match: what
    # Python's match leaves out, cut off again so that "what matched" is Python's span
    lead: tuple[int, ...] = ()
    trail: tuple[int, ...] = ()

    @property
    def linear(self) -> bool:
        return self.engine == LINEAR

    def search(self, text: str, encoded: bytes | None = None, timeout: float = 0.1) -> str | None:
        """The first match's text, or None. `encoded` is text as UTF-8 (surrogatepass), when the
        caller has it, to save encoding it again for each rule. A FALLBACK pattern raises
        PatternTimeout when the search takes longer than `timeout` seconds."""
        if self._re2 is not None:
            data = encoded if encoded is not None else encode(text)
            match = self._re2.search(data)
            if match is None:
                return None
            start, end = match.span()
            for group in self.lead:
                if match.start(group) >= 0:  # the branch that took a character in took part
                    start = max(start, match.end(group))
            for group in self.trail:
                if match.start(group) >= 0:
                    end = min(end, match.start(group))
            return bytes(data[start:end]).decode("utf-8", "surrogatepass")
        try:
            found = self._regex.search(text, timeout=max(timeout, 0.0))
        except TimeoutError as exc:
            raise PatternTimeout(str(exc)) from exc
        return None if found is None else str(found.group(0))


def encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def compile_pattern(source: str, *, ignore_case: bool) -> Pattern:
    """Compile a rule pattern (Python syntax); PatternError in plain words when it cannot be used."""
    flags = re.IGNORECASE if ignore_case else 0
    try:
        python = re.compile(source, flags)
        tree = P.parse(source, flags)
    except re.error as exc:
        raise PatternError(f"not a valid regular expression: {exc}") from exc
    except RecursionError as exc:
        raise PatternError("not a usable regular expression: nested too deeply") from exc
    writer = _Writer(tree.state.flags)
    try:
        translated = writer.pattern(tree)
        options = re2.Options()
        options.max_mem = RE2_MAX_MEM
        options.log_errors = False
        compiled = re2.compile(translated, options)
    except _Unsupported as exc:
        why = str(exc)
    except re2.error as exc:  # too large for RE2's memory bound, or a construct it refuses
        why = f"a construct the linear-time engine refuses ({exc})"
    else:
        return Pattern(source, python, LINEAR, "", translated, compiled, None, tuple(writer.lead), tuple(writer.trail))
    try:
        fallback = regex.compile(source, (regex.IGNORECASE if ignore_case else 0) | regex.VERSION0)
    except regex.error as exc:
        raise PatternError(f"not a valid regular expression for the fallback engine: {exc}") from exc
    return Pattern(source, python, FALLBACK, why, "", None, fallback)


def nested_repeat(source: str, *, ignore_case: bool = False) -> str:
    """The first ambiguous nested repetition such as `(a+)+` or `(\\w+\\s?)*`, or "".

    The shape that backtracks catastrophically: a repetition whose body can itself be nothing but
    repetitions, so that one run of characters can be split between the iterations in exponentially
    many ways. `(?:[\\w-]+\\.)*` is not one: each iteration ends at its dot.
    """
    try:
        tree = P.parse(source, re.IGNORECASE if ignore_case else 0)
    except (re.error, RecursionError):
        return ""
    return _nested(list(tree))


def _unbounded(av: Any) -> bool:
    return bool(av[1] == C.MAXREPEAT or av[1] > 16)


def _core(items: Sequence[Any]) -> list[Any]:
    """The items of a sequence that must consume something, groups opened."""
    out: list[Any] = []
    for op, av in items:
        if op is C.SUBPATTERN:
            out.extend(_core(list(av[3])))
        elif op is C.AT or (
            P.SubPattern(P.State(), [(op, av)]).getwidth()[0] == 0 and not (op in _REPEATS and _unbounded(av))
        ):
            continue
        else:
            out.append((op, av))
    return out


def _nested(items: Sequence[Any]) -> str:
    for op, av in items:
        if op in _REPEATS:
            core = _core(list(av[2]))
            if _unbounded(av) and core and all(o in _REPEATS and _unbounded(a) for o, a in core):
                return "a repetition inside a repetition"
            found = _nested(list(av[2]))
        elif op is C.SUBPATTERN:
            found = _nested(list(av[3]))
        elif op is C.BRANCH:
            found = next((f for f in (_nested(list(b)) for b in av[1]) if f), "")
        elif op in (C.ASSERT, C.ASSERT_NOT):
            found = _nested(list(av[1]))
        else:
            found = ""
        if found:
            return found
    return ""


# ---- writing a Python parse tree in RE2's syntax -----------------------------------------------


def _char(code: int) -> str:
    char = chr(code)
    if char.isalnum() and (code > 0x7F or char.isascii()):
        return char
    return f"\\x{{{code:x}}}"


class _Writer:
    def __init__(self, flags: int):
        self.ascii = bool(flags & re.ASCII)
        self.ignore_case = bool(flags & re.IGNORECASE)
        self.multiline = bool(flags & re.MULTILINE)
        self.dotall = bool(flags & re.DOTALL)
        # every group the writer opens is one of these (the pattern's own groups are written
        # non-capturing), numbered in the order they are written, which is the order of the text
        self.groups = 0
        self.lead: list[int] = []  # groups of characters taken in before the match (a \b at its start)
        self.trail: list[int] = []  # ... after it (a \b at its end)

    def taken(self, lead: bool) -> None:
        """Open a group for what a rewrite takes into the match past Python's span: a \\b's neighbour, a
        final line break, a lookaround at the edge. Cut off again after the search; opened before its
        body is written, so that the numbers follow the text."""
        self.groups += 1
        (self.lead if lead else self.trail).append(self.groups)

    def pattern(self, tree: Any) -> str:
        body = self.sequence(list(tree), at_start=True, at_end=True)
        return ("(?i)" if self.ignore_case else "") + body

    # the classes of characters: "w" (all word characters), "n" (none is), None (mixed or unknown)
    def is_word(self, code: int) -> bool:
        char = chr(code)
        if self.ascii:
            return char.isascii() and (char.isalnum() or char == "_")
        return char.isalnum() or char == "_"

    def set_class(self, items: Sequence[Any]) -> str | None:
        negate = bool(items) and items[0][0] is C.NEGATE
        found: set[str | None] = set()
        for op, av in items[1:] if negate else items:
            if op is C.LITERAL:
                found.add("w" if self.is_word(av) else "n")
            elif op is C.RANGE:
                low, high = av
                if high - low > _RANGE_SCAN:
                    found.add(None)
                else:
                    found |= {"w" if self.is_word(c) else "n" for c in range(low, high + 1)}
            elif op is C.CATEGORY:
                found.add({C.CATEGORY_WORD: "w", C.CATEGORY_DIGIT: "w", C.CATEGORY_NOT_WORD: "n",
                           C.CATEGORY_SPACE: "n"}.get(av, "x"))  # fmt: skip
            else:
                found.add(None)
        if negate:
            # the complement of a set holding every non-word character is word characters only
            has_all_nonword = any(op is C.CATEGORY and av is C.CATEGORY_NOT_WORD for op, av in items)
            has_all_word = any(op is C.CATEGORY and av is C.CATEGORY_WORD for op, av in items)
            return "w" if has_all_nonword else "n" if has_all_word else None
        if len(found) == 1 and None not in found and "x" not in found:
            return found.pop()
        return None

    def edge(self, items: Sequence[Any], last: bool) -> str | None:
        """The class of the first (last) character a sequence consumes; None if mixed or unknown."""
        classes: set[str | None] = set()
        for op, av in reversed(items) if last else items:
            if op is C.AT:
                continue
            if op is C.LITERAL:
                item_class: str | None = "w" if self.is_word(av) else "n"
            elif op is C.IN:
                item_class = self.set_class(av)
            elif op is C.SUBPATTERN:
                item_class = self.edge(list(av[3]), last)
            elif op is C.BRANCH:
                branch_classes = {self.edge(list(b), last) for b in av[1]}
                item_class = branch_classes.pop() if len(branch_classes) == 1 else None
            elif op in _REPEATS:
                item_class = self.edge(list(av[2]), last)
            else:
                return None
            if item_class is None:
                return None
            classes.add(item_class)
            if len(classes) > 1:
                return None
            if P.SubPattern(P.State(), [(op, av)]).getwidth()[0] > 0:
                return item_class
        return None  # the sequence may consume nothing: what comes next is not known here

    def category(self, code: Any) -> tuple[str, bool]:
        unicode_class, ascii_class, negated = _CATEGORIES[code]
        return (ascii_class if self.ascii else unicode_class), negated

    dotted_i = "[" + "".join(_char(ord(c)) for c in DOTTED_I) + "]"

    def folds_i(self, code: int) -> bool:
        """Python folds this letter with i, ı and İ here (RE2 would not): write the four out."""
        return self.ignore_case and not self.ascii and chr(code) in DOTTED_I

    def klass(self, items: Sequence[Any]) -> str:
        negate = bool(items) and items[0][0] is C.NEGATE
        positive: list[str] = []
        negated: list[str] = []
        left_out: list[str] = []
        for op, av in items[1:] if negate else items:
            if op is C.LITERAL:
                positive.append(self.dotted_i[1:-1] if self.folds_i(av) else _char(av))
            elif op is C.RANGE:
                positive.append(f"{_char(av[0])}-{_char(av[1])}")
                if any(self.folds_i(ord(c)) and av[0] <= ord(c) <= av[1] for c in DOTTED_I):
                    positive.append(self.dotted_i[1:-1])
            elif op is C.CATEGORY:
                text, is_negated = self.category(av)
                (negated if is_negated else positive).append(text)
                if text in (WORD, DIGIT) and is_negated != negate and not self.ascii and newer(text):
                    left_out.append(newer(text))  # Python's "not a letter" holds RE2's newer letters
            else:
                raise _Unsupported(f"a character class item Python writes as {op}")
        extra = [f"[{''.join(left_out)}]"] if left_out else []
        if self.ignore_case and any(o is C.CATEGORY and a is (C.CATEGORY_WORD if negate else C.CATEGORY_NOT_WORD)
                                    for o, a in items):  # fmt: skip
            extra.append(FOLDS_TO_WORD)
        if not negated:
            if not positive:
                return "[^\\x{0}-\\x{10ffff}]" if not negate else "(?s:.)"
            body = f"[{'^' if negate else ''}{''.join(positive)}]"
            return "(?:" + "|".join([body, *extra]) + ")" if extra else body
        if negate:
            raise _Unsupported("a negated class holding \\W, \\D or \\S")
        options = ([f"[{''.join(positive)}]"] if positive else []) + [f"[^{text}]" for text in negated] + extra
        return "(?:" + "|".join(options) + ")"

    def sequence(self, items: list[Any], at_start: bool, at_end: bool) -> str:
        out: list[str] = []
        for index, (op, av) in enumerate(items):
            first, final = index == 0, index == len(items) - 1
            if op is C.AT:
                out.append(self.at(av, items, index, at_start and first, at_end and final))
            else:
                out.append(self.item(op, av, at_start and first, at_end and final))
        return "".join(out)

    def item(self, op: Any, av: Any, at_start: bool, at_end: bool) -> str:
        if self.ascii and self.ignore_case:
            raise _Unsupported("the (?a) flag with letter case ignored (Python then folds ASCII letters only)")
        if op is C.LITERAL:
            return self.dotted_i if self.folds_i(av) else _char(av)
        if op is C.NOT_LITERAL:
            return f"[^{self.dotted_i[1:-1]}]" if self.folds_i(av) else f"[^{_char(av)}]"
        if op is C.ANY:
            return "(?s:.)" if self.dotall else "[^\\n]"
        if op is C.IN:
            return self.klass(av)
        if op is C.BRANCH:
            return "(?:" + "|".join(self.sequence(list(b), at_start, at_end) for b in av[1]) + ")"
        if op is C.SUBPATTERN:
            _group, add, remove = av[0], av[1], av[2]
            saved = (self.ascii, self.ignore_case, self.multiline, self.dotall)
            self.ascii = bool(add & re.ASCII) or (self.ascii and not remove & re.ASCII)
            self.multiline = bool(add & re.MULTILINE) or (self.multiline and not remove & re.MULTILINE)
            self.dotall = bool(add & re.DOTALL) or (self.dotall and not remove & re.DOTALL)
            self.ignore_case = bool(add & re.IGNORECASE) or (self.ignore_case and not remove & re.IGNORECASE)
            case = "i" if add & re.IGNORECASE else "-i" if remove & re.IGNORECASE else ""
            try:
                body = self.sequence(list(av[3]), at_start, at_end)
            finally:
                self.ascii, self.ignore_case, self.multiline, self.dotall = saved
            return f"(?{case}:{body})"
        if op in (C.MAX_REPEAT, C.MIN_REPEAT):
            low, high, item = av
            if low > RE2_MAX_REPEAT or (high != C.MAXREPEAT and high > RE2_MAX_REPEAT):
                raise _Unsupported(f"a counted repetition above {RE2_MAX_REPEAT}")
            body = self.sequence(list(item), False, False)
            if high == C.MAXREPEAT:
                count = "*" if low == 0 else "+" if low == 1 else f"{{{low},}}"
            else:
                count = f"{{{low}}}" if low == high else f"{{{low},{high}}}"
            return f"(?:{body}){count}" + ("?" if op is C.MIN_REPEAT else "")
        if op is C.ASSERT and ((av[0] == 1 and at_end) or (av[0] == -1 and at_start)):
            # nothing follows a lookahead at the end (precedes a lookbehind at the start): for
            # "is there a match", taking its text into the match is the same question
            self.taken(lead=av[0] == -1)
            return "(" + self.sequence(list(av[1]), at_start, at_end) + ")"
        if op in (C.ASSERT, C.ASSERT_NOT):
            negative = "negative " if op is C.ASSERT_NOT else ""
            raise _Unsupported(f"a {negative}{'lookahead' if av[0] == 1 else 'lookbehind'}")
        names = {
            C.GROUPREF: "a backreference",
            C.GROUPREF_EXISTS: "a conditional group",
        }
        name = names.get(op) or ("an atomic group or possessive repetition" if "ATOMIC" in str(op) or
                                 "POSSESSIVE" in str(op) else f"{op}")  # fmt: skip
        raise _Unsupported(name)

    def at(self, code: Any, items: list[Any], index: int, at_start: bool, at_end: bool) -> str:
        if code is C.AT_BEGINNING_STRING:
            return "\\A"
        if code is C.AT_END_STRING:
            return "\\z"
        if code is C.AT_BEGINNING:
            return "(?m:^)" if self.multiline else "\\A"
        if code is C.AT_END:
            if self.multiline:
                return "(?m:$)"
            if at_end:  # Python's $ also stands before a final line break: take it, nothing follows
                self.taken(lead=False)
                return "(\\n?)\\z"
            raise _Unsupported("a '$' with more pattern after it")
        if code in (C.AT_BOUNDARY, C.AT_NON_BOUNDARY):
            return self.boundary(code is C.AT_BOUNDARY, items, index, at_start, at_end)
        raise _Unsupported(f"the anchor {code}")

    def boundary(self, wanted: bool, items: list[Any], index: int, at_start: bool, at_end: bool) -> str:
        """Python's Unicode \\b (wanted) or \\B, from the class of the characters on both sides."""
        word = ASCII_WORD if self.ascii else WORD
        extra = "" if self.ascii else "|".join([f"[{newer(WORD)}]"] * bool(newer(WORD)) +
                                              [FOLDS_TO_WORD] * self.ignore_case)  # fmt: skip
        before = self.edge(items[:index], last=True) if index else ("outside" if at_start else None)
        after = self.edge(items[index + 1 :], last=False) if index < len(items) - 1 else None
        if after is None and index == len(items) - 1 and at_end:
            after = "outside"
        if before in ("w", "n") and after in ("w", "n"):
            if (before != after) == wanted:
                return ""
            raise _Unsupported("a '\\b' or '\\B' that can never hold")
        # one side lies outside the match: take that character (or the text's edge) into it
        if before == "outside" and after in ("w", "n"):
            need_word = (after == "n") == wanted
            body = f"[{word}]" if need_word else f"\\A|[^{word}]" + (f"|{extra}" if extra else "")
            self.taken(lead=True)
            return f"({body})"
        if after == "outside" and before in ("w", "n"):
            need_word = (before == "n") == wanted
            body = f"[{word}]" if need_word else f"[^{word}]|\\z" + (f"|{extra}" if extra else "")
            self.taken(lead=False)
            return f"({body})"
        raise _Unsupported("a '\\b' next to something that may or may not be a letter")
