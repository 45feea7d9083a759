"""Spec: the YAML job spec, validated into typed settings, with file, line and field in errors."""

from __future__ import annotations

from batchchat.spec.load import load_spec
from batchchat.spec.model import (
    SIMULATOR,
    BudgetSpec,
    EndpointSpec,
    FaultSpec,
    InputSpec,
    JobSpec,
    LatencySpec,
    LimitsSpec,
    OutputSpec,
    PriceSpec,
    RetrySpec,
    SeedSpec,
    SimulatorSpec,
)

__all__ = [
    "SIMULATOR",
    "BudgetSpec",
    "EndpointSpec",
    "FaultSpec",
    "InputSpec",
    "JobSpec",
    "LatencySpec",
    "LimitsSpec",
    "OutputSpec",
    "PriceSpec",
    "RetrySpec",
    "SeedSpec",
    "SimulatorSpec",
    "load_spec",
]
