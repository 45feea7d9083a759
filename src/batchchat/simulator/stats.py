"""What the simulator counts (``GET /stats``), and the prompt-prefix cache behind cached tokens.

Prompt caching follows OpenAI's rule scaled down: a prompt whose leading
messages (the same messages, in order, for the same model) were seen before
reports those messages' tokens as cached, rounded down to a multiple of
:data:`CACHE_BLOCK` tokens. So a shared 200-token system prompt gives
``cached_tokens: 192`` from the second request on.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from typing import Any

import orjson

from batchchat.planning.tokens import REPLY_PRIMING_TOKENS, estimate_prompt_tokens

CACHE_BLOCK = 64
#: prefixes remembered before the cache starts afresh (bounds memory on huge runs)
_CACHE_CAPACITY = 200_000


def message_tokens(messages: Sequence[Any]) -> list[int]:
    """Each message's share of the prompt tokens; ``sum + REPLY_PRIMING_TOKENS`` is the prompt."""
    return [estimate_prompt_tokens([message]) - REPLY_PRIMING_TOKENS for message in messages]


def encode_messages(messages: Sequence[Any]) -> list[bytes]:
    """Canonical bytes of each message (the basis of request keys and prefix hashes)."""
    return [orjson.dumps(message, option=orjson.OPT_SORT_KEYS) for message in messages]


def request_key(model: str, seed: int | None, encoded: Sequence[bytes]) -> str:
    """A stable key of a request's content: the same row (and seed) always has the same key."""
    h = hashlib.sha256(f"{model}\x1f{seed}\x1f".encode())
    for message in encoded:
        h.update(message)
        h.update(b"\x1e")
    return h.hexdigest()[:24]


def key_of(body: dict[str, Any]) -> str:
    """The ``/stats`` ``answers`` key of a request body, as a test computes it."""
    return request_key(body["model"], body.get("seed"), encode_messages(body["messages"]))


class PrefixCache:
    """Remembers message prefixes per model; answers how many prompt tokens were cached."""

    def __init__(self) -> None:
        self._seen: set[bytes] = set()  # blake2b of (model, messages[:i+1]) for every prefix seen

    def cached_tokens(self, model: str, encoded: Sequence[bytes], tokens: Sequence[int]) -> int:
        """Tokens of the longest prefix seen before (in whole blocks); remembers all prefixes.

        ``encoded`` and ``tokens`` are the messages' canonical bytes and token shares.
        """
        if len(self._seen) > _CACHE_CAPACITY:
            self._seen.clear()
        h = hashlib.blake2b(model.encode(), digest_size=16)
        total = REPLY_PRIMING_TOKENS
        cached = 0
        for raw, count in zip(encoded, tokens, strict=True):
            h.update(raw)
            h.update(b"\x1e")
            total += count
            prefix = h.digest()
            if prefix in self._seen:
                cached = total
            else:
                self._seen.add(prefix)
        return cached // CACHE_BLOCK * CACHE_BLOCK

    def clear(self) -> None:
        self._seen.clear()


class Stats:
    """Counters of everything the server did since start (or the last reset)."""

    def __init__(self) -> None:
        self.requests = 0  # requests received on the chat endpoint
        self.by_status: Counter[int] = Counter()  # status line sent → count
        self.faults: Counter[str] = Counter()  # fault kind → injected count
        self.rate_limited = 0  # 429s from the RPM/TPM limits (not injected ones)
        self.closed_on_reuse = 0  # requests closed unanswered: their connection was retired
        self.in_flight = 0
        self.max_in_flight = 0
        self.prompt_tokens = 0  # of answered requests
        self.completion_tokens = 0
        self.answers: Counter[str] = Counter()  # request key → complete successful answers
        self.arrivals: Counter[str] = Counter()  # request key → times received (drives faults)

    def snapshot(self, connections_open: int = 0, max_connections_open: int = 0) -> dict[str, Any]:
        """The counters as plain data, with the open TCP connections counted elsewhere."""
        return {
            "requests": self.requests,
            "by_status": {str(status): count for status, count in sorted(self.by_status.items())},
            "faults": dict(self.faults),
            "rate_limited": self.rate_limited,
            "closed_on_reuse": self.closed_on_reuse,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "connections_open": connections_open,
            "max_connections_open": max_connections_open,
            "answered": sum(self.answers.values()),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "answers": dict(self.answers),
        }
