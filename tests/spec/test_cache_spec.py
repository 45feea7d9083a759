"""cache:, output.reask and input.where in a spec: defaults, shorthands and problems."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchchat.errors import SpecError
from batchchat.spec import load_spec
from batchchat.spec.cache import CACHE_FILE, default_cache_dir
from tests.spec.test_spec import load


def test_cache_is_off_unless_the_spec_asks(tmp_path: Path) -> None:
    spec = load(tmp_path, "name: j")
    assert spec.cache is None and spec.cache_dir is None


@pytest.mark.parametrize("section", ["cache: true", "cache: {}"])
def test_cache_true_takes_every_default(
    tmp_path: Path, section: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    spec = load(tmp_path, section)
    assert spec.cache is not None
    assert (spec.cache.mode, spec.cache.serve, spec.cache.max_size_mb) == (
        "read-write",
        "deterministic",
        1024.0,
    )
    assert spec.cache.max_bytes == 1024 * 1024 * 1024
    assert not spec.cache.store_length and not spec.cache.store_content_filter
    assert spec.cache_dir == tmp_path / "xdg" / "batchchat"


def test_cache_false_and_mode_off_use_no_cache(tmp_path: Path) -> None:
    assert load(tmp_path, "cache: false").cache_dir is None
    assert load(tmp_path, "cache: {mode: off}").cache_dir is None


def test_a_relative_cache_path_is_the_spec_directory_s(tmp_path: Path) -> None:
    spec = load(tmp_path, "cache: {path: ../shared/cache, mode: read-only, serve: any}")
    assert spec.cache_dir == tmp_path.parent / "shared" / "cache"
    assert spec.cache is not None and spec.cache.serve == "any"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"XDG_CACHE_HOME": "/var/cache/me"}, Path("/var/cache/me/batchchat")),
        ({"XDG_CACHE_HOME": "relative/not/allowed"}, Path.home() / ".cache" / "batchchat"),
        ({}, Path.home() / ".cache" / "batchchat"),
    ],
)
def test_the_default_cache_directory_honours_xdg(env: dict[str, str], expected: Path) -> None:
    assert default_cache_dir(env) == expected
    assert CACHE_FILE == "responses.sqlite3"


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("cache: {mode: sometimes}", "cache.mode: Input should be 'read-write', 'read-only'"),
        ("cache: {max_size_mb: 0}", "cache.max_size_mb: Input should be greater than 0"),
        ("cache: {serve: all}", "cache.serve: Input should be 'deterministic' or 'any'"),
        ("cache: {size: 3}", "cache.size: unknown key"),
        ("output: {reask: {count: 11}}", "output.reask.count: Input should be less than or"),
        ("output: {reask: {max_tokens_factor: 0.5}}", "greater than or equal to 1"),
        ("output: {reask: {tries: 2}}", "output.reask.tries: unknown key"),
        (
            "input: {path: x, where: \"label ~ 'a'\"}",
            "input.where: not a filter: unexpected \"~ 'a'\" at character 7",
        ),
    ],
)
def test_problems_name_the_field_and_line(tmp_path: Path, section: str, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        load(tmp_path, section)
    assert message in str(caught.value)
    assert "job.yaml:" in str(caught.value)


def test_reask_count_alone_is_a_count_with_the_repair_turn(tmp_path: Path) -> None:
    reask = load(tmp_path, "output: {reask: 3}").output.reask
    assert reask is not None
    assert (reask.count, reask.repair, reask.max_tokens_factor) == (3, True, 2.0)
    explicit = load(tmp_path, "output: {reask: {count: 1, repair: false}}").output.reask
    assert explicit is not None and not explicit.repair


def test_where_is_kept_as_written() -> None:
    spec = load_spec(
        {
            "input": {"path": "x", "where": "status = 'ok'"},
            "request": {"model": "m", "messages": []},
        }
    )
    assert spec.input.where == "status = 'ok'"
