"""Every shipped recipe parses, and trains + evaluates a few steps end to end with tiny stand-in parts."""

from pathlib import Path

import pytest
import yaml

from mmrwkv.config import config_from_dict, expand_stages, load_config
from mmrwkv.errors import ConfigError
from mmrwkv.training.train_and_evaluate import run_recipe
from mmrwkv.training.trainer import build_strategy

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
# the full-scale GPU recipes run as shipped on data in their own formats: test_recipes_public_formats.py
CPU_RECIPES = [p for p in RECIPES if p.stem not in ("coco_caption_v7", "llava_v7")]
TINY_ENCODERS = {
    "image": {"name": "tiny_cnn", "image_size": 16, "width": 8, "grid": 2},
    "audio": {"name": "tiny_whisper", "n_mels": 80, "width": 16, "depth": 1, "heads": 2, "max_seconds": 4.0},
}
SLOW_METRICS = {"meteor", "spice"}


def _tiny_data(raw: dict, tmp: Path) -> dict:
    modality = next(iter(raw.get("encoders", {"image": None})))
    vqa = any(m in ("exact_match", "vqa_accuracy") for m in raw.get("eval", {}).get("metrics", []))
    if raw.get("data", {}).get("kind") == "easy_vqa":
        return {"kind": "easy_vqa", "sizes": {"train": 24, "test": 4}, "group_by_media": False}
    kind = "shapes" if modality == "image" else "tones"
    split = raw.get("eval", {}).get("split", "val")
    return {"kind": kind, "task": "vqa" if vqa else "caption", "root": str(tmp / kind),
            "sizes": {"train": 24, split: 4}, "val_split": split}


def tiny_recipe(path: Path, tmp: Path) -> dict:
    """The recipe with a random tiny backbone, tiny encoders, generated data and two steps per stage."""
    raw = yaml.safe_load(path.read_text())
    raw["model"] = {"version": "7", "size": "v7-tiny", "checkpoint": None, "tokenizer": "bpe", "bpe_vocab_size": 300,
                    "overrides": {"n_layer": 1, "n_embd": 32, "head_size": 16}}
    raw["encoders"] = {m: TINY_ENCODERS[m] for m in raw["encoders"]}
    raw["data"] = _tiny_data(raw, tmp)
    raw["train"] = {**raw.get("train", {}), "max_steps": 2, "batch_size": 4, "grad_accum": 1, "precision": "32",
                    "strategy": "auto", "devices": "auto", "num_workers": 0, "checkpoint_every": 0,
                    "output_dir": str(tmp / "run"), "log_every": 1}
    for stage in raw.get("stages", []):
        for key in ("data", "model", "encoders"):
            stage.pop(key, None)
        stage["train"] = {"lr": stage.get("train", {}).get("lr", {})}
    # generated VQA has one answer per question: the official 10-answer accuracy becomes exact match
    metrics = [{"vqa_accuracy": "exact_match"}.get(m, m) for m in raw["eval"]["metrics"] if m not in SLOW_METRICS]
    raw["eval"] = {**raw["eval"], "max_samples": 4, "batch_size": 4, "metrics": metrics,
                   "report": {"thumbnails": False}}
    raw["generation"] = {**raw.get("generation", {}), "max_tokens": 6}
    return raw


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_shipped_recipe_loads_strictly(path):
    cfg = load_config(path)
    stages = expand_stages(cfg)
    assert stages and all(s.eval.metrics for s in stages)
    assert cfg.name == path.stem


@pytest.mark.timeout(900)
@pytest.mark.parametrize("path", CPU_RECIPES, ids=[p.stem for p in CPU_RECIPES])
def test_shipped_recipe_trains_and_evaluates_with_tiny_parts(path, tmp_path):
    cfg = config_from_dict(tiny_recipe(path, tmp_path), source=str(path))
    report = run_recipe(cfg, progress=False)
    for stage in expand_stages(cfg):
        assert (Path(stage.train.output_dir) / "final" / "model.safetensors").is_file()
    assert report.metrics["num_samples"] == 4
    for metric in cfg.eval.metrics:
        assert any(key.lower().startswith(metric.split("_")[0]) for key in report.metrics["metrics"]), metric
    assert report.paths["report"].is_file() and "Timing:" in report.markdown


@pytest.mark.parametrize("strategy", ["fsdp", "deepspeed"])
def test_gpu_only_strategies_say_why_they_cannot_run_here(strategy, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = load_config(ROOT / "recipes" / "easy_vqa.yaml", [f"train.strategy={strategy}"])
    with pytest.raises(ConfigError, match=f"train.strategy: '{strategy}' needs"):
        build_strategy(cfg.train)
