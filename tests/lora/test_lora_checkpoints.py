"""Saving a model that carries LoRA adapters writes a plain checkpoint (adapters merged) with the same outputs."""

import json

import pytest
import torch
from safetensors.torch import load_file

from mmrwkv.checkpoint import load_rwkv, save_official, save_rwkv
from mmrwkv.errors import CheckpointError
from mmrwkv.lora import lora_layers, set_trainable
from mmrwkv.multimodal import Media, MultimodalRWKV
from mmrwkv.rwkv import RWKV, config_for

CONFIG = {
    "backbone": {"size": "v7-tiny", "n_layer": 2, "n_embd": 32, "head_size": 16, "vocab_size": 65536},
    "tokenizer": "world",
    "encoders": {"image": {"name": "tiny_cnn", "kwargs": {"image_size": 16, "width": 8, "grid": 2}}},
    "projectors": {"image": {"kind": "mlp2x_gelu"}},
}


def _trained_adapters(module: torch.nn.Module, seed: int = 0) -> None:
    # a fresh adapter is neutral (B = 0); give every B values as training would
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(module).values():
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=gen) * 0.05)


def _lora_model() -> MultimodalRWKV:
    torch.manual_seed(0)
    model = MultimodalRWKV.from_config(CONFIG)
    set_trainable(model.backbone, "lora", rank=4, alpha=8.0)
    set_trainable(model.projectors, "lora", rank=2, alpha=2.0)
    _trained_adapters(model)
    return model.eval()


def _inputs(model):
    image = torch.rand(3, 16, 16)
    n = model.tokens_per_item("image", image)
    ids = torch.tensor([[5, *([model.placeholder_ids["image"]] * n), 11, 12, 13]])
    return ids, Media({"image": [image]})


def test_lora_model_saves_a_plain_checkpoint_that_loads_with_the_same_logits(tmp_path):
    model = _lora_model()
    ids, media = _inputs(model)
    weights_before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        expected, _ = model(ids, media)
    model.save(tmp_path / "ckpt")

    loaded = MultimodalRWKV.load(tmp_path / "ckpt").eval()
    with torch.no_grad():
        got, _ = loaded(ids, media)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert not lora_layers(loaded)
    stored = load_file(tmp_path / "ckpt" / "model.safetensors")
    assert not any("lora_" in k for k in stored)
    meta = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert meta["lora"]["merged"] is True and meta["lora"]["rank"] == [2, 4]
    assert "backbone.blocks.0.att.key" in meta["lora"]["layers"]
    # the model in memory keeps its unmerged adapters and its base weights
    assert all(not layer.merged for layer in lora_layers(model).values())
    for k, v in model.state_dict().items():
        assert torch.equal(v, weights_before[k]), k


def test_a_merged_checkpoint_takes_fresh_adapters_for_the_next_stage(tmp_path):
    model = _lora_model()
    ids, media = _inputs(model)
    model.save(tmp_path / "stage1")
    nxt = MultimodalRWKV.load(tmp_path / "stage1")
    set_trainable(nxt.backbone, "lora", rank=4, alpha=8.0)
    with torch.no_grad():
        torch.testing.assert_close(nxt(ids, media)[0], model(ids, media)[0], rtol=1e-5, atol=1e-5)
    assert all(p.requires_grad == ("lora_" in n) for n, p in nxt.backbone.named_parameters())


def test_rwkv_checkpoints_merge_adapters_too(tmp_path):
    torch.manual_seed(0)
    model = RWKV(config_for("v7-tiny", n_layer=2, n_embd=32, head_size=16, vocab_size=100)).eval()
    set_trainable(model, "lora", rank=4, alpha=8.0)
    _trained_adapters(model, seed=1)
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        expected, _ = model(ids)
        ours = load_rwkv(save_rwkv(model, tmp_path / "ours")).eval()
        official = load_rwkv(save_official(model, tmp_path / "model.pth")).eval()
        torch.testing.assert_close(ours(ids)[0], expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(official(ids)[0], expected, rtol=1e-5, atol=1e-5)


def test_a_checkpoint_with_raw_adapter_tensors_is_refused_by_name(tmp_path):
    from safetensors.torch import save_model

    model = _lora_model()
    model.save(tmp_path / "ckpt")
    # what an older mmrwkv wrote: the adapter tensors themselves
    save_model(model, str(tmp_path / "ckpt" / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: holds unmerged LoRA adapter tensors"):
        MultimodalRWKV.load(tmp_path / "ckpt")
