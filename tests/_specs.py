"""Job specs for the tests: the job most of them run, and a test's sections laid over it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


def merge_sections(spec: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Lay ``extra`` over ``spec`` (in place, returned): a mapping is merged key by key into
    the section of the same name (``limits={"rpm": 60}`` keeps the other limits), anything
    else replaces it."""
    for key, value in extra.items():
        spec[key] = {**spec.get(key, {}), **value} if isinstance(value, dict) else value
    return spec


def label_job(
    name: str, rows: str | Path, base_url: str, out: str | Path, **sections: Any
) -> dict[str, Any]:
    """The job most tests run: label each row's ``text`` of ``rows`` (a file of ids and
    texts) into ``out``, keep the text, retry fast; ``sections`` laid over it
    (:func:`merge_sections`)."""
    spec: dict[str, Any] = {
        "name": name,
        "input": {"path": str(rows), "id_column": "id"},
        "endpoint": {"base_url": base_url, "timeout_s": 5},
        "request": {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "Label: {{ text }}"}],
            "max_tokens": 8,
        },
        "output": {"path": str(out), "keep_columns": ["text"]},
        "retry": {"max_attempts": 3, "max_wait_s": 0.05, "initial_wait_s": 0.01},
    }
    return merge_sections(spec, sections)
