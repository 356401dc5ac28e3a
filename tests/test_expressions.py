"""The alarm expression language: values, types, errors with positions, limits, no Python eval."""

from __future__ import annotations

import pytest

from uun_gateway.expressions import MAX_DEPTH, MAX_LENGTH, Expression, ExpressionError, tokenize


@pytest.mark.parametrize(
    ("text", "value", "previous", "age", "expected"),
    [
        ("value > 80", 81.0, 0.0, 0.0, True),
        ("value > 80", 80.0, 0.0, 0.0, False),
        ("value >= 80", 80.0, 0.0, 0.0, True),
        ("value < -5.5", -6.0, 0.0, 0.0, True),
        ("value <= 1e2", 100.0, 0.0, 0.0, True),
        ("value == 1", 1.0, 0.0, 0.0, True),
        ("value != 1", 1.0, 0.0, 0.0, False),
        ("abs(value - previous) > 5", 70.0, 80.0, 0.0, True),
        ("abs(value - previous) > 5", 78.0, 80.0, 0.0, False),
        ("value > 80 and age < 60", 81.0, 0.0, 61.0, False),
        ("value > 80 or age > 60", 1.0, 0.0, 61.0, True),
        ("not value > 80", 81.0, 0.0, 0.0, False),
        ("not (value > 80 or value < 10)", 50.0, 0.0, 0.0, True),
        ("value * 2 + 1 > 10 - 2 / 2", 4.5, 0.0, 0.0, True),  # 10 > 9: * and / bind tighter
        ("(value + 1) * 2 == 12", 5.0, 0.0, 0.0, True),
        ("-value > 3", -4.0, 0.0, 0.0, True),
        ("- -value == value", 3.0, 0.0, 0.0, True),
        ("min(value, previous) > 1 and max(value, previous, 7) == 7", 2.0, 3.0, 0.0, True),
        ("true and not false", 0.0, 0.0, 0.0, True),
        ("(value > 1) == (previous > 1)", 2.0, 0.0, 0.0, False),
        ("value - previous > .5", 1.0, 0.25, 0.0, True),
        ("value / previous > 2", 9.0, 4.0, 0.0, True),
    ],
)
def test_evaluates(text: str, value: float, previous: float, age: float, expected: bool) -> None:
    assert Expression(text)(value, previous, age) is expected


@pytest.mark.parametrize(
    ("text", "column", "message"),
    [
        ("value >", 8, 'expected a number, a name (value, previous, age), a function or "("; found the end'),
        ("value > 1 < 2", 11, "comparisons do not chain"),
        ("value and value > 1", 1, '"and" needs true/false'),
        ("value > 1 or 3", 14, '"or" needs true/false'),
        ("not value", 5, '"not" needs true/false'),
        ("(value > 1) + 2 > 1", 1, '"+" needs a number, found true/false'),
        ("-(value > 1)", 2, 'a "-" sign needs a number'),
        ("value > true", 9, '">" needs a number'),
        ("value == true", 7, '"==" compares values of one type'),
        ("foo > 1", 1, "unknown name 'foo'; expected one of value, previous, age"),
        ("__import__ > 1", 1, "unknown name '__import__'"),
        ("value = 3", 7, "unexpected character '=' (use \"==\" to compare)"),
        ("value > 1 && value < 3", 11, 'unexpected character \'&\' (use "and"/"or")'),
        ("value.real > 1", 6, "unexpected character '.'"),
        ("(value > 1", 11, 'expected an operator or ")"; found the end of the expression'),
        ("value + 1", 1, "the condition is a number; expected true/false"),
        ("1e999 > value", 1, "the number 1e999 is out of range"),
        ("1e > value", 3, "expected digits after the exponent"),
        ("3value > 1", 2, "expected an operator after the number '3'"),
        ("abs(value, 1) > 1", 1, "abs() takes one argument, found 2"),
        ("max(value) > 1", 1, "max() takes two or more arguments, found 1"),
        ("abs value > 1", 5, 'expected "(" after the function abs; found "value"'),
        ("abs(value > 1) > 1", 5, "abs() needs a number"),
        ("min(value, 1 > 1", 17, 'expected "," or ")"'),
        ("value > 1 value", 11, 'expected an operator, "and", "or" or the end of the expression; found "value"'),
        ("value > and", 9, "expected a number"),
        ("value / 0 > 1", 7, "division by zero"),
        ("", 1, "expected an expression"),
        ("   ", 4, "expected an expression"),
        ("value > 1e308 * 10", 9, "out of range"),
    ],
)
def test_errors_name_the_column_and_what_was_expected(text: str, column: int, message: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        Expression(text)
    assert str(caught.value).startswith(f"column {column}: "), str(caught.value)
    assert message in str(caught.value)
    assert caught.value.position == column - 1
    assert caught.value.text == text


def test_runtime_division_by_zero_names_the_operator() -> None:
    expression = Expression("value / (previous - 1) > 1")
    assert expression(4.0, 2.0, 0.0) is True
    with pytest.raises(ExpressionError, match=r"^column 7: division by zero"):
        expression(4.0, 1.0, 0.0)


def test_length_is_bounded() -> None:
    text = "value > 1" + " " * (MAX_LENGTH - 9)
    assert len(text) == MAX_LENGTH
    Expression(text)
    with pytest.raises(ExpressionError, match=f"longer than {MAX_LENGTH} characters"):
        Expression(text + " ")


def test_nesting_is_bounded() -> None:
    ok = "(" * (MAX_DEPTH - 1) + "value" + ")" * (MAX_DEPTH - 1) + " > 1"
    assert Expression(ok)(2.0, 0.0, 0.0) is True
    deep = "(" * (MAX_DEPTH + 1) + "value" + ")" * (MAX_DEPTH + 1) + " > 1"
    with pytest.raises(ExpressionError, match="nested too deeply"):
        Expression(deep)
    long_chain = " and ".join(["value > 1"] * 40)  # a flat chain is not deep
    assert Expression(long_chain)(2.0, 0.0, 0.0) is True
    with pytest.raises(ExpressionError, match="nested too deeply"):
        Expression("not " * (MAX_DEPTH + 1) + "true")
    with pytest.raises(ExpressionError, match="nested too deeply"):
        Expression("-" * (MAX_DEPTH + 1) + "value > 1")


def test_and_or_short_circuit() -> None:
    # the right side would divide by zero; it is never evaluated
    assert Expression("previous == 0 or value / previous > 2")(5.0, 0.0, 0.0) is True
    assert Expression("previous != 0 and value / previous > 2")(5.0, 0.0, 0.0) is False


def test_not_a_string_is_an_error() -> None:
    with pytest.raises(ExpressionError, match="expected the expression as a string, got int"):
        Expression(5)  # type: ignore[arg-type]


def test_tokens_carry_positions() -> None:
    tokens = tokenize("abs(value)>=1.5e1")
    assert [(t.kind, t.text, t.position) for t in tokens] == [
        ("name", "abs", 0),
        ("op", "(", 3),
        ("name", "value", 4),
        ("op", ")", 9),
        ("op", ">=", 10),
        ("number", "1.5e1", 12),
        ("end", "", 17),
    ]
    assert tokens[5].number == 15.0
