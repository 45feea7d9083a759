"""``input.where``: a small, safe filter language over result columns → a polars expression.

The text is parsed here, by a grammar that can only name columns, compare them with
literals and combine the comparisons; it never reaches Python's ``eval`` nor polars'
SQL engine (whose ``sql_expr`` runs sub-queries such as ``SELECT … FROM
read_csv('/etc/passwd')`` while it parses). The grammar, keywords in any case::

    where    := or
    or       := and ("OR" and)*
    and      := not ("AND" not)*
    not      := "NOT" not | test
    test     := value [ op value | "IS" ["NOT"] "NULL" | ["NOT"] "IN" "(" literals ")"
                        | ["NOT"] "LIKE" string ]
    value    := literal | column | "(" or ")"
    column   := name ("." name)*          a name, or "any text" in double quotes;
                                           parsed.sentiment reads a struct field
    literal  := number | 'text' | TRUE | FALSE | NULL
    op       := = == != <> < <= > >=

For example ``status = 'ok' AND label_confidence < 0.6`` or
``parsed.sentiment IN ('mixed', 'neutral') OR label IS NULL``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import polars as pl

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
      | '(?P<text>(?:[^']|'')*)'
      | "(?P<quoted>(?:[^"]|"")+)"
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<op><=|>=|<>|!=|==|=|<|>)
      | (?P<punct>[(),.])
    )""",
    re.VERBOSE,
)
_KEYWORDS = frozenset({"AND", "OR", "NOT", "IS", "NULL", "IN", "LIKE", "TRUE", "FALSE"})
_COMPARE: dict[str, Callable[[pl.Expr, Any], pl.Expr]] = {
    "=": lambda a, b: a == b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<>": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


class WhereError(ValueError):
    """A filter that is not in the grammar; the message says where and what was expected."""


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # number, text, name, keyword, op, punct, end
    value: str
    at: int


def parse_where(text: str) -> pl.Expr:
    """The polars expression ``text`` stands for; WhereError when it is not in the grammar."""
    parser = _Parser(_tokens(text), text)
    expr = parser.disjunction()
    parser.expect_end()
    return expr


def where_columns(text: str) -> list[str]:
    """The top-level columns ``text`` reads (``parsed.x`` reads ``parsed``)."""
    return list(dict.fromkeys(parse_where(text).meta.root_names()))


def _tokens(text: str) -> list[_Token]:
    found: list[_Token] = []
    at = 0
    while at < len(text):
        if text[at:].strip() == "":
            break
        match = _TOKEN.match(text, at)
        if match is None or match.end() == at:
            start = len(text) - len(text[at:].lstrip())
            raise WhereError(f"unexpected {text[start : start + 10]!r} at character {start + 1}")
        kind = match.lastgroup or ""
        value = match.group(kind)
        start = match.start(kind)
        if kind == "name" and value.upper() in _KEYWORDS:
            kind, value = "keyword", value.upper()
        elif kind in ("text", "quoted"):
            value = value.replace("''", "'") if kind == "text" else value.replace('""', '"')
            kind = "text" if kind == "text" else "name"
        found.append(_Token(kind, value, start))
        at = match.end()
    found.append(_Token("end", "", len(text)))
    return found


class _Parser:
    """Recursive descent over the tokens; each method is one rule of the grammar."""

    def __init__(self, tokens: list[_Token], text: str) -> None:
        self.tokens = tokens
        self.text = text
        self.at = 0

    # -- tokens -----------------------------------------------------------------------------

    @property
    def next(self) -> _Token:
        return self.tokens[self.at]

    def take(self) -> _Token:
        token = self.tokens[self.at]
        self.at += 1
        return token

    def accept(self, kind: str, value: str | None = None) -> bool:
        token = self.next
        if token.kind == kind and (value is None or token.value == value):
            self.at += 1
            return True
        return False

    def fail(self, expected: str) -> WhereError:
        token = self.next
        got = "the end" if token.kind == "end" else repr(token.value)
        return WhereError(f"expected {expected} at character {token.at + 1}, got {got}")

    def expect(self, kind: str, value: str, expected: str) -> None:
        if not self.accept(kind, value):
            raise self.fail(expected)

    def expect_end(self) -> None:
        if self.next.kind != "end":
            raise self.fail("AND, OR or the end")

    # -- rules ------------------------------------------------------------------------------

    def disjunction(self) -> pl.Expr:
        expr = self.conjunction()
        while self.accept("keyword", "OR"):
            expr = expr | self.conjunction()
        return expr

    def conjunction(self) -> pl.Expr:
        expr = self.negation()
        while self.accept("keyword", "AND"):
            expr = expr & self.negation()
        return expr

    def negation(self) -> pl.Expr:
        if self.accept("keyword", "NOT"):
            return ~self.negation()
        return self.test()

    def test(self) -> pl.Expr:
        left = self.value()
        token = self.next
        if token.kind == "op":
            self.take()
            return _COMPARE[token.value](left, self.value())
        if self.accept("keyword", "IS"):
            negate = self.accept("keyword", "NOT")
            self.expect("keyword", "NULL", "NULL after IS")
            return left.is_not_null() if negate else left.is_null()
        negate = self.accept("keyword", "NOT")
        if self.accept("keyword", "IN"):
            expr = left.is_in(self.literal_list())
        elif self.accept("keyword", "LIKE"):
            expr = left.str.contains(_like_pattern(self.string()))
        elif negate:
            raise self.fail("IN or LIKE after NOT")
        else:
            return left
        return ~expr if negate else expr

    def value(self) -> pl.Expr:
        token = self.next
        if self.accept("punct", "("):
            expr = self.disjunction()
            self.expect("punct", ")", "')'")
            return expr
        if token.kind == "name":
            return self.column()
        return pl.lit(self.literal())

    def column(self) -> pl.Expr:
        expr = pl.col(self.take().value)
        while self.accept("punct", "."):
            if self.next.kind != "name":
                raise self.fail("a field name after '.'")
            expr = expr.struct.field(self.take().value)
        return expr

    def literal(self) -> Any:
        token = self.take()
        if token.kind == "number":
            number = float(token.value)
            return int(token.value) if re.fullmatch(r"-?\d+", token.value) else number
        if token.kind == "text":
            return token.value
        if token.kind == "keyword" and token.value in ("TRUE", "FALSE", "NULL"):
            return {"TRUE": True, "FALSE": False, "NULL": None}[token.value]
        self.at -= 1
        raise self.fail("a column, a number, a 'text', TRUE, FALSE, NULL or '('")

    def literal_list(self) -> list[Any]:
        self.expect("punct", "(", "'(' after IN")
        values = [self.literal()]
        while self.accept("punct", ","):
            values.append(self.literal())
        self.expect("punct", ")", "')' or ',' in the IN list")
        return values

    def string(self) -> str:
        token = self.next
        if token.kind != "text":
            raise self.fail("a 'pattern' after LIKE")
        self.take()
        return token.value


def _like_pattern(pattern: str) -> str:
    """SQL LIKE (``%`` any text, ``_`` one character) as an anchored regular expression."""
    parts = ("." * (c == "_") + ".*" * (c == "%") if c in "%_" else re.escape(c) for c in pattern)
    return "(?s)^" + "".join(parts) + "$"
