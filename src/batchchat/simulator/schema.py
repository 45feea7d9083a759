"""A JSON value that conforms to a JSON Schema, chosen deterministically by a seeded RNG.

Covers what structured outputs and tool parameters use: ``type`` (or a list of
types), objects with ``properties``/``required``/``minProperties``, arrays with
``items``/``prefixItems``/``minItems``/``maxItems``/``uniqueItems``, strings with
``minLength``/``maxLength``/``format``, numbers and integers with bounds and
``multipleOf``, ``enum``, ``const``, ``anyOf``/``oneOf``/``allOf`` and local
``$ref`` into ``$defs``/``definitions``. ``pattern`` is not honoured.
"""

from __future__ import annotations

import math
import random
from typing import Any

_WORDS = ("alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "lambda", "theta")
#: recursion depth past which optional properties and items are left out
_SHALLOW = 4
_FORMATS = {
    "date-time": lambda r: f"2024-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}T12:00:00Z",
    "date": lambda r: f"2024-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}",
    "time": lambda r: f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:00",
    "email": lambda r: f"user{r.randint(1, 999)}@example.com",
    "uuid": lambda r: "%08x-0000-4000-8000-%012x" % (r.getrandbits(32), r.getrandbits(48)),  # noqa: UP031
    "uri": lambda r: f"https://example.com/{r.choice(_WORDS)}",
    "hostname": lambda r: f"{r.choice(_WORDS)}.example.com",
    "ipv4": lambda r: f"10.0.{r.randint(0, 255)}.{r.randint(1, 254)}",
}


def instance_of(schema: dict[str, Any], rng: random.Random) -> Any:
    """A value valid against ``schema`` (whose ``$defs`` are resolved against itself)."""
    return _Generator(schema, rng).value(schema, 0)


class _Generator:
    def __init__(self, root: dict[str, Any], rng: random.Random) -> None:
        self.root = root  # what "#/..." references point into
        self.rng = rng

    def value(self, schema: Any, depth: int) -> Any:
        if not isinstance(schema, dict):  # `true` or an empty schema: anything goes
            return None if schema is False else self.rng.choice(_WORDS)
        schema = self.resolve(schema, depth)
        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            return self.rng.choice(schema["enum"])
        for key in ("anyOf", "oneOf"):
            if key in schema:
                branches = schema[key]
                # near the depth limit prefer a branch that can end the recursion
                branch = branches[-1] if depth > _SHALLOW else self.rng.choice(branches)
                return self.value(branch, depth + 1)
        kind = self.kind(schema, depth)
        return getattr(self, "make_" + kind)(schema, depth)

    def resolve(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        while "$ref" in schema and depth < 64:
            target: Any = self.root
            for part in schema["$ref"].removeprefix("#").strip("/").split("/"):
                if part:
                    target = target[part.replace("~1", "/").replace("~0", "~")]
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**target, **rest}
            depth += 1
        if "allOf" in schema:
            merged = {k: v for k, v in schema.items() if k != "allOf"}
            for part in schema["allOf"]:
                merged = _merge(merged, self.resolve(part, depth + 1))
            schema = merged
        return schema

    def kind(self, schema: dict[str, Any], depth: int) -> str:
        declared = schema.get("type")
        if isinstance(declared, list):
            real = [kind for kind in declared if kind != "null"]
            if not real or (depth > _SHALLOW and "null" in declared):
                return "null"
            return str(self.rng.choice(real))
        if declared is not None:
            return str(declared)
        if "properties" in schema:
            return "object"
        return "array" if "items" in schema or "prefixItems" in schema else "string"

    def make_object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        properties = schema.get("properties") or {}
        required = set(schema.get("required") or ())
        result = {
            name: self.value(sub, depth + 1)
            for name, sub in properties.items()
            if name in required or depth < _SHALLOW
        }
        extra = schema.get("additionalProperties", True)
        for i in range(len(result), schema.get("minProperties", 0)):
            result[f"extra_{i}"] = self.value(extra if isinstance(extra, dict) else {}, depth + 1)
        return result

    def make_array(self, schema: dict[str, Any], depth: int) -> list[Any]:
        prefix = [self.value(sub, depth + 1) for sub in schema.get("prefixItems", ())]
        low = max(schema.get("minItems", 0), len(prefix))
        high = schema.get("maxItems", low + 3)
        count = low if depth > _SHALLOW else self.rng.randint(low, max(low, min(high, low + 3)))
        items = schema.get("items", {})
        result = list(prefix)
        tries = 0
        while len(result) < count and tries < count * 10 + 10:
            tries += 1
            item = self.value(items, depth + 1)
            if not schema.get("uniqueItems") or item not in result:
                result.append(item)
        return result

    def make_string(self, schema: dict[str, Any], depth: int) -> str:
        fmt = _FORMATS.get(schema.get("format", ""))
        text = fmt(self.rng) if fmt else " ".join(self.rng.sample(_WORDS, self.rng.randint(1, 3)))
        low = schema.get("minLength", 0)
        high = schema.get("maxLength")
        if len(text) < low:
            text += "x" * (low - len(text))
        return text if high is None else text[:high]

    def make_integer(self, schema: dict[str, Any], depth: int) -> int:
        return int(self.multiple(schema, 1, schema.get("multipleOf", 1)))

    def make_number(self, schema: dict[str, Any], depth: int) -> float:
        if "multipleOf" in schema:
            return self.multiple(schema, 0.01, schema["multipleOf"])
        low, high = _bounds(schema, 0.01)
        value = self.rng.uniform(low, high)
        short = round(value, 2)  # what a model writes; unless rounding leaves the range
        return short if low <= short <= high else value

    def multiple(self, schema: dict[str, Any], epsilon: float, step: float) -> float:
        low, high = _bounds(schema, epsilon)
        first, last = math.ceil(low / step), math.floor(high / step)
        return self.rng.randint(first, max(first, last)) * step

    def make_boolean(self, schema: dict[str, Any], depth: int) -> bool:
        return self.rng.random() < 0.5

    def make_null(self, schema: dict[str, Any], depth: int) -> None:
        return None


def _bounds(schema: dict[str, Any], epsilon: float) -> tuple[float, float]:
    low: float | None = schema.get("minimum")
    high: float | None = schema.get("maximum")
    if "exclusiveMinimum" in schema:
        low = max(low if low is not None else -math.inf, schema["exclusiveMinimum"] + epsilon)
    if "exclusiveMaximum" in schema:
        high = min(high if high is not None else math.inf, schema["exclusiveMaximum"] - epsilon)
    if low is None:
        low = min(0.0, high) if high is not None else 0.0
    if high is None:
        high = max(100.0, low + 10)
    return low, max(low, high)


def _merge(left: dict[str, Any], right: dict[str, Any]) -> dict[str, Any]:
    merged = {**left, **right}
    if "properties" in left and "properties" in right:
        merged["properties"] = {**left["properties"], **right["properties"]}
    if "required" in left and "required" in right:
        merged["required"] = sorted({*left["required"], *right["required"]})
    return merged
