"""examples/airflow_dag.py in a real Airflow: both DAGs build, and their tasks run the job.

Airflow is too big for the main virtualenv (it would move its pins), so these tests run the
DAG module in a separate interpreter: ``.venv-airflow/bin/python`` in the repository root,
or the one ``BATCHCHAT_AIRFLOW_PYTHON`` names. Make it with::

    python3 -m venv .venv-airflow
    .venv-airflow/bin/pip install apache-airflow -e .

(``-e .`` puts batchchat and its dependencies beside Airflow, as on a real worker; the
BashOperator test needs Airflow alone.) Without such an interpreter the tests skip, saying so;
with ``BATCHCHAT_REQUIRE_AIRFLOW`` set (``.ci/run`` sets it once it made the interpreter)
they fail instead.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

import batchchat
from tests._system import missing
from tests.examples._project import BATCHCHAT, ROOT, derive_job, make_project, run_cli

DS = "2026-11-21"

#: variants of jobs/labeling.yaml, each in its own partition: one over budget, one broken
VARIANTS = {
    "budget": {
        "../out/labeling/": "../out/budget/",
        "samples: 3\n": "samples: 3\nbudget: {max_cost_usd: 0.000001}\n",
    },
    "broken": {"../out/labeling/": "../out/broken/", "{{ text }}": "{{ txet }}"},
}

_COMMON = """
import json, os, sys
sys.path.insert(0, os.environ["EXAMPLES_DIR"])
import airflow_dag as m

def outcome(call):
    try:
        value = call()
    except m.AirflowFailException as exc:
        return ["fail", str(exc)]
    except m.AirflowException as exc:
        return ["retry", str(exc)]
    return ["success", value]
"""

BASH_PROBE = (
    _COMMON
    + """
def shell(command, cwd=None):
    op = m.BatchchatRunOperator(task_id="probe", bash_command=command, cwd=cwd)
    return outcome(lambda: op.execute({}))

out = {"dags": {}}
for dag in (m.bash_dag, m.python_dag):
    tasks = {t.task_id: type(t).__name__ for t in dag.tasks}
    out["dags"][dag.dag_id] = {"tasks": tasks, "catchup": dag.catchup, "schedule": dag.schedule}
task = m.bash_dag.get_task("run")
rendered = task.render_template(task.bash_command, {"ds": os.environ["DS"]})
out["task"] = {"command": task.bash_command, "rendered": rendered, "cwd": task.cwd,
               "retries": task.retries}
out["first"] = shell(rendered, task.cwd)
out["again"] = shell(rendered, task.cwd)
for name in ("budget", "broken"):
    command = task.render_template(m.run_command(f"jobs/{name}.yaml"), {"ds": os.environ["DS"]})
    out[name] = shell(command, task.cwd)
out["codes"] = {code: shell(f"exit {code}")[0] for code in (0, 1, 2, 3, 130, 7)}
print("RESULT " + json.dumps(out))
"""
)

PYTHON_PROBE = (
    _COMMON
    + """
import importlib.util
missing = [n for n in ("polars", "pyarrow", "aiohttp") if importlib.util.find_spec(n) is None]
if missing:
    print("RESULT " + json.dumps({"missing": missing}))
    sys.exit(0)
task = m.python_dag.get_task("run")
kwargs = task.render_template(task.op_kwargs, {"ds": os.environ["DS"]})
out = {"callable": task.python_callable.__name__, "op_kwargs": task.op_kwargs, "rendered": kwargs}
out["first"] = outcome(lambda: task.python_callable(**kwargs))
out["again"] = outcome(lambda: task.python_callable(**kwargs))
for name in ("budget", "broken"):
    out[name] = outcome(lambda: m.run_for_date(job=f"jobs/{name}.yaml", **kwargs))
