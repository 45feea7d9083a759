"""batchchat: send a dataset through any OpenAI-compatible Chat Completions endpoint.

>>> import batchchat
>>> report = batchchat.run("jobs/quickstart.yaml")          # spec → plan → execute → sink → report
>>> df = batchchat.read_results("out/quickstart")           # one row per (row_id, sample)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from batchchat._version import __version__
from batchchat.errors import BatchchatError
from batchchat.spec import JobSpec, load_spec

__all__ = [
    "BatchchatError",
    "JobSpec",
    "PlanEstimate",
    "RunReport",
    "__version__",
    "cancel",
    "import_results",
    "load_spec",
    "plan",
    "read_results",
    "run",
    "scan_results",
    "validate",
]

if TYPE_CHECKING:
    from batchchat.api import cancel, import_results, plan, read_results, run, validate
    from batchchat.planning.estimate import PlanEstimate
    from batchchat.report.build import RunReport
    from batchchat.results.ledger import scan_results

# The engine (aiohttp, pyarrow, polars) loads on first use, so `import batchchat` stays cheap.
_LAZY = {
    "run": "batchchat.api",
    "cancel": "batchchat.api",
    "import_results": "batchchat.api",
    "validate": "batchchat.api",
    "plan": "batchchat.api",
    "read_results": "batchchat.api",
    "scan_results": "batchchat.results.ledger",
    "RunReport": "batchchat.report.build",
    "PlanEstimate": "batchchat.planning.estimate",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'batchchat' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module_name), name)
