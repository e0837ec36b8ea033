"""Training a recipe with Lightning: build the model and data, fit every stage with step checkpoints, resume.

Public API (imported on first use, so `import mmrwkv.training` does not load Lightning):

    train_recipe(cfg, *, resume=False, fresh=False) -> list[StageResult]   # every stage, in order (train.py)
    train_stage(stage_cfg, *, resume=False, fresh=False) -> StageResult     # one stage (train.py)
    run_recipe(cfg, *, fresh=False) -> EvalReport    # `mmrwkv run`: train, evaluate, report (train_and_evaluate.py)
    build_model(cfg), build_datasets(cfg, model)     # recipe -> model, datasets, collate (build.py)
    MultimodalLM, OptimSettings                      # the LightningModule and its optimizer settings (module.py)
    build_trainer(train_cfg, ...)                    # the Lightning Trainer of a recipe (trainer.py)
    last_checkpoint(ckpt_dir)                        # the newest whole step checkpoint (checkpoints.py)

Evaluating a trained checkpoint (`evaluate_recipe`, the predict loop) lives in `mmrwkv.evaluation.predict`.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "train_recipe": "train",
    "train_stage": "train",
    "StageResult": "train",
    "run_recipe": "train_and_evaluate",
    "build_model": "build",
    "build_datasets": "build",
    "MultimodalLM": "module",
    "OptimSettings": "module",
    "build_trainer": "trainer",
    "last_checkpoint": "checkpoints",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'mmrwkv.training' has no attribute {name!r}")
    return getattr(importlib.import_module(f"mmrwkv.training.{_WHERE[name]}"), name)
