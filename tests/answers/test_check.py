"""The job's check of an answer, as a table: what passes, what fails, and as what."""

from __future__ import annotations

from typing import Any

import pytest

from batchchat.answers.check import answer_check, parse_status_group
from batchchat.errors import ClientError
from tests._results import make_choice, make_result, make_spec

SCHEMA = {
    "type": "object",
    "required": ["sentiment"],
    "properties": {"sentiment": {"type": "string", "enum": ["positive", "negative"]}},
}
JSON_SCHEMA = {
    "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": SCHEMA}}
}
LABELS = ["positive", "negative", "neutral"]

JOBS: dict[str, dict[str, Any]] = {
    "json": {"output": {"parse": "json"}},
    "schema": {"request": JSON_SCHEMA, "output": {"parse": "json"}},
    "labels": {"output": {"labels": LABELS}},
    "json labels": {"output": {"parse": "json", "labels": LABELS, "label_field": "label"}},
    "reask only": {"output": {"reask": 1}},
}

CASES = [
    ("json", '{"a": 1}', "stop", None),
    ("json", '```json\n{"a": 1}\n```', "stop", None),
    ("json", 'Sure! {"a": 1}', "stop", "invalid_json"),
    ("json", "", "stop", "no_content"),
    ("json", None, "stop", "no_content"),
    ("json", '{"a": ', "length", "truncated"),
    ("json", '{"a": 1}', "length", None),  # cut, yet complete JSON: usable
    ("schema", '{"sentiment": "positive"}', "stop", None),
    ("schema", '{"sentiment": "meh"}', "stop", "schema_mismatch"),
    ("schema", '{"mood": "positive"}', "stop", "schema_mismatch"),
    ("schema", "not json", "stop", "invalid_json"),
    ("labels", "positive", "stop", None),
    ("labels", "Negative.", "stop", None),
    ("labels", "I am not sure", "stop", "off_label"),
    ("labels", "positive or negative", "stop", "off_label"),
    ("labels", "positive because it is", "length", None),
    ("labels", "I thi", "length", "truncated"),
    ("json labels", '{"label": "neutral"}', "stop", None),
    ("json labels", '{"label": "happy"}', "stop", "off_label"),
    ("json labels", "neutral", "stop", "invalid_json"),
    ("reask only", "anything at all", "stop", None),
    ("reask only", "anything at", "length", "truncated"),
    ("reask only", "  ", "stop", "no_content"),
]


@pytest.mark.parametrize(("job", "content", "finish", "kind"), CASES)
def test_the_verdict_of_an_answer(
    job: str, content: str | None, finish: str, kind: str | None
) -> None:
    check = answer_check(make_spec(**JOBS[job]))
    assert check is not None
    result = make_result("1", choices=[make_choice(content, finish_reason=finish)])
    assert result.response is not None
    verdict = check(result.request, result.response)
    assert (None if verdict is None else verdict.kind) == kind
    assert check.status(result) == (kind or "ok")


def test_verdicts_are_worded_for_the_model() -> None:
    check = answer_check(make_spec(**JOBS["labels"]))
    assert check is not None
    verdict = check.content_verdict("maybe")
    assert verdict is not None
    assert verdict.message.endswith("Answer with exactly one of: positive, negative, neutral.")
    schema = answer_check(make_spec(**JOBS["schema"]))
    assert schema is not None
    mismatch = schema.content_verdict('{"sentiment": "meh"}')
    assert mismatch is not None
    assert "does not match the required schema" in mismatch.message
    assert "'meh' is not one of" in mismatch.message
    field = answer_check(make_spec(**JOBS["json labels"]))
    assert field is not None
    off = field.content_verdict('{"label": "happy"}')
    assert off is not None and "in the field 'label'" in off.message


def test_a_job_that_checks_nothing_has_no_check() -> None:
    assert answer_check(make_spec()) is None


def test_the_parse_status_column_is_null_for_a_failed_request() -> None:
    check = answer_check(make_spec(**JOBS["json"]))
    assert check is not None
    group = parse_status_group(check)
    assert [field.name for field in group.fields] == ["parse_status"]
    assert group.extract(make_result("1", error=ClientError("no", status=400))) == (None,)
    assert group.extract(make_result("1", content='{"a": 2}')) == ("ok",)
    assert group.extract(make_result("1", choices=[])) == ("no_content",)
