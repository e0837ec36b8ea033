"""A NaN loss stops training with a clear message and leaves the last good checkpoint in place."""

import pytest
import torch

from mmrwkv.config import load_config
from mmrwkv.multimodal import MultimodalRWKV
from mmrwkv.training.checkpoints import last_checkpoint
from mmrwkv.training.module import MultimodalLM, NonFiniteLossError
from mmrwkv.training.train import train_stage


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, tiny, monkeypatch):
    real_loss = MultimodalLM._loss

    def poisoned(self, batch):
        loss = real_loss(self, batch)
        return loss * float("nan") if self.global_step == 3 else loss

    monkeypatch.setattr(MultimodalLM, "_loss", poisoned)
    out = tmp_path / "run"
    cfg = load_config("recipes/easy_vqa.yaml", tiny(out, **{"train.max_steps": 8, "train.checkpoint_every": 1}))
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 3"):
        train_stage(cfg, progress=False)
    last = last_checkpoint(out / "checkpoints")
    assert last.name == "step-00000003"
    assert not (out / "final").exists()
    model = MultimodalRWKV.load(last / "model")
    assert all(torch.isfinite(p).all() for p in model.parameters())
