"""One lane: the HTTP request it makes of a planned one, and what it lets show of itself."""

from __future__ import annotations

import orjson

from batchchat.execute.admission import Admission
from batchchat.execute.health import Health
from batchchat.execute.lane import Lane
from batchchat.execute.transport import HTTPRequest, HTTPResponse, MockTransport
from batchchat.models import ChatRequest
from batchchat.spec import LimitsSpec, RoutingSpec


def _unused(request: HTTPRequest) -> HTTPResponse:
    raise AssertionError("nothing is sent here")


def lane(**models: str) -> Lane:
    return Lane(
        url="https://example.openai.azure.com/openai/v1/chat/completions",
        headers={"Authorization": "Bearer sk-lane-secret"},
        transport=MockTransport(_unused),
        admission=Admission(LimitsSpec()),
        display="https://example.openai.azure.com/openai/v1/chat/completions",
        name="azure",
        models=models,
    )


def planned(model: str, **body: object) -> ChatRequest:
    payload = {"model": model, "messages": [{"role": "user", "content": "hi"}], **body}
    return ChatRequest("r1", 0, "r1#0", payload, "h", 5, 5)


def test_a_mapped_model_is_sent_under_the_endpoints_name_for_it() -> None:
    request = planned("gpt-4o-mini", stream=True)
    http = lane(**{"gpt-4o-mini": "my-deployment"}).request_for(request, orjson.dumps(request.body))
    assert orjson.loads(http.body) == {**request.body, "model": "my-deployment"}
    assert http.stream and http.url.endswith("/chat/completions")
    assert http.headers["content-type"] == "application/json"
    assert request.body["model"] == "gpt-4o-mini"  # the planned request is left as it was


def test_other_models_are_sent_byte_for_byte_as_planned() -> None:
    request = planned("gpt-4o")
    body = orjson.dumps(request.body)
    assert lane(**{"gpt-4o-mini": "my-deployment"}).request_for(request, body).body is body


def test_a_lane_never_shows_its_headers() -> None:
    shown = repr(lane())
    assert "azure" in shown and "sk-lane-secret" not in shown


async def test_a_new_endpoint_awaits_its_verdict_while_attempts_are_out_and_nothing_holds_it() -> (
    None
):
    now = 100.0
    trial = Lane(
        url="http://cheap.test/v1/chat/completions",
        headers={},
        transport=MockTransport(_unused),
        admission=Admission(LimitsSpec(), clock=lambda: now),
        display="http://cheap.test/v1",
        name="cheap",
        health=Health(RoutingSpec()),
    )
    assert not trial.awaits_verdict(now)  # nothing in flight: it is ready, or held
    await trial.admission.concurrency.acquire()
    assert trial.awaits_verdict(now)  # its answer will say: the next tier waits
    trial.admission.hold_until(now + 60)  # a 429 before any good answer
    assert not trial.awaits_verdict(now)  # held: saturated, the next tier takes over
    assert trial.awaits_verdict(now + 61)
    trial.health.succeeded()  # type: ignore[union-attr]
    assert not trial.awaits_verdict(now + 61)  # proven: its limits say when it is full
    assert not lane().awaits_verdict(now)  # a single endpoint is never on trial
