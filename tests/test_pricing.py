"""Pricing: cost formulas, model-name matching, spec overrides, currencies, request bounds."""

from __future__ import annotations

import importlib.resources
from typing import Any

import pytest

from batchchat.models import ChatRequest, Usage
from batchchat.pricing import ModelPrice, PriceTable, builtin_table, tier_of
from batchchat.spec import JobSpec, load_spec

# USD per 1M tokens, deliberately round so the expected figures below are easy to check
PLAIN = ModelPrice("plain", input=2.0, output=10.0)
CACHED = ModelPrice("cached", input=2.0, output=10.0, cached_input=0.5)
REASONING = ModelPrice("reasoning", input=2.0, output=10.0, reasoning=40.0)
THINKING = ModelPrice("thinking", input=2.0, output=10.0, thinking_output=30.0)


def shipped_prices() -> PriceTable:
    """The built-in price table alone (a spec without pricing: of its own)."""
    return PriceTable.from_spec(
        load_spec({"input": {"path": "x"}, "request": {"model": "m", "messages": []}})
    )


def usage(
    prompt: int | None = 1000,
    completion: int | None = 500,
    cached: int | None = None,
    reasoning: int | None = None,
) -> Usage:
    total = None if prompt is None or completion is None else prompt + completion
    return Usage(prompt, completion, total, cached, reasoning)


@pytest.mark.parametrize(
    ("price", "used", "expected"),
    [
        # (1000 × 2 + 500 × 10) / 1M
        (PLAIN, usage(), 0.007),
        (PLAIN, usage(0, 0), 0.0),
        # cached tokens at the cached price: 600 × 2 + 400 × 0.5 + 500 × 10
        (CACHED, usage(cached=400), 0.0064),
        # no cached price: cached tokens are billed as input
        (PLAIN, usage(cached=400), 0.007),
        # a server reporting more cached than prompt tokens cannot make the cost negative
        (CACHED, usage(cached=5000), (1000 * 0.5 + 500 * 10) / 1e6),
        # reasoning inside completion, no separate price: all 500 at the output price
        (PLAIN, usage(reasoning=300), 0.007),
        # reasoning priced apart: 200 × 10 + 300 × 40
        (REASONING, usage(reasoning=300), (2000 + 2000 + 12000) / 1e6),
        (REASONING, usage(reasoning=0), 0.007),
        # thinking mode: every completion token at the thinking price
        (THINKING, usage(reasoning=300), (2000 + 500 * 30) / 1e6),
        (THINKING, usage(reasoning=None), 0.007),
        # cached and reasoning together
        (REASONING, usage(cached=1000, reasoning=500), (1000 * 2 + 500 * 40) / 1e6),
    ],
)
def test_cost_of_one_response(price: ModelPrice, used: Usage, expected: float) -> None:
    assert price.cost_usd(used) == pytest.approx(expected, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("used", [usage(prompt=None), usage(completion=None), Usage()])
def test_unknown_usage_has_no_cost_never_zero(used: Usage) -> None:
    assert PLAIN.cost_usd(used) is None


def test_n_greater_than_one_is_priced_from_the_usage_that_covers_all_choices() -> None:
    # n=3: the server reports one usage for the request, completion covering all choices
    three_choices = usage(prompt=100, completion=3 * 40)
    assert PLAIN.cost_usd(three_choices) == pytest.approx((100 * 2 + 120 * 10) / 1e6)


def test_unpriced_model_costs_none() -> None:
    table = PriceTable({"plain": PLAIN})
    assert table.cost_usd("mystery-model", usage()) is None
    assert table.cost_usd(None, usage()) is None
    assert table.cost_usd("plain", usage()) == pytest.approx(0.007)


# -- the built-in table ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "used", "expected"),
    [
        # a snapshot name as servers send it: 2000 × 0.15 + 8000 × 0.075 (cached) + 1000 × 0.60
        ("gpt-4o-mini-2024-07-18", usage(10_000, 1000, cached=8000), 0.0015),
        # DeepSeek cache hit: 0.028, miss: 0.28, out 0.42
        ("deepseek-chat", usage(1_000_000, 0, cached=900_000), 0.0532),
        # o4-mini reasoning tokens are completion tokens at 4.40
        ("o4-mini", usage(1000, 2000, reasoning=1500), (1000 * 1.10 + 2000 * 4.40) / 1e6),
        ("gpt-4.1-nano", usage(1_000_000, 1_000_000), 0.50),
    ],
)
def test_builtin_prices(model: str, used: Usage, expected: float) -> None:
    assert shipped_prices().cost_usd(model, used) == pytest.approx(expected, rel=1e-9)


