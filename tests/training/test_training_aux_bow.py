"""The bag-of-words auxiliary loss (train.aux_bow): what it computes, what it trains, and that it is not saved."""

import math

import pytest
import torch

from mmrwkv.config import load_config
from mmrwkv.errors import ConfigError
from mmrwkv.multimodal import MultimodalRWKV
from mmrwkv.training.build import build_datasets, build_model
from mmrwkv.training.module import IGNORE, MultimodalLM
from mmrwkv.training.run import optim_settings, train_stage


def _module(tiny, tmp_path, **extra):
    cfg = load_config("recipes/easy_vqa.yaml", tiny(tmp_path / "run", **extra))
    torch.manual_seed(0)
    model = build_model(cfg)
    train_set, _, collate = build_datasets(cfg, model)
    batch = collate([train_set[i] for i in range(4)])
    return cfg, MultimodalLM(model, optim_settings(cfg, 10)), batch


def test_off_by_default_and_the_loss_is_the_language_model_loss(tiny, tmp_path):
    cfg, module, batch = _module(tiny, tmp_path)
    assert cfg.train.aux_bow == 0 and len(module.bow_heads) == 0
    loss = module._loss(batch)
    lm, bow = module.last_parts
    assert bow is None and torch.equal(loss, lm)


def test_bow_loss_is_the_cross_entropy_of_each_rows_reply_bag(tiny, tmp_path):
    _, module, batch = _module(tiny, tmp_path, **{"train.aux_bow": 0.5})
    assert list(module.bow_heads) == ["image"]
    loss = module._loss(batch)
    lm, bow = module.last_parts
    assert torch.allclose(loss, lm + 0.5 * bow)
    # the same number by hand, row by row
    model, ids, labels = module.model, batch["input_ids"], batch["labels"]
    x = model.embed(ids, batch["media"])
    expected = []
    for b in range(ids.shape[0]):
        slots = ids[b] == model.placeholder_ids["image"]
        words = labels[b][labels[b] != IGNORE]
        pooled = x[b][slots].mean(0)
        logp = torch.log_softmax(module.bow_heads["image"](pooled), -1)
        expected.append(-logp[words].mean())
    assert math.isclose(float(bow.detach()), float(torch.stack(expected).mean()), rel_tol=1e-5)


def test_bow_loss_reaches_the_encoder_and_its_head_is_optimised(tiny, tmp_path):
    _, module, batch = _module(tiny, tmp_path, **{"train.aux_bow": 1.0})
    module._loss(batch)
    _, bow = module.last_parts
    bow.backward()
    encoder_grads = [p.grad for p in module.model.encoders["image"].parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in encoder_grads)
    assert all(p.grad is None or not p.grad.any() for p in module.model.backbone.parameters())
    groups = module.configure_optimizers()["optimizer"].param_groups
    assert any(g["name"] == "bow_heads" for g in groups)


def test_no_head_when_the_media_path_is_frozen(tiny, tmp_path):
    _, module, _ = _module(tiny, tmp_path, **{"train.aux_bow": 1.0, "trainable.encoder": "frozen",
                                              "trainable.projector": "frozen"})
    assert len(module.bow_heads) == 0


def test_negative_weight_is_refused(tiny, tmp_path):
    with pytest.raises(ConfigError, match=r"train\.aux_bow: must be >= 0, got -1"):
        load_config("recipes/easy_vqa.yaml", tiny(tmp_path / "run", **{"train.aux_bow": -1}))


def test_training_with_it_saves_a_plain_model(tiny, tmp_path):
    cfg = load_config("recipes/easy_vqa.yaml", tiny(tmp_path / "run", **{"train.aux_bow": 1.0,
                                                                         "train.max_steps": 3}))
    result = train_stage(cfg, progress=False)
    model = MultimodalRWKV.load(result.final)
    assert not any("bow" in name for name in model.state_dict())
    assert any("train/bow_loss" in p.read_text() for p in result.log_dir.rglob("*.csv"))
