"""On a fresh clone (no .venv) every make target first creates the venv and uv, then does its work; `gpu-check`
only runs its script (which installs offline when it must)."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CREATE = ["test -x .venv/bin/python || python3 -m venv .venv", "test -x .venv/bin/uv || .venv/bin/python -m pip"]


@pytest.fixture
def fresh(tmp_path):
    for name in ("Makefile", "requirements.lock", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def _plan(directory: Path, target: str) -> list[str]:
    done = subprocess.run(["make", "-n", target], cwd=directory, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


@pytest.mark.parametrize(
    ("target", "work"),
    [
        ("run", ".venv/bin/mmrwkv run recipes/easy_vqa.yaml"),
        ("test", '.venv/bin/python -m pytest -q -m "not slow"'),
        ("test-all", ".venv/bin/python -m pytest -q --timeout"),
        ("demo", ".venv/bin/mmrwkv demo"),
        ("lock", ".venv/bin/uv pip compile pyproject.toml"),
    ],
)
def test_target_creates_the_venv_and_uv_before_its_work(fresh, target, work):
    plan = _plan(fresh, target)
    steps = [next(i for i, line in enumerate(plan) if line.startswith(s)) for s in CREATE]
    last = next(i for i, line in enumerate(plan) if work in line)
    assert steps == sorted(steps) and steps[-1] < last
    if target != "lock":
        assert any(line.startswith(".venv/bin/uv pip install") and "requirements.lock" in line for line in plan)


def test_gpu_check_runs_the_script_without_a_venv_step(fresh):
    # a GPU machine may have no network: the script installs the project offline itself when it must
    # (a make run inside make, as in CI's `make test`, also prints its Entering/Leaving directory lines)
    plan = [line for line in _plan(fresh, "gpu-check") if not line.startswith("make[")]
    assert plan == ["bash kernels/check_gpu.sh"]