def test_builtin_table_is_shipped_and_well_formed() -> None:
    assert importlib.resources.files("batchchat").joinpath("prices.yaml").is_file()
    data = builtin_table()
    assert data["currency_rates"]["CNY"] > 0
    for name, provider in data["providers"].items():
        assert provider["as_of"], name
        assert provider["source"], name
        assert provider["currency"] in {"USD", "CNY"}
        for model, fields in provider["models"].items():
            price = ModelPrice(model, **fields)
            assert price.input >= 0 and price.output >= 0, model
            assert price.cached_input is None or price.cached_input <= price.input, model


def test_every_requested_provider_is_covered() -> None:
    table = shipped_prices()
    for model in (
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-4.1-nano",
        "o1",
        "o3",
        "o3-mini",
        "o4-mini",
        "gpt-5",
        "deepseek-chat",
        "deepseek-reasoner",
        "qwen-plus",
        "qwen-turbo",
        "qwen-max",
    ):
        assert model in table, model


# -- model-name matching -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "entry"),
    [
        ("gpt-4o-mini", "gpt-4o-mini"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),  # the longest entry wins, not gpt-4o
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),  # an exact entry beats a prefix
        ("gpt-4o", "gpt-4o"),  # never gpt-4
        ("gpt-4-0613", "gpt-4"),
        ("gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"),
        ("o3-mini-2025-01-31", "o3-mini"),
        ("o3-pro", "o3-pro"),
        ("gpt-5.1", "gpt-5.1"),
        ("qwen-plus-latest", "qwen-plus"),
        ("qwen-plus-2025-07-28", "qwen-plus"),
        ("o1-preview", "o1"),
        ("GPT-4o-Mini", "gpt-4o-mini"),
        ("openai/gpt-4o-mini", "gpt-4o-mini"),
        ("deepseek/deepseek-chat", "deepseek-chat"),
        # different models never match each other
        ("gpt-4o-audio-preview", None),
        ("gpt-4o-realtime-preview-2024-12-17", None),
        ("o3-deep-research", None),
        ("gpt-5.2", None),
        ("gpt-4.5-preview", None),
        ("gpt-40", None),
        ("llama-3.1-8b-instruct", None),
        ("", None),
        (None, None),
    ],
)
def test_model_name_matching(model: str | None, entry: str | None) -> None:
    found = shipped_prices().lookup(model)
    assert (found.model if found else None) == entry


def test_longest_prefix_wins() -> None:
    table = PriceTable(
        {
            "acme": ModelPrice("acme", input=1, output=1),
            "acme-2024": ModelPrice("acme-2024", input=2, output=2),
        }
    )
    assert table.lookup("acme-2024-06-01").model == "acme-2024"  # type: ignore[union-attr]
    assert table.lookup("acme-2023-06-01").model == "acme"  # type: ignore[union-attr]
    assert table.lookup("acme-pro-2024") is None


# -- the spec: overrides and currencies --------------------------------------------------------


def spec_with(**extra: Any) -> JobSpec:
    base: dict[str, Any] = {
        "input": {"path": "rows.jsonl"},
        "request": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
    }
    return load_spec({**base, **extra})


def test_spec_pricing_overrides_and_extends_the_builtin_table() -> None:
    table = PriceTable.from_spec(
        spec_with(
            pricing={
                "gpt-4o-mini": {"input": 1.0, "output": 2.0, "cached_input": 0.1},
                "my-finetune": {"input": 3.0, "output": 6.0, "reasoning": 9.0},
            }
        )
    )
    mini = table.lookup("gpt-4o-mini-2024-07-18")  # the override follows the prefix rules
    assert mini is not None and mini.source == "spec"
    assert (mini.input, mini.output, mini.cached_input) == (1.0, 2.0, 0.1)
    assert table.cost_usd("my-finetune", usage(1000, 1000, reasoning=500)) == pytest.approx(
        (3000 + 500 * 6 + 500 * 9) / 1e6
    )
    assert table.lookup("gpt-4o").source == "openai"  # type: ignore[union-attr]


def test_spec_prices_in_cny_are_converted_with_the_spec_rate() -> None:
    table = PriceTable.from_spec(
        spec_with(
            pricing={"glm-4-plus": {"input": 5.0, "output": 5.0, "currency": "CNY"}},
            currency_rates={"CNY": 0.14},
        )
    )
    assert table.cost_usd("glm-4-plus", usage(1_000_000, 1_000_000)) == pytest.approx(1.40)


