"""How the simulator refuses a wrong key: like OpenAI, or like a LiteLLM proxy without its
database (what the real proxy at :8003 answers: a 400, tests/realserver/test_pool.py)."""

from __future__ import annotations

import aiohttp
import pytest

from batchchat.cli.simulate import build_spec
from batchchat.spec import SimulatorSpec
from tests.conftest import SimulatorFactory
from tests.simulator._client import chat, user

RIGHT = {"Authorization": "Bearer sk-right"}
WRONG = {"Authorization": "Bearer sk-wrong"}


async def test_a_wrong_key_gets_openais_401_by_default(
    simulator_factory: SimulatorFactory, http: aiohttp.ClientSession
) -> None:
    sim = await simulator_factory(api_key="sk-right")
    refused = await chat(http, sim, user("hi"), WRONG)
    assert refused.status == 401
    assert refused.json["error"]["code"] == "invalid_api_key"
    assert "sk-wrong" not in refused.raw.decode()
    assert (await chat(http, sim, user("hi"), RIGHT)).status == 200


async def test_a_litellm_proxy_without_its_database_answers_a_wrong_key_with_400(
    simulator_factory: SimulatorFactory, http: aiohttp.ClientSession
) -> None:
    sim = await simulator_factory(api_key="sk-right", auth_error="litellm")
    refused = await chat(http, sim, user("hi"), WRONG)
    assert refused.status == 400
    assert refused.json == {
        "error": {
            "message": "No connected db.",
            "type": "no_db_connection",
            "param": None,
            "code": "400",
        }
    }
    anonymous = await chat(http, sim, user("hi"))  # no key at all: its one 401
    assert anonymous.status == 401
    assert anonymous.json["error"]["message"] == "Authentication Error, No api key passed in."
    assert (await chat(http, sim, user("hi"), RIGHT)).status == 200


@pytest.mark.parametrize("style", ["openai", "litellm"])
def test_the_flag_sets_the_style(style: str) -> None:
    assert build_spec(SimulatorSpec(), {"auth_error": style}).auth_error == style
