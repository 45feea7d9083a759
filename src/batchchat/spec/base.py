"""What every spec section shares: strict, frozen models, and the simulator's name."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

#: ``base_url`` of the built-in simulator
SIMULATOR = "simulator"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
