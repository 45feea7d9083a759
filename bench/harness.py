"""What every benchmark scenario shares: measured subprocesses, the simulator, job specs, data.

Each client (the baselines and batchchat) runs as its own process, pinned to core 0;
the simulator runs pinned to core 1. A process is measured from the outside: wall
time, CPU time and peak RSS come from ``os.wait4`` (exact, per child), and RSS is also
sampled over time with psutil so a scenario can show that memory stays flat.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

BENCH_DIR = Path(__file__).resolve().parent
PYTHON = sys.executable
CLIENT_CORE = 0
SERVER_CORE = 1
#: the model name every request asks for (the simulator answers any)
MODEL = "gpt-4o-mini"


# -- results ----------------------------------------------------------------------------------


@dataclass
class Metric:
    """One line of the results table: a measured value (median of ``runs``) and its target."""

    scenario: str
    name: str
    runs: list[float]
    unit: str = ""
    #: e.g. ">= 0.6"; None when the line is informative only
    target: str | None = None
    #: the value to compare against the target is the median of runs
    higher_is_better: bool = True
    note: str = ""

    @property
    def value(self) -> float:
        return statistics.median(self.runs) if self.runs else float("nan")

    @property
    def met(self) -> bool | None:
        if self.target is None or not self.runs:
            return None
        op, _, number = self.target.partition(" ")
        bound = float(number)
        return {">=": self.value >= bound, "<=": self.value <= bound, "==": self.value == bound}[op]

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "name": self.name,
            "value": self.value,
            "runs": self.runs,
            "unit": self.unit,
            "target": self.target,
            "met": self.met,
            "note": self.note,
        }


@dataclass
class Context:
    """What a scenario needs to know about this invocation."""

    quick: bool
    repeats: int
    #: scratch space of this invocation (emptied per scenario)
    work: Path
    #: kept between invocations: generated inputs, the completed 1M-row output for resume
    cache: Path

    def log(self, message: str) -> None:
        print(f"  · {message}", file=sys.stderr, flush=True)


# -- measured processes ----------------------------------------------------------------------


class Runs(dict[str, list[float]]):
    """Each measure's value from every repetition, by key."""

    def add(self, key: str, value: float) -> None:
        self.setdefault(key, []).append(value)


@dataclass
class ProcResult:
    returncode: int
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    stdout: str
    stderr: str
    #: (seconds since start, RSS in MB), sampled while the process ran
    rss_samples: list[tuple[float, float]]

    def peak_rss_between(self, start: float, end: float) -> float:
        """Highest sampled RSS (MB) between two fractions of the run's wall time."""
        inside = [rss for t, rss in self.rss_samples if start <= t / self.wall_s <= end]
        return max(inside) if inside else float("nan")

    def json(self) -> Any:
        """The last line of stdout, parsed (the baselines print one JSON object)."""
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        return json.loads(lines[-1])

    def check(self, what: str) -> ProcResult:
        if self.returncode != 0:
            tail = "\n".join((self.stderr or self.stdout).splitlines()[-15:])
            raise RuntimeError(f"{what} exited {self.returncode}:\n{tail}")
        return self


def can_pin() -> bool:
    return shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2


def pinned(cmd: Sequence[str], core: int) -> list[str]:
    """``cmd`` run on one core (taskset execs it, so the pid stays the same)."""
    return ["taskset", "-c", str(core), *cmd] if can_pin() else list(cmd)


