"""batchchat's result rows side by side with the raw server's answers to the same bodies."""

from __future__ import annotations

from typing import Any

import polars as pl

from tests.realserver._servers import Server, post


def raw_by_id(
    server: Server, bodies: dict[str, dict[str, Any]], **override: Any
) -> dict[str, dict[str, Any]]:
    """custom id → the raw server's JSON answer to that body (with ``override`` applied)."""
    answers = post(server, [{**b, **override} for b in bodies.values()])
    assert all(a.status == 200 for a in answers), [a.text for a in answers if a.status != 200]
    return {cid: a.json() for cid, a in zip(bodies, answers, strict=True)}


def usage_of(answer: dict[str, Any]) -> tuple[Any, ...]:
    u = answer.get("usage") or {}
    return (u.get("prompt_tokens"), u.get("completion_tokens"), u.get("total_tokens"))


def result_view(df: pl.DataFrame) -> dict[str, tuple[Any, ...]]:
    """custom id → (content, finish_reason, usage) from batchchat's results."""
    return {
        f"{r['row_id']}#{r['sample']}": (
            r["content"],
            r["finish_reason"],
            (r["prompt_tokens"], r["completion_tokens"], r["total_tokens"]),
        )
        for r in df.iter_rows(named=True)
    }


def raw_view(raw: dict[str, dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    """custom id → (content, finish_reason, usage) from the raw answers."""
    return {
        cid: (a["choices"][0]["message"]["content"], a["choices"][0]["finish_reason"], usage_of(a))
        for cid, a in raw.items()
    }


def differences(got: dict[str, Any], want: dict[str, Any]) -> str:
    """'' when ``got`` has every value of ``want``; else how many differ, with examples."""
    diff = {k: (got.get(k), want[k]) for k in want if got.get(k) != want[k]}
    if not diff:
        return ""
    return f"{len(diff)}/{len(want)} differ (batchchat, raw): {list(diff.items())[:3]}"


def assert_same(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert not (found := differences(got, want)), found


def split(view: dict[str, tuple[Any, ...]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A result or raw view as (content and finish_reason, usage)."""
    return {k: v[:2] for k, v in view.items()}, {k: v[2] for k, v in view.items()}
