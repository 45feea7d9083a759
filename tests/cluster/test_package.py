"""Ray is optional: nothing imports it until a run on Ray asks for it, and its absence is
a spec error that says what to install (run in fresh interpreters, as a user would)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from batchchat.cluster import INSTALL, require_ray
from batchchat.errors import SpecError
from tests._system import ray_installed

JOB = Path(__file__).resolve().parents[2] / "jobs" / "labeling.yaml"


def python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), str(JOB)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_importing_batchchat_and_its_cli_never_imports_ray() -> None:
    ran = python(
        """
        import sys
        import batchchat, batchchat.api, batchchat.cli, batchchat.cluster
        from batchchat.cli import main
        loaded = sorted(m for m in sys.modules if m == "ray" or m.startswith("ray."))
        print(loaded)
        """
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "[]"


def test_a_run_on_ray_without_ray_is_a_spec_error_that_says_what_to_install() -> None:
    # Ray made unimportable in that interpreter alone (a None entry in sys.modules)
    ran = python(
        """
        import sys
        sys.modules["ray"] = None
        import batchchat
        from batchchat.errors import SpecError
        try:
            batchchat.run(sys.argv[1], engine="ray")
        except SpecError as error:
            print(error)
        """
    )
    assert ran.returncode == 0, ran.stderr
    assert "needs Ray Data, which is not installed" in ran.stdout
    assert INSTALL in ran.stdout


def test_require_ray_passes_where_ray_is_installed() -> None:
    pytest.importorskip("ray.data", reason="the ray extra is not installed")
    require_ray()  # no error


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"engine": "spark"}, "engine: 'spark' is not one of local, ray"),
        ({"workers": 2}, "workers: only for a run on Ray"),
        ({"ray_address": "auto"}, "ray_address: only for a run on Ray"),
        ({"engine": "ray", "workers": 0}, "workers: 0 is not a number of workers"),
    ],
)
def test_ray_options_out_of_place_are_spec_errors(options: dict[str, object], problem: str) -> None:
    import batchchat

    with pytest.raises(SpecError, match=problem):
        batchchat.run(JOB, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("address", "said"),
    [
        ("127.0.0.1:1", "no Ray cluster answers there"),
        ("ray://127.0.0.1:1", "no Ray cluster answers there"),
        ("head-without-port", "not an address of a Ray cluster"),
    ],
)
def test_a_cluster_that_does_not_answer_is_a_spec_error_before_anything_is_written(
    address: str, said: str, tmp_path: Path
) -> None:
    ray_installed()
    ran = python(
        f"""
        import sys
        import batchchat
        from batchchat.errors import SpecError
        try:
            batchchat.run(sys.argv[1], engine="ray", ray_address={address!r},
                          output={str(tmp_path / "out")!r})
        except SpecError as error:
            print(error)
        """
    )
    assert ran.returncode == 0, ran.stderr
    assert f"--ray-address {address}: {said}" in ran.stdout
    assert not (tmp_path / "out").exists()
