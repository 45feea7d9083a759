"""Server-sent events → one dict shaped like a non-streamed ``chat.completion``. Pure.

Comment lines (``: keep-alive``) are skipped; deltas are merged per choice (content,
reasoning, refusal, tool-call fragments by index, logprobs); the ``include_usage``
chunk is kept. An error event is a :class:`StreamError`; a stream that ends without
``[DONE]`` or without a finish_reason on every choice is a :class:`ResponseFormatError`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from batchchat.errors import EmptyResponseError, ResponseFormatError, StreamError
from batchchat.execute.parse._text import clip, load_object


def assemble_stream(body: bytes) -> dict[str, Any]:
    """SSE text → a dict shaped like a non-streamed ``chat.completion``.

    Raises :class:`StreamError` for an error event and :class:`ResponseFormatError` for a
    stream that ends without ``[DONE]`` or without a finish_reason on every choice.
    """
    stream = _StreamState()
    for event, data in _sse_events(body):
        if data == b"[DONE]":
            stream.done = True
            break
        for chunk in _chunks(data):
            if event == "error" or "error" in chunk:
                raise StreamError(f"error event in the stream: {_stream_error_text(chunk)}")
            stream.add(chunk)
    return stream.finish()


def _sse_events(body: bytes) -> Iterator[tuple[str, bytes]]:
    """(event name, data) per event; comment lines (``: keep-alive``) are skipped."""
    event, data = "", list[bytes]()
    for line in body.splitlines():
        if not line:
            if data:
                yield event, b"\n".join(data)
            event, data = "", list[bytes]()
            continue
        if line[:1] == b":":
            continue
        name, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            data.append(value)
        elif name == b"event":
            event = value.decode("utf-8", "replace")
    if data:
        yield event, b"\n".join(data)


def _chunks(data: bytes) -> list[dict[str, Any]]:
    """The JSON object(s) of one event; tolerates servers that omit the blank line between."""
    try:
        return [load_object(data, "stream chunk")]
    except ResponseFormatError:
        lines = data.split(b"\n")
        if len(lines) == 1:
            raise
        return [load_object(line, "stream chunk") for line in lines if line != b"[DONE]"]


def _stream_error_text(chunk: dict[str, Any]) -> str:
    error = chunk.get("error", chunk)
    if isinstance(error, dict):
        code = error.get("code") or error.get("type")
        message = str(error.get("message", ""))
        return clip(f"{code}: {message}" if code else message)
    return clip(str(error))


class _ChoiceState:
    """The deltas of one choice collected so far."""

    __slots__ = (
        "content",
        "finish_reason",
        "got_delta",
        "logprobs",
        "reasoning",
        "refusal",
        "role",
        "tools",
    )

    def __init__(self) -> None:
        #: whether any chunk carried a delta for this choice (none: no message at all)
        self.got_delta = False
        self.role = "assistant"
        self.content: list[str] | None = None
        self.reasoning: list[str] | None = None
        self.refusal: list[str] | None = None
        #: tool-call fragments by their index: id, type, name, argument pieces
        self.tools: dict[int, dict[str, Any]] = {}
        self.logprobs: list[Any] | None = None
        self.finish_reason: str | None = None

    def add(self, choice: dict[str, Any]) -> None:
        delta = choice.get("delta")
        if isinstance(delta, dict):
            self.got_delta = True
        else:
            delta = {}
        self.role = delta.get("role") or self.role
        self.content = _append(self.content, delta.get("content"))
        reasoning = delta.get("reasoning_content", delta.get("reasoning"))
        self.reasoning = _append(self.reasoning, reasoning)
        self.refusal = _append(self.refusal, delta.get("refusal"))
        for position, fragment in enumerate(delta.get("tool_calls") or ()):
            self._add_tool_fragment(fragment.get("index", position), fragment)
        logprobs = choice.get("logprobs")
        if isinstance(logprobs, dict) and logprobs.get("content") is not None:
            self.logprobs = (self.logprobs or []) + list(logprobs["content"])
        self.finish_reason = choice.get("finish_reason") or self.finish_reason

    def _add_tool_fragment(self, index: int, fragment: dict[str, Any]) -> None:
        slot = self.tools.setdefault(index, {"id": None, "type": "function", "name": None})
        slot["id"] = fragment.get("id") or slot["id"]
        slot["type"] = fragment.get("type") or slot["type"]
        function = fragment.get("function") or {}
        slot["name"] = function.get("name") or slot["name"]
        pieces = slot.setdefault("arguments", [])
        if function.get("arguments"):
            pieces.append(function["arguments"])

    def message(self) -> dict[str, Any]:
        if not self.got_delta:
            raise EmptyResponseError("a streamed choice came without any delta: no message")
        content = _joined(self.content)
        if content is None and not self.tools and self.refusal is None:
            # an empty answer: a server that streams no content delta for it (llama-server)
            # answers "" when not streaming, and so does every server: the same shape here
            content = ""
        message: dict[str, Any] = {
            "role": self.role,
            "content": content,
            "reasoning_content": _joined(self.reasoning),
            "refusal": _joined(self.refusal),
        }
        if self.tools:
            message["tool_calls"] = [
                {
                    "id": slot["id"],
                    "type": slot["type"],
                    "function": {"name": slot["name"], "arguments": "".join(slot["arguments"])},
                }
                for _, slot in sorted(self.tools.items())
            ]
        return message


class _StreamState:
    """A stream being assembled: envelope fields, choices by index, the usage chunk."""

    __slots__ = ("choices", "done", "envelope", "usage")

    def __init__(self) -> None:
        self.envelope: dict[str, Any] = {"id": None, "model": None, "system_fingerprint": None}
        self.choices: dict[int, _ChoiceState] = {}
        self.usage: Any = None
        #: True once ``data: [DONE]`` arrived
        self.done = False

    def add(self, chunk: dict[str, Any]) -> None:
        for key in ("id", "model", "system_fingerprint", "created"):
            if chunk.get(key) is not None:
                self.envelope[key] = chunk[key]
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for position, choice in enumerate(chunk.get("choices") or ()):
            index = choice.get("index", position)
            state = self.choices.get(index)
            if state is None:
                state = self.choices[index] = _ChoiceState()
            state.add(choice)

    def finish(self) -> dict[str, Any]:
        if not self.done:
            raise ResponseFormatError("stream ended without [DONE] (truncated)")
        if not self.choices:
            raise EmptyResponseError("stream ended without any choice")
        unfinished = [i for i, c in sorted(self.choices.items()) if c.finish_reason is None]
        if unfinished:
            raise ResponseFormatError(
                f"stream incomplete: no finish_reason for choice(s) {unfinished}"
            )
        choices = [
            {
                "index": index,
                "message": state.message(),
                "logprobs": None if state.logprobs is None else {"content": state.logprobs},
                "finish_reason": state.finish_reason,
            }
            for index, state in sorted(self.choices.items())
        ]
        return {
            **self.envelope,
            "object": "chat.completion",
            "choices": choices,
            "usage": self.usage,
        }


def _append(pieces: list[str] | None, piece: Any) -> list[str] | None:
    if piece is None:
        return pieces
    if pieces is None:
        return [piece]
    pieces.append(piece)
    return pieces


def _joined(pieces: list[str] | None) -> str | None:
    return None if pieces is None else "".join(pieces)
