"""The run report for people: Markdown (``report.md``) and the compact end-of-run terminal table.

Also the number formats every rendering shares, so the terminal, the Markdown and
the HTML report never disagree about a figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:  # the model shows itself with these functions: it imports this module
    from batchchat.report.model import RunReport

#: error groups shown in the Markdown report
SHOWN_ERRORS = 5

_MESSAGE_CHARS = 160


# -- number formats ----------------------------------------------------------------------------


def fmt_int(value: int | None) -> str:
    return "–" if value is None else f"{value:,}"


def fmt_usd(value: float | None) -> str:
    """Dollars with the digits that matter: sub-cent amounts keep six decimals."""
    if value is None:
        return "unknown"
    if value == 0:
        return "$0.00"
    if abs(value) < 0.01:
        return f"${value:.6f}"
    return f"${value:,.4f}" if abs(value) < 100 else f"${value:,.2f}"


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:,.0f} ms" if value < 10_000 else f"{value / 1000:,.1f} s"


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def fmt_rate(value: float | None, unit: str) -> str:
    return "–" if value is None else f"{value:,.1f} {unit}/s"


def fmt_share(part: int, whole: int) -> str:
    return "–" if not whole else f"{100 * part / whole:.1f}%"


def latency_line(report: RunReport) -> str:
    lat = report.latency
    if lat.p50 is None:
        return "–"
    return f"{fmt_ms(lat.p50)} / {fmt_ms(lat.p90)} / {fmt_ms(lat.p99)}"


def summary_rows(report: RunReport) -> list[tuple[str, str]]:
    """The headline figures, in the order every rendering shows them."""
    # with samples, every count is of (row, sample) results, and says so
    rows = "Rows" if report.samples == 1 else f"Results ({report.samples} samples per row)"
    return [
        (rows, fmt_int(report.rows_total)),
        ("OK", fmt_int(report.rows_ok)),
        ("Errors", fmt_int(report.rows_error)),
        ("Skipped (done by an earlier run)", fmt_int(report.rows_skipped)),
        ("Requests sent", fmt_int(report.requests_sent)),
        ("Retries", fmt_int(report.retries)),
        ("429 responses", fmt_int(report.rate_limited)),
        ("Tokens (prompt / completion)", _token_line(report)),
        ("Cost", fmt_usd(report.cost_usd) + ("" if report.cost_complete else " (incomplete)")),
        *_online_cost_row(report),
        *_batches_row(report),
        *_asks_rows(report),
        ("Latency p50 / p90 / p99", latency_line(report)),
        (
            "Throughput",
            f"{fmt_rate(report.rows_per_s, 'rows' if report.samples == 1 else 'results')} · "
            f"{fmt_rate(report.tokens_per_s, 'tokens')}",
        ),
        ("Wall time", fmt_duration(report.wall_time_s)),
        ("Stopped", report.stop_reason or "–"),
    ]


def _online_cost_row(report: RunReport) -> list[tuple[str, str]]:
    online = report.cost_online_usd
    if online is None:
        return []
    saving = online - report.cost_usd
    share = f" ({100 * saving / online:.0f}%)" if online > 0 else ""
    return [("At online prices", f"{fmt_usd(online)}, saved {fmt_usd(saving)}{share}")]


def _batches_row(report: RunReport) -> list[tuple[str, str]]:
    batches = report.batches
    if not batches:
        return []
    statuses = ", ".join(f"{n} {status}" for status, n in sorted(batches["by_status"].items()))
    text = (
        f"{batches['batches']} ({statuses}); {fmt_int(batches['lines_resubmitted'])} lines resent"
    )
    if batches["lines_pending"]:
        text += f"; {fmt_int(batches['lines_pending'])} lines pending"
    return [("Batches", text)]


ENDPOINT_HEADER = (
    "Endpoint", "Requests", "429s", "Failed", "Rows ok", "Rows failed", "p50 / p90", "Cost", "State"
)  # fmt: skip


def endpoint_rows(report: RunReport, *, short: bool = False) -> list[tuple[str, ...]]:
    """A pool's endpoints, one row each (:data:`ENDPOINT_HEADER`), in every rendering
    (``short``: the state without the reason, which the warnings say)."""
    rows: list[tuple[str, ...]] = []
    for e in report.endpoints:
        state = "out: " + one_line(e.removed, 80) if e.removed and not short else "in"
        state = "out" if e.removed and short else state
        if e.cooldowns:
            state += f", cooled {e.cooldowns}×" if short else f", cooled down {e.cooldowns}×"
        rows.append(
            (
                e.name,
                fmt_int(e.requests_sent),
                fmt_int(e.rate_limited),
                fmt_int(e.failed_attempts),
                fmt_int(e.rows_ok),
                fmt_int(e.rows_error),
                f"{fmt_ms(e.p50_ms)} / {fmt_ms(e.p90_ms)}",
                fmt_usd(e.cost_usd) if e.rows_ok else "–",
                state,
            )
        )
    return rows


def _asks_rows(report: RunReport) -> list[tuple[str, str]]:
    """Cache hits and re-asks, when there were any."""
    found = []
    if report.cache:
        hits, saved = report.cache["hits"], report.cache["saved_usd"]
        found.append(("From the cache (cost saved)", f"{fmt_int(hits)} ({fmt_usd(saved)})"))
    if report.reasks:
        asks = report.reasks
        found.append(
            (
                "Re-asks (rows · cost)",
                f"{fmt_int(asks['reasks'])} ({fmt_int(asks['rows'])} rows · "
                f"{fmt_usd(asks['cost_usd'])})",
            )
        )
        found.append(
            ("… rows fixed / still failing", f"{asks['fixed']:,} / {asks['still_failing']:,}")
        )
    return found


def _token_line(report: RunReport) -> str:
    return f"{fmt_int(report.tokens.prompt)} / {fmt_int(report.tokens.completion)}"


def one_line(text: str | None, limit: int = _MESSAGE_CHARS) -> str:
    """A message on one line, cut to ``limit`` characters."""
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


# -- Markdown ----------------------------------------------------------------------------------


def render_markdown(report: RunReport) -> str:
    """``report.md``: the report for people, as tables."""
    parts = [_md_title(report), _md_table(("Metric", "Value"), summary_rows(report), "l r")]
    if report.warnings:
        parts.append("## Warnings\n\n" + "\n".join(f"- {_md(w)}" for w in report.warnings))
    parts.append("## Tokens\n\n" + _md_table(("Kind", "Tokens"), _token_rows(report), "l r"))
    if report.endpoints:
        table = _md_table(ENDPOINT_HEADER, endpoint_rows(report), "l r r r r r r r l")
        parts.append("## Endpoints\n\n" + table)
    if report.models:
        parts.append("## Cost by model\n\n" + _md_models(report))
    if report.finish_reasons:
        rows = [
            (reason, fmt_int(n), fmt_share(n, report.rows_ok))
            for reason, n in report.finish_reasons.items()
        ]
        parts.append(
            "## Finish reasons\n\n" + _md_table(("Reason", "Rows", "Share"), rows, "l r r")
        )
    if report.parse_status:
        checked = sum(report.parse_status.values())
        rows = [
            (status, fmt_int(n), fmt_share(n, checked)) for status, n in report.parse_status.items()
        ]
        parts.append("## Parse status\n\n" + _md_table(("Status", "Rows", "Share"), rows, "l r r"))
    if report.labels:
        parts.append(_md_labels(report.labels))
    if report.errors:
        parts.append(_md_errors(report))
    return "\n\n".join(parts) + "\n"


def _md_labels(labels: dict[str, Any]) -> str:
    table = _md_distribution(labels, "Answers", "*(no label matched)*")
    text = "## Labels\n\n" + table
    confidence = labels.get("mean_confidence")
    if confidence is not None:
        text += f"\n\nMean confidence of the chosen label: {confidence:.3f}"
    majority = labels.get("majority")
    if majority:
        table = _md_distribution(majority, "Rows", "*(no majority label)*")
        text += "\n\n### Majority label per row\n\n" + table
        if majority.get("mean_agreement") is not None:
            text += f"\n\nMean agreement between samples: {majority['mean_agreement']:.3f}"
    return text


def _md_distribution(section: dict[str, Any], counted: str, unmatched: str) -> str:
    """One label-report section (``labeling.label_report``) as a Label / count / share table."""
    answered = section["answered"]
    counts = [(_md(label), entry["count"]) for label, entry in section["labels"].items()]
    counts.append((unmatched, section["unmatched"]))
    rows = [(label, fmt_int(n), fmt_share(n, answered)) for label, n in counts]
    return _md_table(("Label", counted, "Share"), rows, "l r r")


def _endpoints_table(report: RunReport) -> Table:
    """The terminal's endpoints table: the figures that fit a line, the state in short."""
    shown = (0, 1, 2, 3, 4, 6, 7, 8)  # not "Rows failed": the errors table says it
    table = Table(title="Endpoints", title_justify="left", box=None, pad_edge=False)
    for i in shown:
        table.add_column(ENDPOINT_HEADER[i], justify="left" if i in (0, 8) else "right")
    for row in endpoint_rows(report, short=True):
        table.add_row(*(row[i] for i in shown))
    return table


