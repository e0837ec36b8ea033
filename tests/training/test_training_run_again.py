"""`mmrwkv run RECIPE` a second time: a finished stage is reused and says so (and how to start over); a recipe
whose training settings changed since the checkpoint is refused, naming the fields; evaluation-only changes
re-evaluate without retraining."""

import json
import shutil

import pytest

from mmrwkv.cli import main
from mmrwkv.config import load_config
from mmrwkv.errors import ConfigError
from mmrwkv.training.train import train_stage

RECIPE = "recipes/easy_vqa.yaml"


def _overrides(tiny, out, **extra):
    return tiny(out, **{"train.max_steps": 2, **extra})


def test_second_run_reuses_the_finished_stage_and_says_how_to_start_over(tmp_path, tiny, capsys):
    out = tmp_path / "run"
    assert main(["run", RECIPE, *_overrides(tiny, out), "--no-progress"]) == 0
    capsys.readouterr()
    weights = (out / "final" / "model.safetensors").stat().st_mtime_ns

    # an evaluation-only change (fewer samples) evaluates again without training again
    assert main(["run", RECIPE, *_overrides(tiny, out, **{"eval.max_samples": 4}), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"reusing the finished stage in {out / 'final'} (2 steps" in printed
    assert "--fresh" in printed
    assert json.loads((out / "eval-test" / "metrics.json").read_text())["num_samples"] == 4
    assert (out / "final" / "model.safetensors").stat().st_mtime_ns == weights

    # a training change is refused by name, old and new value side by side
    assert main(["run", RECIPE, *_overrides(tiny, out, **{"train.lr.backbone": 0.01}), "--no-progress"]) == 2
    err = capsys.readouterr().err
    recipe_lr = load_config(RECIPE).train.lr.backbone
    assert f"train.lr.backbone: {recipe_lr} -> 0.01" in err and "--fresh" in err and "step-00000002" in err
    assert (out / "final" / "model.safetensors").stat().st_mtime_ns == weights


def test_a_changed_recipe_is_refused_when_resuming_an_unfinished_stage(tmp_path, tiny):
    out = tmp_path / "run"
    cfg = load_config(RECIPE, _overrides(tiny, out, **{"train.checkpoint_every": 1}))
    train_stage(cfg, progress=False)
    # an interrupted stage: its newest checkpoint without the final model
    shutil.rmtree(out / "final")
    model = "{n_layer: 2, n_embd: 32, head_size: 16}"
    changed = load_config(RECIPE, _overrides(tiny, out, **{"train.checkpoint_every": 2, "data.seed": 5,
                                                            "model.overrides": model}))
    with pytest.raises(ConfigError) as err:
        train_stage(changed, resume=True, progress=False)
    message = str(err.value)
    assert "data.seed: 0 -> 5" in message and "model.overrides.n_layer: 1 -> 2" in message
    assert "train.checkpoint_every" not in message


def test_fresh_starts_a_finished_stage_over(tmp_path, tiny, capsys):
    out = tmp_path / "run"
    cfg = load_config(RECIPE, _overrides(tiny, out))
    train_stage(cfg, progress=False)
    (out / "final" / "marker").write_text("old")
    result = train_stage(cfg, resume=True, fresh=True, progress=False)
    assert result.steps == 2 and not (out / "final" / "marker").exists()
    assert "reusing" not in capsys.readouterr().out
