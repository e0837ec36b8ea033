"""A tiny stage with validation (val loss and exact match every step, the best model kept, both curves drawn),
bf16 autocast, per-block activation checkpointing, length-grouped batches and over-long samples cut; and the
one-line refusals a run meets before training: too little data, an unknown val split, a tokenizer with more
ids than the checkpoint embeds."""

import csv

import pytest

from mmrwkv.config import load_config
from mmrwkv.errors import ConfigError, DataError
from mmrwkv.training.train import train_recipe

RECIPE = "recipes/easy_vqa.yaml"


def test_a_stage_validates_keeps_the_best_model_and_draws_val_loss(tmp_path, tiny, capsys):
    out = tmp_path / "run"
    cfg = load_config(
        RECIPE,
        tiny(
            out,
            **{
                "train.max_steps": 3,
                "data.val_split": "test",
                "train.eval_every": 1,
                "train.best_metric": "val/loss",
                "eval.val_max_samples": 8,
                "train.precision": "bf16-mixed",
                "train.grad_checkpoint": "true",
                "data.group_by_length": "true",
                # samples are 25-41 tokens: the longer ones are cut (or skipped when the answer is past the limit)
                "data.max_text_tokens": 33,
            },
        ),
    )
    (result,) = train_recipe(cfg, progress=False)
    assert result.steps == 3
    with (out / "logs" / "csv" / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    val = [(int(r["step"]), float(r["val/loss"])) for r in rows if r.get("val/loss")]
    assert [s for s, _ in val] == [1, 2, 3]
    assert all(r.get("val/exact_match") not in (None, "") for r in rows if r.get("val/loss"))
    assert (out / "best" / "model.safetensors").is_file() and (out / "curves.png").is_file()
    said = capsys.readouterr().out
    assert "WKV backend chunked (no CUDA GPU" in said
    assert "over data.max_text_tokens 33:" in said and "truncated" in said


def test_a_dataset_smaller_than_one_batch_is_refused_in_one_line(tmp_path, tiny):
    cfg = load_config(RECIPE, tiny(tmp_path / "run", **{"data.sizes": "{train: 3, test: 4}"}))
    with pytest.raises(ConfigError, match=r"has 3 training sample\(s\), fewer than one batch \(train.batch_size 4"):
        train_recipe(cfg, progress=False)


@pytest.mark.parametrize("kind", ["easy_vqa", "shapes"])
def test_an_unknown_val_split_is_refused_before_training(tmp_path, tiny, kind):
    extra = {"data.val_split": "no_such_split"}
    if kind == "shapes":
        extra.update(
            {
                "data.kind": "shapes",
                "data.root": str(tmp_path / "shapes"),
                "data.task": "vqa",
                "data.sizes": "{train: 8}",
            }
        )
    cfg = load_config(RECIPE, tiny(tmp_path / "run", **extra))
    with pytest.raises((ConfigError, DataError), match="no_such_split"):
        train_recipe(cfg, progress=False)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_a_tokenizer_with_more_ids_than_the_checkpoint_embeds_is_refused(tmp_path, tiny):
    from mmrwkv.cli import main

    assert main(["init", "v7-tiny", str(tmp_path / "tiny")]) == 0
    cfg = load_config(
        RECIPE,
        tiny(
            tmp_path / "run",
            **{"model.checkpoint": str(tmp_path / "tiny"), "model.tokenizer": "world", "model.size": "null"},
        ),
    )
    with pytest.raises(ConfigError, match=r"'world' has 65536 token ids but model.checkpoint .* embeds 256"):
        train_recipe(cfg, progress=False)
