"""Step checkpoints: the model in our safetensors format, the resolved recipe and the trainer state, side by side.

Layout of one checkpoint (the directory is written under a temporary name and renamed, so it is whole or absent):
```
<run>/checkpoints/step-00000100/
    model/          MultimodalRWKV.save: config.json + model.safetensors
    recipe.yaml     the resolved recipe this run trains
    trainer.ckpt    Lightning state: optimizer, schedule, loop counters (what `--resume` needs)
<run>/checkpoints/last   text file naming the newest complete checkpoint
```
A checkpoint is written only when every weight is finite, so `last` names a whole, finite one. Resuming checks it
anyway (a file cut short or replaced by hand) and falls back to the newest earlier one that passes, saying why.
"""

from __future__ import annotations

import os
import pickle
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from safetensors import SafetensorError

from mmrwkv.checkpoint_files import replace_dir, unpickling_reason
from mmrwkv.errors import CheckpointError, MMRWKVError

LAST = "last"


class NonFiniteWeightsError(MMRWKVError):
    """The weights became NaN or infinite: the checkpoint of that step is not written, the last good one stays."""


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
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def nonfinite_tensors(module: torch.nn.Module) -> list[str]:
    """Names of the module's floating-point parameters and buffers holding a NaN or an infinity."""
    return [name for name, tensor in module.state_dict().items() if not _finite(tensor)]


def _finite(tensor: torch.Tensor) -> bool:
    return not tensor.is_floating_point() or bool(tensor.isfinite().all())


def checkpoint_problem(path: Path) -> str | None:
    """Why the step checkpoint `path` cannot be resumed from (None: it can): a part missing, a trainer.ckpt that is
    cut short, corrupt or would run code when loaded, or weights that are not finite. The trainer state is opened
    memory-mapped (its tensors are not read); the model's weights are read once."""
    from safetensors import safe_open

    trainer_ckpt, weights = path / "trainer.ckpt", path / "model" / "model.safetensors"
    for part in (trainer_ckpt, weights, path / "model" / "config.json"):
        if not part.is_file():
            return f"{part.relative_to(path)} is missing"
    try:
        torch.load(trainer_ckpt, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as err:
        return f"{trainer_ckpt.relative_to(path)} refused: {unpickling_reason(err)}"
    except Exception as err:  # torch's zip reader raises RuntimeError / ValueError / EOFError on a cut file
        first = str(err).splitlines()[0].split(". ")[0] if str(err) else type(err).__name__
        return f"{trainer_ckpt.relative_to(path)} is cut short or corrupt ({first})"
    try:
        with safe_open(str(weights), framework="pt") as f:
            bad = [k for k in f.keys() if not _finite(f.get_tensor(k))]
    except (OSError, SafetensorError) as err:
        return f"{weights.relative_to(path)} cannot be read ({err})"
    if bad:
        return f"{weights.relative_to(path)} has {len(bad)} non-finite tensors ({', '.join(bad[:3])})"
    return None


def last_checkpoint(ckpt_dir: str | Path) -> Path | None:
    """The newest whole checkpoint under `ckpt_dir` (None when there is none yet): the one `last` names, or when
    that one is damaged, the newest earlier one that is whole, with a line on stderr saying why. Raises
    CheckpointError naming each problem when none is whole."""
    pointer = Path(ckpt_dir) / LAST
    if not pointer.exists():
        return None
    named = Path(ckpt_dir) / pointer.read_text().strip()
    if not named.is_dir():
        raise CheckpointError(f"{pointer} names {named}, which does not exist (deleted by hand?)")
    earlier = sorted(
        (p for p in Path(ckpt_dir).glob("step-*") if p.is_dir() and not p.name.endswith(".tmp") and p < named),
        reverse=True,
    )
    problems = []
    for candidate in (named, *earlier):
        problem = checkpoint_problem(candidate)
        if problem is None:
            if problems:
                print(f"warning: {'; '.join(problems)}; using {candidate.name} instead", file=sys.stderr, flush=True)
            return candidate
        problems.append(f"{candidate}: {problem}")
    raise CheckpointError(f"no whole checkpoint to resume from: {'; '.join(problems)} (pass --fresh to start over)")


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
        self._check_finite(pl_module, step)
        tmp = self.ckpt_dir / (step_name(step) + ".tmp")
        try:
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
        except (OSError, RuntimeError, SafetensorError) as err:
            # a full disk: torch.save raises RuntimeError, safetensors SafetensorError, plain writes OSError
            shutil.rmtree(tmp, ignore_errors=True)
            detail = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise CheckpointError(
                f"{final}: cannot write the checkpoint ({detail}); nothing was kept of it, {self._last_name()}"
            ) from None
        trainer.strategy.barrier("mmrwkv-checkpoint")
        self._last_saved_step = step
        if self.on_saved is not None and trainer.is_global_zero:
            self.on_saved(final)
        return final

    def _last_name(self) -> str:
        pointer = self.ckpt_dir / LAST
        return f"{pointer} still names {pointer.read_text().strip()}" if pointer.is_file() else "no checkpoint yet"

    def _check_finite(self, pl_module: L.LightningModule, step: int) -> None:
        bad = nonfinite_tensors(pl_module.model)
        if bad:
            raise NonFiniteWeightsError(
                f"weights are not finite after step {step} ({len(bad)} tensors: {', '.join(bad[:3])}); that "
                f"checkpoint is not written, {self._last_name()} (lower train.lr or check the data)"
            )

    def _prune(self) -> None:
        done = sorted(p for p in self.ckpt_dir.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp"))
        for old in done[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
