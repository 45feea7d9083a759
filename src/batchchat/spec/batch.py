"""Batch mode's settings (``mode: batch``, ``batch:``), and the patience flex processing needs.

The defaults are OpenAI's limits: an input file holds at most 50,000 lines and 200 MB, and
a batch is answered within ``24h``. Azure allows 100,000 lines; DashScope 500 MB and windows
up to ``336h``: raise them there.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from batchchat.spec.base import Strict

#: what OpenAI's Batch API takes in one input file
MAX_LINES = 50_000
MAX_BYTES = 200_000_000
#: the metadata pairs a batch may carry (OpenAI: 16), and how many batchchat uses itself
MAX_METADATA = 16
OWN_METADATA = 2
#: flex processing answers slowly and is refused with 429s when capacity is short: a long
#: deadline (OpenAI advises 15 minutes) and an hour of patience with 429s, unless set
FLEX_TIMEOUT_S = 900.0
FLEX_RATE_LIMIT_PATIENCE_S = 3600.0

_WINDOW = re.compile(r"[1-9][0-9]*h")


class BatchSpec(Strict):
    """How a job runs through a provider's Batch API (``mode: batch``)."""

    #: lines in one batch's input file
    lines_per_batch: int = Field(default=MAX_LINES, gt=0, le=1_000_000)
    #: bytes in one batch's input file
    bytes_per_batch: int = Field(default=MAX_BYTES, gt=0)
    #: prompt tokens (the offline estimate) this job keeps enqueued per model at once: a
    #: batch waits for earlier ones to end rather than pass it (None: no limit of its own;
    #: a batch refused with ``token_limit_exceeded`` waits and is created again either way)
    max_enqueued_tokens: int | None = Field(default=None, gt=0)
    #: the time the provider has to answer a batch (OpenAI: 24h; DashScope: up to 336h)
    completion_window: str = "24h"
    #: the first wait between two looks at a batch, seconds; it grows by ``poll_backoff``
    #: while nothing changes, up to ``max_poll_interval_s``
    poll_interval_s: float = Field(default=30.0, gt=0)
    #: the longest wait between two looks at a batch, seconds
    max_poll_interval_s: float = Field(default=600.0, gt=0)
    #: the factor the wait between two looks grows by while a batch's status stays the same
    poll_backoff: float = Field(default=1.5, ge=1)
    #: how often the lines that failed, expired or are missing are sent again, each time
    #: as a new, smaller batch
    resubmit_rounds: int = Field(default=3, ge=0)
    #: finish reasons of answers worth sending again (e.g. ``length``); the first answer is
    #: kept, a later ok answer replaces it
    resubmit_finish_reasons: list[str] = Field(default_factory=list)
    #: the wait after ``token_limit_exceeded`` when none of this job's batches is running
    #: (when one is, the next batch is created once it ends)
    token_limit_backoff_s: float = Field(default=300.0, gt=0)
    #: delete the uploaded input files and the output and error files at the provider once
    #: the results are on disk here
    delete_files: bool = True
    #: deadline of one Batch API call; uploads and downloads of big files take a while
    http_timeout_s: float = Field(default=600.0, gt=0)
    #: the request path the batch runs (OpenAI, Azure, DashScope: /v1/chat/completions)
    url: str = "/v1/chat/completions"
    #: more metadata for every batch (batchchat adds its own two keys)
    metadata: dict[str, str] = Field(default_factory=dict)

    @field_validator("completion_window")
    @classmethod
    def _is_hours(cls, value: str) -> str:
        if not _WINDOW.fullmatch(value):
            raise ValueError(f"must be hours such as 24h (DashScope: up to 336h), got {value!r}")
        return value

    @field_validator("url")
    @classmethod
    def _is_a_path(cls, value: str) -> str:
        if not value.startswith("/") or "://" in value:
            raise ValueError(f"must be a request path such as /v1/chat/completions, got {value!r}")
        return value

    @field_validator("metadata")
    @classmethod
    def _fits_the_metadata_limits(cls, value: dict[str, str]) -> dict[str, str]:
        room = MAX_METADATA - OWN_METADATA
        if len(value) > room:
            raise ValueError(f"at most {room} pairs (a batch carries {MAX_METADATA}, 2 are ours)")
        for key, text in value.items():
            if key.startswith("batchchat_"):
                raise ValueError(f"{key}: keys starting with batchchat_ are batchchat's own")
            if len(key) > 64 or len(text) > 512:
                raise ValueError(f"{key}: keys are at most 64 characters, values 512")
        return value

    @model_validator(mode="after")
    def _backoff_ends_above_its_start(self) -> BatchSpec:
        if self.max_poll_interval_s < self.poll_interval_s:
            raise ValueError(
                f"max_poll_interval_s ({self.max_poll_interval_s:g}) is below "
                f"poll_interval_s ({self.poll_interval_s:g})"
            )
        return self

    @property
    def hours(self) -> int:
        """The completion window in hours."""
        return int(self.completion_window.removesuffix("h"))


