"""``cache:``: the opt-in response cache shared by jobs and output directories.

The cache is the one place batchchat writes outside the output directory a job owns,
and only because the spec names it: by default a directory of the user's own cache
(``$XDG_CACHE_HOME/batchchat``, else ``~/.cache/batchchat``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from batchchat.spec.base import Strict

#: the cache's file inside its directory
CACHE_FILE = "responses.sqlite3"


class CacheSpec(Strict):
    """The response cache: complete answers kept across jobs and output directories, so a
    request already paid for is not sent again. The one place batchchat writes outside the
    output directory, and only when the spec asks."""

    #: the cache directory, shared by every job that names it (relative to the job file)
    #: default: ``$XDG_CACHE_HOME/batchchat``, else ``~/.cache/batchchat``
    path: str | None = None
    #: ``read-write``: serve stored answers and store new ones; ``read-only``: serve, never
    #: write; ``off``
    mode: Literal["read-write", "read-only", "off"] = "read-write"
    #: the most the stored answers may take, in MB; past it the least recently used go first
    max_size_mb: float = Field(default=1024.0, gt=0)
    #: which requests a stored answer may answer: ``deterministic`` ones only (temperature 0,
    #: or a seed), or ``any`` (a request that samples then gets the draw stored for it)
    serve: Literal["deterministic", "any"] = "deterministic"
    #: also store answers cut by the token limit (``finish_reason: length``)
    store_length: bool = False
    #: also store answers a content filter stopped (``finish_reason: content_filter``)
    store_content_filter: bool = False

    @field_validator("mode", mode="before")
    @classmethod
    def _off_is_off(cls, value: Any) -> Any:
        # YAML reads a bare `off` as false
        return "off" if value is False else value

    @property
    def is_on(self) -> bool:
        return self.mode != "off"

    @property
    def max_bytes(self) -> int:
        return int(self.max_size_mb * 1024 * 1024)


def default_cache_dir(environ: os._Environ[str] | dict[str, str] | None = None) -> Path:
    """``$XDG_CACHE_HOME/batchchat`` (an absolute XDG_CACHE_HOME only, as the XDG spec
    says), else ``~/.cache/batchchat``."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME") or ""
    root = Path(base) if os.path.isabs(base) else Path.home() / ".cache"
    return root / "batchchat"
