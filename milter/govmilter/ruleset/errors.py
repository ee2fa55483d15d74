"""Rule-file mistakes in the officer's words: what is wrong on which line, and how to write it.

tomllib says "Unescaped '\\' in a string (at line 12, column 20)": true, but it does not
say that a pattern in "..." needs every backslash doubled, nor that '''...''' takes it as
written. `explain_toml_error` turns each of the parser's messages into a sentence and a
hint, keeps the line and column, and quotes the line; `kind_message` says what a file
without a valid `kind` needs. The loader (store.py) reports them as `file:line: message`.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable

__all__ = ["explain_toml_error", "kind_message"]

_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$|\s*\(at end of document\)\s*$")
_ACCENTED_KEY = re.compile(r"^[^=\[#\"']*[^\x00-\x7f][^=\"']*=")  # a key written with non-ASCII letters
PATTERN_HINT = "write patterns between ''' and ''' (three single quotes), where a backslash is taken as written"

# the start of tomllib's message -> what it means here, with a hint
_PLAIN: tuple[tuple[str, str], ...] = (
    (
        "Unescaped '\\' in a string",
        'a backslash in a "..." string must be doubled (\\\\d, \\\\s); ' + PATTERN_HINT,
    ),
    (
        "Unterminated string",
        "a string is not closed on the line where it starts (a missing quote); text over several lines goes "
        "between ''' and '''",
    ),
    (
        "Illegal character",
        'a control character (a tab, a line break) stands inside a "..." string: write \\t or \\n, or use '
        "''' ... '''",
    ),
    (
        "Escaped character is not a Unicode scalar value",
        'an escape such as \\u or \\U in a "..." string is not a character: ' + PATTERN_HINT,
    ),
    ("Invalid hex value", 'an escape such as \\x, \\u or \\U in a "..." string is malformed: ' + PATTERN_HINT),
    (
        "Expected '=' after a key",
        "a key without a value: write key = value (text in quotes, e.g. id = \"my-rule\"); a comment "
        "starts with #",
    ),
    (
        "Invalid value",
        "the value after '=' is not one TOML understands: text goes in quotes (id = \"x\", pattern = '''...'''), "
        "numbers bare (score = 2.5), true or false in lower case, lists in [ ] with commas",
    ),
    (
        "Invalid statement",
        "this line is neither key = value nor a table header such as [[rule]]: a stray character, or text "
        "without a key (a comment starts with #)",
    ),
    (
        "Cannot overwrite a value",
        "a key is given twice: each [[rule]] gives each key once, and each new rule starts with its own [[rule]] "
        "line",
    ),
    ("Cannot declare", "a [table] header is given twice; rules are written [[rule]] (two brackets), once per rule"),
    ("Duplicate inline table key", "a key is given twice inside { ... }"),
    (
        "Cannot mutate immutable namespace",
        "a [table] header or key conflicts with one of the same name given before",
    ),
    ("Cannot redefine namespace", "a [table] header or key conflicts with one of the same name given before"),
    ("Unclosed array", "a list [ ... ] is not closed: a missing ']' or a missing comma between its items"),
    ("Unclosed inline table", "a table { ... } is not closed: a missing '}' (it must end on the same line)"),
    ("Expected ']]'", "a [[table]] header is not closed: write [[rule]]"),
    ("Expected ']'", "a [table] header is not closed: write [[rule]] for a rule"),
    (
        "Invalid initial character for a key part",
        "a key must be written with letters, digits, '_' or '-' (no spaces, no accents), e.g. ignore_diacritics",
    ),
    (
        "Found invalid character",
        "a key must be written with letters, digits, '_' or '-' (no spaces, no accents), e.g. ignore_diacritics",
    ),
    ("Invalid date or datetime", "the value looks like a date but is not one: put text in quotes"),
)


def explain_toml_error(text: str, exc: tomllib.TOMLDecodeError) -> tuple[int, str]:
    """The line (1 when unknown) and a plain message for a TOML syntax error in `text`."""
    raw = str(exc)
    position = _POSITION.search(raw)
    words = raw[: position.start()] if position else raw
    line = int(position.group(1)) if position and position.group(1) else _last_line(text)
    column = int(position.group(2)) if position and position.group(2) else 0
    lines = text.splitlines()
    quoted = lines[line - 1].strip() if 0 < line <= len(lines) else ""
    if words == "Illegal character '\\n'":  # the line ended inside a "..." or '...' string
        words = "Unterminated string"
    elif words == "Invalid statement" and _ACCENTED_KEY.match(quoted):
        words = "Invalid initial character for a key part"
    plain = next((meaning for start, meaning in _PLAIN if words.startswith(start)), "")
    where = f"column {column}: " if column else ""
    if len(quoted) > 80:
        quoted = quoted[:77] + "..."
    shown = f" [the line: {quoted}]" if quoted else ""
    if plain:
        return line, f"not valid TOML, {where}{plain}{shown} (the parser said: {words})"
    return line, f"not valid TOML, {where}{words}{shown}"


def _last_line(text: str) -> int:
    return max(1, text.count("\n") + (0 if text.endswith("\n") else 1))


def kind_message(kind: object, known: Iterable[str]) -> str:
    """What is wrong with a file's `kind`, and what to write instead."""
    names = sorted(known)
    choices = ", ".join(f'"{name}"' for name in names)
    if kind is None:
        return (
            f'the file has no kind: its first setting must say which rules it holds, kind = "{names[0]}" '
            f"(one of {choices})"
            if names
            else "the file has no kind"
        )
    if not isinstance(kind, str):
        return f"kind = {kind!r}: expected one of {choices}, written as text in quotes"
    return f'kind = "{kind}" is not a kind of rule file: expected one of {choices}'
