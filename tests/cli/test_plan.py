"""``batchchat validate`` and ``batchchat plan`` through click's CliRunner."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner, Result

from batchchat.cli import main
from batchchat.planning.planner import compile_plan
from batchchat.planning.source import SCHEMA_SAMPLE_LINES
from batchchat.pricing import PriceTable
from batchchat.spec import load_spec

ROOT = Path(__file__).resolve().parent.parent.parent
JOBS = sorted((ROOT / "jobs").glob("*.yaml"))
#: jobs whose input is another job's output directory → that job, run first (both get
#: --var out=<tmp>, so nothing is written into the checkout)
UPSTREAM = {"cascade_strong.yaml": "cascade_cheap.yaml"}

SPEC = """\
name: cli-test
input:
  path: in.jsonl
  id_column: id
endpoint:
  base_url: https://api.example.com/v1
  api_key_env: EXAMPLE_API_KEY
request:
  model: gpt-4o-mini
  messages:
    - {role: system, content: "Answer in {{ vars.lang }}."}
    - {role: user, content: "Review: {{ text }}"}
  temperature: 0
  max_tokens: 8
vars: {lang: English}
samples: 2
output:
  keep_columns: [id]
"""


def invoke(*args: str | Path) -> Result:
    # wide enough that rich does not fold the lines the assertions look for
    return CliRunner().invoke(main, [str(a) for a in args], env={"COLUMNS": "250"})


@pytest.fixture
def job(tmp_path: Path) -> Path:
    lines = [orjson.dumps({"id": f"r{i}", "text": f"text {i}"}) for i in range(5)]
    (tmp_path / "in.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    path = tmp_path / "job.yaml"
    path.write_text(SPEC)
    return path


def test_validate_prints_a_summary_and_exits_0(job: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAMPLE_API_KEY", "sk-live-do-not-print")
    result = invoke("validate", job)
    assert result.exit_code == 0, result.output
    out = result.output
    for fragment in (
        "cli-test",
        "in.jsonl",
        "[jsonl]",
        "rows      5",
        "column 'id' (unique)",
        "https://api.example.com/v1; key from $EXAMPLE_API_KEY (set)",
        "request.messages[1].content ← text",
        "request.messages[0].content ← vars.lang",
        "2 per row; no seed",
        "OK",
    ):
        assert fragment in out, fragment
    assert "sk-live-do-not-print" not in out


def test_validate_says_when_the_key_variable_is_missing(
    job: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EXAMPLE_API_KEY", raising=False)
    result = invoke("validate", job)
    assert result.exit_code == 0
    assert "$EXAMPLE_API_KEY (NOT set: export it before run)" in result.output


def test_validate_lists_every_problem_and_exits_2(job: Path) -> None:
    job.write_text(
        SPEC.replace("{{ text }}", "{{ txt }}")
        .replace("keep_columns: [id]", "keep_columns: [id, stars]")
        .replace("{{ vars.lang }}", "{{ vars.tone }}")
    )
    lines = (job.parent / "in.jsonl").read_text().splitlines()
    (job.parent / "in.jsonl").write_text("\n".join([*lines, lines[0]]) + "\n")
    result = invoke("validate", job)
    assert result.exit_code == 2
    out = result.output
    assert f"{job}: the job is not ready to run (4 problems):" in out
    assert "request.messages[1].content: column 'txt' does not exist in the input" in out
    assert "did you mean 'text'?" in out
    assert "output.keep_columns: column 'stars' does not exist" in out
    assert "vars.tone is not set" in out
    assert "'r0' occurs 2 times" in out


def test_validate_finds_output_problems_a_run_would_only_meet_later(job: Path) -> None:
    lines = [orjson.dumps({"id": f"r{i}", "text": "t", "status": "s"}) for i in range(3)]
    (job.parent / "in.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    job.write_text(
        SPEC.replace("keep_columns: [id]", "keep_columns: [id, status]\n  labels: [good, Good.]")
    )
    result = invoke("validate", job)
    assert result.exit_code == 2
    assert "(2 problems)" in result.output
    assert "output.labels: 'good' and 'Good.' are the same label" in result.output
    assert "output.keep_columns: 'status' is also the name of a result column" in result.output


def test_validate_reports_spec_errors_with_lines(job: Path) -> None:
    job.write_text(SPEC.replace("samples: 2", "sampels: 2"))
    result = invoke("validate", job)
    assert result.exit_code == 2
    assert f"{job}:16: sampels: unknown key (did you mean 'samples'?)" in result.output


def test_validate_var_overrides_the_spec(job: Path) -> None:
    job.write_text(SPEC.replace("{{ vars.lang }}", "{{ vars.tone }}"))
    assert invoke("validate", job).exit_code == 2
    assert invoke("validate", job, "--var", "tone=dry").exit_code == 0
    result = invoke("validate", job, "--var", "tone")
    assert result.exit_code == 2
    assert "expected key=value" in result.output


def test_plan_shows_bodies_counts_tokens_and_cost(job: Path) -> None:
    result = invoke("plan", job, "--show", "1", "--var", "lang=German")
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.count('"model": "gpt-4o-mini"') == 1
    assert "r0#0" in out and '"content": "Answer in German."' in out
    assert "rows           5" in out
    assert "requests       10  (2 per row)" in out
    assert "output tokens  ≤ 80" in out
    spec = load_spec(job, variables={"lang": "German"})
    prices = PriceTable.from_spec(spec)
    bounds = [prices.request_cost_bounds(r) for r in compile_plan(spec).requests()]
    low = sum(b[0] for b in bounds if b is not None)
    high = sum(b[1] for b in bounds if b is not None)
    assert 0 < low < high < 0.01
    assert f"cost           ${low:.6f} – ${high:.6f}" in out
    tokens = sum(r.est_prompt_tokens for r in compile_plan(spec).requests())
    assert f"prompt tokens  ~{tokens:,} (offline estimate)" in out


def test_plan_writes_batch_api_lines(job: Path, tmp_path: Path) -> None:
    out = tmp_path / "planned" / "requests.jsonl"
    result = invoke("plan", job, "--show", "0", "--out", out, "--limit", "3")
    assert result.exit_code == 0, result.output
    lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [line["custom_id"] for line in lines] == ["r0#0", "r0#1", "r1#0", "r1#1", "r2#0", "r2#1"]
    assert {line["method"] for line in lines} == {"POST"}
    assert {line["url"] for line in lines} == {"/v1/chat/completions"}
    assert lines[0]["body"] == {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Answer in English."},
            {"role": "user", "content": "Review: text 0"},
        ],
        "temperature": 0,
        "max_tokens": 8,
    }
    assert "written" in result.output and "(6 Batch API lines)" in result.output
    assert not list(out.parent.glob("*.partial"))


def test_plan_counts_the_rows_a_template_fails_on_beyond_the_trial_rows(job: Path) -> None:
    lines = [
        orjson.dumps({"id": f"r{i}", "text": f"t{i}", "meta": None if i == 25 else {"x": i}})
        for i in range(30)
    ]
    (job.parent / "in.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    job.write_text(SPEC.replace("Review: {{ text }}", "Review: {{ text }} {{ meta.x }}"))
    assert invoke("validate", job).exit_code == 0  # row 25 is past the rows validate renders
    result = invoke("plan", job, "--show", "0")
    assert result.exit_code == 0, result.output
    assert "rows           30" in result.output
    assert "requests       58" in result.output  # 2 samples each, minus row 25's two
    assert "not planned    2 requests a template fails on" in result.output
    assert "row id 'r25'" in result.output


def test_plan_of_an_unpriced_model_says_so(job: Path) -> None:
    job.write_text(SPEC.replace("model: gpt-4o-mini", "model: my-local-llama"))
    result = invoke("plan", job, "--show", "0")
    assert result.exit_code == 0
    assert "unpriced model(s): my-local-llama (add them under pricing:)" in result.output


def test_plan_stops_on_a_bad_input_line_with_exit_2(job: Path) -> None:
    data = job.parent / "in.jsonl"
    data.write_text(data.read_text() + "{broken\n")
    result = invoke("plan", job)
    assert result.exit_code == 2
    assert f"{data}:6:2: malformed JSON" in result.output


@pytest.mark.parametrize("path", JOBS, ids=[p.name for p in JOBS])
def test_every_example_job_validates_and_plans(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.chdir(ROOT)
    chained: tuple[str, ...] = ()
    if path.name in UPSTREAM:
        chained = ("--var", f"out={tmp_path / 'out'}")
        upstream = ROOT / "jobs" / UPSTREAM[path.name]
        result = invoke("run", upstream.relative_to(ROOT), "-q", *chained)
        assert result.exit_code == 0, result.output
    result = invoke("validate", path.relative_to(ROOT), *chained)
    assert result.exit_code == 0, result.output
    out = tmp_path / "requests.jsonl"
    result = invoke("plan", path.relative_to(ROOT), "--show", "1", "--out", out, *chained)
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 0
    assert "unpriced" not in result.output


def test_the_example_jobs_are_all_here() -> None:
    names = {p.name for p in JOBS}
    assert {"quickstart.yaml", "openai.yaml", "vision.yaml", "extract_json.yaml"} <= names
    assert os.fspath(ROOT / "jobs" / "quickstart.yaml") in map(os.fspath, JOBS)


def test_validate_reads_every_line_as_a_run_would(job: Path) -> None:
    # a value far down that does not fit the types of the first lines stops a run
    # partway (after sending the rows above it): validate finds it first
    rows = SCHEMA_SAMPLE_LINES + 50
    lines = [orjson.dumps({"id": f"r{i}", "text": i}) for i in range(rows)]
    lines.append(orjson.dumps({"id": "late", "text": "a word"}))
    (job.parent / "in.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    result = invoke("validate", job)
    assert result.exit_code == 2, result.output
    assert f"in.jsonl:{rows + 1}: a value does not fit the column types" in result.output
    assert invoke("validate", job, "--var", "lang=de").exit_code == 2
    skip = job.read_text().replace("  id_column: id\n", "  id_column: id\n  on_bad_line: skip\n")
    job.write_text(skip)
    assert invoke("validate", job).exit_code == 0  # the run would skip it, and say so
