"""A run killed with SIGKILL and resumed ends exactly where an uninterrupted run ends, and its logs hold each step
once (metrics.csv and TensorBoard), as the uninterrupted run's do."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from mmrwkv.training.checkpoints import last_checkpoint
from mmrwkv.training.train import read_summary

ROOT = Path(__file__).resolve().parents[2]
STEPS = 12


def _train_cmd(tiny, out, *extra):
    overrides = tiny(out, **{"train.max_steps": STEPS, "train.checkpoint_every": 2})
    return [sys.executable, "-m", "mmrwkv.cli", "train", "recipes/easy_vqa.yaml", *overrides, "--no-progress", *extra]


def _csv_steps(run: Path) -> list[int]:
    path = run / "logs" / "csv" / "metrics.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        # the training rows (a validation row has val/ metrics only)
        return [int(row["step"]) for row in csv.DictReader(f)
                if (row.get("step") or "").isdigit() and row.get("train/loss")]


def _tensorboard_losses(run: Path) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "logs" / "tensorboard"))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars("train/loss")]


def _kill_after_first_checkpoint(cmd, ckpt_dir: Path, timeout: float = 240) -> None:
    """SIGKILL the run once it has logged a step past its first checkpoint (a step the resumed run logs again)."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while not (ckpt_dir / "last").exists() or max(_csv_steps(ckpt_dir.parent), default=-1) < 2:
            assert proc.poll() is None, "training exited before it could be killed past its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint in time"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()


@pytest.mark.timeout(600)
def test_sigkilled_run_resumes_to_the_same_weights_and_loss(tmp_path, tiny):
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    subprocess.run(_train_cmd(tiny, ref), cwd=ROOT, check=True, capture_output=True)
    _kill_after_first_checkpoint(_train_cmd(tiny, killed), killed / "checkpoints")
    interrupted_at = last_checkpoint(killed / "checkpoints")
    assert not (killed / "final").exists(), "the run finished before it was killed"
    logged_before_resume = _csv_steps(killed)
    done = subprocess.run(_train_cmd(tiny, killed, "--resume"), cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]

    ref_summary, resumed_summary = read_summary(ref / "final"), read_summary(killed / "final")
    assert resumed_summary["steps"] == ref_summary["steps"] == STEPS
    assert int(interrupted_at.name.split("-")[1]) < STEPS
    assert resumed_summary["last_loss"] == pytest.approx(ref_summary["last_loss"], rel=1e-5)
    a, b = load_file(ref / "final" / "model.safetensors"), load_file(killed / "final" / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert (a[name] - b[name]).abs().max() <= 1e-5, name

    # the killed run had logged past its checkpoint: the resumed logs still hold every step once
    assert max(logged_before_resume) >= int(interrupted_at.name.split("-")[1])
    assert _csv_steps(killed) == _csv_steps(ref) == list(range(STEPS))
    ref_tb, resumed_tb = _tensorboard_losses(ref), _tensorboard_losses(killed)
    assert [step for step, _ in resumed_tb] == [step for step, _ in ref_tb] == list(range(STEPS))
    assert [v for _, v in resumed_tb] == pytest.approx([v for _, v in ref_tb], rel=1e-5)


def test_existing_checkpoints_without_resume_are_refused(tmp_path, tiny):
    out = tmp_path / "run"
    (out / "checkpoints" / "step-00000003").mkdir(parents=True)
    (out / "checkpoints" / "step-00000003" / "trainer.ckpt").write_bytes(b"x")
    (out / "checkpoints" / "last").write_text("step-00000003")
    proc = subprocess.run([sys.executable, "-m", "mmrwkv.cli", "train", "recipes/easy_vqa.yaml", *tiny(out)],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "--resume" in proc.stderr and str(out) in proc.stderr
