"""The site builds with --strict and, in a real browser, shows its navigation, its search and
both generated references; every --help link leads to a page and an anchor that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from batchchat.cli import COMMANDS
from batchchat.cli._docs import DOCS_URL, command_page, docs_epilog
from tests.docs._browser import browser, served
from tests.docs._markdown import DOCS
from tests.docs.conftest import BuiltSite

pytestmark = pytest.mark.slow

#: the top-level sections of the navigation (mkdocs.yml)
SECTIONS = ("Home", "Getting started", "Guides", "How it works", "Reference", "Project")


def built_page(site: Path, page: str) -> Path:
    """The HTML file of a docs/ page (``reference/cli.md`` → ``reference/cli/index.html``)."""
    stem = page.removesuffix(".md")
    return site / ("index.html" if stem == "index" else f"{stem}/index.html")


def test_every_page_is_built(built_site: BuiltSite) -> None:
    pages = [str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md") if "_gen" not in p.parts]
    assert len(pages) >= 20
    assert all(built_page(built_site.path, page).is_file() for page in pages)


def test_the_site_is_published_where_the_help_links_point(built_site: BuiltSite) -> None:
    sitemap = (built_site.path / "sitemap.xml").read_text()
    assert f"<loc>{DOCS_URL}reference/cli/</loc>" in sitemap


def test_every_help_link_leads_to_its_anchor(built_site: BuiltSite) -> None:
    for command in COMMANDS:
        target = command_page(command)
        path, _, anchor = target.partition("#")
        html = (built_site.path / path / "index.html").read_text()
        assert f'id="{anchor}"' in html, command
        assert docs_epilog(command).endswith(DOCS_URL + target)


async def test_the_navigation_shows_every_section_and_leads_to_built_pages(
    built_site: BuiltSite, tmp_path: Path
) -> None:
    with served(built_site.path) as base:
        async with browser(tmp_path / "profile") as page:
            await page.goto(base)
            tabs = await page.evaluate(
                "Array.from(document.querySelectorAll('.md-tabs__link'), a => a.textContent.trim())"
            )
            links = await page.evaluate(
                "Array.from(document.querySelectorAll('nav.md-nav--primary a.md-nav__link'),"
                " a => a.href)"
            )
    assert list(SECTIONS) == tabs
    pages = {link.removeprefix(base).split("#")[0] for link in links if link.startswith(base)}
    assert {"reference/spec/", "reference/cli/", "troubleshooting/", "labeling/"} <= pages
    for path in pages:
        assert (built_site.path / path / "index.html").is_file() or path == "", path


async def test_the_search_finds_a_spec_key_and_a_cli_option(
    built_site: BuiltSite, tmp_path: Path
) -> None:
    with served(built_site.path) as base:
        async with browser(tmp_path / "profile") as page:
            await page.goto(base)
            by_key = await page.search("max_concurrency")
            await page.goto(base)
            by_option = await page.search("retry-failed")
    assert any("reference/spec/" in link for link in by_key), by_key
    assert any("reference/cli/" in link for link in by_option), by_option


async def test_the_references_render_every_key_and_command(
    built_site: BuiltSite, tmp_path: Path
) -> None:
    from tests.docs.test_reference import spec_keys

    with served(built_site.path) as base:
        async with browser(tmp_path / "profile") as page:
            await page.goto(base + "reference/spec/")
            cells = await page.evaluate(
                "Array.from(document.querySelectorAll('article table td:first-child code'),"
                " c => c.textContent)"
            )
            await page.goto(base + "reference/cli/")
            headings = await page.evaluate(
                "Array.from(document.querySelectorAll('article h2'), h => h.id)"
            )
            options = await page.evaluate(
                "Array.from(document.querySelectorAll('article table td:first-child code'),"
                " c => c.textContent)"
            )
    assert set(spec_keys()) <= set(cells)
    assert {f"batchchat-{name}" for name in COMMANDS} <= set(headings)
    assert any(re.fullmatch(r"--dry-run", option) for option in options), options
    assert "--fail-500 P" in options


async def test_the_python_api_page_shows_the_signatures(
    built_site: BuiltSite, tmp_path: Path
) -> None:
    with served(built_site.path) as base:
        async with browser(tmp_path / "profile") as page:
            await page.goto(base + "reference/api/")
            text = await page.evaluate("document.querySelector('article').innerText")
    for name in ("run(", "validate(", "plan(", "read_results(", "RunReport", "SpecError"):
        assert name in text, name
    # the Google-style sections are rendered as tables of parameters, not left as text
    assert "Parameters:" in text and "retry_failed" in text and "Args:" not in text
