"""The job's check of an answer: parses as JSON, matches the schema, names a label, complete.

One check serves three places, so they can never disagree: the executor's re-asks (the
check runs where the answer arrives, see :mod:`batchchat.execute.reask`), the response
cache (a stored answer that fails it is not served to a job that may re-ask), and the
``parse_status`` column. It is built from ``output.parse``, the request's ``json_schema``
response format (validated with ``jsonschema``, as the ``parsed`` column is) and
``output.labels`` -- the same rules that fill ``parsed``/``parse_error`` and
``label``/``label_error``. An answer cut by the token limit fails only when that cut made
it unusable; in a job that checks nothing else, any cut answer fails.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from batchchat.execute.reask import Verdict
from batchchat.labels.columns import label_values
from batchchat.labels.labelset import LabelSet
from batchchat.models import ChatRequest, ChatResponse, ChatResult
from batchchat.results.columns import ColumnGroup, first_choice
from batchchat.results.structured import StructuredOutput, response_json_schema
from batchchat.spec import JobSpec

#: ``parse_status`` of an answer that passed
PARSED = "ok"

_WORDED = {
    "no_content": "Your answer was empty.",
    "invalid_json": "Your answer is not valid JSON ({detail}). Reply with the JSON value alone.",
    "schema_mismatch": "Your JSON does not match the required schema: {detail}.",
}


class JobCheck:
    """The check of one job's answers (a callable :data:`AnswerCheck`)."""

    def __init__(
        self,
        structured: StructuredOutput | None,
        labels: LabelSet | None,
        *,
        label_field: str | None = None,
    ) -> None:
        self.structured = structured
        self.labels = labels
        self.label_field = label_field

    def __call__(self, request: ChatRequest, response: ChatResponse) -> Verdict | None:
        choice = first_choice(response.choices)
        content = None if choice is None else choice.content
        verdict = self.content_verdict(content, choice.logprobs if choice else None)
        if choice is None or choice.finish_reason != "length":
            return verdict
        if verdict is None and (self.structured is not None or self.labels is not None):
            return None  # cut, yet what the job needs is all there
        cause = "" if verdict is None else f" ({verdict.message})"
        return Verdict(
            "truncated",
            f"Your answer was cut off at the token limit before it was complete{cause}. "
            "Give a complete answer that is shorter.",
        )

    def content_verdict(self, content: str | None, logprobs: Any = None) -> Verdict | None:
        """What is wrong with ``content`` as JSON and as a label (None: nothing)."""
        if self.structured is not None:
            _, failure = self.structured.parse_checked(content)
            if failure is not None:
                template = _WORDED[failure.kind]
                return Verdict(failure.kind, template.format(detail=failure.message))
        if self.labels is not None:
            found = label_values(self.labels, content, None, logprobs, label_field=self.label_field)
            if found["label"] is None:
                return self._off_label(found["label_error"])
        if self.structured is None and self.labels is None and not (content or "").strip():
            return Verdict("no_content", _WORDED["no_content"])
        return None

    def _off_label(self, why: str | None) -> Verdict:
        assert self.labels is not None
        allowed = ", ".join(self.labels.labels)
        where = f" in the field {self.label_field!r}" if self.label_field else ""
        return Verdict(
            "off_label",
            f"Your answer{where} matches none of the labels ({why or 'no label'}). "
            f"Answer with exactly one of: {allowed}.",
        )

    def status(self, result: ChatResult) -> str | None:
        """The ``parse_status`` of a result: ``ok``, a verdict's kind, or None (no answer)."""
        if result.error is not None or result.response is None:
            return None
        verdict = self(result.request, result.response)
        return PARSED if verdict is None else verdict.kind


def answer_check(spec: JobSpec) -> JobCheck | None:
    """The check of ``spec``'s answers; None when the job checks nothing (no
    ``output.parse``, ``output.labels`` nor ``output.reask``)."""
    output = spec.output
    if output.parse is None and output.labels is None and output.reask is None:
        return None
    structured = None
    if output.parse == "json":
        structured = StructuredOutput(response_json_schema(spec.request))
    return JobCheck(structured, LabelSet.from_spec(spec), label_field=output.label_field)


def parse_status_group(check: JobCheck) -> ColumnGroup:
    """The ``parse_status`` column: ``ok``, or why the final answer cannot be used."""

    def extract(result: ChatResult) -> tuple[Any, ...]:
        return (check.status(result),)

    return ColumnGroup("answers", (pa.field("parse_status", pa.string()),), extract)