def refuse_online_only(output: Any, endpoints: Any = None) -> None:
    """Refuse, in batch mode, what only online mode does: re-asks (``output.reask``) and
    pools of endpoints (``endpoints:``).

    A re-ask is sent the moment an answer fails the check; in batch mode that answer
    arrives with its whole batch, hours later, and each re-ask would be one more batch
    round -- a job that seems to end in a day could take three. Refused rather than slow.
    A pool spreads rows over endpoints as they answer; a batch is one provider's file,
    created, waited for and collected there: rows cannot move between members.
    """
    if endpoints is not None:
        raise ValueError(
            "endpoints: a pool of endpoints runs online; a Batch API job goes to one "
            "provider's /v1/files and /v1/batches. Give that provider as endpoint: (one "
            "endpoint) with mode: batch, or run the pool with mode: online"
        )
    reask = getattr(output, "reask", None)
    if reask is not None and reask.count > 0:
        raise ValueError(
            "output.reask is online only: in batch mode each re-ask would wait for one more "
            "batch (up to completion_window each). Remove output.reask (parse_status still "
            "marks each answer that fails the check), run the job with mode: online, or "
            "re-ask the failing rows in an online job chained on this one's output "
            "(input.where: parse_status != 'ok')"
        )


def with_flex_patience(data: Any) -> Any:
    """Raw spec data whose request asks for ``service_tier: flex``, with the long deadline
    and the patience with 429s flex needs where the spec does not set them."""
    if not isinstance(data, dict):
        return data
    request = data.get("request")
    if not isinstance(request, dict) or request.get("service_tier") != "flex":
        return data
    data = dict(data)
    for section, key, value in (
        ("endpoint", "timeout_s", FLEX_TIMEOUT_S),
        ("retry", "rate_limit_patience_s", FLEX_RATE_LIMIT_PATIENCE_S),
    ):
        given = data.get(section)
        if given is None:
            data[section] = {key: value}
        elif isinstance(given, dict) and key not in given:
            data[section] = {**given, key: value}
    return data


class BatchSimSpec(Strict):
    """The simulator's Batch API (``endpoint.simulator.batch``): its pace and its faults.

    Time in the Batch API is simulated: ``time_scale`` simulated seconds pass each real
    second, so ``time_scale: 86400`` runs a day-long batch in a second.
    """

    #: how /v1/files and /v1/batches answer: "openai", the Batch API; or as a server without
    #: one: "llamacpp" (404), "vllm" (404), "new-api" (501 api_not_implemented), "litellm"
    #: (a LiteLLM proxy without files_settings: 500s)
    api: Literal["openai", "llamacpp", "vllm", "new-api", "litellm"] = "openai"
    #: simulated seconds per real second (600: the default ~11-minute batch takes a second)
    time_scale: float = Field(default=600.0, gt=0)
    #: simulated seconds a batch spends validating
    validating_s: float = Field(default=30.0, ge=0)
    #: simulated seconds a batch spends in progress (its lines run meanwhile)
    in_progress_s: float = Field(default=600.0, ge=0)
    #: simulated seconds a batch spends finalizing
    finalizing_s: float = Field(default=30.0, ge=0)
    #: simulated seconds a cancelled batch spends cancelling
    cancelling_s: float = Field(default=60.0, ge=0)
    #: write the output file in shuffled order, as the real Batch API may
    shuffle: bool = True
    #: share of lines answered with ``fail_status`` (in the error file)
    fail_lines: float = Field(default=0.0, ge=0, le=1)
    #: the status of the lines that fail (and of every line of a batch with no output file)
    fail_status: Literal[400, 408, 409, 429, 500, 503] = 429
    #: share of lines not run before the window closed: the batch ends "expired"
    expire_lines: float = Field(default=0.0, ge=0, le=1)
    #: share of batches that fail validation as a whole (no line named)
    fail_validation: float = Field(default=0.0, ge=0, le=1)
    #: share of lines the validation refuses by line number (their batch fails)
    invalid_lines: float = Field(default=0.0, ge=0, le=1)
    #: share of batches whose every line fails: completed, with no output file
    no_output_file: float = Field(default=0.0, ge=0, le=1)
    #: prompt tokens enqueued per model at once; a batch past it fails token_limit_exceeded
    enqueued_token_limit: int | None = Field(default=None, gt=0)
    #: real seconds every Batch API call waits after it acted, before it answers (a create
    #: that made its batch and has not said so yet: what a client killed then meets)
    answer_delay_s: float = Field(default=0.0, ge=0)
    #: the most lines one input file may hold
    max_lines: int = Field(default=MAX_LINES, gt=0)
    #: the most bytes one input file may hold
    max_bytes: int = Field(default=MAX_BYTES, gt=0)
    #: the seed of the draws of failing, expiring and refused lines and batches
    seed: int = 0
