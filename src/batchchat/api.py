"""The Python API: ``run``, ``validate``, ``plan``, ``read_results``, and batch mode's ``cancel``
and ``import_results`` — for notebooks and Airflow.

``run`` is the one sync convenience wrapper over the async engine; it also works
inside a running event loop (Jupyter), where it runs the job on a worker thread.
``validate`` and ``plan`` give the same problems and the same estimate the CLI prints.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import polars as pl

from batchchat.cluster import RayOptions, require_ray
from batchchat.errors import SpecError
from batchchat.job import compile_job, job_problems
from batchchat.labels.columns import add_label_summaries
from batchchat.planning.estimate import PlanEstimate, estimate
from batchchat.pricing import tier_of
from batchchat.report.build import RunReport
from batchchat.results.layout import write_atomically
from batchchat.results.ledger import read_results as read_deduplicated
from batchchat.runner import RunOptions, RunOutcome, run_job
from batchchat.spec import JobSpec, load_spec

T = TypeVar("T")

#: keyword overrides of ``run`` → the spec key each one sets
OVERRIDES = {
    "limit": "input.limit",
    "output": "output.path",
    "concurrency": "limits.max_concurrency",
    "rpm": "limits.rpm",
    "tpm": "limits.tpm",
}


def resolve_spec(
    spec: JobSpec | str | os.PathLike[str] | Mapping[str, Any],
    overrides: Mapping[str, Any] | None = None,
    variables: Mapping[str, str] | None = None,
) -> JobSpec:
    """A validated spec from a path, a mapping or a spec, with keyword overrides applied."""
    unknown = sorted(set(overrides or {}) - set(OVERRIDES))
    if unknown:
        raise SpecError(f"unknown override(s) {', '.join(unknown)}; known: {', '.join(OVERRIDES)}")
    dotted = {OVERRIDES[name]: value for name, value in (overrides or {}).items()}
    if dotted.get("output.path") is not None:
        # a path given on the command line or to the API is the caller's, relative to the
        # working directory; paths inside the YAML stay relative to the YAML
        dotted["output.path"] = os.path.abspath(os.fspath(dotted["output.path"]))
    if isinstance(spec, JobSpec):
        if not dotted and not variables:
            return spec
        spec = spec.model_dump()
    return load_spec(spec, overrides=dotted, variables=variables)


def run(
    spec: JobSpec | str | os.PathLike[str] | Mapping[str, Any],
    *,
    variables: Mapping[str, str] | None = None,
    retry_failed: bool = True,
    force: bool = False,
    dry_run: bool = False,
    wait: bool = True,
    engine: Literal["local", "ray"] = "local",
    ray_address: str | None = None,
    workers: int | None = None,
    **overrides: Any,
) -> RunReport:
    """Run a job to its end and return its report.

    Works from plain code and inside a running event loop (Jupyter), where the job runs on a
    worker thread. Rows that fail do not raise: check ``rows_error`` and ``stop_reason`` of
    the report.

    Args:
        spec: a job file's path, a ``JobSpec``, or a mapping (whose relative paths resolve
            against the working directory).
        variables: ``vars`` values, as ``--var`` gives them.
        retry_failed: on a re-run, send the rows that failed before again.
        force: start over in place; the old results are moved to ``superseded/``.
        dry_run: send everything to the built-in simulator instead, into
            ``<output>-dry-run`` unless ``output`` is given.
        wait: batch mode: wait until every batch has ended. ``False``: submit the batches,
            collect what has ended and return; ``stop_reason`` is ``"pending"`` while batches
            run (run it again later, as ``batchchat run --no-wait`` does).
        engine: ``"ray"`` runs the job on Ray Data (``pip install 'batchchat[ray]'``),
            with one rate limit for all its workers and the same output.
        ray_address: the Ray cluster to join (default: ``RAY_ADDRESS``, else a Ray
            started on this machine for the run); only with ``engine="ray"``.
        workers: how many Ray workers send (default: one per CPU of the cluster).
        **overrides: ``limit``, ``output``, ``concurrency``, ``rpm``, ``tpm``: like the
            ``batchchat run`` flags of the same names.

    Returns:
        The run's report (``report.json`` as an object; in Jupyter it shows as tables).

    Raises:
        BatchchatError: a spec, input, resume or lock problem (``SpecError``,
            ``InputError``, ``ResumeError``, ``LockedError``…), before anything is sent.

    Examples:
        >>> report = batchchat.run("jobs/quickstart.yaml", limit=20)
        >>> report.rows_ok
        20
    """
    cluster = ray_options(engine, ray_address, workers)
    resolved = resolve_spec(spec, overrides, variables)
    if dry_run and "output" not in overrides:
        resolved = rehearsal_spec(resolved)
    options = RunOptions(retry_failed=retry_failed, force=force, dry_run=dry_run, wait=wait)
    return run_outcome(resolved, options, cluster).report


def cancel(out_dir: str | os.PathLike[str], *, wait: bool = True) -> RunReport:
    """Cancel the batches of the job in ``out_dir`` (batch mode); what they answered is kept.

    Args:
        out_dir: the output directory of a job that ran in batch mode; its ``job.yaml``
            names the endpoint and the key variable.
        wait: wait for the batches to end and collect what they answered. ``False``: ask
            for the cancellations and return; a later run (or ``cancel``) collects them.

    Returns:
        The report of the output directory afterwards.

    Raises:
        BatchchatError: no batches there (``InputError``), or a Batch API call failed.
    """
    from batchchat.batchops import cancel_job

    return _in_a_loop(cancel_job(Path(out_dir), wait=wait)).outcome.report


def import_results(
    spec: JobSpec | str | os.PathLike[str] | Mapping[str, Any],
    files: list[str | os.PathLike[str]],
    *,
    batch_id: str | None = None,
    variables: Mapping[str, str] | None = None,
    **overrides: Any,
) -> RunReport:
    """Import result files of the job's requests made elsewhere into its output directory.

    Args:
        spec: a job file's path, a ``JobSpec`` or a mapping.
        files: Batch API output and error files (OpenAI, Azure, DashScope), or
            ``vllm run-batch -o`` output, made from the lines ``plan(..., batch_file=...)``
            writes; each line is joined to its row by ``custom_id``.
        batch_id: recorded on every imported row (default ``import:<file name>``).
        variables: ``vars`` values, as ``--var`` gives them.
        **overrides: ``limit``, ``output``, ``concurrency``, ``rpm``, ``tpm``.

    Returns:
        The report of the output directory afterwards.

    Raises:
        BatchchatError: a file names a ``custom_id`` the job does not have (``InputError``,
            before anything is written), or a spec or input problem.
    """
    from batchchat.batchops import import_results as import_files

    resolved = resolve_spec(spec, overrides, variables)
    paths = [Path(file) for file in files]
    return import_files(resolved, paths, batch_id=batch_id).outcome.report


def ray_options(engine: str, address: str | None, workers: int | None) -> RayOptions | None:
    """The Ray settings of a run on ``engine`` (None: it runs here, in this process)."""
    if engine not in ("local", "ray"):
        raise SpecError(f"engine: {engine!r} is not one of local, ray")
    if engine == "local":
        given = [name for name, value in (("ray_address", address), ("workers", workers)) if value]
        if given:
            raise SpecError(f"{', '.join(given)}: only for a run on Ray (engine 'ray')")
        return None
    if workers is not None and workers < 1:
        raise SpecError(f"workers: {workers} is not a number of workers (1 or more)")
    return RayOptions(address=address, workers=workers)


def start_run(
    spec: JobSpec,
    options: RunOptions,
    cluster: RayOptions | None = None,
    *,
    stop: asyncio.Event | None = None,
) -> Coroutine[Any, Any, RunOutcome]:
    """The run of ``spec``: here (``cluster`` None), or on Ray (imported only then)."""
    if cluster is None:
        return run_job(spec, options, stop=stop)
    require_ray()
    from batchchat.cluster.engine import run_on_ray

    return run_on_ray(spec, options, cluster, stop=stop)


def validate(
    spec: JobSpec | str | os.PathLike[str] | Mapping[str, Any],
    *,
    variables: Mapping[str, str] | None = None,
    **overrides: Any,
) -> list[str]:
    """Every problem that would stop the job from running, as lines; empty when it is ready.

    The same checks as ``batchchat validate``: columns, types of templated fields (the
    first rows rendered), ids, labels, prices. Nothing is sent; no key is needed.

    Args:
        spec: a job file's path, a ``JobSpec`` or a mapping.
        variables: ``vars`` values, as ``--var`` gives them.
        **overrides: ``limit``, ``output``, ``concurrency``, ``rpm``, ``tpm``.

    Raises:
        SpecError: the spec cannot be read at all (invalid YAML, unknown keys).

    Examples:
        >>> batchchat.validate("jobs/quickstart.yaml")
        []
    """
    return job_problems(resolve_spec(spec, overrides, variables))


def plan(
    spec: JobSpec | str | os.PathLike[str] | Mapping[str, Any],
    *,
    variables: Mapping[str, str] | None = None,
    batch_file: str | os.PathLike[str] | None = None,
    **overrides: Any,
) -> PlanEstimate:
    """Render every request without sending one: rows, requests, tokens and the cost range.

    Args:
        spec: a job file's path, a ``JobSpec`` or a mapping.
        variables: ``vars`` values, as ``--var`` gives them.
        batch_file: also write each request there as an OpenAI Batch API input line (what
            vLLM's ``run_batch`` reads too); the file appears only when planning finished.
        **overrides: ``limit``, ``output``, ``concurrency``, ``rpm``, ``tpm``.

    Examples:
        >>> batchchat.plan("jobs/quickstart.yaml").requests
        200
    """
    job = compile_job(resolve_spec(spec, overrides, variables), require_key=False)
    tier = tier_of(job.spec.request, batch=job.spec.mode == "batch")
    if batch_file is None:
        return estimate(job.plan, job.prices, tier=tier)
    found: list[PlanEstimate] = []
    write_atomically(
        Path(batch_file),
        lambda handle: found.append(estimate(job.plan, job.prices, batch_file=handle, tier=tier)),
    )
    return found[0]


def rehearsal_spec(spec: JobSpec) -> JobSpec:
    """The spec of a dry run: its output goes beside the real one, ``<output>-dry-run``.

    A rehearsal in the real directory would make the real run skip every row the
    simulator answered; an explicit output (``-o``, ``output=``) is used as given.
    """
    path = f"{spec.output_dir}-dry-run"
    return spec.model_copy(update={"output": spec.output.model_copy(update={"path": path})})


def read_results(out_dir: str | os.PathLike[str]) -> pl.DataFrame:
    """The results of an output directory: one row per (row_id, sample), the ok one if any.

    Also for partial, interrupted and running jobs (a retried row's error and its later
    answer are resolved to the answer). For labeling jobs with ``samples > 1`` each line
    also carries its row's ``label_majority``, ``label_votes`` and ``label_agreement``.

    Examples:
        >>> df = batchchat.read_results("out/quickstart")
        >>> df.group_by("status").len()
    """
    return add_label_summaries(read_deduplicated(Path(out_dir)), Path(out_dir))


def run_outcome(
    spec: JobSpec, options: RunOptions, cluster: RayOptions | None = None
) -> RunOutcome:
    """Run a job synchronously, from plain code or from inside a running loop."""
    return _in_a_loop(start_run(spec, options, cluster))


def _in_a_loop(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` to its end, from plain code or from inside a running loop (Jupyter)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(work)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, work).result()
