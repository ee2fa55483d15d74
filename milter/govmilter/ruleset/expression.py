"""Expressions over rule ids for combined rules: `a and (b or not c)`.

A tiny recursive-descent parser (no eval): names are rule ids, or `check/rule` for a
finding of an earlier check (`dnsbl/spamhaus-zen`, `auth/dmarc-fail`); the operators are
`and`, `or`, `not` and parentheses, `not` binding tightest, then `and`, then `or`. The
result is a tree evaluated against the set of names that fired.
"""

from __future__ import annotations

import re
from collections.abc import Container, Iterator
from dataclasses import dataclass

_TOKEN = re.compile(r"\s*(?:(\()|(\))|([A-Za-z0-9][A-Za-z0-9._/-]*)|(\S))")
OPERATORS = frozenset({"and", "or", "not"})
MAX_LENGTH = 2000  # characters of an expression
MAX_DEPTH = 50  # nested parentheses and nots


class ExpressionError(ValueError):
    pass


@dataclass(frozen=True)
class Name:
    name: str

    def holds(self, fired: Container[str]) -> bool:
        return self.name in fired


@dataclass(frozen=True)
class Not:
    operand: Node

    def holds(self, fired: Container[str]) -> bool:
        return not self.operand.holds(fired)


@dataclass(frozen=True)
class All:
    operands: tuple[Node, ...]

    def holds(self, fired: Container[str]) -> bool:
        return all(o.holds(fired) for o in self.operands)


@dataclass(frozen=True)
class Any_:
    operands: tuple[Node, ...]

    def holds(self, fired: Container[str]) -> bool:
        return any(o.holds(fired) for o in self.operands)


Node = Name | Not | All | Any_


def names(node: Node) -> Iterator[str]:
    """Every rule id the expression reads, in order of appearance."""
    if isinstance(node, Name):
        yield node.name
    elif isinstance(node, Not):
        yield from names(node.operand)
    else:
        for operand in node.operands:
            yield from names(operand)


def parse(text: str) -> Node:
    """The tree of an expression; ExpressionError with a plain explanation when it is not one."""
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"longer than {MAX_LENGTH} characters")
    tokens: list[str] = []
    for match in _TOKEN.finditer(text):
        opening, closing, word, other = match.groups()
        if other is not None:
            hint = " (write and, or, not)" if other in "&|!" else ""
            raise ExpressionError(f"unexpected {other!r}{hint}")
        tokens.append(opening or closing or word)
    if not tokens:
        raise ExpressionError("empty: expected rule ids joined by and, or, not")
    parser = _Parser(tokens)
    node = parser.any_of(0)
    if parser.at < len(tokens):
        raise ExpressionError(f"unexpected {tokens[parser.at]!r} after a complete expression")
    return node


class _Parser:
    def __init__(self, tokens: list[str]):
        self.tokens = tokens
        self.at = 0

    def peek(self) -> str | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def any_of(self, depth: int) -> Node:
        operands = [self.all_of(depth)]
        while self.peek() == "or":
            self.at += 1
            operands.append(self.all_of(depth))
        return operands[0] if len(operands) == 1 else Any_(tuple(operands))

    def all_of(self, depth: int) -> Node:
        operands = [self.unary(depth)]
        while self.peek() == "and":
            self.at += 1
            operands.append(self.unary(depth))
        return operands[0] if len(operands) == 1 else All(tuple(operands))

    def unary(self, depth: int) -> Node:
        if depth > MAX_DEPTH:
            raise ExpressionError(f"nested deeper than {MAX_DEPTH}")
        word = self.peek()
        if word is None:
            raise ExpressionError("ends where a rule id was expected")
        self.at += 1
        if word == "not":
            return Not(self.unary(depth + 1))
        if word == "(":
            node = self.any_of(depth + 1)
            if self.peek() != ")":
                raise ExpressionError("a '(' is not closed")
            self.at += 1
            return node
        if word == ")" or word in OPERATORS:
            raise ExpressionError(f"{word!r} where a rule id was expected")
        return Name(word)
