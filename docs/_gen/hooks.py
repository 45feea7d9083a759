"""MkDocs hooks: the site's address from the package, and no build from stale references.

``site_url`` is :data:`batchchat.cli._docs.DOCS_URL`, the address every ``--help`` links
to, so the two are written in one place. A build whose generated reference pages differ
from the code stops, saying how to regenerate them, rather than publish a stale page.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

from mkdocs.exceptions import PluginError

from batchchat.cli._docs import DOCS_URL


def _reference() -> ModuleType:
    """docs/_gen/reference.py (a script beside this file, not an installed module)."""
    path = Path(__file__).with_name("reference.py")
    spec = importlib.util.spec_from_file_location("batchchat_docs_reference", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def on_config(config: Any) -> Any:
    config["site_url"] = DOCS_URL
    return config


def on_pre_build(config: Any) -> None:
    reference = _reference()
    stale = reference.stale_pages(Path(config["docs_dir"]))
    if stale:
        raise PluginError(
            f"stale generated page(s): {', '.join(stale)}; regenerate with {reference.REGENERATE}"
        )
