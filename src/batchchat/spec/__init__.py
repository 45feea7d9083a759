"""Spec: the YAML job spec, validated into typed settings, with file, line and field in errors."""

from __future__ import annotations

from batchchat.spec.base import SIMULATOR
from batchchat.spec.batch import BatchSpec
from batchchat.spec.cache import CacheSpec
from batchchat.spec.endpoint import EndpointSpec, FaultSpec, LatencySpec, SimulatorSpec
from batchchat.spec.load import load_spec
from batchchat.spec.model import JobSpec
from batchchat.spec.pool import EndpointLimitsSpec, PoolEndpointSpec, RoutingSpec
from batchchat.spec.sections import (
    BudgetSpec,
    InputSpec,
    LimitsSpec,
    OutputSpec,
    PriceSpec,
    ReaskSpec,
    RetrySpec,
    SeedSpec,
)

__all__ = [
    "SIMULATOR",
    "BatchSpec",
    "BudgetSpec",
    "CacheSpec",
    "EndpointLimitsSpec",
    "EndpointSpec",
    "FaultSpec",
    "InputSpec",
    "JobSpec",
    "LatencySpec",
    "LimitsSpec",
    "OutputSpec",
    "PoolEndpointSpec",
    "PriceSpec",
    "ReaskSpec",
    "RetrySpec",
    "RoutingSpec",
    "SeedSpec",
    "SimulatorSpec",
    "load_spec",
]
