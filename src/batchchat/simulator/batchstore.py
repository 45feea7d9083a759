"""The simulator's Batch API state: uploaded files, and batches moving through their statuses.

A batch's status is a function of simulated time (``now()``), computed when it is looked
at: ``validating`` → ``in_progress`` → ``finalizing`` → ``completed`` (or ``expired`` when
some lines expire), or ``failed`` after validating, or ``cancelling`` → ``cancelled``. Its
lines are answered when it ends, by ``answer`` (the chat endpoint's logic); which lines
fail or expire is drawn from (seed, custom id, how often that id was submitted before), so a
resubmitted line draws again. No task runs in the background.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from batchchat.simulator.batchfile import (
    CheckedInput,
    InputLine,
    check_input,
    expired_line,
    output_line,
)
from batchchat.spec.batch import BatchSimSpec

#: a line's answer: (HTTP status, body, usage or None)
Answer = tuple[int, dict[str, Any], dict[str, Any] | None]
ACTIVE = frozenset({"validating", "in_progress", "finalizing", "cancelling"})


@dataclass
class SimFile:
    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": self.created_at,
            "expires_at": None,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
        }


@dataclass
class SimBatch:
    id: str
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None
    created_at: float
    checked: CheckedInput
    #: the prompt tokens it holds in the queue while it runs
    tokens: int
    #: how often each line's custom id had been submitted before (drives the fault draws)
    draws: list[int]
    #: the errors it fails validation with (None: it runs)
    failure: list[dict[str, Any]] | None = None
    #: every line fails: it completes with no output file
    all_fail: bool = False
    status: str = "validating"
    times: dict[str, float | None] = field(default_factory=dict)
    cancel_at: float | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    counts: dict[str, int] = field(
        default_factory=lambda: {"total": 0, "completed": 0, "failed": 0}
    )
    usage: dict[str, Any] | None = None

    @property
    def model(self) -> str | None:
        return self.checked.model

    def to_dict(self) -> dict[str, Any]:
        def stamp(name: str) -> int | None:
            value = self.times.get(name)
            return None if value is None else int(value)

        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": None if self.failure is None else {"object": "list", "data": self.failure},
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": int(self.created_at),
            "in_progress_at": stamp("in_progress"),
            "expires_at": int(self.created_at + 3600 * int(self.completion_window[:-1])),
            "finalizing_at": stamp("finalizing"),
            "completed_at": stamp("completed"),
            "failed_at": stamp("failed"),
            "expired_at": stamp("expired"),
            "cancelling_at": stamp("cancelling"),
            "cancelled_at": stamp("cancelled"),
            "request_counts": dict(self.counts),
            "metadata": self.metadata,
            "model": self.model,
            "usage": self.usage,
        }


class BatchStore:
    """Files and batches of one simulator, under simulated time."""

    def __init__(
        self,
        config: BatchSimSpec,
        now: Callable[[], float],
        answer: Callable[[dict[str, Any]], Answer],
        count_tokens: Callable[[dict[str, Any]], int],
    ) -> None:
        self.config = config
        self._now = now
        self._answer = answer
        self._count_tokens = count_tokens
        self.files: dict[str, SimFile] = {}
        self.batches: dict[str, SimBatch] = {}  # in creation order
        #: custom id → times it was in a created batch
        self.submissions: Counter[str] = Counter()
        #: input files ever uploaded (deleted ones too)
        self.uploads = 0
        #: lines answered ok, and lines in error files (failed or expired), over all batches
        self.lines_ok = 0
        self.lines_failed = 0

    # -- files ------------------------------------------------------------------------------

    def add_file(self, filename: str, purpose: str, content: bytes) -> SimFile:
        file = SimFile(_id("file-"), filename, purpose, content, int(self._now()))
        self.uploads += purpose == "batch"
        self.files[file.id] = file
        return file

    def add_output(self, name: str, content: bytes) -> str:
        return self.add_file(name, "batch_output", content).id

    # -- batches ----------------------------------------------------------------------------

    def create(
        self, file: SimFile, endpoint: str, window: str, metadata: dict[str, str] | None
    ) -> SimBatch:
        """A new batch of ``file``; whether it will fail validation is decided now."""
        config = self.config
        checked = check_input(
            file.content, endpoint, max_lines=config.max_lines, max_bytes=config.max_bytes
        )
        tokens = sum(self._count_tokens(line.body) for line in checked.lines)
        draws = [self.submissions[line.custom_id] for line in checked.lines]
        batch_id = _id("batch_")
        batch = SimBatch(
            batch_id, file.id, endpoint, window, metadata, self._now(), checked, tokens, draws
        )
        batch.counts["total"] = len(checked.lines)
        batch.failure = self._validation_errors(batch)
        if batch.failure is None:
            for line in checked.lines:
                self.submissions[line.custom_id] += 1
            batch.all_fail = _chance(config.seed, batch_id, "empty") < config.no_output_file
        self.batches[batch_id] = batch
        return batch

    def _validation_errors(self, batch: SimBatch) -> list[dict[str, Any]] | None:
        config, checked = self.config, batch.checked
        errors = list(checked.errors)
        for line in checked.lines:
            if _chance(config.seed, batch.id, line.custom_id) < config.invalid_lines:
                errors.append(_error("invalid_request", "This line is invalid.", line.number))
        if not errors and _chance(config.seed, batch.id, "validation") < config.fail_validation:
            errors.append(_error("invalid_request", "The batch input file is not valid."))
        if not errors and self._over_token_limit(batch):
            limit = config.enqueued_token_limit
            errors.append(
                _error(
                    "token_limit_exceeded",
                    f"Enqueued token limit reached for {batch.model} in organization "
                    f"org-simulator. Limit: {limit:,} enqueued tokens. Please try again once "
                    "some in_progress batches have been completed.",
                )
            )
        return errors or None

    def _over_token_limit(self, batch: SimBatch) -> bool:
        limit = self.config.enqueued_token_limit
        if limit is None:
            return False
        queued = sum(
            other.tokens
            for other in self.batches.values()
            if other.model == batch.model and other.failure is None and self._is_active(other)
        )
        return queued + batch.tokens > limit

    def _is_active(self, batch: SimBatch) -> bool:
        self.advance(batch)
        return batch.status in ACTIVE

    def cancel(self, batch: SimBatch) -> bool:
        """Start cancelling ``batch``; False when it has ended already."""
        self.advance(batch)
        if batch.status not in ACTIVE or batch.status == "cancelling":
            return batch.status == "cancelling"
        batch.cancel_at = self._now()
        batch.status = "cancelling"
        batch.times["cancelling"] = batch.cancel_at
        return True

    def advance(self, batch: SimBatch) -> None:
        """Bring ``batch``'s status up to the simulated time now."""
        if batch.status not in ACTIVE:
            return
        config, now = self.config, self._now()
        started = batch.created_at + config.validating_s
        if batch.cancel_at is not None:
            if now >= batch.cancel_at + config.cancelling_s:
                share = _share_done(batch.cancel_at - started, config.in_progress_s)
                run = int(share * len(batch.checked.lines))
                self._end(batch, "cancelled", batch.cancel_at + config.cancelling_s, run)
            return
        if now < started:
            return
        if batch.failure is not None:
            batch.status, batch.times["failed"] = "failed", started
            return
        batch.status, batch.times["in_progress"] = "in_progress", started
        finalizing = started + config.in_progress_s
        if now < finalizing:
            return
        batch.status, batch.times["finalizing"] = "finalizing", finalizing
        ended = finalizing + config.finalizing_s
        if now >= ended:
            self._end(batch, "completed", ended, len(batch.checked.lines))

    def _end(self, batch: SimBatch, status: str, at: float, run: int) -> None:
        """Answer the first ``run`` lines, write the output and error files, end the batch."""
        outputs: list[bytes] = []
        errors: list[bytes] = []
        usage: Counter[str] = Counter()
        expired = False
        for index, line in enumerate(batch.checked.lines[:run]):
            fate = self._fate(batch, line, batch.draws[index])
            if fate == "expired":
                errors.append(expired_line(line.custom_id))
                expired = True
                continue
            status_code, body, used = self._line_answer(line, fate)
            (outputs if status_code == 200 else errors).append(
                output_line(line.custom_id, status_code, body)
            )
            if used is not None:
                _add_usage(usage, used)
        if self.config.shuffle:
            random.Random(batch.id).shuffle(outputs)
        if status == "completed" and expired:
            status = "expired"
        batch.status, batch.times[status] = status, at
        batch.counts.update(completed=len(outputs), failed=len(errors))
        self.lines_ok += len(outputs)
        self.lines_failed += len(errors)
        if outputs:
            batch.output_file_id = self.add_output(f"{batch.id}_output.jsonl", b"".join(outputs))
        if errors:
            batch.error_file_id = self.add_output(f"{batch.id}_error.jsonl", b"".join(errors))
        batch.usage = _usage_object(usage)

    def _fate(self, batch: SimBatch, line: InputLine, draw: int) -> str:
        """ "expired", "fail" or "answer" for one line (drawn per submission of its id)."""
        config = self.config
        if batch.all_fail:
            return "fail"
        roll = _chance(config.seed, line.custom_id, str(draw))
        if roll < config.expire_lines:
            return "expired"
        if roll < config.expire_lines + config.fail_lines:
            return "fail"
        return "answer"

    def _line_answer(self, line: InputLine, fate: str) -> Answer:
        if fate == "answer":
            return self._answer(line.body)
        status = self.config.fail_status
        return status, {"error": _LINE_ERRORS[status]}, None

    def listed(self, after: str | None, limit: int) -> tuple[list[SimBatch], bool]:
        """Batches newest first, from the one after ``after``; and whether more follow."""
        ordered = list(reversed(self.batches.values()))
        if after is not None:
            ids = [batch.id for batch in ordered]
            ordered = ordered[ids.index(after) + 1 :] if after in ids else []
        for batch in ordered[:limit]:
            self.advance(batch)
        return ordered[:limit], len(ordered) > limit


