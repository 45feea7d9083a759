"""input.where: the filter language, as tables of what it keeps and what it refuses."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from batchchat.spec.where import WhereError, parse_where, where_columns

ROWS = pl.DataFrame(
    {
        "id": [1, 2, 3, 4],
        "status": ["ok", "ok", "error", "ok"],
        "label": ["positive", None, "neutral", "very negative"],
        "label_confidence": [0.5, 0.9, None, 0.59],
        "flag": [True, False, True, None],
        "parsed": [{"s": "mixed"}, {"s": "x"}, None, {"s": "it's"}],
    }
)

KEEPS = [
    ("status = 'ok' AND label_confidence < 0.6", [1, 4]),
    ("status == 'ok' and label_confidence >= 0.59", [2, 4]),
    ("label_confidence <= 0.5 OR id > 3", [1, 4]),
    ("label IS NULL", [2]),
    ("label is not null", [1, 3, 4]),
    ("NOT status = 'ok'", [3]),
    ("status != 'ok'", [3]),
    ("status <> 'ok'", [3]),
    ("label IN ('positive', 'neutral')", [1, 3]),
    ("label NOT IN ('positive')", [3, 4]),
    ("label LIKE '%negative'", [4]),
    ("label LIKE 'p_sitive'", [1]),
    ("label NOT LIKE 'p%'", [3, 4]),
    ("parsed.s = 'mixed'", [1]),
    ("parsed.s = 'it''s'", [4]),
    ('"label_confidence" > 0.8', [2]),
    ("flag", [1, 3]),
    ("flag = TRUE", [1, 3]),
    ("flag = false", [2]),
    ("(id = 1 OR id = 2) AND NOT (label IS NULL)", [1]),
    ("id >= -1 AND id < 2.5e0", [1, 2]),
]


@pytest.mark.parametrize(("text", "ids"), KEEPS)
def test_a_filter_keeps_the_rows_it_says(text: str, ids: list[int]) -> None:
    assert ROWS.filter(parse_where(text))["id"].to_list() == ids


REFUSED = [
    ("x IN (SELECT a FROM read_csv('/etc/passwd'))", "expected a column, a number"),
    ("read_csv('/etc/passwd')", "expected AND, OR or the end at character 9"),
    ("__import__('os').system('true')", "expected AND, OR or the end"),
    ("x = ", "got the end"),
    ("(x = 1", "expected ')'"),
    ("x ! 1", "unexpected '! 1' at character 3"),
    ("x NOT 3", "expected IN or LIKE after NOT"),
    ("x IS 3", "expected NULL after IS"),
    ("x IN 3", "expected '(' after IN"),
    ("x IN (1 2)", "expected ')' or ','"),
    ("x LIKE y", "expected a 'pattern' after LIKE"),
    ("parsed.", "expected a field name after '.'"),
    ("x = 1; DROP TABLE t", "unexpected ';"),
]


@pytest.mark.parametrize(("text", "message"), REFUSED)
def test_what_is_not_in_the_grammar_is_refused_with_where(text: str, message: str) -> None:
    with pytest.raises(WhereError) as caught:
        parse_where(text)
    assert message in str(caught.value)


def test_nothing_is_read_while_a_filter_is_parsed(tmp_path: Path) -> None:
    # polars' sql_expr would run this sub-query as it parses, reading the file
    secret = tmp_path / "secret.csv"
    secret.write_text("a\nthe-secret\n")
    with pytest.raises(WhereError) as caught:
        parse_where(f"a IN (SELECT a FROM read_csv('{secret}'))")
    assert "the-secret" not in str(caught.value)


def test_the_columns_a_filter_reads() -> None:
    assert where_columns("parsed.s = 'x' AND label_confidence < 0.6 OR parsed IS NULL") == [
        "parsed",
        "label_confidence",
    ]