def _md_title(report: RunReport) -> str:
    facts = [f"batchchat {report.batchchat_version}"]
    if report.run_ids:
        label = "run" if len(report.run_ids) == 1 else "runs"
        facts.append(f"{label} {', '.join(f'`{r}`' for r in report.run_ids)}")
    if report.spec_hash:
        facts.append(f"spec `{report.spec_hash[:12]}`")
    title = f"# Run report: {_md(report.job or report.output_dir)}"
    return f"{title}\n\n{' · '.join(facts)}"


def _token_rows(report: RunReport) -> list[tuple[str, str]]:
    tokens = report.tokens
    return [
        ("Prompt", fmt_int(tokens.prompt)),
        ("… of which cached", fmt_int(tokens.cached)),
        ("Completion", fmt_int(tokens.completion)),
        ("… of which reasoning", fmt_int(tokens.reasoning)),
        ("Total", fmt_int(tokens.total)),
    ]


def _md_models(report: RunReport) -> str:
    header = ("Model", "Rows", "Prompt", "Cached", "Completion", "Reasoning", "Cost (USD)")
    rows = [
        (
            _md(m.model),
            fmt_int(m.rows),
            fmt_int(m.tokens.prompt),
            fmt_int(m.tokens.cached),
            fmt_int(m.tokens.completion),
            fmt_int(m.tokens.reasoning),
            fmt_usd(m.cost_usd)
            + (f" ({m.unpriced_rows} rows unpriced)" if m.unpriced_rows else ""),
        )
        for m in report.models
    ]
    return _md_table(header, rows, "l r r r r r r")


