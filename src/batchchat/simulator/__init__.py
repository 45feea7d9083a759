"""The built-in OpenAI-compatible simulator: a local server for quickstarts, tests and rehearsals.

>>> async with SimulatorServer(SimulatorSpec(rpm=600)) as sim:
...     base_url = sim.base_url  # "http://127.0.0.1:<port>/v1"
"""

from __future__ import annotations

from batchchat.simulator.server import DEFAULT_CHARGED_COMPLETION_TOKENS, SimulatorServer
from batchchat.simulator.stats import key_of

__all__ = ["DEFAULT_CHARGED_COMPLETION_TOKENS", "SimulatorServer", "key_of"]