def run_measured(
    cmd: Sequence[str],
    *,
    timeout_s: float,
    core: int | None = CLIENT_CORE,
    sample_every_s: float = 0.2,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> ProcResult:
    """Run ``cmd`` to its end and measure it: wall, CPU (user+sys) and peak RSS of that process
    (started by ``launch.py``, whose docstring says why)."""
    usage_path = Path(tempfile.mkstemp(prefix="batchchat-bench-", suffix=".json")[1])
    full = [PYTHON, str(BENCH_DIR / "launch.py"), str(usage_path)]
    full += pinned(cmd, core) if core is not None else list(cmd)
    started = time.perf_counter()
    proc = subprocess.Popen(
        full,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        start_new_session=True,  # a timeout kills the launcher and the command together
    )
    samples: list[tuple[float, float]] = []
    done = threading.Event()
    out: dict[str, str] = {}
    readers = [
        threading.Thread(target=lambda: out.__setitem__("stdout", proc.stdout.read())),  # type: ignore[union-attr]
        threading.Thread(target=lambda: out.__setitem__("stderr", proc.stderr.read())),  # type: ignore[union-attr]
        threading.Thread(
            target=_sample_rss, args=(proc.pid, started, sample_every_s, samples, done)
        ),
    ]
    for thread in readers:
        thread.start()
    killer = threading.Timer(timeout_s, _kill, args=(proc,))
    killer.start()
    try:
        proc.wait()
    finally:
        killer.cancel()
        done.set()
    wall = time.perf_counter() - started
    for thread in readers:
        thread.join()
    try:
        usage = json.loads(usage_path.read_text() or "{}")
    finally:
        usage_path.unlink(missing_ok=True)
    return ProcResult(
        returncode=proc.returncode,
        wall_s=wall,
        cpu_s=usage.get("cpu_s", float("nan")),  # (none when killed by the timeout)
        peak_rss_mb=usage.get("max_rss_kib", float("nan")) / 1024,  # Linux reports KiB
        stdout=out.get("stdout", ""),
        stderr=out.get("stderr", ""),
        rss_samples=samples,
    )


def _kill(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and the command it runs


def _sample_rss(
    pid: int,
    started: float,
    every: float,
    samples: list[tuple[float, float]],
    done: threading.Event,
) -> None:
    try:
        launcher = psutil.Process(pid)
        while not (children := launcher.children()):  # the measured command, once started
            if done.wait(0.005):
                return
        process = children[0]
        while not done.wait(every):
            rss = process.memory_info().rss / 2**20
            samples.append((time.perf_counter() - started, rss))
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return


# -- the simulator -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Simulator:
    """``batchchat simulate`` as a separate process pinned to the server core."""

    def __init__(self, *flags: object, port: int | None = None, log: Path | None = None) -> None:
        self.port = port or free_port()
        self.flags = [str(flag) for flag in flags]
        self._log_path = log
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Simulator:
        cmd = [PYTHON, "-m", "batchchat", "simulate", "--port", str(self.port), *self.flags]
        sink = open(self._log_path, "wb") if self._log_path else subprocess.DEVNULL
        self._proc = subprocess.Popen(
            pinned(cmd, SERVER_CORE), stdout=sink, stderr=subprocess.STDOUT
        )
        self._wait_ready()
        return self

    def _wait_ready(self, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"simulator exited {self._proc.returncode} at start: {' '.join(self.flags)}"
                )
            with contextlib.suppress(OSError):
                self.stats()
                return
            time.sleep(0.1)
        raise RuntimeError("simulator did not answer GET /stats within 20 s")

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the simulator has used so far."""
        assert self._proc is not None
        times = psutil.Process(self._proc.pid).cpu_times()
        return float(times.user + times.system)

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.root}/stats", timeout=5) as response:
            data: dict[str, Any] = json.load(response)
            return data

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


# -- inputs and job specs --------------------------------------------------------------------


def prompt(i: int) -> str:
    """Row ``i``'s user message: short, like a review to label (the baselines send the same)."""
    return f"Review {i}: the blender works fine but the lid cracked after a week. Sentiment?"


def write_input(path: Path, rows: int, *, row_group: int = 100_000) -> Path:
    """A Parquet input of ``rows`` rows (id, text) in row groups of ``row_group`` rows (as
    polars or Spark would write a big file), built a row group at a time so 10M rows stay
    cheap. An existing file of the same shape is reused."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.exists():
        meta = pq.ParquetFile(path).metadata
        if meta.num_rows == rows and meta.row_group(0).num_rows == min(rows, row_group):
            return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    schema = pa.schema([("id", pa.string()), ("text", pa.string())])
    with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        for start in range(0, rows, row_group):
            stop = min(rows, start + row_group)
            ids = [f"r{i:08d}" for i in range(start, stop)]
            texts = [prompt(i) for i in range(start, stop)]
            writer.write_table(pa.table({"id": ids, "text": texts}, schema=schema))
    tmp.replace(path)
    return path


def write_job(
    directory: Path,
    *,
    input_path: Path,
    base_url: str,
    concurrency: int,
    rpm: int | None = None,
    tpm: int | None = None,
    timeout_s: float = 60.0,
    max_tokens: int = 16,
    adaptive: bool = True,
    output: Path | None = None,
    name: str = "bench",
) -> Path:
    """A job spec in YAML (JSON is YAML) for batchchat run against ``base_url``."""
    directory.mkdir(parents=True, exist_ok=True)
    limits: dict[str, Any] = {"max_concurrency": concurrency, "adaptive": adaptive}
    if rpm:
        limits["rpm"] = rpm
    if tpm:
        limits["tpm"] = tpm
    spec: dict[str, Any] = {
        "name": name,
        "input": {"path": str(input_path), "id_column": "id"},
        "endpoint": {"base_url": base_url, "timeout_s": timeout_s},
        "request": {
            "model": MODEL,
            "messages": [{"role": "user", "content": "{{ text }}"}],
            "max_tokens": max_tokens,
        },
        "limits": limits,
        "output": {"path": str(output or directory / "out")},
    }
    path = directory / f"{name}.yaml"
    path.write_text(json.dumps(spec, indent=2))
    return path


def compile_batchchat() -> None:
    """Compile batchchat's modules to bytecode once, as installing its wheel does.

    An editable install leaves that to the first import, and where
    ``PYTHONDONTWRITEBYTECODE`` is set (some CI images and sandboxes, this machine's
    included) every ``batchchat run`` compiled its ~160 modules again: ~0.1 s of CPU a
    run that an installed batchchat never pays (the baselines' libraries were compiled by
    pip). compileall writes the bytecode whatever that variable says."""
    spec = importlib.util.find_spec("batchchat")
    assert spec is not None and spec.submodule_search_locations, "batchchat is not installed"
    package = spec.submodule_search_locations[0]
    subprocess.run(
        [PYTHON, "-m", "compileall", "-q", package], check=True, stdout=subprocess.DEVNULL
    )


def batchchat_cmd(job: Path, *extra: str) -> list[str]:
    return [PYTHON, "-m", "batchchat", "run", str(job), "--quiet", *extra]


def baseline_cmd(name: str, *args: object) -> list[str]:
    return [PYTHON, str(BENCH_DIR / "baselines" / f"{name}.py"), *(str(a) for a in args)]


# -- reading batchchat's output ----------------------------------------------------------------


@dataclass
class OutputSummary:
    rows: int
    ok: int
    unique_ids: int
    #: first attempt started → last result finished, seconds (from the result timestamps)
    window_s: float
    finished_at_s: list[float]


def read_output(out_dir: Path) -> OutputSummary:
    """Count rows, ok rows and distinct (row_id, sample) in an output dir; result timing too."""
    import polars as pl

    frame = (
        pl.scan_parquet(str(out_dir / "results" / "*.parquet"))
        .select("row_id", "sample", "status", "started_at", "finished_at")
        .collect()
    )
    start = frame["started_at"].min()
    finished: list[float] = sorted(
        ((frame["finished_at"] - start).dt.total_microseconds() / 1e6).to_list()
    )
    return OutputSummary(
        rows=frame.height,
        ok=int((frame["status"] == "ok").sum()),
        unique_ids=frame.select("row_id", "sample").n_unique(),
        window_s=finished[-1] if finished else 0.0,
        finished_at_s=finished,
    )


# -- the three clients side by side --------------------------------------------------------------


@dataclass
class HeadToHead:
    """One repetition of the bare loop, the openai client and batchchat against one simulator."""

    bare: ProcResult
    openai: ProcResult
    batchchat: ProcResult
    output: OutputSummary
    #: the simulator's CPU seconds while the bare loop ran (its own cost per request)
    server_cpu_bare_s: float


def head_to_head(
    sim: Simulator, job_dir: Path, *, data: Path, n: int, n_openai: int, concurrency: int
) -> HeadToHead:
    """Run the three clients one after another; fail unless each finished every row."""

    def baseline(name: str, rows: int) -> ProcResult:
        cmd = baseline_cmd(name, "--url", sim.base_url, "--n", rows, "--concurrency", concurrency)
        return run_measured(cmd, timeout_s=300).check(f"{name} baseline")

    server_cpu = sim.cpu_s()
    bare = baseline("bare_aiohttp", n)
    server_cpu = sim.cpu_s() - server_cpu
    oai = baseline("openai_client", n_openai)
    job = write_job(job_dir, input_path=data, base_url=sim.base_url, concurrency=concurrency)
    bc = run_measured(batchchat_cmd(job), timeout_s=600).check("batchchat run")
    out = read_output(job_dir / "out")
    for result, rows, what in ((bare.json(), n, "bare"), (oai.json(), n_openai, "openai")):
        if result["ok"] != rows:
            raise RuntimeError(f"{what} baseline did not finish every row: {result}")
    if not (out.rows == out.ok == out.unique_ids == n):
        raise RuntimeError(f"batchchat output: {out} (expected {n} ok rows)")
    return HeadToHead(bare, oai, bc, out, server_cpu)


def status_counts(stats: dict[str, Any]) -> dict[int, int]:
    """The simulator's per-status counts as {status: count}."""
    raw = stats.get("status_counts") or stats.get("statuses") or {}
    return {int(code): int(count) for code, count in raw.items()}


@contextlib.contextmanager
def workdir(ctx: Context, name: str) -> Iterator[Path]:
    path = ctx.work / name
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    yield path