@pytest.mark.parametrize(
    ("extra", "input_usd"),
    [
        ({}, 0.8 * 0.14),  # Beijing prices in CNY, the table's default rate
        ({"currency_rates": {"CNY": 0.125}}, 0.8 * 0.125),  # the spec's rate wins
        (  # the international endpoint has its own USD prices
            {"endpoint": {"base_url": "https://dashscope-intl.aliyuncs.com/compatible-mode/v1"}},
            0.4,
        ),
    ],
)
def test_builtin_cny_prices_and_regions(extra: dict[str, Any], input_usd: float) -> None:
    price = PriceTable.from_spec(spec_with(**extra)).lookup("qwen-plus")
    assert price is not None
    assert price.input == pytest.approx(input_usd)


def test_a_cny_price_without_a_rate_is_a_spec_error() -> None:
    from batchchat.errors import SpecError

    with pytest.raises(SpecError, match="currency_rates"):
        spec_with(pricing={"glm-4-plus": {"input": 5.0, "output": 5.0, "currency": "CNY"}})


# -- bounds before sending ---------------------------------------------------------------------


def request(
    model: str = "plain", *, n: int = 1, prompt: int = 100, max_out: int = 50
) -> ChatRequest:
    body: dict[str, Any] = {"model": model, "messages": [], "n": n}
    return ChatRequest("r1", 0, "r1#0", body, "hash", prompt, max_out)


@pytest.mark.parametrize(
    ("price", "n", "max_out", "low", "high"),
    [
        (PLAIN, 1, 50, (100 * 2 + 10) / 1e6, (100 * 2 + 50 * 10) / 1e6),
        # n=3: at least one token per choice; max_output_tokens already counts all choices
        (PLAIN, 3, 150, (200 + 30) / 1e6, (200 + 150 * 10) / 1e6),
        # the worst case uses the dearest completion rate
        (REASONING, 1, 50, (200 + 10) / 1e6, (200 + 50 * 40) / 1e6),
        (THINKING, 1, 50, (200 + 10) / 1e6, (200 + 50 * 30) / 1e6),
        # the low end: the whole prompt from the provider's cache
        (CACHED, 1, 50, (100 * 0.5 + 10) / 1e6, (100 * 2 + 50 * 10) / 1e6),
    ],
)
def test_request_cost_bounds(
    price: ModelPrice, n: int, max_out: int, low: float, high: float
) -> None:
    table = PriceTable({price.model: price})
    planned = request(price.model, n=n, max_out=max_out)
    assert table.request_cost_bounds(planned) == pytest.approx((low, high))
    assert table.worst_case_usd(planned) == pytest.approx(high)


def test_bounds_of_an_unpriced_model_are_none() -> None:
    table = PriceTable({"plain": PLAIN})
    assert table.request_cost_bounds(request("mystery")) is None
    assert table.worst_case_usd(request("mystery")) is None


# -- batch and flex prices ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "tier", "expected"),
    [
        # gpt-4o-mini: 0.15 in, 0.075 cached, 0.60 out; the Batch API and flex halve them all
        ("gpt-4o-mini", "standard", (1000 * 0.15 + 1000 * 0.075 + 100 * 0.60) / 1e6),
        ("gpt-4o-mini", "batch", (1000 * 0.075 + 1000 * 0.0375 + 100 * 0.30) / 1e6),
        ("gpt-4o-mini", "flex", (1000 * 0.075 + 1000 * 0.0375 + 100 * 0.30) / 1e6),
        ("qwen-plus", "batch", 0.5 * 0.14 * (1000 * 0.8 + 1000 * 0.16 + 100 * 2.0) / 1e6),
        ("deepseek-chat", "batch", None),  # no Batch API: no batch price
        ("qwen-plus", "flex", None),
    ],
)
def test_batch_and_flex_prices_are_shares_of_the_list_prices(
    model: str, tier: Any, expected: float | None
) -> None:
    used = Usage(prompt_tokens=2000, completion_tokens=100, cached_tokens=1000)
    cost = shipped_prices().cost_usd(model, used, tier)
    assert cost == (None if expected is None else pytest.approx(expected, rel=1e-9))


def test_a_spec_price_costs_half_in_a_batch_unless_it_says_otherwise() -> None:
    table = PriceTable.from_spec(
        spec_with(
            pricing={
                "mine": {"input": 1.0, "output": 2.0},
                "theirs": {"input": 1.0, "output": 2.0, "batch": 0.25},
            }
        )
    )
    used = Usage(prompt_tokens=1_000_000, completion_tokens=0)
    assert table.cost_usd("mine", used, "batch") == pytest.approx(0.5)
    assert table.cost_usd("theirs", used, "batch") == pytest.approx(0.25)
    assert table.cost_usd("theirs", used) == pytest.approx(1.0)


