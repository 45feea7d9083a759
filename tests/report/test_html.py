"""report.html: self-contained, escaped, and its charts render in a real headless Chromium."""

from __future__ import annotations

import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

import batchchat
from batchchat.report.build import RunReport, build_report, write_reports
from batchchat.report.html import render_html
from tests._system import chromium
from tests.report.test_build import error_row, ok_row, sample_dir, write_results

ROOT = Path(__file__).resolve().parents[2]
CHARTS = ("chart-timeline", "chart-latency", "chart-tokens", "chart-cost", "chart-finish")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--dump-dom",
)


class SvgCollector(HTMLParser):
    """The elements inside each <svg id=...> of a document, counted by tag."""

    def __init__(self) -> None:
        super().__init__()
        self.charts: dict[str, dict[str, int]] = {}
        self.scripts = 0
        self._current: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script":
            self.scripts += 1
        if tag == "svg":
            self._current = dict(attrs).get("id") or "?"
            self.charts[self._current] = {}
        elif self._current is not None:
            counts = self.charts[self._current]
            counts[tag] = counts.get(tag, 0) + 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self._current = None


def chromium_dom(page: Path, profile: Path) -> str:
    """The DOM of a page after Debian's Chromium loaded it headless (skips if it is missing)."""
    binary = chromium()
    done = subprocess.run(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def collect(markup: str) -> SvgCollector:
    parser = SvgCollector()
    parser.feed(markup)
    return parser


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunReport, str]:
    """A report with every chart filled in, as Chromium rendered it."""
    base = tmp_path_factory.mktemp("html")
    out = sample_dir(base)
    report = build_report(out)
    write_reports(out, report)
    return report, chromium_dom(out / "report.html", base / "profile")


def test_every_chart_is_in_the_rendered_dom(rendered: tuple[RunReport, str]) -> None:
    report, dom = rendered
    charts = collect(dom).charts

    assert set(CHARTS) <= set(charts)
    assert charts["chart-timeline"]["path"] >= 2  # the requests/s and 429/s series
    bars = charts["chart-latency"]["rect"]
    assert bars == len(report.latency.histogram)
    assert charts["chart-finish"]["circle"] == len(report.finish_reasons)
    # three stacked segments per model, plus the legend's three swatches
    assert charts["chart-tokens"]["rect"] == 3 * len(report.models) + 3
    assert charts["chart-cost"]["rect"] == len(report.models)


def test_the_rendered_page_shows_the_figures(rendered: tuple[RunReport, str]) -> None:
    dom = rendered[1]

    assert "<title>batchchat report · labels</title>" in dom
    assert "RequestTimeout" in dom
    assert "no response headers within 30 s" in dom
    assert "model mystery-7b has no price" in dom
    assert "no price" in dom  # the unpriced model's bar is labelled, not drawn as $0


def test_a_labeling_run_gets_a_labels_chart_and_a_majority_table(tmp_path: Path) -> None:
    out = tmp_path / "labeling"
    rows = 8
    report = batchchat.run(ROOT / "jobs" / "labeling.yaml", limit=rows, output=str(out))
    labels = report.labels
    assert labels is not None and labels["majority"]["answered"] == rows
    dom = chromium_dom(out / "report.html", tmp_path / "profile")
    bars = collect(dom).charts["chart-labels"]["rect"]
    # per label and for "(no label)": an answers bar and a majority bar; two legend swatches
    assert bars == 2 * (len(labels["labels"]) + 1) + 2
    for label, entry in labels["labels"].items():
        assert f"{label} · answers: {entry['count']}" in dom
        majority = labels["majority"]["labels"][label]["count"]
        assert f"{label} · rows by majority: {majority}" in dom
    markdown = (out / "report.md").read_text()
    # 3 samples per row: the headline counts say they count results, not rows
    assert report.samples == 3 and report.rows_total == 3 * rows
    assert f"| Results (3 samples per row) | {3 * rows} |" in markdown
    assert "results/s ·" in markdown and "rows/s" not in markdown
    assert report.to_dict()["rows"]["samples_per_row"] == 3
    table = markdown.split("### Majority label per row", 1)[1].strip().split("\n\n")[0]
    counts = [int(line.split("|")[2].replace(",", "")) for line in table.splitlines()[2:]]
    assert len(counts) == len(labels["labels"]) + 1
    assert sum(counts) == rows  # every row once: a majority label or none


def test_the_page_is_self_contained(tmp_path: Path) -> None:
    page = render_html(build_report(sample_dir(tmp_path)))

    assert not re.search(r"""(src|href)\s*=|@import|url\(|<link|<script""", page, re.I)
    assert page.startswith("<!doctype html>")


def test_text_from_results_is_escaped(tmp_path: Path) -> None:
    out = tmp_path / "out"
    hostile = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    write_results(out, [ok_row("1", model="<b>m</b>"), error_row("2", "ServerError", hostile)])
    write_reports(out, build_report(out))
    dom = chromium_dom(out / "report.html", tmp_path / "profile")
    parsed = collect(dom)

    assert parsed.scripts == 0
    assert "<img" not in dom
    assert "&lt;script&gt;alert" in dom


def test_a_report_without_run_stats_or_rows_still_renders(tmp_path: Path) -> None:
    page = render_html(build_report(tmp_path))

    assert "No run stats" in page
    assert "No successful rows yet." in page
    assert collect(page).charts == {}
