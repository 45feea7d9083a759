"""Batch mode's commands beside ``run``: cancel a job's batches; import results made elsewhere.

Each opens the output directory as a run does (its lock, its manifest, the same sink) and
ends as a run does (compacted, reported, its counters saved), so ``status`` and ``report``
see what it did like any run.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from batchchat.batchapi.cancel import Cancelled
from batchchat.batchapi.importer import ImportCount, check_known, custom_ids, import_files
from batchchat.batchapi.session import BatchJob, cancel_job_batches
from batchchat.errors import InputError, SpecError
from batchchat.execute.endpoint import open_target, secret_values
from batchchat.job import CompiledJob, compile_job
from batchchat.models import ChatRequest, ExecutionStats, StopReason, new_run_id
from batchchat.results.layout import OutputLayout
from batchchat.results.ledger import ResumeIndex
from batchchat.results.outdir import OutputDir, open_output, read_manifest
from batchchat.runner import RunOutcome, close_results, finish_run, open_sink
from batchchat.secrets import Redactor
from batchchat.spec import JobSpec, load_spec


@dataclass
class CancelOutcome:
    """What ``batchchat cancel`` did, and the report of the directory afterwards."""

    cancelled: Cancelled
    outcome: RunOutcome


@dataclass
class ImportOutcome:
    """What ``batchchat import`` read and wrote, and the report afterwards."""

    count: ImportCount
    outcome: RunOutcome


def job_of(out_dir: Path) -> JobSpec:
    """The spec of the job that wrote ``out_dir`` (its ``job.yaml``), writing there."""
    layout = OutputLayout(out_dir)
    if not layout.job_yaml.exists():
        raise InputError(f"{out_dir} is not a batchchat output directory (no job.yaml)")
    return load_spec(layout.job_yaml, overrides={"output.path": str(Path(out_dir).resolve())})


async def cancel_job(
    out_dir: Path, *, wait: bool = True, stop: asyncio.Event | None = None
) -> CancelOutcome:
    """Cancel the batches of the job in ``out_dir`` (see :mod:`batchchat.batchapi.cancel`)."""
    layout = OutputLayout(out_dir)
    if not layout.batch_state.exists():
        raise InputError(f"{out_dir} has no batches to cancel (the job never ran in batch mode)")
    spec = job_of(out_dir)
    manifest = read_manifest(Path(out_dir)) or {}
    if spec.endpoint.is_simulator or manifest.get("dry_run"):
        raise SpecError(
            f"{out_dir}: its batches ran in the built-in simulator, which ended with the run "
            "that started it; there is nothing left to cancel"
        )
    job = compile_job(spec)
    spec, run_id = job.spec, new_run_id()  # a chained job's spec as run compiled it
    async with open_target(spec.endpoint) as target:
        batch = BatchJob(spec, job.prices, _keep_types(job), target, in_process=False)
        with _open_output(job, run_id) as out:
            sink = open_sink(out, job, run_id, Redactor(secret_values(spec.endpoint)))
            stats = ExecutionStats(run_id=run_id, started_at=datetime.now(UTC))
            try:
                cancelled = await cancel_job_batches(
                    batch,
                    out.layout,
                    on_result=sink.write,
                    on_results=sink.write_many,
                    flush=sink.flush,
                    stats=stats,
                    wait=wait,
                    stop=stop or asyncio.Event(),
                )
                stats.stop_reason = (
                    StopReason.PENDING if cancelled.cancelling else StopReason.COMPLETED
                )
            except BaseException:
                stats.stop_reason = StopReason.ERROR
                raise
            finally:
                close_results(sink, out.path, stats, [])
            return CancelOutcome(cancelled, finish_run(out, job, stats, []))


def import_results(
    spec: JobSpec, files: list[Path], *, batch_id: str | None = None
) -> ImportOutcome:
    """Import result files into the job's output directory, joined by ``custom_id``."""
    job = compile_job(spec, require_key=False)
    wanted = custom_ids(files)
    requests = _planned(job, wanted)
    check_known(files, set(requests))  # before anything is written
    spec, run_id = job.spec, new_run_id()
    with _open_output(job, run_id) as out:
        sink = open_sink(out, job, run_id, Redactor(secret_values(spec.endpoint)))
        stats = ExecutionStats(run_id=run_id, started_at=datetime.now(UTC))
        index = out.completed()
        try:
            count = import_files(
                files,
                requests,
                is_done=lambda request: _is_done(index, request),
                on_result=sink.write,
                prices=job.prices,
                keep_raw=spec.output.keep_raw,
                batch_id=batch_id,
            )
        except BaseException:
            stats.stop_reason = StopReason.ERROR
            raise
        finally:
            close_results(sink, out.path, stats, [])
        stats.results_ok, stats.results_error, stats.skipped = count.ok, count.failed, count.kept
        stats.planned = len(requests)
        return ImportOutcome(count, finish_run(out, job, stats, []))


def _open_output(job: CompiledJob, run_id: str) -> OutputDir:
    """The job's output directory, opened as a run opens it (a chained job's input too)."""
    upstream = None if job.upstream is None else job.upstream.record
    return open_output(job.spec.output_dir, job.spec, run_id=run_id, upstream=upstream)


def _planned(job: CompiledJob, wanted: set[str]) -> dict[str, ChatRequest]:
    """The job's requests that the result files name, by custom id (bodies left out)."""
    found: dict[str, ChatRequest] = {}
    for request in job.plan.requests(on_failure=lambda failure: None, check_ids=False):
        if request.custom_id in wanted:
            model = request.body.get("model")
            found[request.custom_id] = _without_body(request, model)
    return found


def _without_body(request: ChatRequest, model: object) -> ChatRequest:
    return ChatRequest(
        request.row_id,
        request.sample,
        request.custom_id,
        {"model": model},
        request.request_hash,
        request.est_prompt_tokens,
        request.max_output_tokens,
        request.seed,
        request.keep,
        request.row_index,
    )


def _is_done(index: ResumeIndex, request: ChatRequest) -> bool:
    ids = pl.Series([request.row_id], dtype=pl.String)
    return bool(index.done(ids, request.sample)[0])


def _keep_types(job: CompiledJob) -> dict[str, pl.DataType]:
    schema = job.plan.source.schema
    return {name: schema[name] for name in job.spec.output.keep_columns}
