"""A strict logfmt parser for the tests: what a log shipper makes of a decision line.

It follows go-logfmt's grammar (the reference implementation that Loki, Grafana and
Heroku's tools follow): pairs separated by spaces; a key is a run of characters above
the space other than `=` and `"`; a value is either such a run or a double-quoted
string with JSON escapes (`\\"`, `\\\\`, `\\n`, `\\uXXXX`, ...). It refuses what
go-logfmt refuses (an `=` or `"` inside a bare value, an unterminated quote, a raw
control character inside quotes, garbage after a closing quote), so a line it parses
reads the same in any logfmt reader.
"""

from __future__ import annotations

_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


class LogfmtError(ValueError):
    pass


def _bare_end(line: str, start: int) -> int:
    end = start
    while end < len(line) and line[end] > " " and line[end] not in '="':
        end += 1
    return end


def _quoted(line: str, start: int) -> tuple[str, int]:
    """The string opened by the quote at `start`, and the index after its closing quote."""
    out: list[str] = []
    i = start + 1
    while True:
        if i >= len(line):
            raise LogfmtError(f"unterminated quoted value at {start}")
        char = line[i]
        if char == '"':
            return "".join(out), i + 1
        if char == "\\":
            code = line[i + 1 : i + 2]
            if code == "u":
                digits = line[i + 2 : i + 6]
                if len(digits) != 4 or any(c not in "0123456789abcdefABCDEF" for c in digits):
                    raise LogfmtError(f"bad \\u escape at {i}")
                out.append(chr(int(digits, 16)))
                i += 6
                continue
            if code not in _ESCAPES:
                raise LogfmtError(f"bad escape {code!r} at {i}")
            out.append(_ESCAPES[code])
            i += 2
            continue
        if char < " ":
            raise LogfmtError(f"control character inside quotes at {i}")
        out.append(char)
        i += 1


def parse(line: str) -> list[tuple[str, str | None]]:
    """The (key, value) pairs of one logfmt line, in order; a key with no `=` has the value None."""
    pairs: list[tuple[str, str | None]] = []
    i = 0
    while i < len(line):
        if line[i] == " ":
            i += 1
            continue
        end = _bare_end(line, i)
        if end == i:
            raise LogfmtError(f"unexpected {line[i]!r} at {i}")
        key = line[i:end]
        if end >= len(line) or line[end] != "=":
            pairs.append((key, None))
            i = end
            continue
        start = end + 1
        if start < len(line) and line[start] == '"':
            value, i = _quoted(line, start)
        else:
            i = _bare_end(line, start)
            value = line[start:i]
        if i < len(line) and line[i] != " ":
            raise LogfmtError(f"unexpected {line[i]!r} after the value of {key!r} at {i}")
        pairs.append((key, value))
    return pairs


def parse_dict(line: str) -> dict[str, str | None]:
    """parse(), insisting that each key appears once."""
    pairs = parse(line)
    keys = [key for key, _ in pairs]
    duplicated = sorted({key for key in keys if keys.count(key) > 1})
    if duplicated:
        raise LogfmtError(f"keys appear more than once: {duplicated}")
    return dict(pairs)
