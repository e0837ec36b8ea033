"""Train one recipe stage (or all of them): build, fit with step checkpoints, resume, save the final model."""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import yaml

from mmrwkv.checkpoint_files import check_replaceable, replace_dir
from mmrwkv.config import RecipeConfig, config_to_dict, diff_raw, expand_stages
from mmrwkv.errors import CheckpointError, ConfigError
from mmrwkv.training.checkpoints import LAST, StepCheckpoint, checkpoint_step, last_checkpoint
from mmrwkv.training.data import RecipeDataModule
from mmrwkv.training.module import MultimodalLM, OptimSettings

FINAL = "final"


@dataclass
class StageResult:
    """Where a finished stage left its final model, its logs and its last training loss."""

    final: Path
    log_dir: Path
    steps: int | None
    last_loss: float | None


def recipe_text(cfg: RecipeConfig) -> str:
    """The resolved recipe as YAML (stored beside every checkpoint)."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, allow_unicode=True)


def optim_settings(cfg: RecipeConfig, total_steps: int) -> OptimSettings:
    """The optimizer settings of a stage, from the recipe's `train` section."""
    t = cfg.train
    return OptimSettings(
        lr=t.lr.backbone,
        lr_projector=t.lr.projector,
        lr_encoder=t.lr.encoder,
        weight_decay=t.weight_decay,
        warmup_steps=t.warmup_steps,
        total_steps=total_steps,
        min_lr_ratio=t.min_lr_ratio if t.cosine else 1.0,
        grad_clip=t.grad_clip,
        aux_bow=t.aux_bow,
        lm_weight=t.lm_weight,
        # under FSDP the strategy checkpoints the wrapped blocks itself (activation_checkpointing_policy)
        grad_checkpoint=t.grad_checkpoint and t.strategy != "fsdp",
    )


# settings that do not change what a stage trains: a finished or interrupted stage is reused or resumed across them
NOT_TRAINING = (
    "name",
    "description",
    "eval",
    "generation",
    "train.log_every",
    "train.num_workers",
    "train.checkpoint_every",
    "train.eval_every",
    "train.best_metric",
    "train.early_stop_patience",
    "train.loggers",
    "train.wandb_project",
    "data.media_cache_mb",
)


def training_changes(saved: Path, cfg: RecipeConfig) -> list[str]:
    """`field: old -> new` for every training setting of `cfg` that differs from the resolved recipe `saved`
    (the recipe.yaml beside a checkpoint); evaluation-only settings (NOT_TRAINING) are left out."""
    old = yaml.safe_load(saved.read_text())
    changes = diff_raw(old, config_to_dict(cfg))
    return [
        f"{path}: {a!r} -> {b!r}"
        for path, a, b in changes
        if not any(path == p or path.startswith(p + ".") for p in NOT_TRAINING)
    ]


def _prepare_output(out: Path, cfg: RecipeConfig, *, resume: bool, fresh: bool) -> Path | None:
    """Check the stage directory; return the trainer checkpoint to resume from (None: start fresh)."""
    if _launched_rank():
        # a process launched by a multi-device strategy: the first process has already checked and prepared
        last = last_checkpoint(out / "checkpoints") if resume and out.exists() else None
        return None if last is None else last / "trainer.ckpt"
    report = Path(cfg.eval.report.dir).absolute() if cfg.eval.report.dir else None
    # a report directory the recipe itself puts inside the stage directory is the run's too
    check_stage_dir(out, also=(report.name,) if report and report.parent == out.absolute() else ())
    if fresh and out.exists():
        shutil.rmtree(out)
    pointer = out / "checkpoints" / LAST
    if not resume and pointer.is_file():
        # refused before the checkpoints are checked: the user has to choose first
        raise ConfigError(
            f"train.output_dir: {out} already holds checkpoints (last {pointer.read_text().strip()}); "
            "pass --resume to continue it or --fresh to start over"
        )
    last = last_checkpoint(out / "checkpoints") if out.exists() else None
    if last is None:
        return None
    changes = training_changes(last / "recipe.yaml", cfg)
    if changes:
        shown = "; ".join(changes[:8]) + (f"; and {len(changes) - 8} more" if len(changes) > 8 else "")
        raise ConfigError(
            f"{out}: the recipe differs from the one its checkpoint {last.name} was trained with "
            f"({last / 'recipe.yaml'}): {shown}. Use the same recipe and overrides to continue it, "
            "or pass --fresh to start this stage over"
        )
    return last / "trainer.ckpt"


# what a stage writes into its output directory (eval-<split>: `mmrwkv run`'s default report directory)
STAGE_ENTRIES = ("checkpoints", FINAL, "best", "logs", "curves.png", "tokenizer.json")


