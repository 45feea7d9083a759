"""Result files made elsewhere → results of a job, joined to its rows by ``custom_id``.

OpenAI's output and error files downloaded by hand, a batch run on Azure or DashScope, or
``vllm run-batch -o`` over the lines of ``batchchat plan --out``: every line names the
``custom_id`` batchchat gave its request (``<row id>#<sample>``), so it is joined to its
own input row, with its kept columns, request hash and seed. A line naming an id the job
does not have refuses the whole import before anything is written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from batchchat.batchapi.lines import ResultLine, outcome_of, parse_line
from batchchat.errors import InputError, RequestError
from batchchat.models import ChatRequest, ChatResponse, ChatResult
from batchchat.pricing import PriceTable

#: unknown custom ids named in an error before the rest are counted
_SHOWN = 3


@dataclass
class ImportCount:
    """What an import read and wrote."""

    lines: int = 0
    ok: int = 0
    failed: int = 0
    #: keys an earlier run had an ok answer for: left as they were
    kept: int = 0
    #: lines that are not result lines (no JSON object with a custom_id)
    unreadable: int = 0
    files: list[str] = field(default_factory=list)


def read_lines(path: Path) -> Iterator[tuple[int, ResultLine | None]]:
    """(line number, parsed line) of every non-empty line of a result file."""
    try:
        with open(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if raw.strip():
                    yield number, parse_line(raw)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None


def custom_ids(paths: Iterable[Path]) -> set[str]:
    """Every custom id the result files name."""
    return {line.custom_id for path in paths for _, line in read_lines(path) if line is not None}


def check_known(paths: Iterable[Path], known: set[str]) -> None:
    """Refuse result files that name custom ids this job does not have."""
    unknown: list[str] = []
    for path in paths:
        for number, line in read_lines(path):
            if line is not None and line.custom_id not in known:
                unknown.append(f"{path}:{number}: {line.custom_id!r}")
    if unknown:
        shown = "\n".join(f"  {entry}" for entry in unknown[:_SHOWN])
        more = f"\n  ... and {len(unknown) - _SHOWN} more" if len(unknown) > _SHOWN else ""
        raise InputError(
            f"{len(unknown)} result line(s) name a custom_id this job does not have "
            f"(custom ids are '<row id>#<sample>' of this job's input):\n{shown}{more}\n"
            "Were the files made from another job's requests (or another input)? Nothing "
            "was imported."
        )


def import_files(
    paths: Iterable[Path],
    requests: dict[str, ChatRequest],
    *,
    is_done: Callable[[ChatRequest], bool],
    on_result: Callable[[ChatResult], None],
    prices: PriceTable,
    keep_raw: bool,
    batch_id: str | None,
) -> ImportCount:
    """Write one result per line of ``paths`` (joined through ``requests``) to ``on_result``."""
    count = ImportCount()
    now = datetime.now(UTC)
    for path in paths:
        count.files.append(str(path))
        label = batch_id or f"import:{path.name}"
        for _, line in read_lines(path):
            count.lines += 1
            if line is None:
                count.unreadable += 1
                continue
            request = requests[line.custom_id]
            if is_done(request):
                count.kept += 1
                continue
            result = _result(request, line, keep_raw, label, now)
            if result.response is not None:
                count.ok += 1
                model = result.response.model or request.body.get("model")
                result.cost_usd = prices.cost_usd(model, result.response.usage, "batch")
            else:
                count.failed += 1
            on_result(result)
    return count


def _result(
    request: ChatRequest, line: ResultLine, keep_raw: bool, batch_id: str, now: datetime
) -> ChatResult:
    outcome = outcome_of(line, keep_raw=keep_raw)
    response = outcome if isinstance(outcome, ChatResponse) else None
    error = outcome if isinstance(outcome, RequestError) else None
    return ChatResult(
        request=request,
        response=response,
        error=error,
        http_status=line.status,
        attempts=1,
        latency_ms=0.0,
        started_at=now,
        finished_at=now,
        batch_id=batch_id,
    )
