"""Step checkpoints: the model in our safetensors format, the resolved recipe and the trainer state, side by side.

Layout of one checkpoint (the directory is written under a temporary name and renamed, so it is whole or absent):
```
<run>/checkpoints/step-00000100/
    model/          MultimodalRWKV.save: config.json + model.safetensors
    recipe.yaml     the resolved recipe this run trains
    trainer.ckpt    Lightning state: optimizer, schedule, loop counters (what `--resume` needs)
<run>/checkpoints/last   text file naming the newest complete checkpoint
```
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import lightning as L

from mmrwkv.checkpoint_files import replace_dir
from mmrwkv.errors import CheckpointError

LAST = "last"


def step_name(step: int) -> str:
    """Directory name of the checkpoint taken after `step` optimizer steps."""
    return f"step-{step:08d}"


def checkpoint_step(path: str | Path) -> int:
    """The optimizer step a checkpoint directory `step-XXXXXXXX` was taken after."""
    name = Path(path).name
    if not name.startswith("step-") or not name[5:].isdigit():
        raise CheckpointError(f"{path}: not a step checkpoint directory (expected a name like {step_name(100)})")
    return int(name[5:])


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def last_checkpoint(ckpt_dir: str | Path) -> Path | None:
    """The newest complete checkpoint under `ckpt_dir`, or None when there is none yet."""
    pointer = Path(ckpt_dir) / LAST
    if not pointer.exists():
        return None
    path = Path(ckpt_dir) / pointer.read_text().strip()
    if not (path / "trainer.ckpt").is_file():
        raise CheckpointError(f"{pointer} names {path}, which has no trainer.ckpt (deleted by hand?)")
    return path


class StepCheckpoint(L.Callback):
    """Save every `every_n_steps` optimizer steps and at the end of training; keep the newest `keep` of them.

    `recipe_text` is the resolved recipe (YAML) stored beside every checkpoint.
    """

    def __init__(
        self,
        ckpt_dir: str | Path,
        recipe_text: str,
        *,
        every_n_steps: int = 0,
        keep: int = 2,
        on_saved: Callable[[Path], None] | None = None,
    ):
        self.ckpt_dir = Path(ckpt_dir)
        self.recipe_text = recipe_text
        self.every_n_steps = every_n_steps
        self.keep = max(1, keep)
        self.on_saved = on_saved
        self._last_saved_step = -1

    def on_train_start(self, trainer, pl_module) -> None:
        # A resumed run starts at the step it was saved at: do not save that step again.
        self._last_saved_step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every_n_steps > 0 and step > 0 and step % self.every_n_steps == 0 and step != self._last_saved_step:
            self.save(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.global_step != self._last_saved_step:
            self.save(trainer, pl_module)

    def save(self, trainer: L.Trainer, pl_module: L.LightningModule) -> Path:
        """Write the checkpoint of the current step (collective call: every rank enters, rank 0 writes)."""
        step = trainer.global_step
        final = self.ckpt_dir / step_name(step)
        tmp = self.ckpt_dir / (step_name(step) + ".tmp")
        if trainer.is_global_zero:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            pl_module.model.save(tmp / "model")
            (tmp / "recipe.yaml").write_text(self.recipe_text)
        # Every rank must enter save_checkpoint (sharded strategies gather there); only rank 0 writes the file.
        # weights_only=False: the optimizer, scheduler and loop state too, which --resume needs
        trainer.save_checkpoint(tmp / "trainer.ckpt", weights_only=False)
        if trainer.is_global_zero:
            # the step's earlier copy (if any) stays until the new one is in place
            replace_dir(tmp, final)
            _write_text_atomic(self.ckpt_dir / LAST, final.name)
            self._prune()
        trainer.strategy.barrier("mmrwkv-checkpoint")
        self._last_saved_step = step
        if self.on_saved is not None and trainer.is_global_zero:
            self.on_saved(final)
        return final

    def _prune(self) -> None:
        done = sorted(p for p in self.ckpt_dir.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp"))
        for old in done[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