def _md_errors(report: RunReport) -> str:
    shown = report.errors[:SHOWN_ERRORS]
    rows = [
        (
            f"`{_md(e.error_type)}`",
            fmt_int(e.count),
            ", ".join(f"`{_md(r)}`" for r in e.example_row_ids),
            _md(one_line(e.sample_message)),
        )
        for e in shown
    ]
    more = len(report.errors) - len(shown)
    tail = f"\n\n…and {more} more error types in report.json." if more > 0 else ""
    title = f"## Most common errors ({fmt_int(report.rows_error)} rows)"
    table = _md_table(("Error", "Rows", "Example row ids", "Sample message"), rows, "l r l l")
    return f"{title}\n\n{table}{tail}"


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> str:
    rule = ["---:" if a == "r" else "---" for a in align.split()]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(rule) + " |"]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return "\n".join(lines)


def _md(text: str) -> str:
    """Text that cannot break a Markdown table cell."""
    flat = one_line(text, 10_000).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return flat.replace("|", "\\|").replace("`", "'")


# -- terminal ----------------------------------------------------------------------------------


def _terminal_labels(labels: dict[str, Any]) -> RenderableType:
    """The label counts (per row when samples vote, else per answer), as a small table."""
    section = labels.get("majority") or labels
    title = "Majority label per row" if labels.get("majority") else "Labels"
    table = Table(title=title, title_justify="left", box=None, pad_edge=False, show_header=False)
    table.add_column("label")
    table.add_column("count", justify="right")
    table.add_column("share", justify="right", style="dim")
    answered = section["answered"]
    counts = [(label, entry["count"]) for label, entry in section["labels"].items()]
    counts.append(("(none matched)", section["unmatched"]))
    for label, count in counts:
        table.add_row(label, fmt_int(count), fmt_share(count, answered))
    if labels.get("mean_confidence") is not None:
        table.add_row("mean confidence", f"{labels['mean_confidence']:.3f}", "")
    return table


def render_table(report: RunReport) -> RenderableType:
    """The compact table printed at the end of ``batchchat run`` and by ``batchchat report``."""
    title = f"batchchat · {report.job or report.output_dir}"
    table = Table(title=title, show_header=False, box=None, title_justify="left", pad_edge=False)
    table.add_column("metric", style="dim")
    table.add_column("value", justify="right")
    for label, value in summary_rows(report):
        style = "red" if label == "Errors" and report.rows_error else None
        table.add_row(label, Text(value, style=style or ""))
    parts: list[RenderableType] = [table]
    if report.endpoints:
        parts.append(_endpoints_table(report))
    if report.labels:
        parts.append(_terminal_labels(report.labels))
    if report.errors:
        errors = Table(title="Most common errors", title_justify="left", box=None, pad_edge=False)
        errors.add_column("error", style="red")
        errors.add_column("rows", justify="right")
        errors.add_column("example", overflow="fold")
        for e in report.errors[:3]:
            example = f"{e.example_row_ids[0]}: " if e.example_row_ids else ""
            errors.add_row(e.error_type, fmt_int(e.count), example + one_line(e.sample_message, 80))
        parts.append(errors)
    parts.extend(Text(f"! {w}", style="yellow") for w in report.warnings)
    return Group(*parts)
