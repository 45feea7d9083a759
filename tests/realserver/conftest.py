"""Fixtures of the real-server conformance suite: each skips, naming the start command,
when its server is not reachable."""

from __future__ import annotations

import pytest

from tests.realserver._servers import LITELLM, LLAMA, LLAMA_NOJINJA, Server, require


@pytest.fixture
def llama() -> Server:
    return require(LLAMA)


@pytest.fixture
def llama_nojinja() -> Server:
    return require(LLAMA_NOJINJA)


@pytest.fixture
def litellm() -> Server:
    return require(LITELLM)
