"""What a job would send, counted without sending it: rows, requests, tokens and cost range.

``batchchat plan`` prints it and :func:`batchchat.plan` returns it; both come from
:func:`estimate`, which streams the requests once (nothing per request is kept) and can
write them as Batch API input lines on the way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

import orjson

from batchchat.models import ChatRequest
from batchchat.planning.planner import Plan, RowFailure
from batchchat.planning.reader import InputIssue
from batchchat.pricing import STANDARD, PriceTable, Tier


@dataclass
class PlanEstimate:
    """Running sums over a job's planned requests."""

    #: input rows (a row a template fails on counts: a run records it as an error row)
    rows: int = 0
    requests: int = 0
    #: the offline estimate of the prompts' tokens
    prompt_tokens: int = 0
    #: the most output tokens the requests allow (max_tokens × n, or the default)
    max_output_tokens: int = 0
    #: the cost range in USD over the priced requests: cached prompts and one-token
    #: answers at the low end, every allowed output token at the high end
    cost_low_usd: float = 0.0
    cost_high_usd: float = 0.0
    #: models without a price (their requests are not in the cost range)
    unpriced_models: set[str] = field(default_factory=set)
    #: how the requests are billed: "standard", "batch" (mode: batch) or "flex"
    tier: Tier = STANDARD
    #: the same range at standard (online) prices, when ``tier`` is another
    online_cost_low_usd: float = 0.0
    online_cost_high_usd: float = 0.0
    #: input lines skipped (``input.on_bad_line: skip``)
    issues: list[InputIssue] = field(default_factory=list)
    #: requests a template fails on (a run records them as error rows and sends the rest)
    failures: list[RowFailure] = field(default_factory=list)

    def add(self, request: ChatRequest, prices: PriceTable) -> None:
        self.requests += 1
        self.rows += request.sample == 0
        self.prompt_tokens += request.est_prompt_tokens
        self.max_output_tokens += request.max_output_tokens
        bounds = prices.request_cost_bounds(request, self.tier)
        if bounds is None:
            self.unpriced_models.add(str(request.body.get("model")))
        else:
            self.cost_low_usd += bounds[0]
            self.cost_high_usd += bounds[1]
        online = prices.request_cost_bounds(request) if self.tier != STANDARD else None
        if online is not None:
            self.online_cost_low_usd += online[0]
            self.online_cost_high_usd += online[1]

    def add_failure(self, failure: RowFailure) -> None:
        self.failures.append(failure)
        self.rows += failure.sample == 0


def estimate(
    plan: Plan,
    prices: PriceTable,
    *,
    on_request: Callable[[ChatRequest], None] | None = None,
    batch_file: BinaryIO | None = None,
    tier: Tier = STANDARD,
) -> PlanEstimate:
    """Plan every request of ``plan`` and count it, priced at ``tier``; ``on_request`` sees
    each one, and each is written to ``batch_file`` as a Batch API input line when given."""
    totals = PlanEstimate(tier=tier)
    requests = plan.requests(on_issue=totals.issues.append, on_failure=totals.add_failure)
    for request in requests:
        totals.add(request, prices)
        if batch_file is not None:
            batch_file.write(batch_line(request))
        if on_request is not None:
            on_request(request)
    return totals


def batch_line(request: ChatRequest, url: str = "/v1/chat/completions") -> bytes:
    """One line of an OpenAI Batch API input file (also what vLLM's run_batch reads)."""
    line = {"custom_id": request.custom_id, "method": "POST", "url": url, "body": request.body}
    return orjson.dumps(line, option=orjson.OPT_NON_STR_KEYS) + b"\n"
