"""Fixtures of the real-server conformance suite: each skips, naming the start command,
when its server is not reachable. Run the suite with ``-n 0``; under pytest-xdist its tests
still run one at a time, on one worker (``ONE_WORKER`` in tests/conftest.py)."""

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
