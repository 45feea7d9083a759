"""Run a batchchat job once a day from Airflow: one DAG with the BashOperator, one in Python.

Each run writes its own partition: the job's ``output.path`` uses ``{{ vars.ds }}``
(jobs/labeling.yaml writes ``out/labeling/<ds>``) and the task passes ``--var ds={{ ds }}``.
A re-run of the same date resumes that partition: finished rows are skipped, so clearing a
task never pays twice, and a retry after failures re-sends only the failed rows.

How ``batchchat run``'s exit code becomes the task state (:data:`EXIT_CODES`):

====  =================================================  ===========================
code  meaning                                            task
====  =================================================  ===========================
0     every row ok (also "Nothing to send": done before)  success
1     finished, some rows failed for good                 failed → retried: a retry
                                                          re-sends only those rows
2     spec, input or usage error, or another run holds   failed, not retried: a
      the output directory (nothing was sent)             retry cannot fix it
3     stopped at ``budget.max_cost_usd``                  failed, not retried: the
                                                          budget is per run, so a retry
                                                          would spend it again. Raise
                                                          it, then clear the task.
130   interrupted (SIGTERM from a timeout or a worker     failed → retried: resumes
      shutdown); finished rows are saved                  where it stopped
====  =================================================  ===========================

Put the API key in the worker's environment (the job names the variable, e.g.
``api_key_env: OPENAI_API_KEY``); never in the DAG. Settings, from the environment:
``BATCHCHAT_PROJECT_DIR`` (where ``jobs/`` is; default: the directory above this file),
``BATCHCHAT_JOB`` (default ``jobs/labeling.yaml``) and ``BATCHCHAT_BIN`` (default
``batchchat``). A sensor or script can ask ``batchchat status out/labeling/<ds>``: exit 0
done, 1 failed rows, 4 partial, 5 running.
"""

from __future__ import annotations

import os
import shlex
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

try:  # Airflow 3
    from airflow.providers.standard.operators.bash import BashOperator
    from airflow.providers.standard.operators.python import PythonOperator
    from airflow.sdk import DAG
    from airflow.sdk.exceptions import AirflowException, AirflowFailException
except ImportError:  # Airflow 2
    from airflow import DAG  # type: ignore[no-redef]
    from airflow.exceptions import (  # type: ignore[no-redef]
        AirflowException,
        AirflowFailException,
    )
    from airflow.operators.bash import BashOperator  # type: ignore[no-redef]
    from airflow.operators.python import PythonOperator  # type: ignore[no-redef]

PROJECT_DIR = Path(os.environ.get("BATCHCHAT_PROJECT_DIR") or Path(__file__).resolve().parents[1])
JOB = os.environ.get("BATCHCHAT_JOB", "jobs/labeling.yaml")
BATCHCHAT = os.environ.get("BATCHCHAT_BIN", "batchchat")

#: exit code of ``batchchat run`` → (what Airflow does, why); other codes fail and retry
EXIT_CODES: dict[int, tuple[str, str]] = {
    0: ("success", "every row ok"),
    1: ("retry", "some rows failed; a retry re-sends only them"),
    2: ("fail", "spec, input or usage error, or the output is locked by another run"),
    3: ("fail", "stopped at the budget; raise budget.max_cost_usd, then clear the task"),
    130: ("retry", "interrupted; a retry resumes where it stopped"),
}

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "data",
    "retries": 2,
    "retry_delay": timedelta(minutes=10),
    # Airflow sends SIGTERM at the timeout: batchchat saves what finished and exits 130
    "execution_timeout": timedelta(hours=6),
}


class BatchchatRunOperator(BashOperator):  # type: ignore[misc]
    """A BashOperator whose task state follows ``batchchat run``'s exit code (EXIT_CODES)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("skip_on_exit_code", None)  # no exit code means "skip"
        super().__init__(**kwargs)

    def execute(self, context: Any) -> Any:
        try:
            return super().execute(context)
        except AirflowException:
            process = self.subprocess_hook.sub_process
            code = None if process is None else process.returncode
            action, why = EXIT_CODES.get(code, ("retry", "unexpected exit code"))
            if action == "fail":
                raise AirflowFailException(
                    f"batchchat run exited with {code}: {why} (not retried)"
                ) from None
            raise


def run_command(job: str = JOB) -> str:
    """The templated shell command of the daily task; Airflow fills in ``{{ ds }}``."""
    return f"{shlex.quote(BATCHCHAT)} run {shlex.quote(job)} --var ds={{{{ ds }}}} --log-json"


def run_for_date(ds: str, job: str = JOB) -> dict[str, Any]:
    """The PythonOperator's callable: run the job for one date with ``batchchat.run``.

    Same mapping as the exit codes; the returned summary goes to XCom.
    """
    import batchchat
    from batchchat.errors import BatchchatError, LockedError

    try:
        report = batchchat.run(PROJECT_DIR / job, variables={"ds": ds})
    except LockedError as exc:  # another run is writing this partition: try again later
        raise AirflowException(str(exc)) from exc
    except BatchchatError as exc:
        if exc.exit_code == 2:
            raise AirflowFailException(f"{EXIT_CODES[2][1]}: {exc}") from exc
        raise
    if report.stop_reason == "budget":
        raise AirflowFailException(f"{EXIT_CODES[3][1]} ({report.output_dir})")
    if report.rows_error:
        raise AirflowException(f"{report.rows_error} rows failed; {EXIT_CODES[1][1]}")
    return {
        "ds": ds,
        "output_dir": report.output_dir,
        "rows_ok": report.rows_ok,
        "requests_sent": report.requests_sent,
        "cost_usd": report.cost_usd,
    }


def _daily(dag_id: str) -> DAG:
    return DAG(
        dag_id=dag_id,
        schedule="@daily",
        start_date=datetime(2026, 1, 1, tzinfo=UTC),
        catchup=False,
        max_active_runs=1,  # dates share the endpoint's rate limits
        default_args=DEFAULT_ARGS,
        tags=["batchchat"],
    )


def build_bash_dag() -> DAG:
    """The daily job as a shell command: what a cron line would run, with Airflow's retries."""
    with _daily("batchchat_labeling_bash") as dag:
        BatchchatRunOperator(task_id="run", bash_command=run_command(), cwd=str(PROJECT_DIR))
    return dag


def build_python_dag() -> DAG:
    """The daily job through the Python API; the run's summary is returned to XCom."""
    with _daily("batchchat_labeling_python") as dag:
        PythonOperator(task_id="run", python_callable=run_for_date, op_kwargs={"ds": "{{ ds }}"})
    return dag


bash_dag = build_bash_dag()
python_dag = build_python_dag()
