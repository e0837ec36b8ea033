"""The training progress bar counts the optimizer steps the run takes: `train.max_steps` when a stage sets it (not
the batches the sampler was sized for), batches / grad_accum otherwise, and the remaining steps after a resume."""

import lightning as L
import pytest
import torch

from mmrwkv.config import TrainConfig
from mmrwkv.training.data import RecipeDataModule
from mmrwkv.training.trainer import StepProgressBar, build_trainer, planned_steps

SAMPLES, BATCH = 20, 4  # 5 batches per epoch


class Toy(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.w(batch).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class SaveAt(L.Callback):
    def __init__(self, step: int, path):
        self.step, self.path = step, path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step and not self.path.exists():
            trainer.save_checkpoint(self.path)


def _fit(tmp_path, *, max_steps: int, epochs: int, grad_accum: int = 1, callbacks=(), ckpt=None):
    torch.manual_seed(0)
    data = RecipeDataModule(list(torch.randn(SAMPLES, 2)), torch.stack, batch_size=BATCH, grad_accum=grad_accum,
                            epochs=epochs)
    train = TrainConfig(batch_size=BATCH, grad_accum=grad_accum, log_every=1, devices=1)
    trainer = build_trainer(train, max_steps=max_steps, callbacks=list(callbacks), log_dir=tmp_path / "logs",
                            resume_step=None)
    trainer.fit(Toy(), datamodule=data, ckpt_path=str(ckpt) if ckpt else None)
    bar = next(c for c in trainer.callbacks if isinstance(c, StepProgressBar))
    return trainer, bar.train_progress_bar


def test_bar_total_is_max_steps_not_the_sampled_batches(tmp_path):
    # run.py sizes the sampler to ceil(7 / 5) = 2 epochs = 10 batches: Lightning's own bar would read 10
    trainer, bar = _fit(tmp_path, max_steps=7, epochs=2)
    assert trainer.num_training_batches == 10
    assert trainer.global_step == 7
    assert bar.total == 7 and bar.n == 7


def test_bar_counts_optimizer_steps_with_grad_accum(tmp_path):
    # 3 epochs x 5 batches, accumulating 2: 8 steps (the last batch steps alone at the end of the pass)
    trainer, bar = _fit(tmp_path, max_steps=-1, epochs=3, grad_accum=2)
    assert trainer.global_step == 8
    assert bar.total == 8 and bar.n == 8


def test_resumed_bar_shows_the_remaining_steps(tmp_path):
    ckpt = tmp_path / "step3.ckpt"
    _fit(tmp_path / "first", max_steps=7, epochs=2, callbacks=[SaveAt(3, ckpt)])
    assert ckpt.is_file()
    trainer, bar = _fit(tmp_path / "resumed", max_steps=7, epochs=2, ckpt=ckpt)
    assert trainer.global_step == 7
    assert bar.total == 4 and bar.n == 4
    assert "resumed at 3" in bar.desc


@pytest.mark.parametrize(("batches", "accum", "max_steps", "expected"), [
    (10, 1, 7, 7), (10, 1, -1, 10), (15, 2, -1, 8), (15, 2, 5, 5), (float("inf"), 1, 9, 9), (float("inf"), 1, -1, None),
])
def test_planned_steps(batches, accum, max_steps, expected):
    assert planned_steps(batches, accum, max_steps) == expected
