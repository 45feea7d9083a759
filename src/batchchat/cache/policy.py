"""Which requests the cache may answer, which answers it keeps, and under what key. Pure.

A stored answer is served only to a request that is deterministic by construction --
``temperature: 0``, or a seed (fixed or per row) -- unless the spec widens it with
``serve: any``: a request that samples asks for a fresh draw, and getting yesterday's
would be a wrong answer that looks right. What a job may not take from the cache it
does not put there either. Only complete answers are kept: never an error, never one
cut by ``max_tokens`` or stopped by a content filter unless the spec asks for those.
"""

from __future__ import annotations

from batchchat.models import ChatRequest, ChatResponse
from batchchat.spec import CacheSpec

#: finish reasons of an answer that ended because the model was done
COMPLETE = frozenset({"stop", "tool_calls", "function_call"})


def cache_key(request: ChatRequest) -> str:
    """The planner's request hash (canonical body and endpoint, never the key) and the
    sample: with ``serve: any`` each sample of a row keeps its own draw."""
    return f"{request.request_hash}#{request.sample}"


def is_deterministic(request: ChatRequest) -> bool:
    """Whether the request asks for the same answer each time: temperature 0 or a seed."""
    temperature = request.body.get("temperature")
    greedy = isinstance(temperature, int | float) and not isinstance(temperature, bool)
    return (greedy and temperature == 0) or request.seed is not None


def may_serve(spec: CacheSpec, request: ChatRequest) -> bool:
    """Whether a stored answer may answer ``request`` (and its answer may be stored)."""
    return bool(request.request_hash) and (spec.serve == "any" or is_deterministic(request))


def is_storable(spec: CacheSpec, response: ChatResponse) -> bool:
    """Whether ``response`` is complete enough to keep: every choice finished, or finished
    the way the spec also wants kept (``store_length``, ``store_content_filter``)."""
    allowed = set(COMPLETE)
    if spec.store_length:
        allowed.add("length")
    if spec.store_content_filter:
        allowed.add("content_filter")
    return bool(response.choices) and all(c.finish_reason in allowed for c in response.choices)
