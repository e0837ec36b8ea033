"""Step checkpoints are written only when every weight is finite, a failed write leaves nothing behind, and resuming
falls back to the newest whole checkpoint with a line saying why (lr 5 once left `last` naming a NaN checkpoint)."""

import errno
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from mmrwkv.config import load_config
from mmrwkv.errors import CheckpointError
from mmrwkv.multimodal import MultimodalRWKV
from mmrwkv.training.checkpoints import NonFiniteWeightsError, checkpoint_problem, last_checkpoint
from mmrwkv.training.module import MultimodalLM
from mmrwkv.training.train import train_stage


def _cfg(tiny, out: Path, steps: int = 4):
    return load_config("recipes/easy_vqa.yaml", tiny(out, **{"train.max_steps": steps, "train.checkpoint_every": 1}))


def _poison_weights_at(monkeypatch, step: int) -> None:
    """NaN gradients in the optimizer step that makes `step`: the weights break while every loss stays finite."""

    def hook(self, optimizer):
        if self.global_step == step - 1:
            for p in self.parameters():
                if p.grad is not None:
                    p.grad.fill_(float("nan"))

    monkeypatch.setattr(MultimodalLM, "on_before_optimizer_step", hook, raising=False)


def test_nonfinite_weights_are_never_saved_and_last_stays_good(tmp_path, tiny, monkeypatch):
    _poison_weights_at(monkeypatch, 3)
    out = tmp_path / "run"
    with pytest.raises(NonFiniteWeightsError, match=r"not finite after step 3 .* still names step-00000002"):
        train_stage(_cfg(tiny, out), progress=False)
    ckpts = out / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["last", "step-00000001", "step-00000002"]
    model = MultimodalRWKV.load(last_checkpoint(ckpts) / "model")
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_full_disk_during_a_save_leaves_no_tmp_and_one_line(tmp_path, tiny, monkeypatch):
    real_save = MultimodalRWKV.save

    def full_disk(self, directory):
        if "step-00000002" in str(directory):
            Path(directory).mkdir(parents=True, exist_ok=True)
            (Path(directory) / "model.safetensors").write_bytes(b"\0" * 2**20)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, directory)

    monkeypatch.setattr(MultimodalRWKV, "save", full_disk)
    out = tmp_path / "run"
    with pytest.raises(
        CheckpointError,
        match=r"step-00000002: cannot write the checkpoint .*No space left.* still "
        r"names step-00000001",
    ) as err:
        train_stage(_cfg(tiny, out), progress=False)
    assert "\n" not in str(err.value)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["last", "step-00000001"]


class Payload:
    """Any class: unpickling it would import and call code."""


def test_resume_falls_back_to_the_newest_whole_checkpoint_saying_why(tmp_path, tiny, capsys):
    out = tmp_path / "run"
    train_stage(_cfg(tiny, out, steps=3), progress=False)
    ckpts = out / "checkpoints"
    # keep=2: steps 2 and 3 are left. NaN weights in the newest (written by hand or another tool)
    weights = ckpts / "step-00000003" / "model" / "model.safetensors"
    tensors = load_file(weights)
    name = next(iter(tensors))
    save_file({**tensors, name: torch.full_like(tensors[name], float("nan"))}, weights)
    (out / "final").rename(tmp_path / "final-aside")
    result = train_stage(_cfg(tiny, out, steps=3), resume=True, progress=False)
    assert result.steps == 3
    assert "step-00000003: model/model.safetensors has 1 non-finite tensors" in capsys.readouterr().err
    assert checkpoint_problem(ckpts / "step-00000003") is None
    # a trainer state cut short
    newest = ckpts / "step-00000003" / "trainer.ckpt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    assert last_checkpoint(ckpts).name == "step-00000002"
    assert "step-00000003: trainer.ckpt is cut short or corrupt" in capsys.readouterr().err
    # a trainer state that would run code when loaded is refused by name
    torch.save({"payload": Payload()}, ckpts / "step-00000002" / "trainer.ckpt")
    with pytest.raises(
        CheckpointError,
        match=r"no whole checkpoint to resume from: .*step-00000003: trainer.ckpt "
        r"is cut short.*step-00000002: trainer.ckpt refused.*--fresh",
    ) as err:
        last_checkpoint(ckpts)
    assert "\n" not in str(err.value)
