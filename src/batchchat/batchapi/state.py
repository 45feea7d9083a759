"""Batch mode's state: every shard of a job and its batch, saved before each Batch API call.

A shard is a set of lines written to an input file here; its phase says how far it got::

    planned → uploading → uploaded → creating → submitted → collecting → done
                                   ↖ (token_limit_exceeded: created again later)
    released   its lines were handed back unsent (cancelled before it was created)

The phase is saved *before* the call it names, so whatever instant a run is killed at,
the next one knows what may have happened: an upload to do again (a file uploaded twice is
harmless), a batch to look for by the metadata it was created with (a batch is never
created twice for the same lines), a batch to poll, or results to collect again. The file
is ``batches/state.json`` (:class:`batchchat.results.layout.OutputLayout`), replaced
atomically each time.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
import polars as pl

from batchchat.errors import ResumeError
from batchchat.results.layout import OutputLayout, write_atomically
from batchchat.results.ledger import ResumeIndex

FORMAT = 1
#: the provider's statuses of a batch that has ended ("lost": the provider no longer knows it)
ENDED = frozenset({"completed", "failed", "expired", "cancelled", "lost"})
#: phases in which a batch of the shard may exist at the provider
AT_PROVIDER = frozenset({"creating", "submitted", "collecting"})
#: phases whose lines are neither done nor free to plan again
_OVER = frozenset({"done", "released"})


@dataclass
class Shard:
    """One input file of a job and the batch made of it."""

    id: str
    model: str
    lines: int
    bytes: int
    #: prompt tokens of its lines (the offline estimate): what it holds in the provider's queue
    tokens: int
    #: the most it can cost at batch prices (None: its model has no price)
    worst_cost_usd: float | None = None
    #: 0 for lines sent the first time; n for their n-th resubmission
    round: int = 0
    parent: str | None = None
    phase: str = "planned"
    file_id: str | None = None
    #: how often a batch was created of it (its metadata key names the attempt)
    attempt: int = 0
    #: wall time (epoch s) the current create was begun: where a search for it may stop
    intent_at: float | None = None
    batch_id: str | None = None
    #: the provider's status of ``batch_id``, and what it says of it
    status: str | None = None
    counts: dict[str, int] | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: list[dict[str, Any]] | None = None
    #: the provider's times of the batch (epoch s): created, and ended
    created_at: float | None = None
    ended_at: float | None = None
    #: after token_limit_exceeded: not created again before this wall time (epoch s), or
    #: before one of these shards' batches (running then) has ended
    not_before: float | None = None
    after: list[str] = field(default_factory=list)
    #: the wait between two looks now, and when the next look is due (epoch s)
    poll_s: float | None = None
    next_poll: float | None = None
    #: earlier batches of it (refused with token_limit_exceeded)
    history: list[str] = field(default_factory=list)
    #: once done: rows ok, failed, and lines sent again
    outcome: dict[str, int] | None = None
    #: ``batchchat cancel`` asked for it: what it answered is kept, the rest is not resent
    cancelled: bool = False

    @property
    def live(self) -> bool:
        """Its lines are in its hands: not done, not handed back."""
        return self.phase not in _OVER

    @property
    def running(self) -> bool:
        """A batch of it exists at the provider and has not ended."""
        return self.phase == "submitted" and self.status not in ENDED

    @property
    def at_provider(self) -> bool:
        """A batch of it may exist at the provider (its lines must not be sent elsewhere)."""
        return self.phase in AT_PROVIDER

    def metadata_key(self, token: str) -> str:
        """The ``batchchat_key`` of its current create: unique per directory, shard, attempt."""
        return f"{token}/{self.id}/{self.attempt}"


@dataclass
class BatchState:
    """The shards of one output directory."""

    #: random, made once per directory: tells this directory's batches from others'
    token: str
    next_number: int = 1
    shards: list[Shard] = field(default_factory=list)

    def new_id(self) -> str:
        shard_id = f"s{self.next_number:05d}"
        self.next_number += 1
        return shard_id

    def live(self) -> list[Shard]:
        return [shard for shard in self.shards if shard.live]

    def find(self, shard_id: str) -> Shard | None:
        return next((shard for shard in self.shards if shard.id == shard_id), None)

    def save(self, layout: OutputLayout) -> None:
        """Replace ``batches/state.json`` atomically (before the call it prepares)."""
        data = {
            "format": FORMAT,
            "token": self.token,
            "next_number": self.next_number,
            "shards": [dataclasses.asdict(shard) for shard in self.shards],
        }
        write_atomically(
            layout.batch_state, orjson.dumps(data, option=orjson.OPT_INDENT_2), what="batch state"
        )


_FIELDS = {f.name for f in dataclasses.fields(Shard)}


def load_state(layout: OutputLayout) -> BatchState:
    """The batch state of an output directory; a fresh one when there is none."""
    try:
        data = orjson.loads(layout.batch_state.read_bytes())
    except FileNotFoundError:
        return BatchState(token=os.urandom(6).hex())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ResumeError(
            f"{layout.batch_state} is unreadable ({exc}): the batches of this job cannot be "
            "followed. Restore it, or start over with --force (the old results and batch "
            "state are moved aside, not deleted)."
        ) from None
    try:
        shards = [Shard(**{k: v for k, v in raw.items() if k in _FIELDS}) for raw in data["shards"]]
        return BatchState(str(data["token"]), int(data["next_number"]), shards)
    except (KeyError, TypeError, ValueError) as exc:
        raise ResumeError(f"{layout.batch_state} is not batchchat's batch state ({exc})") from None


def read_state(layout: OutputLayout) -> BatchState | None:
    """The batch state, or None when the directory never ran in batch mode."""
    return load_state(layout) if layout.batch_state.exists() else None


def live_shards(layout: OutputLayout) -> list[Shard]:
    """The shards whose lines are in the Batch API's hands (or about to be)."""
    state = read_state(layout)
    return [] if state is None else state.live()


def pending_index(layout: OutputLayout, shards: list[Shard]) -> ResumeIndex:
    """The (row_id, sample) keys of ``shards``' lines, to plan no line twice."""
    frames = [
        pl.read_parquet(layout.batch_lines(shard.id), columns=["row_id", "sample"])
        for shard in shards
        if layout.batch_lines(shard.id).exists()
    ]
    if not frames:
        return ResumeIndex.empty()
    keys = pl.concat(frames)
    return ResumeIndex(keys, keys.clear())


def summarize(state: BatchState) -> dict[str, Any]:
    """Counts for ``status`` and the report: batches by status, lines, resubmissions."""
    created = [shard for shard in state.shards if shard.batch_id is not None]
    return {
        "shards": len(state.shards),
        "batches": len(created) + sum(len(shard.history) for shard in state.shards),
        "by_status": dict(Counter(shard.status or shard.phase for shard in state.shards)),
        "lines": sum(shard.lines for shard in state.shards if shard.parent is None),
        "lines_resubmitted": sum(shard.lines for shard in state.shards if shard.parent),
        "lines_pending": sum(shard.lines for shard in state.live()),
        "rounds": max((shard.round for shard in state.shards), default=0),
        "token_limited": sum(len(shard.history) for shard in state.shards),
    }
