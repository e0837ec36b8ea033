"""Build the Lightning Trainer of a recipe: devices, strategy, precision, loggers, progress bar."""

from __future__ import annotations

import csv
import importlib.util
import logging
import math
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger

from mmrwkv.config import TrainConfig
from mmrwkv.errors import ConfigError

METRICS_FILE = "metrics.csv"


class _NoAdverts(logging.Filter):
    """Drops Lightning's "💡 Tip: ... try installing litlogger" lines (printed on every fit; not a diagnostic) and
    its "`Trainer.fit` stopped: `max_epochs=1` reached." (a stage runs as one long epoch of the planned batches, so
    that line would contradict the recipe's train.epochs; the stage prints its own summary)."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        return not (text.startswith("💡 Tip") or text.startswith("`Trainer.fit` stopped"))


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_NoAdverts())


def _accelerator() -> str:
    return "gpu" if torch.cuda.is_available() else "cpu"


def resolve_precision(precision: str) -> str:
    """The recipe's precision, with bf16 falling back to fp32 where the accelerator lacks bf16."""
    if precision.startswith("bf16") and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        return "32-true"
    return "32-true" if precision == "32" else precision


def build_strategy(train: TrainConfig):
    """The Lightning strategy for `train.strategy`; unavailable choices raise ConfigError saying why."""
    name = train.strategy
    if name == "auto":
        return "auto"
    if name == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        # gloo runs on CPU processes; nccl needs GPUs
        return DDPStrategy(process_group_backend="nccl" if torch.cuda.is_available() else "gloo")
    if name == "fsdp":
        if not torch.cuda.is_available():
            raise ConfigError("train.strategy: 'fsdp' needs CUDA GPUs, and none is visible; use 'ddp' or 'auto'")
        from lightning.pytorch.strategies import FSDPStrategy

        # one FSDP unit per backbone block (and per encoder block): parameters are gathered block by block
        return FSDPStrategy(sharding_strategy="FULL_SHARD", auto_wrap_policy=wrap_classes(),
                            activation_checkpointing_policy=wrap_classes() if train.grad_checkpoint else None)
    if name == "deepspeed":
        if importlib.util.find_spec("deepspeed") is None:
            raise ConfigError("train.strategy: 'deepspeed' needs the deepspeed package, which is not installed "
                              "(pip install 'mmrwkv[deepspeed]', on a CUDA machine); or use 'ddp' / 'fsdp'")
        if not torch.cuda.is_available():
            raise ConfigError("train.strategy: 'deepspeed' needs CUDA GPUs, and none is visible; use 'ddp' or 'auto'")
        from lightning.pytorch.strategies import DeepSpeedStrategy

        return DeepSpeedStrategy(stage=2)
    raise ConfigError(f"train.strategy: unknown strategy {name!r}; valid: auto, ddp, fsdp, deepspeed")


def wrap_classes() -> set[type]:
    """The block classes FSDP wraps one by one (its auto-wrap policy): the RWKV block (every generation) and the
    transformer layers of the encoders."""
    from torch import nn

    from mmrwkv.rwkv.model import Block

    classes = {Block, nn.TransformerEncoderLayer}
    if importlib.util.find_spec("open_clip") is not None:
        from open_clip.transformer import ResidualAttentionBlock

        classes.add(ResidualAttentionBlock)
    return classes


