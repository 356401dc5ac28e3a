"""A small, safe expression language for alarm conditions.

An expression sees three numbers: ``value`` (the reading's value), ``previous`` (the value of the
same point's reading before it; equal to ``value`` for the first one) and ``age`` (seconds since
the reading's timestamp, when it is evaluated). Grammar, loosest binding first::

    expr     := or
    or       := and ("or" and)*
    and      := not ("and" not)*
    not      := "not" not | compare
    compare  := sum (("<" | "<=" | ">" | ">=" | "==" | "!=") sum)?
    sum      := product (("+" | "-") product)*
    product  := unary (("*" | "/") unary)*
    unary    := "-" unary | primary
    primary  := NUMBER | "true" | "false" | NAME | FUNCTION "(" expr ("," expr)* ")" | "(" expr ")"

Functions: ``abs(x)``, ``min(x, y, ...)``, ``max(x, y, ...)``. Every expression has a type, number
or boolean, checked when it is compiled: ``value and 3`` or ``(value > 1) + 2`` are rejected there,
not at the first reading. Comparisons do not chain (``1 < value < 3`` is an error; write
``value > 1 and value < 3``).

The text is tokenized and parsed by hand into a tree of closures; nothing is passed to Python's
``eval``/``compile``, and no name other than the three above and the functions exists. Length and
nesting are bounded (:data:`MAX_LENGTH`, :data:`MAX_DEPTH`). Errors (:class:`ExpressionError`) name
the column and what was expected there.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import UunGatewayError

MAX_LENGTH = 1000
"""Longest expression text accepted, in characters."""
MAX_DEPTH = 32
"""Deepest nesting of parentheses, operators and function calls accepted."""

NAMES = ("value", "previous", "age")
FUNCTIONS = ("abs", "min", "max")
KEYWORDS = ("and", "or", "not", "true", "false")

NUMBER = "number"
BOOLEAN = "boolean"

Evaluator = Callable[[float, float, float], "float | bool"]


class ExpressionError(UunGatewayError, ValueError):
    """An expression does not parse or type-check, or failed when evaluated.

    ``position`` is the 0-based offset in ``text`` the problem is at; ``str()`` gives the 1-based
    column and what was expected, e.g. ``column 9: expected a number, a name, a function or "(";
    found the end of the expression``.
    """

    def __init__(self, message: str, text: str, position: int) -> None:
        self.reason = message
        self.text = text
        self.position = position
        super().__init__(f"column {position + 1}: {message}")


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # "number", "name", "op", "end"
    text: str
    position: int
    number: float = 0.0


_TWO_CHAR_OPS = ("<=", ">=", "==", "!=")
_ONE_CHAR_OPS = "<>+-*/(),"


def tokenize(text: str) -> list[Token]:
    """Split ``text`` into tokens, ending with an ``end`` token. Raises :class:`ExpressionError`."""
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"the expression is longer than {MAX_LENGTH} characters", text, MAX_LENGTH)
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in " \t\r\n":
            i += 1
        elif ch.isdigit() or (ch == "." and i + 1 < n and text[i + 1].isdigit()):
            start = i
            while i < n and text[i].isdigit():
                i += 1
            if i < n and text[i] == ".":
                i += 1
                while i < n and text[i].isdigit():
                    i += 1
            if i < n and text[i] in "eE":
                j = i + 1
                if j < n and text[j] in "+-":
                    j += 1
                if j < n and text[j].isdigit():
                    i = j
                    while i < n and text[i].isdigit():
                        i += 1
                else:
                    raise ExpressionError("expected digits after the exponent 'e'", text, j)
            if i < n and (text[i].isalpha() or text[i] == "_"):
                raise ExpressionError(f"expected an operator after the number {text[start:i]!r}", text, i)
            literal = text[start:i]
            number = float(literal)
            if not math.isfinite(number):
                raise ExpressionError(f"the number {literal[:20]} is out of range", text, start)
            tokens.append(Token("number", literal, start, number))
        elif ch.isalpha() or ch == "_":
            start = i
            while i < n and (text[i].isalnum() or text[i] == "_"):
                i += 1
            tokens.append(Token("name", text[start:i], start))
        elif text[i : i + 2] in _TWO_CHAR_OPS:
            tokens.append(Token("op", text[i : i + 2], i))
            i += 2
        elif ch in _ONE_CHAR_OPS:
            tokens.append(Token("op", ch, i))
            i += 1
        else:
            hint = ' (use "==" to compare)' if ch == "=" else ""
            hint = ' (use "and"/"or")' if ch in "&|" else hint
            raise ExpressionError(f"unexpected character {ch!r}{hint}", text, i)
    tokens.append(Token("end", "", n))
    return tokens


@dataclass(frozen=True, slots=True)
class _Node:
    type: str
    run: Evaluator
    position: int
    constant: bool = False
    name: str | None = None


def _describe(token: Token) -> str:
    if token.kind == "end":
        return "the end of the expression"
    if token.kind == "number":
        return f"the number {token.text}"
    return f'"{token.text}"'


_COMPARE = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
_VALUE_AGAINST: dict[str, Callable[[Any], Evaluator]] = {
    "<": lambda c: lambda v, p, a: v < c,
    "<=": lambda c: lambda v, p, a: v <= c,
    ">": lambda c: lambda v, p, a: v > c,
    ">=": lambda c: lambda v, p, a: v >= c,
    "==": lambda c: lambda v, p, a: v == c,
    "!=": lambda c: lambda v, p, a: v != c,
}
_ARITH: dict[str, Callable[[Any, Any], float]] = {"+": operator.add, "-": operator.sub, "*": operator.mul}


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.index = 0
        self.depth = 0

    @property
    def token(self) -> Token:
        return self.tokens[self.index]

    def error(self, message: str, position: int | None = None) -> ExpressionError:
        return ExpressionError(message, self.text, self.token.position if position is None else position)

    def expected(self, what: str) -> ExpressionError:
        return self.error(f"expected {what}; found {_describe(self.token)}")

    def take(self, *ops: str) -> Token | None:
        token = self.token
        if (token.kind == "op" or token.text in KEYWORDS) and token.text in ops:
            self.index += 1
            return token
        return None

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"the expression is nested too deeply (more than {MAX_DEPTH} levels)")

    def need(self, node: _Node, type_: str, what: str) -> None:
        if node.type != type_:
            article = "a number" if node.type == NUMBER else "true/false"
            wanted = "a number" if type_ == NUMBER else "true/false (a comparison or and/or/not)"
            raise self.error(f"{what} needs {wanted}, found {article}", node.position)

    def parse(self) -> _Node:
        if self.token.kind == "end":
            raise self.expected("an expression")
        node = self.parse_or()
        if self.token.kind != "end":
            if self.token.kind == "op" and self.token.text in _COMPARE:
                raise self.error('comparisons do not chain; expected "and" or "or" between them')
            raise self.expected('an operator, "and", "or" or the end of the expression')
        if node.type != BOOLEAN:
            raise self.error(
                "the condition is a number; expected true/false (compare it, e.g. value > 80)", node.position
            )
        return node

    def parse_or(self) -> _Node:
        return self._logic("or", self.parse_and)

    def parse_and(self) -> _Node:
        return self._logic("and", self.parse_not)

    def _logic(self, word: str, operand: Callable[[], _Node]) -> _Node:
        left = operand()
        while token := self.take(word):
            self.need(left, BOOLEAN, f'"{word}"')
            self.enter()
            right = operand()
            self.depth -= 1
            self.need(right, BOOLEAN, f'"{word}"')
            lf, rf = left.run, right.run
            if word == "and":

                def run(v: float, p: float, a: float, lf: Evaluator = lf, rf: Evaluator = rf) -> float | bool:
                    return bool(lf(v, p, a)) and bool(rf(v, p, a))
            else:

                def run(v: float, p: float, a: float, lf: Evaluator = lf, rf: Evaluator = rf) -> float | bool:
                    return bool(lf(v, p, a)) or bool(rf(v, p, a))

            left = _Node(BOOLEAN, run, token.position)
        return left

    def parse_not(self) -> _Node:
        token = self.take("not")
        if token is None:
            return self.parse_compare()
        self.enter()
        inner = self.parse_not()
        self.depth -= 1
        self.need(inner, BOOLEAN, '"not"')
        f = inner.run
        return _Node(BOOLEAN, lambda v, p, a: not f(v, p, a), token.position)

    def parse_compare(self) -> _Node:
        left = self.parse_sum()
        token = self.take(*_COMPARE)
        if token is None:
            return left
        right = self.parse_sum()
        if token.text in ("==", "!="):
            if left.type != right.type:
                raise self.error(
                    f'"{token.text}" compares values of one type; found a number and true/false', token.position
                )
        else:
            self.need(left, NUMBER, f'"{token.text}"')
            self.need(right, NUMBER, f'"{token.text}"')
        op, lf, rf = _COMPARE[token.text], left.run, right.run
        if right.constant:
            c = rf(0.0, 0.0, 0.0)
            if left.name == "value":  # the common "value > 80": one call fewer per evaluation
                return _Node(BOOLEAN, _VALUE_AGAINST[token.text](c), left.position)
            return _Node(BOOLEAN, lambda v, p, a: op(lf(v, p, a), c), left.position)
        return _Node(BOOLEAN, lambda v, p, a: op(lf(v, p, a), rf(v, p, a)), left.position)

    def parse_sum(self) -> _Node:
        return self._arith(("+", "-"), self.parse_product)

    def parse_product(self) -> _Node:
        return self._arith(("*", "/"), self.parse_unary)

    def _arith(self, ops: tuple[str, ...], operand: Callable[[], _Node]) -> _Node:
        left = operand()
        while token := self.take(*ops):
            self.need(left, NUMBER, f'"{token.text}"')
            self.enter()
            right = operand()
            self.depth -= 1
            self.need(right, NUMBER, f'"{token.text}"')
            left = self._binary(token, left, right)
        return left

    def _binary(self, token: Token, left: _Node, right: _Node) -> _Node:
        lf, rf = left.run, right.run
        if token.text == "/":
            text, position = self.text, token.position
            if right.constant and rf(0.0, 0.0, 0.0) == 0:
                raise self.error("division by zero", position)

            def run(v: float, p: float, a: float) -> float | bool:
                divisor = rf(v, p, a)
                if divisor == 0:
                    raise ExpressionError("division by zero", text, position)
                return lf(v, p, a) / divisor
        else:
            op = _ARITH[token.text]

            def run(v: float, p: float, a: float) -> float | bool:
                result: float = op(lf(v, p, a), rf(v, p, a))
                return result

        return self._fold(_Node(NUMBER, run, left.position, left.constant and right.constant))

    def _fold(self, node: _Node) -> _Node:
        if not node.constant:
            return node
        result = node.run(0.0, 0.0, 0.0)
        if isinstance(result, float) and not math.isfinite(result):
            raise self.error("a constant part of the expression is out of range", node.position)
        return _Node(node.type, lambda v, p, a: result, node.position, True)

    def parse_unary(self) -> _Node:
        token = self.take("-")
        if token is None:
            return self.parse_primary()
        self.enter()
        inner = self.parse_unary()
        self.depth -= 1
        self.need(inner, NUMBER, 'a "-" sign')
        f = inner.run
        return self._fold(_Node(NUMBER, lambda v, p, a: -f(v, p, a), token.position, inner.constant))

    def parse_primary(self) -> _Node:
        token = self.token
        if token.kind == "number":
            self.index += 1
            number = token.number
            return _Node(NUMBER, lambda v, p, a: number, token.position, True)
        if token.kind == "name":
            return self.parse_name(token)
        if self.take("("):
            self.enter()
            inner = self.parse_or()
            self.depth -= 1
            if not self.take(")"):
                raise self.expected('an operator or ")"')
            return _Node(inner.type, inner.run, token.position, inner.constant)
        raise self.expected('a number, a name (value, previous, age), a function or "("')

    def parse_name(self, token: Token) -> _Node:
        name = token.text
        self.index += 1
        if name in ("true", "false"):
            constant = name == "true"
            return _Node(BOOLEAN, lambda v, p, a: constant, token.position, True)
        if name == "value":
            return _Node(NUMBER, lambda v, p, a: v, token.position, name="value")
        if name == "previous":
            return _Node(NUMBER, lambda v, p, a: p, token.position)
        if name == "age":
            return _Node(NUMBER, lambda v, p, a: a, token.position)
        if name in FUNCTIONS:
            return self.parse_call(token)
        if name in KEYWORDS:
            self.index -= 1
            raise self.expected('a number, a name (value, previous, age), a function or "("')
        raise self.error(
            f"unknown name {name!r}; expected one of {', '.join(NAMES)}, true, false "
            f"or a function ({', '.join(FUNCTIONS)})",
            token.position,
        )

    def parse_call(self, token: Token) -> _Node:
        name = token.text
        if not self.take("("):
            raise self.expected(f'"(" after the function {name}')
        self.enter()
        args = [self.parse_or()]
        while self.take(","):
            args.append(self.parse_or())
        self.depth -= 1
        if not self.take(")"):
            raise self.expected('"," or ")"')
        for arg in args:
            self.need(arg, NUMBER, f"{name}()")
        if name == "abs":
            if len(args) != 1:
                raise self.error(f"abs() takes one argument, found {len(args)}", token.position)
            f = args[0].run
            node = _Node(NUMBER, lambda v, p, a: abs(f(v, p, a)), token.position, args[0].constant)
        else:
            if len(args) < 2:
                raise self.error(f"{name}() takes two or more arguments, found {len(args)}", token.position)
            pick = min if name == "min" else max
            runs = tuple(arg.run for arg in args)
            node = _Node(
                NUMBER,
                lambda v, p, a: pick([r(v, p, a) for r in runs]),
                token.position,
                all(arg.constant for arg in args),
            )
        return self._fold(node)


class Expression:
    """A compiled condition. Immutable and thread-safe; :meth:`__call__` never blocks.

    >>> Expression("abs(value - previous) > 5 and age < 60")(value=90, previous=80, age=1)
    True
    """

    __slots__ = ("evaluate", "text")

    def __init__(self, text: str) -> None:
        """Parse and type-check ``text``. Raises :class:`ExpressionError` (position and expectation)."""
        if not isinstance(text, str):
            raise ExpressionError(f"expected the expression as a string, got {type(text).__name__}", str(text), 0)
        self.text = text
        self.evaluate: Callable[[float, float, float], bool] = _Parser(text).parse().run  # type: ignore[assignment]
        """The compiled condition itself, ``evaluate(value, previous, age) -> bool`` (what
        :meth:`__call__` calls; for hot loops)."""

    def __call__(self, value: float, previous: float, age: float) -> bool:
        """Evaluate with these inputs. Raises :class:`ExpressionError` only for a division by zero."""
        return self.evaluate(value, previous, age)

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"
