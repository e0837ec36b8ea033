"""RWKVConfig validation, named sizes as data, and the from-scratch RWKV-7 init of the authors' scheme."""

from __future__ import annotations

import math

import pytest
import torch

from mmrwkv.errors import ConfigError
from mmrwkv.rwkv import RWKV, SIZES, RWKVConfig, config_for


def _params_on_meta(name: str) -> float:
    with torch.device("meta"):
        return RWKV(config_for(name)).num_parameters() / 1e9


@pytest.mark.parametrize(
    "name, billions",
    [("v7-0.1b", 0.19), ("v7-1.5b", 1.53), ("v7-2.9b", 2.95), ("v7-7.2b", 7.20), ("v6-world-1.6b", 1.60),
     ("v6-world-14b", 14.07), ("v5-world-3b", 3.06), ("v4-world-7b", 7.52)],
)
def test_named_sizes_have_their_published_parameter_counts(name, billions):
    assert _params_on_meta(name) == pytest.approx(billions, abs=0.01)


def test_every_named_size_builds_and_names_its_source():
    for name, size in SIZES.items():
        config = size.config()
        assert size.source, name
        assert config.vocab_size == (256 if name.endswith("tiny") else 65536)


def test_official_v7_lora_widths_are_kept_as_data():
    c = config_for("v7-1.5b")
    assert (c.n_layer, c.n_embd, c.dim_w, c.dim_a, c.dim_v, c.dim_g) == (24, 2048, 96, 96, 64, 256)
    assert c.n_head == 32 and c.dim_ffn == 4 * 2048


def test_config_for_overrides_fields_and_rejects_unknown_names():
    assert config_for("v7-tiny", n_layer=3).n_layer == 3
    with pytest.raises(ConfigError, match="unknown model size 'v9'.*v7-tiny"):
        config_for("v9")


def test_bad_config_values_raise_naming_the_field():
    with pytest.raises(ConfigError, match="version: '8'"):
        RWKVConfig(version="8", n_layer=1, n_embd=64, vocab_size=10)
    with pytest.raises(ConfigError, match="head_size: 48 does not divide n_embd 64"):
        RWKVConfig(version="7", n_layer=1, n_embd=64, vocab_size=10, head_size=48)
    with pytest.raises(ConfigError, match="n_layer: 0"):
        RWKVConfig(version="6", n_layer=0, n_embd=64, vocab_size=10)
    with pytest.raises(ConfigError, match=r"unknown RWKVConfig keys \['n_layers'\]"):
        RWKVConfig.from_dict({"version": "7", "n_layers": 2, "n_embd": 64, "vocab_size": 10})


def test_config_dict_round_trip():
    c = config_for("v6-tiny")
    assert RWKVConfig.from_dict(c.to_dict()) == c


def test_rwkv7_init_follows_the_authors_scheme():
    torch.manual_seed(0)
    model = RWKV(config_for("v7-tiny", n_layer=3))
    L, C = 3, 64
    assert model.emb.weight.abs().max() <= 1e-4
    head = model.head.weight  # (V, C) with V > C: orthogonal columns of norm gain
    gain = 0.5 * math.sqrt(256 / C)
    torch.testing.assert_close(head.T @ head, gain**2 * torch.eye(C), atol=1e-4, rtol=1e-4)
    for i, block in enumerate(model.blocks):
        att = block.att
        assert att.output.weight.abs().sum() == 0 and block.ffn.value.weight.abs().sum() == 0
        assert torch.all(att.k_a == 1.02) and torch.all(att.r_k == -0.04)
        torch.testing.assert_close(att.ln_x.weight, torch.full((C,), ((1 + i) / L) ** 0.7))
        assert att.x_r[0, 0, 0] == 1.0 - 0.0  # ddd = 0 at channel 0
        assert att.w0.min() >= -8.0 and att.w0.max() <= 3.0 + 1e-5  # (-6..0) + 0.5 + zigzag*2.5
        assert torch.all(att.w1 == 0) and att.w2.abs().max() > 0
    assert model.blocks[1].att.v0.mean().item() == pytest.approx(0.73, abs=0.01)
    assert model.blocks[0].att.a0.mean().item() == pytest.approx(-0.19, abs=0.01)


@pytest.mark.parametrize("name", ["v4-tiny", "v5-tiny", "v6-tiny"])
def test_earlier_generations_init_with_decay_and_mix_in_range(name):
    model = RWKV(config_for(name))
    for block in model.blocks:
        decay = block.att.time_decay
        assert decay.min() >= -6.0 and decay.max() <= 3.0 and decay.std() > 0
    mixes = [p for n, p in model.named_parameters() if "time_mix" in n or "time_maa_" in n and p.dim() == 3]
    assert mixes and all(-0.31 <= p.min() and p.max() <= 1.31 for p in mixes)
    with torch.no_grad():
        logits, _ = model(torch.randint(0, 256, (1, 4)))
    assert torch.isfinite(logits).all()