def _share_done(ran_s: float, in_progress_s: float) -> float:
    """The share of lines run after ``ran_s`` of ``in_progress_s`` (0 when not started)."""
    if ran_s <= 0:
        return 0.0
    return 1.0 if in_progress_s <= 0 else min(1.0, ran_s / in_progress_s)


def _error(code: str, message: str, line: int | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": None, "line": line}


def _chance(seed: int, *parts: str) -> float:
    digest = hashlib.sha256("\x1f".join((str(seed), *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _id(prefix: str) -> str:
    return prefix + os.urandom(12).hex()


def _add_usage(total: Counter[str], usage: dict[str, Any]) -> None:
    total["input_tokens"] += usage["prompt_tokens"]
    total["output_tokens"] += usage["completion_tokens"]
    total["cached_tokens"] += usage["prompt_tokens_details"]["cached_tokens"]
    total["reasoning_tokens"] += usage["completion_tokens_details"]["reasoning_tokens"]


def _usage_object(total: Counter[str]) -> dict[str, Any]:
    return {
        "input_tokens": total["input_tokens"],
        "output_tokens": total["output_tokens"],
        "total_tokens": total["input_tokens"] + total["output_tokens"],
        "input_tokens_details": {"cached_tokens": total["cached_tokens"]},
        "output_tokens_details": {"reasoning_tokens": total["reasoning_tokens"]},
    }


def _line_error(message: str, kind: str, code: str | None) -> dict[str, Any]:
    return {"message": message, "type": kind, "param": None, "code": code}


#: the error body of a line that fails with each ``fail_status``
_LINE_ERRORS = {
    400: _line_error("Invalid request (simulated).", "invalid_request_error", None),
    408: _line_error("Request timed out.", "timeout", None),
    409: _line_error("Conflict: please try again.", "conflict", None),
    429: _line_error("Too many requests (simulated).", "requests", "rate_limit_exceeded"),
    500: _line_error(
        "The server had an error while processing your request.", "server_error", None
    ),
    503: _line_error("The engine is currently overloaded.", "server_error", None),
}
