"""Validation during training: the val split's loss and the recipe's task metrics every `train.eval_every`
optimizer steps (and at the end of the stage), logged beside the training loss; the best model kept by
`train.best_metric`; optional early stopping.

Every process scores the whole (small) val set, so they agree on the best step and on stopping without talking.
"""

from __future__ import annotations

import json
import math
import shutil
import uuid
from pathlib import Path

import lightning as L
import torch

from mmrwkv.checkpoint_files import check_replaceable, replace_dir

BEST = "best"
# metrics that need Java (or minutes): left to the final evaluation
SLOW_METRICS = {"meteor", "spice", "spider"}


def lower_is_better(metric: str) -> bool:
    """Losses are minimised, task metrics maximised."""
    return "loss" in metric


class Validation(L.Callback):
    """Measure `val/loss` (token-weighted mean over `loader`) and `val/<metric>` for `metrics` on `samples` (the
    recipe's generation settings) every `every` steps (0: only at the end), write them to every logger and keep
    the best model in `out/best`."""

    def __init__(
        self,
        loader,
        samples,
        cfg,
        metrics: list[str],
        *,
        out: Path,
        every: int = 0,
        best_metric: str | None = None,
        patience: int = 0,
        recipe_text: str = "",
        generate: bool = True,
    ):
        self.loader, self.samples, self.cfg, self.out = loader, samples, cfg, Path(out)
        self.metrics = [m for m in metrics if m not in SLOW_METRICS] if generate else []
        self.every, self.best_metric, self.patience, self.text = every, best_metric, patience, recipe_text
        self.best: float | None = None
        self.bad_rounds = 0
        self.last_step = -1
        self.history: list[dict] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        if self.every and step and step % self.every == 0 and step != self.last_step:
            self.validate(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.global_step != self.last_step:
            self.validate(trainer, pl_module)

    @torch.no_grad()
    def validate(self, trainer: L.Trainer, pl_module) -> dict:
        """One validation round at the current step; returns the logged values."""
        self.last_step = step = trainer.global_step
        was_training = pl_module.training
        pl_module.eval()
        try:
            values = {"val/loss": self._loss(pl_module)}
            values.update(self._task_metrics(pl_module))
        finally:
            pl_module.train(was_training)
        for logger in trainer.loggers:
            logger.log_metrics(values, step=step)
        self.history.append({"step": step, **values})
        if self.best_metric is not None:
            self._keep_best(trainer, pl_module, values, step)
        return values

    def _loss(self, pl_module) -> float:
        total, count = 0.0, 0
        device = pl_module.device
        for batch in self.loader:
            if batch["input_ids"] is None:
                continue
            batch = pl_module.transfer_batch_to_device(batch, device, 0)
            n = int((batch["labels"][:, 1:] != -100).sum())
            if not n:
                continue
            with pl_module.trainer.precision_plugin.forward_context():
                lm, bow = pl_module._losses(batch)
            loss = lm if lm is not None else bow
            total, count = total + float(loss) * n, count + n
        return total / count if count else math.nan

    def _task_metrics(self, pl_module) -> dict:
        if not self.metrics:
            return {}
        from mmrwkv.evaluation.predict import predict
        from mmrwkv.evaluation.score import score_samples

        model = pl_module.model
        with pl_module.trainer.precision_plugin.forward_context():
            predictions = predict(model, self.samples, self.cfg)
        # the Python PTB tokenizer: no Java process per validation round
        scored = score_samples(
            self.samples,
            predictions,
            self.metrics,
            split=self.cfg.data.val_split or "val",
            decoding=self.cfg.generation.decoding,
            tokenizer="python",
        )
        return {f"val/{k}": float(v) for k, v in scored["metrics"].items() if isinstance(v, int | float)}

    def _keep_best(self, trainer: L.Trainer, pl_module, values: dict, step: int) -> None:
        value = values.get(self.best_metric)
        if value is None or not math.isfinite(value):
            return
        lower = lower_is_better(self.best_metric)
        better = self.best is None or (value < self.best if lower else value > self.best)
        if better:
            self.best, self.bad_rounds = value, 0
            if trainer.is_global_zero:
                save_best(pl_module.model, self.out / BEST, self.text, step, self.best_metric, value)
        else:
            self.bad_rounds += 1
            if self.patience and self.bad_rounds >= self.patience:
                trainer.should_stop = True


def save_best(model, target: Path, text: str, step: int, metric: str, value: float) -> Path:
    """The model with {step, metric, value} and its recipe, written aside and renamed into place."""
    check_replaceable(target)
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        model.save(tmp)
        (tmp / "summary.json").write_text(json.dumps({"step": step, "metric": metric, "value": value}))
        (tmp / "recipe.yaml").write_text(text)
        replace_dir(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
