"""batchchat: send a dataset through any OpenAI-compatible Chat Completions endpoint."""

from __future__ import annotations

from batchchat.errors import BatchchatError
from batchchat.spec import JobSpec, load_spec

__version__ = "0.1.0"

__all__ = ["BatchchatError", "JobSpec", "__version__", "load_spec"]
