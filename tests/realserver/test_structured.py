"""Labels with logprobs and JSON-schema answers, against the ``--no-jinja`` llama-server
(the only one that takes ``response_format``). Its ``top_logprobs`` are taken before the
grammar, so the token the grammar forced can be missing from them."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from tests.realserver import _jobs as jobs
from tests.realserver._compare import assert_same, raw_by_id
from tests.realserver._servers import Server

pytestmark = pytest.mark.realserver

LABELS = ["positive", "negative", "neutral"]


def schema_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "json_schema",
        "json_schema": {"name": "answer", "strict": True, "schema": schema},
    }


def seeded(server: Server, folder: Path, rows: int, **sections: Any) -> dict[str, Any]:
    name = jobs.write_input(folder, jobs.prompts(rows, "Review {i}: it works, I guess."))
    spec = jobs.job_spec(server, name, **sections)
    spec["request"] |= {"temperature": 1.0}
    spec["seed"] = {"base": 3, "per_row": True}
    return spec


def label_token_logprob(logprobs: list[dict[str, Any]]) -> float:
    """The logprob of the token the label starts at: the first past quotes and spaces."""
    return next(t["logprob"] for t in logprobs if t["token"].strip(' "\n'))


def test_label_confidence_is_never_certain_when_the_chosen_token_is_unlikely(
    tmp_path: Path, llama_nojinja: Server
) -> None:
    request = {
        "messages": [
            {"role": "user", "content": "{{ text }} Answer with one of: {{ labels | join(', ') }}"}
        ],
        "max_tokens": 12,
        "logprobs": True,
        "top_logprobs": 5,
        "response_format": schema_format({"type": "string", "enum": LABELS}),
    }
    spec = seeded(llama_nojinja, tmp_path, 40, request=request, output={"labels": LABELS})
    run = jobs.run(tmp_path, spec)
    assert run.code == 0, run.out[-2000:]
    labelled = jobs.results(tmp_path).filter(pl.col("label").is_not_null())
    assert labelled.height > 0
    claims = [
        (r["row_id"], r["content"], round(math.exp(label_token_logprob(r["logprobs"])), 5))
        for r in labelled.iter_rows(named=True)
        if (r["label_confidence"] or 0) >= 0.999
    ]
    false_certainty = [c for c in claims if c[2] < 0.5]
    print(f"{labelled.height} labelled, {len(claims)} with confidence 1.0: {claims[:5]}")
    assert not false_certainty, (
        f"{len(false_certainty)}/{labelled.height} rows claim label_confidence 1.0 although "
        f"the chosen token's probability is < 0.5 (row, answer, p): {false_certainty[:3]}"
    )


def test_json_schema_answers_are_parsed_as_the_raw_server_sent_them(
    tmp_path: Path, llama_nojinja: Server
) -> None:
    schema = {
        "type": "object",
        "properties": {
            "label": {"type": "string", "enum": LABELS},
            "stars": {"type": "integer", "minimum": 1, "maximum": 5},
        },
        "required": ["label", "stars"],
        "additionalProperties": False,
    }
    request = {"max_tokens": 200, "response_format": schema_format(schema)}
    spec = seeded(llama_nojinja, tmp_path, 30, request=request, output={"parse": "json"})
    bodies = jobs.planned_bodies(tmp_path, spec)
    run = jobs.run(tmp_path, spec)
    assert run.code == 0, run.out[-2000:]
    df = jobs.results(tmp_path)
    assert (df["status"] == "ok").all()
    got = {f"{r['row_id']}#0": (r["content"], r["parsed"]) for r in df.iter_rows(named=True)}
    raw = raw_by_id(llama_nojinja, bodies)
    want = {}
    for cid, answer in raw.items():
        content = answer["choices"][0]["message"]["content"]
        want[cid] = (content, json.loads(content))
    assert_same(got, want)
    assert df["parse_error"].is_null().all()
