"""Where the documentation site lives: the one place its address is written.

``batchchat --help`` and every command's help end with a link built here; the site's
own ``site_url`` is set from :data:`DOCS_URL` too (``docs/_gen/hooks.py``), so the
links and the site cannot disagree.
"""

from __future__ import annotations

#: the root of the published documentation site (built from docs/ by MkDocs)
DOCS_URL = "https://batchchat.readthedocs.io/en/latest/"


def docs_url(page: str = "") -> str:
    """The address of ``page`` (a URL path such as ``reference/cli/``) on the site."""
    return DOCS_URL + page


def command_page(command: str) -> str:
    """The page (a URL path under DOCS_URL) that documents ``batchchat COMMAND``: its entry
    in the CLI reference, which docs/_gen/reference.py writes for every command."""
    return f"reference/cli/#batchchat-{command}"


def docs_epilog(command: str | None = None) -> str:
    """The last line of a command's ``--help``: where to read more."""
    return f"Documentation: {docs_url(command_page(command) if command else '')}"