def build_loggers(train: TrainConfig, log_dir: str | Path, resume_step: int | None) -> list:
    """The CSV logger (curves.png reads it) and the recipe's `train.loggers` (tensorboard, wandb)."""
    from lightning.pytorch.loggers import CSVLogger

    # every logged row goes to disk at once: a killed run keeps all it logged, and a resumed run drops the rows
    # past its checkpoint instead of missing some
    loggers = [CSVLogger(str(log_dir), name="", version="csv", flush_logs_every_n_steps=1)]
    if "tensorboard" in train.loggers and importlib.util.find_spec("tensorboard") is not None:
        # purge_step: TensorBoard readers drop the earlier files' events from this step on
        purge = {"purge_step": resume_step} if resume_step else {}
        loggers.append(FlushingTensorBoardLogger(str(log_dir), name="", version="tensorboard",
                                                 default_hp_metric=False, **purge))
    if "wandb" in train.loggers:
        if importlib.util.find_spec("wandb") is None:
            raise ConfigError("train.loggers: 'wandb' needs the wandb package (pip install 'mmrwkv[wandb]'); "
                              "WANDB_MODE=offline logs without a network")
        from lightning.pytorch.loggers import WandbLogger

        loggers.append(WandbLogger(project=train.wandb_project or "mmrwkv", name=train.stage,
                                   save_dir=str(log_dir)))
    return loggers


def build_trainer(train: TrainConfig, *, max_steps: int, callbacks: list, log_dir: str | Path,
                  progress: bool = True, val_every: int | None = None, resume_step: int | None = None) -> L.Trainer:
    """A Trainer that runs exactly `max_steps` optimizer steps over one long pass of the batch sampler.

    `resume_step`: the run resumes from the checkpoint taken after that many steps; the logs keep what was logged
    before it and drop what a killed run logged after it (each step once in metrics.csv and in TensorBoard).
    """
    loggers = build_loggers(train, log_dir, resume_step)
    if resume_step:
        callbacks = [*callbacks, KeepEarlierCSVRows(Path(loggers[0].log_dir) / METRICS_FILE, resume_step)]
    if progress:
        callbacks = [*callbacks, StepProgressBar(refresh_rate=max(1, train.log_every))]
    return L.Trainer(
        accelerator=_accelerator(),
        devices=train.devices,
        strategy=build_strategy(train),
        precision=resolve_precision(train.precision),
        max_epochs=1,
        max_steps=max_steps,
        accumulate_grad_batches=train.grad_accum,
        gradient_clip_val=train.grad_clip or None,
        logger=loggers,
        log_every_n_steps=max(1, train.log_every),
        callbacks=callbacks,
        enable_progress_bar=progress,
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0 if val_every is None else 1.0,
        val_check_interval=val_every,
        use_distributed_sampler=False,
        deterministic=False,
        default_root_dir=str(log_dir),
    )


def planned_steps(num_batches: int | float, grad_accum: int, max_steps: int) -> int | None:
    """Optimizer steps a run takes: one per `grad_accum` batches (the epoch's last partial group steps too), capped
    at `max_steps` when that is set (> 0). None when the batch count is unknown (an iterable without a length)."""
    if math.isinf(num_batches):
        return max_steps if max_steps > 0 else None
    steps = math.ceil(int(num_batches) / grad_accum)
    return min(steps, max_steps) if max_steps > 0 else steps


class StepProgressBar(TQDMProgressBar):
    """The training bar counts optimizer steps: its total is the steps this run still takes (`max_steps` when a
    stage sets it, less the steps of the checkpoint a resumed run starts from), not the batches of the epoch.

    Lightning's bar shows `num_training_batches`: with `train.max_steps` that is the whole data pass the sampler
    was sized for (several epochs' batches rounded up), and with gradient accumulation it counts batches.
    """

    def __init__(self, refresh_rate: int = 1):
        super().__init__(refresh_rate=refresh_rate)
        self.start_step = 0
        self.total_steps: int | None = None

    def on_train_start(self, trainer: L.Trainer, *args) -> None:
        super().on_train_start(trainer, *args)
        # a run resumed inside its one long epoch gets no epoch start: set the bar up here too
        self._set_total(trainer)

    def on_train_epoch_start(self, trainer: L.Trainer, *args) -> None:
        super().on_train_epoch_start(trainer, *args)
        self._set_total(trainer)

    def _set_total(self, trainer: L.Trainer) -> None:
        # the checkpoint of a resumed run is restored before training starts: global_step is where it goes on from
        self.start_step = trainer.global_step
        total = planned_steps(trainer.num_training_batches, trainer.accumulate_grad_batches, trainer.max_steps)
        self.total_steps = None if total is None else max(0, total - self.start_step)
        bar = self.train_progress_bar
        bar.reset(total=self.total_steps)
        bar.initial = 0
        bar.set_description("steps" if not self.start_step else f"steps (resumed at {self.start_step})")

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        # v_num is the logger's version: our loggers' versions are folder names ("csv", "tensorboard")
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
                           ) -> None:
        done = trainer.global_step - self.start_step
        bar = self.train_progress_bar
        if bar is not None and done != bar.n and self._should_update(done, self.total_steps or 0):
            _update_bar(bar, done)
            bar.set_postfix(self.get_metrics(trainer, pl_module))


