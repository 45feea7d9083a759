"""Re-asks: a row whose answer fails the job's check is asked again, in the same run.

The check is the job's -- does the answer parse as JSON, match the schema, name one of
the labels, or was it cut by the token limit -- and is built above the executor from the
output settings (:mod:`batchchat.answers.check`); it reaches the executor as a plain
function, :data:`AnswerCheck`. Here is what follows from its verdict:

* the answer is recorded in the row's :class:`Asked` (every answer is paid for: its cost
  is kept, and counted in the run's stats as it arrives, so the budget sees it at once);
* while re-asks are left (``output.reask.count``), the row is asked again: with a repair
  turn (the model's answer, then a user turn saying what is wrong with it) or, with
  ``repair: false``, the same request once more; an answer cut by the token limit is
  asked again with the limit raised (``max_tokens_factor``);
* otherwise the row ends with its last answer, its parse status honest.

Re-asks are not retries: a retry sends the same request again after a transport or
server failure (``retry:``), a re-ask sends a new question after an answer came back.
They are counted apart (``reasks`` per row and in the stats).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from batchchat.models import ChatRequest, ChatResponse
from batchchat.planning.planner import max_output_tokens
from batchchat.planning.tokens import estimate_text_tokens
from batchchat.spec import ReaskSpec

#: the repair turn unless ``output.reask.repair_prompt`` says otherwise
DEFAULT_REPAIR_PROMPT = "{error}\nAnswer again, with only the corrected answer."
#: the body fields that limit an answer's tokens
_TOKEN_LIMITS = ("max_completion_tokens", "max_tokens")
#: the verdicts, as the ``parse_status`` column names them (``ok`` when none)
KINDS = ("invalid_json", "schema_mismatch", "off_label", "truncated", "no_content")


@dataclass(frozen=True, slots=True)
class Verdict:
    """Why an answer cannot be used."""

    #: one of :data:`KINDS`
    kind: str
    #: what is wrong, worded for the model (the repair turn says it)
    message: str


#: the job's check of an answer to a request: None when the answer is usable
AnswerCheck = Callable[[ChatRequest, ChatResponse], Verdict | None]
#: the cost of an answer to a request (None: unpriced)
AnswerPrice = Callable[[ChatRequest, ChatResponse], float | None]


@dataclass(slots=True)
class Asked:
    """What one row was asked so far, and what each answer cost."""

    #: the planned request: the row's identity, what its result row describes
    original: ChatRequest
    #: clock time the first ask went out
    first_sent: float
    #: HTTP attempts of the asks before the current one
    earlier_attempts: int = 0
    #: the HTTP status the latest answer came with
    answer_status: int = 200
    answers: list[ChatResponse] = field(default_factory=list)
    costs: list[float | None] = field(default_factory=list)

    @property
    def reasks(self) -> int:
        return max(len(self.answers) - 1, 0)


class Reasker:
    """A job's re-ask settings and check: decides, answer by answer, whether to ask again."""

    def __init__(self, spec: ReaskSpec, check: AnswerCheck, price: AnswerPrice) -> None:
        self.spec = spec
        self.check = check
        self.price = price

    def follow_up(self, asked: Asked, sent: ChatRequest) -> ChatRequest | None:
        """The request to send next for the row, after the answer to ``sent`` (its latest
        ask); None: the row is done."""
        answer = asked.answers[-1]
        verdict = self.check(asked.original, answer)
        if verdict is None or asked.reasks >= self.spec.count:
            return None
        return self.reask_request(asked.original, answer, verdict, sent=sent)

    def reask_request(
        self,
        original: ChatRequest,
        answer: ChatResponse,
        verdict: Verdict,
        *,
        sent: ChatRequest | None = None,
    ) -> ChatRequest:
        """The original request asked again about ``answer`` (the answer to ``sent``, the
        original when None), which ``verdict`` refused.

        The repair turn follows the original messages (each re-ask shows the latest answer
        alone, so the prompt does not grow with every try); the token limit is the latest
        ask's, raised again when the answer was cut again.
        """
        body = dict(original.body)
        for key in _TOKEN_LIMITS:
            if sent is not None and key in sent.body:
                body[key] = sent.body[key]
        added = 0
        if self.spec.repair:
            turns = self.repair_turns(answer, verdict)
            body["messages"] = [*original.body.get("messages", []), *turns]
            added = sum(estimate_text_tokens(str(turn["content"])) for turn in turns)
        if verdict.kind == "truncated":
            _raise_token_limit(body, self.spec.max_tokens_factor)
        return ChatRequest(
            row_id=original.row_id,
            sample=original.sample,
            custom_id=original.custom_id,
            body=body,
            # a re-ask answers the row's planned request: its identity stays that one's
            request_hash=original.request_hash,
            est_prompt_tokens=original.est_prompt_tokens + added,
            max_output_tokens=max_output_tokens(body),
            seed=original.seed,
            keep=original.keep,
        )

    def repair_turns(self, answer: ChatResponse, verdict: Verdict) -> list[dict[str, Any]]:
        """The model's answer as an assistant turn, then what is wrong with it."""
        choice = answer.choices[0] if answer.choices else None
        said = (choice.content if choice is not None else None) or ""
        template = self.spec.repair_prompt or DEFAULT_REPAIR_PROMPT
        return [
            {"role": "assistant", "content": said},
            {"role": "user", "content": template.replace("{error}", verdict.message)},
        ]


def _raise_token_limit(body: dict[str, Any], factor: float) -> None:
    for key in _TOKEN_LIMITS:
        limit = body.get(key)
        if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
            body[key] = max(limit + 1, round(limit * factor))
