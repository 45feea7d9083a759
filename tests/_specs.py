"""Job specs for the tests: a test's sections laid over a job's defaults."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def merge_sections(spec: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Lay ``extra`` over ``spec`` (in place, returned): a mapping is merged key by key into
    the section of the same name (``limits={"rpm": 60}`` keeps the other limits), anything
    else replaces it."""
    for key, value in extra.items():
        spec[key] = {**spec.get(key, {}), **value} if isinstance(value, dict) else value
    return spec