def _ours(name: str) -> bool:
    # hidden names: our files and directories written aside before they are renamed into place
    aside = name.startswith(".") and (name.endswith(".tmp") or ".tmp-" in name or ".old-" in name)
    return name in STAGE_ENTRIES or name.startswith("eval-") or aside


def check_stage_dir(out: Path, *, also: tuple[str, ...] = ()) -> None:
    """A stage trains into (and `--fresh` deletes) `out`: it must be absent, empty or hold only what a stage writes
    (and the names in `also`), so that neither ever replaces or deletes anything else. Raises ConfigError naming the
    path otherwise."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"train.output_dir: {out} is a file, not a directory")
    if not out.is_dir():
        return
    foreign = sorted(p.name for p in out.iterdir() if not _ours(p.name) and p.name not in also)
    if foreign:
        more = f" (+{len(foreign) - 5} more)" if len(foreign) > 5 else ""
        raise ConfigError(
            f"train.output_dir: {out} holds files a training stage does not write ({', '.join(foreign[:5])}{more}); "
            "training (and --fresh, which deletes the directory) would mix with or destroy them: choose a new "
            "train.output_dir"
        )
    if (out / FINAL).exists():
        try:
            check_replaceable(out / FINAL)
        except CheckpointError as err:
            raise ConfigError(f"train.output_dir: {err}") from err


def _say(message: str) -> None:
    if not _launched_rank():
        print(message, flush=True)


def _launched_rank() -> int:
    """The rank of a process that a multi-device strategy launched (0 for the process the user started)."""
    return max(int(os.environ.get("LOCAL_RANK", "0")), int(os.environ.get("NODE_RANK", "0")))


def _save_final(module: MultimodalLM, out: Path, text: str, steps: int) -> Path:
    """The final model with its summary and recipe, written aside and then renamed into place: whole or absent."""
    final = out / FINAL
    check_replaceable(final)
    tmp = out / f".{FINAL}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        module.model.save(tmp)
        (tmp / "summary.json").write_text(json.dumps({"steps": steps, "last_loss": module.last_loss}))
        (tmp / "recipe.yaml").write_text(text)
        replace_dir(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def read_summary(final: Path) -> dict:
    """The steps and last training loss a finished stage recorded beside its final model."""
    path = Path(final) / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else {"steps": None, "last_loss": None}


def device_count(train) -> int:
    """The devices a stage trains on (what Lightning's "auto" picks: every visible GPU, else one CPU process)."""
    import torch

    if isinstance(train.devices, int):
        return train.devices
    return max(1, torch.cuda.device_count()) if torch.cuda.is_available() else 1


def apply_global_batch(cfg: RecipeConfig) -> None:
    """`train.global_batch_size` -> `train.grad_accum` for this launch's device count (ConfigError when it does
    not divide)."""
    t = cfg.train
    if t.global_batch_size is None:
        return
    per_step = t.batch_size * device_count(t)
    if t.global_batch_size % per_step:
        raise ConfigError(f"train.global_batch_size: {t.global_batch_size} is not a multiple of train.batch_size "
                          f"{t.batch_size} x {device_count(t)} device(s)")
    t.grad_accum = t.global_batch_size // per_step


def _check_batches(cfg: RecipeConfig, size: int, world: int) -> None:
    t = cfg.train
    if size < t.batch_size * world:
        raise ConfigError(
            f"data: split {cfg.data.train_split!r} has {size} training sample(s), fewer than one batch "
            f"(train.batch_size {t.batch_size} x {world} device(s)); lower train.batch_size or add data"
        )


def _data_module(cfg: RecipeConfig, model, train_set, collate) -> RecipeDataModule:
    """The stage's training data; with `data.group_by_length`, batches of similar estimated length."""
    from mmrwkv.training.lengths import estimated_lengths, media_slots

    lengths = None
    if cfg.data.group_by_length:
        samples = [g[0] for g in train_set.groups] if hasattr(train_set, "groups") else train_set.samples
        lengths = estimated_lengths(samples, media_slots(model))
    t = cfg.train
    return RecipeDataModule(train_set, collate, batch_size=t.batch_size, grad_accum=t.grad_accum, epochs=t.epochs,
                            seed=t.seed, num_workers=t.num_workers, lengths=lengths)


def _validation(cfg: RecipeConfig, model, val_set, collate, out: Path, text: str):
    """The Validation callback of a stage with a val split (None without one)."""
    from torch.utils.data import DataLoader

    from mmrwkv.evaluation.predict import task_metrics
    from mmrwkv.training.validation import Validation

    if val_set is None:
        return None
    metrics = task_metrics(cfg.eval.metrics, val_set.samples)
    loader = DataLoader(val_set, batch_size=cfg.eval.batch_size, collate_fn=collate)
    # sharded strategies hold no whole model on a process: generation there is left to the final evaluation
    generate = cfg.train.strategy not in ("fsdp", "deepspeed")
    return Validation(loader, val_set.samples, cfg, metrics, out=out, every=cfg.train.eval_every,
                      best_metric=cfg.train.best_metric, patience=cfg.train.early_stop_patience, recipe_text=text,
                      generate=generate)


def train_stage(cfg: RecipeConfig, *, resume: bool = False, fresh: bool = False, progress: bool = True) -> StageResult:
    """Train one (already expanded) stage; a finished stage being resumed returns its result at once."""
    import torch

    from mmrwkv.encoders.registry import check_specs
    from mmrwkv.training.build import build_datasets, build_model, load_val_split
    from mmrwkv.training.plots import plot_curves
    from mmrwkv.training.trainer import build_trainer, choose_wkv_backend, wkv_backend

    apply_global_batch(cfg)
    # refused before any data or model is prepared
    check_specs(cfg.encoders)
    out = Path(cfg.train.output_dir)
    text = recipe_text(cfg)
    log_dir = out / "logs"
    ckpt = _prepare_output(out, cfg, resume=resume, fresh=fresh)
    final = out / FINAL
    if ckpt is not None and (final / "recipe.yaml").is_file() and not training_changes(final / "recipe.yaml", cfg):
        summary = read_summary(final)
        _say(
            f"stage '{cfg.train.stage}': reusing the finished stage in {final} ({summary['steps']} steps, same "
            "training settings); pass --fresh to train it again"
        )
        return StageResult(final, log_dir, summary["steps"], summary["last_loss"])
    if ckpt is not None:
        _say(f"stage '{cfg.train.stage}': resuming from {ckpt.parent}")
    # an unknown val split is refused before anything (a BPE tokenizer, the model) is built
    val = load_val_split(cfg)
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    model = build_model(cfg)
    backend, why = choose_wkv_backend(cfg.train.wkv_backend, on_gpu=torch.cuda.is_available(),
                                      head_size=model.backbone.config.head_size)
    _say(f"stage '{cfg.train.stage}': WKV backend {backend} ({why})")
    train_set, val_set, collate = build_datasets(cfg, model, val)
    _check_batches(cfg, len(train_set), device_count(cfg.train))
    data = _data_module(cfg, model, train_set, collate)
    saver = StepCheckpoint(out / "checkpoints", text, every_n_steps=cfg.train.checkpoint_every)
    validation = _validation(cfg, model, val_set, collate, out, text)
    max_steps = cfg.train.max_steps or -1
    trainer = build_trainer(
        cfg.train,
        max_steps=max_steps,
        callbacks=[saver] + ([validation] if validation else []),
        log_dir=log_dir,
        progress=progress,
        resume_step=checkpoint_step(ckpt.parent) if ckpt else None,
    )
    _check_batches(cfg, len(train_set), trainer.world_size)
    per_epoch = data.batches_per_epoch(trainer.world_size)
    if max_steps > 0:
        data.epochs = math.ceil(max_steps * cfg.train.grad_accum / per_epoch)
    steps = max_steps if max_steps > 0 else math.ceil(data.epochs * per_epoch / cfg.train.grad_accum)
    module = MultimodalLM(model, optim_settings(cfg, steps))
    with wkv_backend(backend):
        trainer.fit(module, datamodule=data, ckpt_path=str(ckpt) if ckpt else None)
    _say(_stage_summary(cfg, trainer.global_step, steps, module.overlong))
    if trainer.is_global_zero:
        _save_final(module, out, text, trainer.global_step)
        plot_curves(log_dir, out / "curves.png")
    trainer.strategy.barrier("mmrwkv-final")
    return StageResult(final, log_dir, trainer.global_step, module.last_loss)


def _stage_summary(cfg: RecipeConfig, done: int, planned: int, overlong: dict) -> str:
    """One line at the end of a stage: steps done of planned (and why fewer), over-long samples cut or skipped."""
    line = f"stage '{cfg.train.stage}': {done} of {planned} optimizer steps"
    if done < planned:
        line += " (stopped early: train.early_stop_patience)" if cfg.train.early_stop_patience else " (stopped)"
    if any(overlong.values()):
        line += (f"; over data.max_text_tokens {cfg.data.max_text_tokens}: {overlong['truncated']} sample(s) "
                 f"truncated, {overlong['skipped']} skipped (this process)")
    return line


def train_recipe(
    cfg: RecipeConfig, *, resume: bool = False, fresh: bool = False, progress: bool = True
) -> list[StageResult]:
    """Train every stage of a recipe in order; each stage starts from the previous one's final model."""
    return [train_stage(stage, resume=resume, fresh=fresh, progress=progress) for stage in expand_stages(cfg)]