def test_request_bounds_at_batch_prices_are_half_the_online_ones() -> None:
    table = shipped_prices()
    request = ChatRequest("1", 0, "1#0", {"model": "gpt-4o"}, "h", 1000, 100)
    online, batch = table.request_cost_bounds(request), table.request_cost_bounds(request, "batch")
    assert online is not None and batch is not None
    assert batch == pytest.approx((online[0] / 2, online[1] / 2))


@pytest.mark.parametrize(
    ("body", "batch", "tier"),
    [({}, False, "standard"), ({"service_tier": "flex"}, False, "flex"), ({}, True, "batch"),
     ({"service_tier": "flex"}, True, "batch"), ({"service_tier": "priority"}, False, "standard")],
)  # fmt: skip
def test_how_a_request_is_billed(body: dict[str, Any], batch: bool, tier: str) -> None:
    assert tier_of(body, batch=batch) == tier


# -- pools: each member its own prices ---------------------------------------------------------


def _pool_prices() -> Any:
    from batchchat.pricing import PoolPriceTable

    table = PriceTable.from_spec(
        spec_with(
            endpoints=[
                {
                    "name": "local",
                    "base_url": "http://127.0.0.1:8000/v1",
                    "pricing": {"gpt-4o-mini": {"input": 0, "output": 0}},
                },
                {
                    "name": "azure",
                    "base_url": "https://x.openai.azure.com/openai/v1",
                    "model": {"gpt-4o-mini": "my-4o-mini"},
                    "pricing": {"my-4o-mini": {"input": 2.0, "output": 8.0}},
                },
                {"name": "openai", "base_url": "https://api.openai.com/v1"},
            ]
        )
    )
    assert isinstance(table, PoolPriceTable)
    return table


def _result(model_answered: str | None, prompt: int = 1000, completion: int = 1000) -> Any:
    from datetime import UTC, datetime

    from batchchat.models import ChatResponse, ChatResult

    response = ChatResponse("id", model_answered, None, [], usage(prompt, completion))
    now = datetime.now(UTC)
    return ChatResult(request("gpt-4o-mini"), response, None, 200, 1, 1.0, now, now)


def test_each_member_prices_what_it_answers_its_own_prices_first() -> None:
    local, azure, openai = _pool_prices().members
    # the member's own price, under the name it is sent, beats the answer's model name
    assert local.cost_of(_result("gpt-4o-mini-2024-07-18")) == 0.0
    assert azure.cost_of(_result("gpt-4o-mini-2024-07-18")) == pytest.approx((2000 + 8000) / 1e6)
    # without prices of its own: the built-in table, as for a single endpoint
    builtin = shipped_prices().cost_usd("gpt-4o-mini", usage(1000, 1000))
    assert openai.cost_of(_result("gpt-4o-mini-2024-07-18")) == pytest.approx(builtin)
    assert openai.cost_of(_result(None)) == pytest.approx(builtin)  # the model sent
    no_answer = _result("x")
    no_answer.response = None
    assert openai.cost_of(no_answer) is None


def test_a_pools_bounds_span_its_members_cheapest_to_dearest() -> None:
    pool = _pool_prices()
    low, high = pool.request_cost_bounds(request("gpt-4o-mini", prompt=1000, max_out=1000))
    assert low == 0.0  # the free local member
    assert high == pytest.approx((1000 * 2.0 + 1000 * 8.0) / 1e6)  # azure's own price
    assert pool.worst_case_usd(request("gpt-4o-mini", prompt=1000, max_out=1000)) == high
    assert pool.request_cost_bounds(request("nobody-prices-this")) is None
    assert pool.lookup("gpt-4o") is not None  # the job's table, for the report


def test_a_pool_member_prices_a_flex_request_at_flex_rates() -> None:
    _, azure, openai = _pool_prices().members
    flex = _result("gpt-4o-mini")
    flex.request.body["service_tier"] = "flex"
    standard = openai.cost_of(_result("gpt-4o-mini"))
    assert standard is not None
    assert openai.cost_of(flex) == pytest.approx(standard / 2)  # OpenAI's flex: half
    assert azure.cost_of(flex) == pytest.approx((2000 + 8000) / 1e6 / 2)  # own price: half too
    bounds = openai.request_cost_bounds(request("gpt-4o-mini"), "flex")
    online = openai.request_cost_bounds(request("gpt-4o-mini"))
    assert bounds is not None and online is not None
    assert bounds == pytest.approx((online[0] / 2, online[1] / 2))
