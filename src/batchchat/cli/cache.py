"""``batchchat cache``: what the response cache holds, what it saved, and clearing it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click
import orjson
from rich.console import Console

from batchchat.cli._common import grid, reports_errors, shown_path
from batchchat.cli._docs import docs_epilog


@click.command(epilog=docs_epilog("cache"))
@click.argument("action", type=click.Choice(["info", "clear"]), default="info")
@click.argument(
    "job",
    required=False,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    metavar="[JOB.yaml]",
)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="The cache directory (instead of JOB.yaml's or the default one).",
)
@click.option("--json", "as_json", is_flag=True, help="info: one JSON object on standard output.")
@click.option("--yes", is_flag=True, help="clear: do not ask for confirmation.")
@reports_errors
def cache(action: str, job: Path | None, directory: Path | None, as_json: bool, yes: bool) -> None:
    """Show what the response cache holds and saved (info), or delete it all (clear).

    The cache is the one that JOB.yaml uses (its cache.path), the one in --dir, or else the
    default one: $XDG_CACHE_HOME/batchchat, else ~/.cache/batchchat.

    \b
      batchchat cache                   # size, answers, hits and what they saved
      batchchat cache info jobs/x.yaml --json
      batchchat cache clear --yes       # delete every stored answer
    """
    where = _cache_dir(job, directory)
    if action == "clear":
        _clear(where, yes)
    else:
        _info(where, as_json)


def _cache_dir(job: Path | None, directory: Path | None) -> Path:
    if directory is not None:
        return directory
    from batchchat.spec import load_spec
    from batchchat.spec.cache import default_cache_dir

    if job is None:
        return default_cache_dir()
    spec = load_spec(job)
    if spec.cache is None or spec.cache.path is None:
        return default_cache_dir()
    return spec.resolve_path(spec.cache.path)


def _info(where: Path, as_json: bool) -> None:
    from batchchat.cache.store import ResponseStore, cache_exists

    if not cache_exists(where):
        if as_json:
            click.echo(orjson.dumps({"path": str(where), "exists": False}).decode())
        else:
            click.echo(f"no response cache in {shown_path(where)} yet")
        return
    with ResponseStore(where, read_only=True) as store:
        found = store.info()
    if as_json:
        data = {
            "path": str(found.path),
            "exists": True,
            "entries": found.entries,
            "stored_bytes": found.stored_bytes,
            "file_bytes": found.file_bytes,
            "hits": found.hits,
            "saved_usd": round(found.saved_usd, 10),
            "stored": found.stored,
            "evicted": found.evicted,
            "oldest": _when(found.oldest),
            "newest": _when(found.newest),
        }
        click.echo(orjson.dumps(data).decode())
        return
    Console(highlight=False).print(
        grid(
            [
                ("cache", shown_path(found.path)),
                (
                    "answers",
                    f"{found.entries:,} ({_size(found.stored_bytes)} stored, "
                    f"{_size(found.file_bytes)} on disk)",
                ),
                ("hits", f"{found.hits:,} (saved ${found.saved_usd:,.4f})"),
                ("added", f"{found.stored:,} answers stored, {found.evicted:,} evicted"),
                ("dates", f"{_when(found.oldest) or '–'} … {_when(found.newest) or '–'}"),
            ]
        )
    )


def _clear(where: Path, yes: bool) -> None:
    from batchchat.cache.store import ResponseStore, cache_exists, remove_cache
    from batchchat.errors import CacheError

    if not cache_exists(where):
        click.echo(f"no response cache in {shown_path(where)}: nothing to clear")
        return
    if not yes:
        click.confirm(f"Delete every answer in the cache {shown_path(where)}?", abort=True)
    try:
        with ResponseStore(where) as store:
            count = store.clear()
    except CacheError as exc:
        remove_cache(where)  # damaged beyond a query: its files go
        click.echo(f"removed the cache files in {shown_path(where)} ({exc})")
        return
    click.echo(f"cleared {count:,} answers from {shown_path(where)}")


def _size(count: int) -> str:
    if count < 1024:
        return f"{count:,} B"
    size, unit = count / 1024, "KB"
    for bigger in ("MB", "GB"):
        if size < 1024:
            break
        size, unit = size / 1024, bigger
    return f"{size:,.1f} {unit}"


def _when(at: float | None) -> str | None:
    if at is None:
        return None
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")