def _update_bar(bar, value: int) -> None:
    if not bar.disable:
        bar.n = value
        bar.refresh()


class FlushingTensorBoardLogger(TensorBoardLogger):
    """A TensorBoard logger whose events reach the disk at every logged step, as the CSV rows do (the writer
    otherwise buffers them for up to two minutes, and a killed run would lose them)."""

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        super().log_metrics(metrics, step)
        # rank 0 only: other ranks get Lightning's no-op experiment
        self.experiment.flush()


class KeepEarlierCSVRows(L.Callback):
    """Put the rows a run logged before step `step` back into metrics.csv when it resumes from that step.

    Lightning's CSV writer starts the file over; the rows are read when the trainer is built (before the writer
    exists) and written first thing at setup. Rows logged after the checkpoint are dropped: the resumed run logs
    those steps again.
    """

    def __init__(self, path: str | Path, step: int):
        self.rows = _csv_rows_before(Path(path), step)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        from lightning.pytorch.loggers import CSVLogger

        if not trainer.is_global_zero or not self.rows:
            return
        for logger in trainer.loggers:
            if isinstance(logger, CSVLogger):
                writer = logger.experiment
                writer.metrics[:0] = self.rows
                writer.save()
        self.rows = []


def _csv_rows_before(path: Path, step: int) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    # a row cut short by a kill has no parsable step: drop it with the rows past the checkpoint
    return [row for row in rows if (row.get("step") or "").isdigit() and int(row["step"]) < step]


def wkv_backend(name: str | None):
    """Route every WKV call to backend `name` for a while (None: leave the dispatch's own choice)."""
    from mmrwkv.kernels import ENV_VAR, scoped_env

    return scoped_env(ENV_VAR, name)


def choose_wkv_backend(name: str | None, *, on_gpu: bool, head_size: int | None = None) -> tuple[str, str]:
    """(backend, reason) for a stage's WKV calls: `train.wkv_backend`, else MMRWKV_WKV_BACKEND, else "cuda" on a GPU
    where the extension builds, else "chunked". A backend asked for by name that cannot run here is a ConfigError
    (the kernel dispatch would fall back to "chunked" with a warning; a training run should not change kernels
    behind the recipe's back)."""
    import os

    from mmrwkv import kernels

    asked, source = name, "train.wkv_backend"
    if asked is None and os.environ.get(kernels.ENV_VAR):
        asked, source = os.environ[kernels.ENV_VAR].strip(), kernels.ENV_VAR
    device = torch.device("cuda" if on_gpu else "cpu")
    if asked is None:
        if not on_gpu:
            return "chunked", "no CUDA GPU: the chunk-parallel PyTorch op"
        ok, why = kernels._cuda_status(device, "wkv7", head_size)
        return ("cuda", "the CUDA extension builds on this GPU") if ok else ("chunked", f"CUDA kernels unusable: {why}")
    if asked not in kernels.BACKENDS:
        raise ConfigError(f"{source}: {asked!r} is not a WKV backend; choose one of {', '.join(kernels.BACKENDS)}")
    if asked == "cuda":
        ok, why = kernels._cuda_status(device, "wkv7", head_size)
        if not ok:
            raise ConfigError(f"{source}: 'cuda' was asked for by name and cannot run here ({why}); drop it to let "
                              "the run pick a backend, or fix the build")
    return asked, f"asked for by {source}"