print("RESULT " + json.dumps(out, default=str))
"""
)


def _skip_unless_required(message: str) -> None:
    # .ci/run sets BATCHCHAT_REQUIRE_AIRFLOW once it has made the interpreter: from then on
    # a missing or incomplete one is a failure, not a skip
    missing("airflow", message)


def airflow_python() -> str:
    path = os.environ.get("BATCHCHAT_AIRFLOW_PYTHON") or str(ROOT / ".venv-airflow/bin/python")
    if not Path(path).is_file():
        message = (
            f"no Airflow interpreter at {path}: create one with `python3 -m venv .venv-airflow "
            "&& .venv-airflow/bin/pip install apache-airflow -e .`, or set "
            "BATCHCHAT_AIRFLOW_PYTHON"
        )
        _skip_unless_required(message)
    return path


def probe(tmp_path: Path, script: str) -> tuple[Path, dict[str, Any]]:
    """Run ``script`` in the Airflow interpreter against a small copy of the project."""
    python = airflow_python()
    project = make_project(tmp_path / "project")
    for name, replace in VARIANTS.items():
        derive_job(project, name, replace)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "EXAMPLES_DIR": str(ROOT / "examples"),
        "BATCHCHAT_PROJECT_DIR": str(project),
        "BATCHCHAT_BIN": BATCHCHAT,
        "AIRFLOW_HOME": str(tmp_path / "airflow-home"),
        "DS": DS,
    }
    done = subprocess.run(
        [python, "-c", script],
        env=env,
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stdout[-2000:] + done.stderr[-2000:]
    return project, json.loads(lines[-1].removeprefix("RESULT "))


@pytest.mark.slow
def test_the_bash_dag_runs_the_job_per_date_and_maps_exit_codes(tmp_path: Path) -> None:
    project, out = probe(tmp_path, BASH_PROBE)
    assert out["dags"] == {
        "batchchat_labeling_bash": {
            "tasks": {"run": "BatchchatRunOperator"},
            "catchup": False,
            "schedule": "@daily",
        },
        "batchchat_labeling_python": {
            "tasks": {"run": "PythonOperator"},
            "catchup": False,
            "schedule": "@daily",
        },
    }
    task = out["task"]
    assert task["command"] == f"{BATCHCHAT} run jobs/labeling.yaml --var ds={{{{ ds }}}} --log-json"
    assert task["rendered"] == f"{BATCHCHAT} run jobs/labeling.yaml --var ds={DS} --log-json"
    assert (task["cwd"], task["retries"]) == (str(project), 2)

    # the real command ran: the date's partition holds every row, once, even after a re-run
    for state in (out["first"], out["again"]):
        assert state[0] == "success", state
        report = json.loads(state[1])  # the last --log-json line, what Airflow puts in XCom
        assert (report["event"], report["exit_code"]) == ("report", 0)
    partition = project / "out" / "labeling" / DS
    df = batchchat.read_results(partition)
    assert df.height == 12 and (df["status"] == "ok").all()  # 4 rows x 3 samples
    assert run_cli(project, "status", str(partition)).returncode == 0

    assert out["budget"][0] == "fail" and "exited with 3" in out["budget"][1]
    assert run_cli(project, "status", str(project / "out" / "budget" / DS)).returncode == 4
    assert out["broken"][0] == "fail" and "exited with 2" in out["broken"][1]
    assert not (project / "out" / "broken").exists()
    assert out["codes"] == {
        "0": "success",
        "1": "retry",
        "2": "fail",
        "3": "fail",
        "130": "retry",
        "7": "retry",
    }


@pytest.mark.slow
def test_the_python_dag_calls_batchchat_run_for_the_date(tmp_path: Path) -> None:
    project, out = probe(tmp_path, PYTHON_PROBE)
    if "missing" in out:
        _skip_unless_required(
            f"the Airflow interpreter lacks batchchat's dependencies ({', '.join(out['missing'])})"
            ": install batchchat into it with `.venv-airflow/bin/pip install -e .`"
        )
    assert out["callable"] == "run_for_date"
    assert (out["op_kwargs"], out["rendered"]) == ({"ds": "{{ ds }}"}, {"ds": DS})
    first, again = out["first"], out["again"]
    assert first[0] == "success" and again[0] == "success", (first, again)
    partition = project / "out" / "labeling" / DS
    assert first[1]["output_dir"] == again[1]["output_dir"] == str(partition)
    assert (first[1]["rows_ok"], again[1]["rows_ok"]) == (12, 12)
    assert first[1]["cost_usd"] > 0
    assert batchchat.read_results(partition).height == 12
    assert out["budget"][0] == "fail" and "budget" in out["budget"][1]
    assert out["broken"][0] == "fail" and "txet" in out["broken"][1]
