"""The response cache and re-asks against servers we did not write: llama-server and LiteLLM.

The tiny random-weight model writes gibberish, which is what these need: prompted JSON
never parses (every re-ask is used, and the row ends with an honest parse status), a
JSON-schema answer under a grammar parses once it has tokens enough, and at
temperature 0 the same request gets the same answer, so a second run can be served.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest

from tests.realserver import _jobs as jobs
from tests.realserver._servers import LITELLM_KEY, ServedRequests, Server

pytestmark = pytest.mark.realserver

SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["label", "stars"],
    "properties": {
        "label": {"type": "string", "enum": ["positive", "negative", "neutral"]},
        "stars": {"type": "integer", "minimum": 1, "maximum": 5},
    },
}
PRICES = {"tiny": {"input": 1.0, "output": 2.0}}


def cached_spec(server: Server, folder: Path, rows: int, **sections: Any) -> dict[str, Any]:
    name = jobs.write_input(folder, jobs.prompts(rows, "Review {i}: it works, I guess."))
    spec = jobs.job_spec(server, name, **sections)
    spec.setdefault("cache", {"path": "cache", "store_length": True})
    spec["pricing"] = PRICES
    return spec


def test_a_second_directory_is_served_from_the_cache(tmp_path: Path, llama: Server) -> None:
    spec = cached_spec(llama, tmp_path, 30)
    first = jobs.run(tmp_path, spec)
    assert first.code == 0, first.out[-2000:]
    with ServedRequests(
        llama,
        {
            "model": llama.model,
            "messages": [{"role": "user", "content": "Review 1: it works, I guess."}],
        },
    ) as served:
        second = jobs.run(tmp_path, spec, "-o", str(tmp_path / "again"))
    assert second.code == 0, second.out[-2000:]
    assert served.count == 0  # llama-server took no prompt at all
    before, after = jobs.results(tmp_path), jobs.results(tmp_path, "again")
    assert after["cached"].all() and (after["cost_usd"] == 0).all()
    same = ["row_id", "content", "finish_reason", "prompt_tokens", "completion_tokens"]
    assert after.sort("row_id").select(same).equals(before.sort("row_id").select(same))
    report = jobs.report(tmp_path, "again")
    assert report["requests"]["sent"] == 0
    assert report["cache"]["hits"] == 30
    assert report["cache"]["saved_usd"] == pytest.approx(jobs.report(tmp_path)["cost"]["total_usd"])


def test_answers_cut_by_max_tokens_are_not_kept_unless_asked(tmp_path: Path, llama: Server) -> None:
    spec = cached_spec(llama, tmp_path, 30, cache={"path": "cache"})
    assert jobs.run(tmp_path, spec).code == 0
    cut = jobs.results(tmp_path).filter(pl.col("finish_reason") == "length").height
    assert cut > 0  # the random model rarely stops within 8 tokens
    again = jobs.run(tmp_path, spec, "-o", str(tmp_path / "again"))
    assert again.code == 0
    assert jobs.report(tmp_path, "again")["requests"]["sent"] == cut


def test_the_cache_key_holds_the_endpoint(tmp_path: Path, llama: Server, litellm: Server) -> None:
    via_gateway = Server(
        litellm.name, litellm.root, litellm.health, "tiny-via-llama-server-unlimited",
        litellm.start, key=litellm.key,
    )  # fmt: skip
    direct = cached_spec(llama, tmp_path, 10)
    assert jobs.run(tmp_path, direct).code == 0
    gateway = cached_spec(via_gateway, tmp_path, 10)
    gateway["output"] = {"path": "gateway"}
    run = jobs.run(tmp_path, gateway, key=LITELLM_KEY)
    assert run.code == 0, run.out[-2000:]
    assert jobs.report(tmp_path, "gateway")["cache"] is None  # the same model, not the same URL


def test_json_schema_answers_cut_short_are_asked_again_with_more_tokens(
    tmp_path: Path, llama_nojinja: Server
) -> None:
    request = {
        "messages": [{"role": "user", "content": "{{ text }} Reply in JSON."}],
        "max_tokens": 6,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "facts", "strict": True, "schema": SCHEMA},
        },
    }
    output = {"parse": "json", "reask": {"count": 3}}
    spec = cached_spec(llama_nojinja, tmp_path, 20, request=request, output=output)
    run = jobs.run(tmp_path, spec)
    assert run.code == 0, run.out[-2000:]
    rows = jobs.results(tmp_path)
    print(rows.select("reasks", "parse_status", "completion_tokens").describe())
    assert (rows["parse_status"] == "ok").all()  # 6 → 12 → 24 → 48 tokens
    assert rows["parsed"].is_not_null().all()
    assert (rows["reasks"] > 0).all()
    assert (rows["ask_costs_usd"].list.len() == rows["reasks"] + 1).all()
    report = jobs.report(tmp_path)
    assert report["reasks"]["fixed"] == 20 and report["reasks"]["still_failing"] == 0
    assert report["requests"]["sent"] == 20 + report["reasks"]["reasks"]
    assert report["requests"]["retries"] == 0


def test_prompted_json_that_never_parses_ends_honestly_and_is_not_paid_twice(
    tmp_path: Path, llama: Server
) -> None:
    request = {
        "messages": [{"role": "user", "content": "{{ text }} Reply with a JSON object."}],
        "max_tokens": 16,
    }
    spec = cached_spec(llama, tmp_path, 20, request=request, output={"parse": "json", "reask": 2})
    run = jobs.run(tmp_path, spec)
    assert run.code == 0, run.out[-2000:]
    rows = jobs.results(tmp_path)
    assert (rows["status"] == "ok").all()
    assert (rows["reasks"] == 2).all()  # llama-server took the repair turns (assistant + user)
    assert set(rows["parse_status"]) <= {"invalid_json", "truncated"}
    assert rows["parse_error"].is_not_null().all()
    report = jobs.report(tmp_path)
    assert report["requests"]["sent"] == 60
    assert report["reasks"] == {
        "rows": 20,
        "reasks": 40,
        "cost_usd": pytest.approx(report["reasks"]["cost_usd"]),
        "fixed": 0,
        "still_failing": 20,
    }
    again = jobs.run(tmp_path, spec, "-o", str(tmp_path / "again"))
    assert again.code == 0
    assert jobs.report(tmp_path, "again")["requests"]["sent"] == 0  # re-asked as far already


def test_reasks_and_the_cache_through_the_litellm_gateway(tmp_path: Path, litellm: Server) -> None:
    request = {"messages": [{"role": "user", "content": "{{ text }} Reply with a JSON object."}]}
    spec = cached_spec(litellm, tmp_path, 10, request=request, output={"parse": "json", "reask": 1})
    run = jobs.run(tmp_path, spec, key=LITELLM_KEY)
    assert run.code == 0, run.out[-2000:]
    rows = jobs.results(tmp_path)
    assert (rows["reasks"] == 1).all() and (rows["parse_status"] == "invalid_json").all()
    assert jobs.report(tmp_path)["requests"]["sent"] == 20
    again = jobs.run(tmp_path, spec, "-o", str(tmp_path / "again"), key=LITELLM_KEY)
    assert again.code == 0
    report = jobs.report(tmp_path, "again")
    assert report["requests"]["sent"] == 0 and report["cache"]["hits"] == 10
    assert report["cache"]["saved_usd"] is None  # mock-gpt has no price: unknown, not $0
