"""``batchchat cache info`` and ``clear`` through click's CliRunner, on a real cache file."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner, Result

from batchchat.cache.store import Hit, NewEntry, ResponseStore
from batchchat.cli import main


def invoke(*args: object, input: str | None = None) -> Result:
    return CliRunner().invoke(main, ["cache", *map(str, args)], input=input)


@pytest.fixture
def filled(tmp_path: Path) -> Path:
    where = tmp_path / "cache"
    with ResponseStore(where) as store:
        store.put_many(
            [NewEntry(f"k{i}", b"x" * 3000, "m", 0.01) for i in range(3)], max_bytes=10**6
        )
        store.record_hits([Hit("k0", 0.5), Hit("k1", 0.25)])
    return where


def test_info_shows_size_answers_hits_and_savings(filled: Path) -> None:
    result = invoke("info", "--dir", filled)
    assert result.exit_code == 0, result.output
    assert "answers  3 (8.8 KB stored" in result.output
    assert "hits     2 (saved $0.7500)" in result.output
    assert "added    3 answers stored, 0 evicted" in result.output


def test_info_as_json(filled: Path) -> None:
    data = orjson.loads(invoke("info", "--dir", filled, "--json").output)
    assert (data["entries"], data["hits"], data["saved_usd"], data["stored_bytes"]) == (
        3,
        2,
        0.75,
        9000,
    )
    assert data["exists"] is True and data["oldest"] is not None


def test_info_of_a_job_reads_its_cache_path(filled: Path, tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text("input: {path: x}\nrequest: {model: m, messages: []}\ncache: {path: cache}\n")
    assert "answers  3" in invoke("info", job).output


def test_without_a_cache_info_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    result = invoke("info")
    assert result.exit_code == 0
    assert "no response cache in" in result.output and "xdg/batchchat yet" in result.output
    assert orjson.loads(invoke("info", "--json").output)["exists"] is False
    job = tmp_path / "job.yaml"
    job.write_text("input: {path: x}\nrequest: {model: m, messages: []}\ncache: true\n")
    assert "xdg/batchchat" in invoke("info", job).output
    assert "nothing to clear" in invoke("clear", "--yes").output


def test_clear_asks_first_then_deletes_everything(filled: Path) -> None:
    refused = invoke("clear", "--dir", filled, input="n\n")
    assert refused.exit_code == 1
    assert "answers  3" in invoke("info", "--dir", filled).output
    result = invoke("clear", "--dir", filled, input="y\n")
    assert result.exit_code == 0
    assert "cleared 3 answers" in result.output
    assert "answers  0 (0 B stored" in invoke("info", "--dir", filled).output
    assert "cleared 0 answers" in invoke("clear", "--dir", filled, "--yes").output


def test_a_damaged_cache_is_an_error_with_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "responses.sqlite3").write_bytes(b"nonsense" * 100)
    result = invoke("info", "--dir", tmp_path)
    assert result.exit_code == 2
    assert "Error: cannot open the response cache" in result.output
    assert "batchchat cache clear" in result.output
    cleared = invoke("clear", "--dir", tmp_path, "--yes")
    assert cleared.exit_code == 0 and "removed the cache files" in cleared.output
    assert not (tmp_path / "responses.sqlite3").exists()
    assert "no response cache" in invoke("info", "--dir", tmp_path).output


def test_sizes_read_like_sizes() -> None:
    from batchchat.cli.cache import _size

    assert [_size(n) for n in (512, 2048, 5 * 1024**2, 3 * 1024**3)] == [
        "512 B",
        "2.0 KB",
        "5.0 MB",
        "3.0 GB",
    ]
