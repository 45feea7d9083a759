"""The job spec: every field good and bad, with the message, the line and did-you-mean checked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from batchchat.errors import SpecError
from batchchat.spec import JobSpec, SeedSpec, load_spec

INPUT = "input:\n  path: data.jsonl\n"
REQUEST = "request:\n  model: m\n  messages:\n    - {role: user, content: hi}\n"


def document(section: str) -> str:
    """The minimal spec with ``section`` added, or replacing its input:/request: section."""
    parts = {"input": INPUT, "request": REQUEST}
    key = section.split(":", 1)[0]
    parts[key] = section if section.endswith("\n") else section + "\n"
    return "".join(parts.values())


def load(tmp_path: Path, section: str) -> JobSpec:
    path = tmp_path / "job.yaml"
    path.write_text(document(section))
    return load_spec(path)


def line_of(text: str, marker: str) -> int:
    for number, line in enumerate(text.splitlines(), start=1):
        if marker in line:
            return number
    raise AssertionError(f"{marker!r} is not in the document")


GOOD: list[tuple[str, Any, Any]] = [
    ("input:\n  path: d/*.csv\n  format: csv", lambda s: s.input.format, "csv"),
    ("input:\n  path: x\n  id_column: uid", lambda s: s.input.id_column, "uid"),
    ("input:\n  path: x\n  limit: 5", lambda s: s.input.limit, 5),
    ("input:\n  path: x\n  on_bad_line: skip", lambda s: s.input.on_bad_line, "skip"),
    ("input:\n  path: x\n  batch_size: 10", lambda s: s.input.batch_size, 10),
    ("endpoint: {base_url: 'https://api.openai.com/v1'}", lambda s: s.endpoint.is_simulator, False),
    ("endpoint: {api_key_env: OPENAI_API_KEY}", lambda s: s.endpoint.api_key_env, "OPENAI_API_KEY"),
    (
        "endpoint: {headers: {X-Title: '${APP}'}}",
        lambda s: s.endpoint.headers,
        {"X-Title": "${APP}"},
    ),
    ("endpoint: {timeout_s: 5, connect_timeout_s: 2}", lambda s: s.endpoint.connect_timeout_s, 2),
    (
        "endpoint: {first_byte_timeout_s: 9, idle_timeout_s: 3}",
        lambda s: s.endpoint.idle_timeout_s,
        3,
    ),
    (
        "endpoint: {simulator: {latency: {mean_ms: 20, distribution: lognormal}}}",
        lambda s: s.endpoint.simulator.latency.distribution,
        "lognormal",
    ),
    (
        "endpoint: {simulator: {rpm: 60, faults: {http_429: 0.1, seed: 3}}}",
        lambda s: s.endpoint.simulator.faults.http_429,
        0.1,
    ),
    (
        "request:\n  model: m\n  messages: '{{ chat }}'",
        lambda s: s.request["messages"],
        "{{ chat }}",
    ),
    ("request:\n  model: m\n  messages: []\n  top_k: 4", lambda s: s.request["top_k"], 4),
    ("seed: 5", lambda s: s.seed, 5),
    ("seed: {base: 5, per_row: true}", lambda s: s.seed, SeedSpec(base=5, per_row=True)),
    ("samples: 3", lambda s: s.samples, 3),
    (
        "limits: {rpm: 10, tpm: 100, max_concurrency: 4096, adaptive: false}",
        lambda s: s.limits.max_concurrency,
        4096,
    ),
    (
        "retry: {max_attempts: 1, max_wait_s: 0.5, initial_wait_s: 0.1}",
        lambda s: s.retry.max_wait_s,
        0.5,
    ),
    (
        "output: {path: res, keep_columns: [id, text]}",
        lambda s: s.output.keep_columns,
        ["id", "text"],
    ),
    ("output: {parse: json, keep_raw: true}", lambda s: s.output.parse, "json"),
    (
        "output: {labels: {pos: positive, neg: negative}, label_field: label}",
        lambda s: s.output.labels,
        {"pos": "positive", "neg": "negative"},
    ),
    ("output: {part_rows: 10, part_seconds: 0.5}", lambda s: s.output.part_rows, 10),
    (
        "pricing: {m: {input: 0.15, output: 0.6, cached_input: 0.075}}",
        lambda s: s.pricing["m"].cached_input,
        0.075,
    ),
    (
        "pricing: {q: {input: 2, output: 8, currency: CNY}}\ncurrency_rates: {CNY: 0.14}",
        lambda s: s.currency_rates,
        {"CNY": 0.14},
    ),
    ("budget: {max_cost_usd: 5}", lambda s: s.budget.max_cost_usd, 5.0),
    ("vars: {lang: de}", lambda s: s.vars, {"lang": "de"}),
    ("name: my-job", lambda s: s.name, "my-job"),
]


@pytest.mark.parametrize(("section", "read", "expected"), GOOD)
def test_good_values_load(tmp_path: Path, section: str, read: Any, expected: Any) -> None:
    assert read(load(tmp_path, section)) == expected


def test_defaults(tmp_path: Path) -> None:
    spec = load(tmp_path, "")
    assert spec.name == "job"  # the file's stem
    assert spec.base_dir == str(tmp_path.resolve())
    assert (spec.input.format, spec.input.id_column, spec.input.limit) == (None, None, None)
    assert (spec.input.on_bad_line, spec.input.batch_size) == ("error", 10_000)
    assert spec.endpoint.is_simulator and spec.endpoint.api_key_env is None
    assert (spec.endpoint.timeout_s, spec.endpoint.connect_timeout_s) == (60.0, 10.0)
    assert (spec.seed, spec.samples) == (None, 1)
    assert (spec.limits.rpm, spec.limits.tpm, spec.limits.max_concurrency) == (None, None, 64)
    assert (spec.retry.max_attempts, spec.retry.max_wait_s) == (6, 120.0)
    assert spec.output.keep_columns == [] and spec.output.parse is None
    assert spec.output_dir == tmp_path.resolve() / "out" / "job"
    assert spec.pricing == {} and spec.budget is None and spec.vars == {}


# (section, field path, what the message says, a text on the line the error must point at)
BAD: list[tuple[str, str, str, str]] = [
    ("input:\n  format: jsonl", "input.path", "required key is missing", "input:"),
    (
        "input:\n  path: x\n  format: xml",
        "input.format",
        "Input should be 'parquet', 'jsonl' or 'csv'",
        "format: xml",
    ),
    (
        "input:\n  path: x\n  id_column: [a]",
        "input.id_column",
        "Input should be a valid string",
        "id_column",
    ),
    ("input:\n  path: x\n  limit: 0", "input.limit", "Input should be greater than 0", "limit: 0"),
    (
        "input:\n  path: x\n  limit: ten",
        "input.limit",
        "Input should be a valid integer",
        "limit: ten",
    ),
    (
        "input:\n  path: x\n  on_bad_line: ignore",
        "input.on_bad_line",
        "Input should be 'error' or 'skip'",
        "on_bad_line",
    ),
    (
        "input:\n  path: x\n  batch_size: -1",
        "input.batch_size",
        "Input should be greater than 0",
        "batch_size",
    ),
    (
        "input:\n  path: x\n  id_col: id",
        "input.id_col",
        "unknown key (did you mean 'id_column'?)",
        "id_col",
    ),
    (
        "endpoint:\n  base: https://x",
        "endpoint.base",
        "unknown key (did you mean 'base_url'?)",
        "base:",
    ),
    (
        "endpoint:\n  api_key_env: sk-proj-abc123",
        "endpoint.api_key_env",
        "must be the NAME of an environment variable",
        "api_key_env",
    ),
    (
        "endpoint:\n  headers: [a]",
        "endpoint.headers",
        "Input should be a valid dictionary",
        "headers",
    ),
    (
        "endpoint:\n  timeout_s: 0",
        "endpoint.timeout_s",
        "Input should be greater than 0",
        "timeout_s",
    ),
    (
        "endpoint:\n  connect_timeout_s: -1",
        "endpoint.connect_timeout_s",
        "Input should be greater than 0",
        "connect_timeout_s",
    ),
    (
        "endpoint:\n  first_byte_timeout_s: 0",
        "endpoint.first_byte_timeout_s",
        "Input should be greater than 0",
        "first_byte",
    ),
    (
        "endpoint:\n  idle_timeout_s: soon",
        "endpoint.idle_timeout_s",
        "Input should be a valid number",
        "idle_timeout_s",
    ),
    (
        "endpoint:\n  simulator:\n    latency: {distribution: normal}",
        "endpoint.simulator.latency.distribution",
        "Input should be 'fixed', 'uniform', 'exponential' or 'lognormal'",
        "latency:",
    ),
    (
        "endpoint:\n  simulator:\n    faults:\n      http_500: 1.5",
        "endpoint.simulator.faults.http_500",
        "Input should be less than or equal to 1",
        "http_500",
    ),
    (
        "endpoint:\n  simulator:\n    rpm: 0",
        "endpoint.simulator.rpm",
        "Input should be greater than 0",
        "rpm: 0",
    ),
    (
        "endpoint:\n  simulator:\n    prefill: maybe",
        "endpoint.simulator.prefill",
        "Input should be a valid boolean",
        "prefill",
    ),
    (
        "endpoint:\n  simulator:\n    latency_ms: 5",
        "endpoint.simulator.latency_ms",
        "unknown key (did you mean 'latency'?)",
        "latency_ms",
    ),
    ("request:\n  model: m", "request", "request needs messages", "request:"),
    ("request:\n  temperature: 0", "request", "request needs model and messages", "request:"),
    (
        "request:\n  model: m\n  messages: 5",
        "request",
        "request.messages must be a list of messages (or a template)",
        "request:",
    ),
    ("request: hello", "request", "Input should be a valid dictionary", "request:"),
    ("seed: abc", "seed", "Input should be a valid integer", "seed:"),
    ("seed: {per_row: true}", "seed.base", "required key is missing", "seed:"),
    (
        "seed:\n  base: 1\n  per_rows: true",
        "seed.per_rows",
        "unknown key (did you mean 'per_row'?)",
        "per_rows",
    ),
    ("samples: 0", "samples", "Input should be greater than 0", "samples"),
    ("limits:\n  rpm: 0", "limits.rpm", "Input should be greater than 0", "rpm"),
    ("limits:\n  tpm: -5", "limits.tpm", "Input should be greater than 0", "tpm"),
    (
        "limits:\n  max_concurrency: 5000",
        "limits.max_concurrency",
        "Input should be less than or equal to 4096",
        "max_concurrency",
    ),
    (
        "limits:\n  adaptive: often",
        "limits.adaptive",
        "Input should be a valid boolean",
        "adaptive",
    ),
    ("limits:\n  rps: 5", "limits.rps", "unknown key (did you mean 'rpm'?)", "rps"),
    (
        "retry:\n  max_attempts: 0",
        "retry.max_attempts",
        "Input should be greater than 0",
        "max_attempts",
    ),
    ("retry:\n  max_wait_s: 0", "retry.max_wait_s", "Input should be greater than 0", "max_wait_s"),
    (
        "retry:\n  initial_wait_s: -1",
        "retry.initial_wait_s",
        "Input should be greater than 0",
        "initial_wait_s",
    ),
    (
        "output:\n  keep_columns: id",
        "output.keep_columns",
        "Input should be a valid list",
        "keep_columns",
    ),
    ("output:\n  parse: yaml", "output.parse", "Input should be 'json'", "parse"),
    (
        "output:\n  keep_raw: sometimes",
        "output.keep_raw",
        "Input should be a valid boolean",
        "keep_raw",
    ),
    (
        "output:\n  label_field: [a]",
        "output.label_field",
        "Input should be a valid string",
        "label_field",
    ),
    ("output:\n  labels: 5", "output.labels", "Input should be a valid list", "labels"),
    (
        "pricing:\n  GPT-4o:\n    input: x\n    output: 1",
        "pricing.GPT-4o.input",
        "Input should be a valid number",
        "input: x",
    ),
    (
        "endpoint:\n  headers:\n    X-Title: [a]",
        "endpoint.headers.X-Title",
        "Input should be a valid string",
        "X-Title",
    ),
    ("output:\n  part_rows: 0", "output.part_rows", "Input should be greater than 0", "part_rows"),
    (
        "output:\n  part_seconds: 0",
        "output.part_seconds",
        "Input should be greater than 0",
        "part_seconds",
    ),
    (
        "output:\n  keep_column: [id]",
        "output.keep_column",
        "unknown key (did you mean 'keep_columns'?)",
        "keep_column",
    ),
    (
        "pricing:\n  m:\n    input: -1\n    output: 1",
        "pricing.m.input",
        "Input should be greater than or equal to 0",
        "input: -1",
    ),
    ("pricing:\n  m:\n    input: 1", "pricing.m.output", "required key is missing", "m:"),
    (
        "pricing:\n  m:\n    input: 1\n    output: 2\n    currency: EUR",
        "pricing.m.currency",
        "Input should be 'USD' or 'CNY'",
        "currency",
    ),
    (
        "pricing:\n  m:\n    input: 1\n    output: 2\n    currency: CNY",
        "(top level)",
        "pricing.m is in CNY: add currency_rates: {CNY: <USD per CNY>}",
        "",
    ),
    (
        "currency_rates:\n  CNY: cheap",
        "currency_rates.CNY",
        "Input should be a valid number",
        "CNY",
    ),
    (
        "budget:\n  max_cost_usd: 0",
        "budget.max_cost_usd",
        "Input should be greater than 0",
        "max_cost_usd",
    ),
    ("budget: {}", "budget.max_cost_usd", "required key is missing", "budget"),
    ("vars:\n  a: [1]", "vars.a", "Input should be a valid string", "a: [1]"),
    ("name: [x]", "name", "Input should be a valid string", "name"),
    ("limit: {rpm: 1}", "limit", "unknown key (did you mean 'limits'?)", "limit:"),
    ("sample: 3", "sample", "unknown key (did you mean 'samples'?)", "sample:"),
    ("outputs: {path: x}", "outputs", "unknown key (did you mean 'output'?)", "outputs"),
    ("base_dir: [x]", "base_dir", "Input should be a valid string", "base_dir"),
]


@pytest.mark.parametrize(("section", "field", "message", "marker"), BAD)
def test_bad_values_are_reported_with_file_line_field_and_message(
    tmp_path: Path, section: str, field: str, message: str, marker: str
) -> None:
    path = tmp_path / "job.yaml"
    with pytest.raises(SpecError) as caught:
        load(tmp_path, section)
    text = str(caught.value)
    assert text.startswith(f"{path}: invalid job spec (")
    where = f"{path}:{line_of(document(section), marker)}" if marker else str(path)
    expected = f"  {where}: {field}: {message}"
    assert any(problem.startswith(expected) for problem in caught.value.problems), text


def test_the_key_itself_never_appears_in_the_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as caught:
        load(tmp_path, "endpoint: {api_key_env: sk-proj-abc123}")
    assert "sk-proj-abc123" not in str(caught.value)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = (
        "input:\n  path: x\n  limit: 0\n"
        "request:\n  model: m\n  messages: []\n"
        "samples: 0\n"
        "limts: {rpm: 1}\n"
    )
    path = tmp_path / "job.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert str(caught.value).startswith(f"{path}: invalid job spec (3 problems):")
    assert caught.value.problems == [
        f"  {path}:3: input.limit: Input should be greater than 0",
        f"  {path}:7: samples: Input should be greater than 0",
        f"  {path}:8: limts: unknown key (did you mean 'limits'?)",
    ]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("input: [unclosed\n", "job.yaml:2:1: not valid YAML"),
        ("- a\n- b\n", "a job spec is a YAML mapping"),
        ("just text\n", "a job spec is a YAML mapping"),
    ],
)
def test_files_that_are_not_specs(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match=fragment.replace("(", r"\(")):
        load_spec(path)


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"cannot read job spec .*nope\.yaml"):
        load_spec(tmp_path / "nope.yaml")


def test_overrides_and_vars_apply_before_validation(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(document("vars: {lang: en, tone: dry}"))
    spec = load_spec(
        path, overrides={"input.limit": 7, "limits.rpm": None}, variables={"lang": "de"}
    )
    assert spec.input.limit == 7 and spec.limits.rpm is None
    assert spec.vars == {"lang": "de", "tone": "dry"}
    with pytest.raises(SpecError, match=r"input\.limit: Input should be greater than 0"):
        load_spec(path, overrides={"input.limit": 0})


def test_overrides_leave_the_callers_mapping_as_it_was() -> None:
    given = {"input": {"path": "x.jsonl"}, "request": {"model": "m", "messages": []}}
    assert load_spec(given, overrides={"input.limit": 7}).input.limit == 7
    assert given == {"input": {"path": "x.jsonl"}, "request": {"model": "m", "messages": []}}
    assert load_spec(given).input.limit is None  # a second run of the same mapping: no limit


def test_vars_written_as_numbers_or_booleans_are_their_text(tmp_path: Path) -> None:
    spec = load(tmp_path, "vars: {year: 2024, ratio: 0.5, full: true, name: x}")
    assert spec.vars == {"year": "2024", "ratio": "0.5", "full": "true", "name": "x"}
    with pytest.raises(SpecError, match=r"vars\.tags: Input should be a valid string"):
        load(tmp_path, "vars: {tags: [a, b]}")


def test_the_fingerprint_follows_what_is_sent(tmp_path: Path) -> None:
    base = load(tmp_path, "limits: {rpm: 5}").request_fingerprint()
    assert load(tmp_path, "limits: {rpm: 50}").request_fingerprint() == base
    assert load(tmp_path, "samples: 2").request_fingerprint() != base
    assert load(tmp_path, "seed: 1").request_fingerprint() != base


def test_redacted_hides_the_simulator_key(tmp_path: Path) -> None:
    spec = load(tmp_path, "endpoint: {simulator: {api_key: s3cret}}")
    assert "s3cret" not in str(spec.redacted())


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("name: a\x00b\n", "job.yaml:1: a NUL byte: a job spec is a text (YAML) file"),
        ("name: a\nname: b\n", "job.yaml:2: name: given twice (first on line 1)"),
        (
            "request:\n  model: a\n  model: b\n",
            "job.yaml:3: request.model: given twice (first on line 2)",
        ),
        ("name: [unclosed\n\t- x", "not valid YAML"),
    ],
)
def test_documents_yaml_would_read_wrongly_are_refused(
    tmp_path: Path, text: str, fragment: str
) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert fragment in str(caught.value)


def test_an_alias_bomb_is_refused_before_it_is_expanded(tmp_path: Path) -> None:
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 9):  # 10**9 values once expanded
        below = ", ".join([f"*a{level - 1}"] * 10)
        levels.append(f"a{level}: &a{level} [{below}]")
    path = tmp_path / "job.yaml"
    path.write_text(document("vars:\n  " + "\n  ".join(levels)))
    with pytest.raises(SpecError, match=r"expands to more than 100,000 values"):
        load_spec(path)


def test_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    spec = load(tmp_path, "vars:\n  <<: {x: '1'}\n  <<: {z: '3'}\n  y: '2'")
    assert spec.vars == {"x": "1", "z": "3", "y": "2"}


@pytest.mark.parametrize(
    "url", ["ftp://example.com/v1", "api.openai.com/v1", "http://", "file:///etc/passwd"]
)
def test_a_base_url_must_be_http(tmp_path: Path, url: str) -> None:
    with pytest.raises(SpecError, match=r"endpoint\.base_url: .*must be an http:// or https://"):
        load(tmp_path, f"endpoint: {{base_url: '{url}'}}")


def test_redacted_hides_literal_secret_headers_and_url_passwords(tmp_path: Path) -> None:
    spec = load(
        tmp_path,
        "endpoint:\n  base_url: https://bob:hunter2@gw.example:8443/v1\n"
        "  headers:\n    X-Api-Key: abc123literal\n    Authorization: 'Bearer ${TOKEN}'\n"
        "    X-Team: data",
    )
    assert spec.endpoint.literal_secret_headers() == ["X-Api-Key"]
    shown = str(spec.redacted())
    assert "abc123literal" not in shown and "hunter2" not in shown
    assert "https://bob:***@gw.example:8443/v1" in shown
    assert "Bearer ${TOKEN}" in shown and "data" in shown


def test_spaces_inside_template_tags_do_not_change_the_fingerprint(tmp_path: Path) -> None:
    def fingerprint(content: str) -> str:
        section = f"request:\n  model: m\n  messages:\n    - {{role: user, content: '{content}'}}"
        return load(tmp_path, section).request_fingerprint()

    base = fingerprint("Say {{ row.text }} now")
    assert fingerprint("Say {{row.text}} now") == base
    assert fingerprint("Say {{  row.text  }} now") == base
    assert fingerprint("Say  {{ row.text }} now") != base
    assert fingerprint("Say {{ row.title }} now") != base


def test_the_id_column_is_part_of_the_fingerprint(tmp_path: Path) -> None:
    base = load(tmp_path, "input:\n  path: data.jsonl\n  id_column: a").request_fingerprint()
    other = load(tmp_path, "input:\n  path: data.jsonl\n  id_column: b").request_fingerprint()
    assert base != other


def test_an_unset_variable_in_a_path_is_named_with_how_to_set_it(tmp_path: Path) -> None:
    spec = load(tmp_path, "output: {path: \"out/{{ vars.ds }}/{{ vars['part'] }}\"}")
    with pytest.raises(SpecError) as caught:
        _ = spec.output_dir
    message = str(caught.value)
    assert "uses vars.ds, vars.part, which are not set" in message
    assert "--var ds=... --var part=..." in message
    assert "dict object" not in message
