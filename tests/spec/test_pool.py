"""``endpoints:`` and ``routing:``: pools in the spec, their errors, limits, secrets, identity."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from batchchat.errors import SpecError
from batchchat.spec import JobSpec, LimitsSpec, load_spec
from batchchat.spec.pool import POOL, mapping_changes, model_mappings, tiers

BASE = (
    "input:\n  path: data.jsonl\nrequest:\n  model: m\n  messages:\n"
    "    - {role: user, content: hi}\n"
)
POOL_TEXT = """endpoints:
  - name: cheap
    base_url: http://127.0.0.1:8000/v1
    limits: {rpm: 600}
  - name: azure
    base_url: https://user:hunter2@example.openai.azure.com/openai/v1
    api_key_env: AZURE_KEY
    model: {m: my-deployment}
    priority: 2
    weight: 3
    headers: {api-key: literal-secret-value}
"""


def load(tmp_path: Path, text: str) -> JobSpec:
    path = tmp_path / "job.yaml"
    path.write_text(BASE + text)
    return load_spec(path)


def pool(**member: Any) -> dict[str, Any]:
    """A spec mapping with a pool of two members, the first one changed by ``member``."""
    first = {"name": "a", "base_url": "http://a.test/v1", **member}
    return {
        "input": {"path": "x"},
        "request": {"model": "m", "messages": []},
        "endpoints": [first, {"name": "b", "base_url": "http://b.test/v1"}],
    }


def test_a_pool_loads_with_every_key(tmp_path: Path) -> None:
    spec = load(tmp_path, POOL_TEXT + "routing: {sticky: prefix, prefix_chars: 500}\n")
    assert spec.endpoints is not None
    cheap, azure = spec.endpoints
    assert (cheap.name, cheap.priority, cheap.weight) == ("cheap", 1, 1.0)
    assert (azure.priority, azure.weight, azure.api_key_env) == (2, 3.0, "AZURE_KEY")
    assert azure.sent_model("m") == "my-deployment" and cheap.sent_model("m") == "m"
    assert [[m.name for m in tier] for tier in tiers(spec.endpoints)] == [["cheap"], ["azure"]]
    assert spec.routing.sticky == "prefix" and spec.routing.prefix_chars == 500


def test_a_member_keeps_the_job_limits_it_does_not_set() -> None:
    spec = load_spec({**pool(limits={"rpm": 600}), "limits": {"tpm": 9000, "max_concurrency": 8}})
    assert spec.endpoints is not None
    own, inherited = (m.limits_over(spec.limits) for m in spec.endpoints)
    assert (own.rpm, own.tpm, own.max_concurrency) == (600, 9000, 8)
    assert inherited == spec.limits


def test_a_single_endpoint_is_not_a_pool(tmp_path: Path) -> None:
    spec = load(tmp_path, "endpoint: {base_url: 'http://x.test/v1'}\n")
    assert spec.endpoints is None
    assert spec.endpoint_identity == "http://x.test/v1"
    assert spec.request_identity()["base_url"] == "http://x.test/v1"
    assert "routing" not in spec.redacted()


BAD = [
    (
        "endpoint: {base_url: 'http://x.test/v1'}\n" + POOL_TEXT,
        "give one endpoint (endpoint:) or a pool (endpoints:), not both",
    ),
    ("endpoints: []\n", "a pool needs at least one endpoint"),
    (
        "endpoints:\n  - {name: a}\n  - {name: A}\n",
        "the name 'A' is used twice",
    ),
    ("endpoints:\n  - {name: 'has space'}\n", "must be a short name"),
    ("endpoints:\n  - {name: " + "x" * 40 + "}\n", "must be a short name"),
    ("endpoints:\n  - {base_url: 'http://x.test/v1'}\n", "endpoints.0.name: required key"),
    ("endpoints:\n  - {name: a, weight: 0}\n", "greater than 0"),
    ("endpoints:\n  - {name: a, priority: 0}\n", "greater than or equal to 1"),
    ("endpoints:\n  - {name: a, model: {m: ''}}\n", "got an empty one"),
    ("endpoints:\n  - {name: a, limits: {tokenizer: tiktoken}}\n", "unknown key"),
    ("routing: {sticky: row}\n", "routing: applies to a pool of endpoints"),
    ("endpoints:\n  - {name: a}\nrouting: {sticky: always}\n", "'none', 'row' or 'prefix'"),
    (
        "endpoints:\n  - {name: a, pricing: {m: {input: 1, output: 2, currency: CNY}}}\n",
        "endpoints[a].pricing.m is in CNY: add currency_rates",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_pools_are_refused_with_the_reason(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(SpecError, match="invalid job spec") as caught:
        load(tmp_path, text)
    assert message in str(caught.value)


def test_an_unknown_key_of_a_member_is_named_with_its_line(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as caught:
        load(tmp_path, "endpoints:\n  - name: a\n    wieght: 2\n")
    assert "job.yaml:9: endpoints.0.wieght: unknown key (did you mean 'weight'?)" in str(
        caught.value
    )


def test_the_copied_spec_of_a_pool_shows_no_secret(tmp_path: Path) -> None:
    spec = load(tmp_path, POOL_TEXT)
    text = str(spec.redacted())
    assert "hunter2" not in text and "literal-secret-value" not in text
    members = spec.redacted()["endpoints"]
    assert members[1]["base_url"] == "https://user:***@example.openai.azure.com/openai/v1"
    assert members[1]["headers"]["api-key"] == "***"
    assert "endpoint" not in spec.redacted()  # only the members: the default one is unused
    # what is written next to the results loads again as the same pool
    assert load_spec({**spec.redacted(), "input": {"path": "x"}}).endpoints is not None


def test_a_pool_is_its_requests_in_the_fingerprint() -> None:
    spec = load_spec(pool())
    assert spec.request_identity()["endpoints"] == POOL
    assert "base_url" not in spec.request_identity()
    assert spec.endpoint_identity == POOL
    # adding, removing or moving a member sends the same requests: the same fingerprint
    more = pool()
    more["endpoints"].append({"name": "c", "base_url": "http://c.test/v1"})
    fewer = {**pool(), "endpoints": pool()["endpoints"][:1]}
    moved = pool(base_url="http://elsewhere.test/v1", weight=5, priority=2)
    for other in (more, fewer, moved):
        assert load_spec(other).request_fingerprint() == spec.request_fingerprint()
    # ...but another request is another job, pool or not
    other_request = {**pool(), "request": {"model": "n", "messages": []}}
    assert load_spec(other_request).request_fingerprint() != spec.request_fingerprint()
    single = {**pool(), "endpoints": None, "endpoint": {"base_url": "http://a.test/v1"}}
    assert load_spec(single).request_fingerprint() != spec.request_fingerprint()


def test_mapping_changes_name_only_members_that_map_differently() -> None:
    before = {"a": {"m": "x"}, "b": {}, "gone": {"m": "y"}}
    now = {"a": {"m": "z"}, "b": {"m": "m"}, "new": {"m": "q"}}
    assert mapping_changes(before, now) == ["endpoints[a].model.m: 'x' → 'z'"]
    assert mapping_changes(before, before) == []
    assert mapping_changes({"b": {}}, {"b": {"m": "other"}}) == [
        "endpoints[b].model.m: 'm' → 'other'"
    ]
    assert model_mappings(load_spec(pool(model={"m": "d"})).endpoints) == {
        "a": {"m": "d"},
        "b": {},
    }
    assert model_mappings(None) == {}


def test_member_limits_accept_only_rate_and_concurrency_keys() -> None:
    spec = load_spec(pool(limits={"max_concurrency": 3, "adaptive": False}))
    assert spec.endpoints is not None
    limits = spec.endpoints[0].limits_over(LimitsSpec(rpm=10))
    assert (limits.rpm, limits.max_concurrency, limits.adaptive) == (10, 3, False)
