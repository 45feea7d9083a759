"""What a pool job writes: the ``endpoint`` column, per-endpoint run stats, and the manifest's
model mappings that guard a resume."""

from __future__ import annotations

from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest

from batchchat.errors import ResumeError
from batchchat.models import EndpointStats
from batchchat.results.encoder import ResultEncoder
from batchchat.results.outdir import open_output, read_manifest
from batchchat.results.runstats import load_stats, save_stats
from batchchat.results.schema import result_columns
from batchchat.spec import JobSpec
from tests._results import make_result, make_spec
from tests.results.test_runstats import full_stats


def pool_spec(out: Path | None = None, **models: dict[str, str]) -> JobSpec:
    names = models or {"a": {}, "b": {}}
    members = [{"name": name, "model": mapping} for name, mapping in names.items()]
    output = {"path": str(out)} if out is not None else None
    return make_spec(endpoints=members, output=output)


def test_a_pool_jobs_results_name_their_endpoint(tmp_path: Path) -> None:
    columns = result_columns(pool_spec(), {})
    names = columns.schema.names
    assert names[names.index("run_id") + 1] == "endpoint"  # after the outcome columns
    encoder = ResultEncoder(columns, run_id="run-1")
    answered = make_result("1")
    answered.endpoint = "a"
    encoder.add(answered)
    encoder.add(make_result("2"))  # never sent: no endpoint
    pq.write_table(encoder.take_table(), tmp_path / "part.parquet")
    assert pq.read_table(tmp_path / "part.parquet").column("endpoint").to_pylist() == ["a", None]


def test_a_single_endpoint_jobs_columns_are_as_they_always_were() -> None:
    assert "endpoint" not in result_columns(make_spec(), {}).schema.names


def test_per_endpoint_counters_round_trip(tmp_path: Path) -> None:
    stats = full_stats()
    stats.endpoints = {
        "a": EndpointStats(requests_sent=3, status_counts={200: 2, 503: 1}, results_ok=2),
        "b": EndpointStats(requests_sent=1, status_counts={401: 1}, removed="rejected key"),
    }
    save_stats(tmp_path, stats)
    [loaded] = load_stats(tmp_path)
    assert loaded.endpoints == stats.endpoints
    data = orjson.loads((tmp_path / "runs" / f"{stats.run_id}.json").read_bytes())
    assert data["endpoints"]["a"]["status_counts"] == {"200": 2, "503": 1}
    # an older file has no endpoints; a newer one may count more per endpoint
    del data["endpoints"]
    (tmp_path / "runs" / "older.json").write_bytes(orjson.dumps({**data, "run_id": "older"}))
    newer = {**data, "run_id": "newer", "endpoints": {"a": {"requests_sent": 1, "future": 2}}}
    (tmp_path / "runs" / "newer.json").write_bytes(orjson.dumps(newer))
    by_id = {s.run_id: s for s in load_stats(tmp_path)}
    assert by_id["older"].endpoints == {}
    assert by_id["newer"].endpoints == {"a": EndpointStats(requests_sent=1)}


def test_the_manifest_remembers_every_members_model_mapping(tmp_path: Path) -> None:
    with open_output(tmp_path, pool_spec(a={"m": "deployment"}, b={})):
        pass
    with open_output(tmp_path, pool_spec(b={}, c={"m": "other"})):  # a left, c joined
        pass
    manifest = read_manifest(tmp_path)
    assert manifest is not None
    assert manifest["endpoint_models"] == {"a": {"m": "deployment"}, "b": {}, "c": {"m": "other"}}
    assert manifest["request"]["endpoints"] == "pool" and "base_url" not in manifest["request"]
    # a comes back mapping the model otherwise: what it answered before was another request
    with pytest.raises(ResumeError) as caught:
        open_output(tmp_path, pool_spec(a={"m": "something-else"}))
    message = str(caught.value)
    assert "endpoints[a].model.m: 'deployment' → 'something-else'" in message
    assert "--new-output DIR" in message and caught.value.exit_code == 2
    with open_output(tmp_path, pool_spec(a={"m": "deployment"}, d={})):
        pass  # as it was: resumed


def test_a_single_endpoint_and_a_pool_are_different_jobs(tmp_path: Path) -> None:
    with open_output(tmp_path, make_spec(endpoint={"base_url": "http://a.test/v1"})):
        pass
    with pytest.raises(ResumeError) as caught:
        open_output(tmp_path, pool_spec())
    assert "base_url: 'http://a.test/v1' → (unset)" in str(caught.value)
    assert "endpoints: (unset) → 'pool'" in str(caught.value)
