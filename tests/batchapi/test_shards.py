"""Planned requests → shards on disk: cut by model, lines, bytes and tokens; joined back by id."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest

from batchchat.batchapi.shards import Sharder, read_lines, request_of, split_shard
from batchchat.batchapi.state import Shard
from batchchat.models import ChatRequest
from batchchat.results.layout import OutputLayout
from batchchat.spec import BatchSpec


def request(i: int, model: str = "m", text: str = "x", tokens: int = 10) -> ChatRequest:
    return ChatRequest(
        row_id=f"r{i}",
        sample=0,
        custom_id=f"r{i}#0",
        body={"model": model, "messages": [{"role": "user", "content": text}]},
        request_hash=f"h{i}",
        est_prompt_tokens=tokens,
        max_output_tokens=5,
        seed=i,
        keep={"text": text, "n": i},
    )


class Collected:
    def __init__(self, tmp_path: Path, **settings: Any) -> None:
        self.layout = OutputLayout(tmp_path)
        self.shards: list[Shard] = []
        self.oversize: list[tuple[str, str]] = []
        self.numbers = iter(range(1, 1000))
        self.sharder = Sharder(
            self.layout,
            BatchSpec(**settings),
            {"text": pl.String(), "n": pl.Int64()},
            lambda: f"s{next(self.numbers):05d}",
            self.shards.append,
            lambda req, why: self.oversize.append((req.custom_id, why)),
            worst_cost=lambda req: 0.5,
        )

    def add(self, *requests: ChatRequest) -> list[Shard]:
        for item in requests:
            self.sharder.add(item)
        self.sharder.close()
        return self.shards


def input_ids(layout: OutputLayout, shard: Shard) -> list[str]:
    lines = layout.batch_input(shard.id).read_bytes().splitlines()
    return [orjson.loads(line)["custom_id"] for line in lines]


def test_shards_are_cut_by_lines_and_keep_one_model_each(tmp_path: Path) -> None:
    made = Collected(tmp_path, lines_per_batch=3)
    shards = made.add(*[request(i, model="a" if i % 2 else "b") for i in range(10)])
    assert sorted((s.model, s.lines) for s in shards) == [
        ("a", 2), ("a", 3), ("b", 2), ("b", 3)
    ]  # fmt: skip
    for shard in shards:
        bodies = [
            orjson.loads(x)["body"]
            for x in made.layout.batch_input(shard.id).read_bytes().splitlines()
        ]
        assert {body["model"] for body in bodies} == {shard.model}
        assert shard.worst_cost_usd == pytest.approx(0.5 * shard.lines)
        assert shard.tokens == 10 * shard.lines


def test_shards_are_cut_by_bytes_and_by_the_tokens_of_a_wave(tmp_path: Path) -> None:
    size = (
        len(
            orjson.dumps(
                {
                    "custom_id": "r0#0",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": request(0).body,
                }
            )
        )
        + 1
    )
    by_bytes = Collected(tmp_path / "a", bytes_per_batch=size * 2)
    assert [s.lines for s in by_bytes.add(*[request(i) for i in range(5)])] == [2, 2, 1]
    by_tokens = Collected(tmp_path / "b", max_enqueued_tokens=25)
    assert [s.lines for s in by_tokens.add(*[request(i) for i in range(5)])] == [2, 2, 1]


def test_a_request_no_batch_can_hold_is_set_aside_with_the_reason(tmp_path: Path) -> None:
    made = Collected(tmp_path, bytes_per_batch=400, max_enqueued_tokens=50)
    shards = made.add(request(0), request(1, text="y" * 500), request(2, tokens=60), request(3))
    assert [s.lines for s in shards] == [2]
    assert [cid for cid, _ in made.oversize] == ["r1#0", "r2#0"]
    assert "batch.bytes_per_batch" in made.oversize[0][1]
    assert "batch.max_enqueued_tokens" in made.oversize[1][1]


def test_the_lines_file_joins_each_line_to_its_row_with_the_kept_columns(tmp_path: Path) -> None:
    made = Collected(tmp_path)
    (shard,) = made.add(*[request(i, text=f"t{i}") for i in range(4)])
    lines = read_lines(made.layout, shard.id)
    assert lines["custom_id"].to_list() == input_ids(made.layout, shard)
    back = [request_of(row, shard.model) for row in lines.iter_rows(named=True)]
    assert back[2].keep == {"text": "t2", "n": 2}
    assert (back[2].row_id, back[2].request_hash, back[2].seed) == ("r2", "h2", 2)
    assert back[2].body == {"model": "m"}


def test_a_resubmission_shard_holds_the_chosen_lines_as_first_written(tmp_path: Path) -> None:
    made = Collected(tmp_path)
    (parent,) = made.add(*[request(i) for i in range(6)])
    child = split_shard(
        made.layout,
        parent,
        {"r1#0", "r4#0"},
        Shard("s00099", "m", 0, 0, 0, round=1),
        {"text": pl.String(), "n": pl.Int64()},
    )
    assert child is not None and child.lines == 2 and child.round == 1
    parent_lines = made.layout.batch_input(parent.id).read_bytes().splitlines()
    assert made.layout.batch_input(child.id).read_bytes().splitlines() == [
        parent_lines[1],
        parent_lines[4],
    ]
    assert read_lines(made.layout, child.id)["custom_id"].to_list() == ["r1#0", "r4#0"]
    assert split_shard(made.layout, parent, set(), Shard("s00100", "m", 0, 0, 0), {}) is None


def test_discarding_leaves_no_half_written_file(tmp_path: Path) -> None:
    made = Collected(tmp_path)
    made.sharder.add(request(0))
    made.sharder.discard()
    assert made.shards == []
    assert not [p for p in (tmp_path / "batches").iterdir() if not p.name.startswith(".tmp")]
    assert not list((tmp_path / "batches").iterdir())


@pytest.mark.parametrize(("temperature", "kept"), [(0, 0.0), (0.7, 0.7), (True, None), ("0", None)])
def test_the_lines_file_keeps_the_temperature_the_response_cache_reads(
    tmp_path: Path, temperature: object, kept: float | None
) -> None:
    made = Collected(tmp_path)
    sent = request(0)
    sent.body["temperature"] = temperature
    (shard,) = made.add(sent, request(1))
    rows = list(read_lines(made.layout, shard.id).iter_rows(named=True))
    back = [request_of(row, shard.model) for row in rows]
    assert back[0].body.get("temperature") == kept and "temperature" not in back[1].body
    assert back[1].body == {"model": "m"}
