"""Every shell, console, Python, SQL and YAML example of the README and docs/ works.

Each page's blocks run in order in a fresh copy of a project where the quick start has run
(``docs_project``), sharing one Python namespace the way a notebook would; console blocks
must print what the page shows (``…`` for what varies). A block that cannot run here says
so, and why, in a ``docs-test`` comment (see ``_markdown.py``).
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

import batchchat
from tests.docs._markdown import ROOT, Block, blocks, console_steps, matches, pages

#: what a block's language means here: run it, check it, or show it as it is
RUN = {"bash", "console", "python", "sql", "yaml"}
SHOWN = {"text", "json", "cron", "toml", "ini", "html", "jinja"}
BIN = str(Path(sys.executable).parent)

PAGES = {str(path.relative_to(ROOT)): path for path in pages()}


def runnable(path: Path) -> list[Block]:
    return [block for block in blocks(path) if block.lang in RUN and block.skip is None]


#: the pages with something to run (the others are checked by the build alone)
RUNNABLE = sorted(page for page, path in PAGES.items() if runnable(path))


def test_every_block_is_run_or_shown_on_purpose() -> None:
    unknown = [
        f"{block.where} ({block.lang})"
        for path in PAGES.values()
        for block in blocks(path)
        if block.lang not in RUN | SHOWN
    ]
    assert not unknown, "blocks in a language this test neither runs nor knows: " + str(unknown)


def test_examples_stay_inside_the_project() -> None:
    """A reader's copy of an example writes where the reader is, and so does the test's."""
    outside = [
        block.where
        for path in PAGES.values()
        for block in runnable(path)
        if "/tmp/" in block.code or "~/" in block.code
    ]
    assert not outside, f"examples that write outside the project: {outside}"
    assert len(RUNNABLE) >= 15


@pytest.mark.slow
@pytest.mark.parametrize("page", RUNNABLE)
def test_the_examples_of_a_page_run(
    page: str, docs_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    shutil.copytree(docs_project, project)
    monkeypatch.chdir(project)
    with Page(project) as run:
        for block in runnable(PAGES[page]):
            run.block(block)


class Page:
    """The state one page's examples share: the project, a Python namespace, servers."""

    def __init__(self, project: Path) -> None:
        self.project = project
        self.namespace: dict[str, Any] = {"__name__": "__docs__"}
        self.replacements: dict[str, str] = {}
        self.servers: list[subprocess.Popen[str]] = []
        self.env = {
            key: value
            for key, value in os.environ.items()
            if not key.endswith("_API_KEY") and not key.startswith("BATCHCHAT_REQUIRE")
        }
        self.env["PATH"] = BIN + os.pathsep + self.env.get("PATH", "")
        self.env["COLUMNS"] = "120"

    def __enter__(self) -> Page:
        return self

    def __exit__(self, *exc: object) -> None:
        for server in self.servers:
            server.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.communicate(timeout=10)
            if server.poll() is None:
                server.kill()
                server.communicate()

    def block(self, block: Block) -> None:
        code = block.code
        for old, new in self.replacements.items():
            code = code.replace(old, new)
        getattr(self, f"run_{block.lang}")(block, code)

    def shell(self, command: str, block: Block, exit_code: int) -> str:
        done = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", command],
            cwd=self.project,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        output = done.stdout + done.stderr
        assert done.returncode == exit_code, (
            f"{block.where}: `{command}` exited {done.returncode}, the page expects "
            f"{exit_code}:\n{output[-3000:]}"
        )
        return output

    def run_bash(self, block: Block, code: str) -> None:
        self.shell(code, block, block.exit_code)

    def run_console(self, block: Block, code: str) -> None:
        steps = console_steps(code)
        if block.background:
            assert len(steps) == 1, f"{block.where}: a background block runs one command"
            self.start_server(steps[0].command, block)
            return
        for number, step in enumerate(steps, start=1):
            # an exit directive is about the block's last command; the ones before set it up
            exit_code = block.exit_code if number == len(steps) else 0
            output = self.shell(step.command, block, exit_code)
            assert not step.expected.strip() or matches(step.expected, output), (
                f"{block.where}: `{step.command}` printed\n{output}\nwhile the page shows\n"
                f"{step.expected}"
            )

    def start_server(self, command: str, block: Block) -> None:
        """Start ``batchchat simulate --port P`` on a free port instead; the page's later
        blocks reach it where they say 127.0.0.1:P."""
        port = command.split("--port", 1)[1].split()[0]
        server = subprocess.Popen(
            ["bash", "-c", "exec " + command.replace(f"--port {port}", "--port 0")],
            cwd=self.project,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.servers.append(server)
        assert server.stdout is not None
        base_url = server.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:"), f"{block.where}: {base_url!r}"
        self.replacements[f"127.0.0.1:{port}"] = base_url.removeprefix("http://").split("/")[0]

    def run_python(self, block: Block, code: str) -> None:
        flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        compiled = compile(code, block.where, "exec", flags=flags)
        result = eval(compiled, self.namespace)
        if asyncio.iscoroutine(result):
            asyncio.run(result)

    def run_sql(self, block: Block, code: str) -> None:
        connection = duckdb.connect()
        for statement in (part.strip() for part in code.split(";")):
            if statement.strip("- \n") and not _only_comments(statement):
                connection.sql(statement).fetchall()

    def run_yaml(self, block: Block, code: str) -> None:
        data = yaml.safe_load(code)
        if isinstance(data, dict) and {"input", "request"} <= set(data):
            with _in(self.project / "jobs"):
                spec = batchchat.load_spec({**data, "base_dir": str(self.project / "jobs")})
                problems = batchchat.validate(spec)
            assert not problems, f"{block.where}: the job does not validate: {problems}"


def _only_comments(statement: str) -> bool:
    return all(line.strip().startswith("--") for line in statement.splitlines() if line.strip())


@contextlib.contextmanager
def _in(folder: Path) -> Iterator[None]:
    before = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)
