"""Multi-device training through a Lightning strategy: DDP over 2 CPU processes (gloo)."""

import subprocess
import sys
from pathlib import Path

import pytest

from mmrwkv.training.train import read_summary

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ddp_with_two_cpu_processes_trains_and_checkpoints(tmp_path, tiny):
    out = tmp_path / "ddp"
    overrides = tiny(out, **{"train.strategy": "ddp", "train.devices": 2, "train.max_steps": 4,
                             "train.checkpoint_every": 2})
    proc = subprocess.run([sys.executable, "-m", "mmrwkv.cli", "train", "recipes/easy_vqa.yaml", *overrides,
                           "--no-progress"], cwd=ROOT, capture_output=True, text=True, timeout=580)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "world_size: 2" in proc.stderr or "distributed_backend=gloo" in proc.stderr
    assert read_summary(out / "final")["steps"] == 4
    assert (out / "checkpoints" / "step-00000004" / "trainer.ckpt").is_file()
