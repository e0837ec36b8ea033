"""The bag-of-words auxiliary loss (train.aux_bow): what it computes, what it trains, and that it is not saved."""

import math

import pytest
import torch

from mmrwkv.config import load_config
from mmrwkv.errors import ConfigError
from mmrwkv.multimodal import MultimodalRWKV
from mmrwkv.training.build import build_datasets, build_model
from mmrwkv.training.module import IGNORE, MultimodalLM
from mmrwkv.training.train import optim_settings, train_stage


def _module(tiny, tmp_path, **extra):
    cfg = load_config("recipes/easy_vqa.yaml", tiny(tmp_path / "run", **extra))
    torch.manual_seed(0)
    model = build_model(cfg)
    train_set, _, collate = build_datasets(cfg, model)
    batch = collate([train_set[i] for i in range(4)])
    return cfg, MultimodalLM(model, optim_settings(cfg, 10)), batch


def test_off_and_the_loss_is_the_language_model_loss(tiny, tmp_path):
    from mmrwkv.config import TrainConfig

    assert TrainConfig().aux_bow == 0 and TrainConfig().lm_weight == 1
    cfg, module, batch = _module(tiny, tmp_path, **{"train.aux_bow": 0})
    assert len(module.bow_heads) == 0
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
    turn_end = set(model.tokenizer.encode("\n\n"))
    for b in range(ids.shape[0]):
        slots = ids[b] == model.placeholder_ids["image"]
        bag = batch["meta"][b]["bow"]
        # the media's bag holds at least this row's own reply words
        assert {t for t in labels[b].tolist() if t != IGNORE and t not in turn_end} <= set(bag)
        words = torch.tensor([t for t in bag if t not in turn_end])
        pooled = x[b][slots].mean(0)
        logp = torch.log_softmax(module.bow_heads["image"](pooled), -1)
        expected.append(-logp[words].mean())
    assert math.isclose(float(bow.detach()), float(torch.stack(expected).mean()), rel_tol=1e-5)


def test_media_bags_join_everything_said_about_one_image(tiny, tmp_path):
    from mmrwkv.data.sample import Sample
    from mmrwkv.training.build import media_bags

    _, module, _ = _module(tiny, tmp_path)
    tok = module.model.tokenizer
    a = Sample(id="a", images=["x.png"], question="what colour?", answers=["blue"])
    b = Sample(id="b", images=["x.png"], question="what shape?", answers=["circle"])
    c = Sample(id="c", images=["y.png"], question="what shape?", answers=["triangle"])
    bags = media_bags([a, b, c], tok)
    assert bags[("x.png",)] == sorted(set(tok.encode(" blue")) | set(tok.encode(" circle")))
    assert bags[("y.png",)] == sorted(set(tok.encode(" triangle")))


def test_without_media_bags_the_rows_replies_are_the_bag(tiny, tmp_path):
    _, module, batch = _module(tiny, tmp_path, **{"train.aux_bow": 1.0})
    for m in batch["meta"]:
        del m["bow"]
    counts = module._bags(batch)
    labels = batch["labels"]
    for b in range(labels.shape[0]):
        words = {t for t in labels[b].tolist() if t != IGNORE} - set(module.bow_skip.tolist())
        assert set(counts[b].nonzero()[:, 0].tolist()) == words


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


def test_bad_weights_are_refused(tiny, tmp_path):
    with pytest.raises(ConfigError, match=r"train\.aux_bow: must be >= 0, got -1"):
        load_config("recipes/easy_vqa.yaml", tiny(tmp_path / "run", **{"train.aux_bow": -1}))
    with pytest.raises(ConfigError, match=r"train\.lm_weight: 0 needs train\.aux_bow > 0"):
        load_config("recipes/easy_vqa.yaml", tiny(tmp_path / "run", **{"train.aux_bow": 0, "train.lm_weight": 0}))


def test_bow_only_stage_skips_the_backbone(tiny, tmp_path):
    _, module, batch = _module(tiny, tmp_path, **{"train.aux_bow": 2.0, "train.lm_weight": 0})
    loss = module._loss(batch)
    lm, bow = module.last_parts
    assert lm is None and torch.allclose(loss, 2.0 * bow)
    loss.backward()
    assert all(p.grad is None or not p.grad.any() for p in module.model.backbone.parameters())
    assert any(p.grad is not None and p.grad.any() for p in module.model.encoders["image"].parameters())


def test_training_with_it_saves_a_plain_model(tiny, tmp_path):
    cfg = load_config("recipes/easy_vqa.yaml", tiny(tmp_path / "run", **{"train.aux_bow": 1.0,
                                                                         "train.max_steps": 3}))
    result = train_stage(cfg, progress=False)
    model = MultimodalRWKV.load(result.final)
    assert not any("bow" in name for name in model.state_dict())
    assert any("train/bow_loss" in p.read_text() for p in result.log_dir.rglob("*.csv"))
