"""LoRA: zero-init B keeps outputs, targets by name pattern, only adapters train, merge/unmerge, adapter state_dict."""

import pytest
import torch
from torch import nn

from mmrwkv.errors import ConfigError
from mmrwkv.lora import (
    LoRALinear,
    apply_lora,
    load_lora_state_dict,
    lora_layers,
    lora_state_dict,
    mark_only_lora_trainable,
    merge_lora,
    set_trainable,
    unmerge_lora,
)


class Block(nn.Module):
    def __init__(self, d=8):
        super().__init__()
        self.key = nn.Linear(d, d, bias=False)
        self.value = nn.Linear(d, d)
        self.ln = nn.LayerNorm(d)

    def forward(self, x):
        return self.ln(x + self.value(torch.relu(self.key(x))))


class Toy(nn.Module):
    def __init__(self, d=8, layers=2):
        super().__init__()
        self.blocks = nn.ModuleList(Block(d) for _ in range(layers))
        self.head = nn.Linear(d, 5, bias=False)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def _train_adapters(model, steps=3):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(4, 3, 8)).pow(2).mean().backward()
        opt.step()


def test_fresh_adapter_does_not_change_outputs():
    model = Toy()
    x = torch.randn(2, 3, 8)
    before = model(x)
    apply_lora(model, rank=4, alpha=8)
    assert torch.equal(model(x), before)


def test_targets_match_names_and_base_keys_are_unchanged():
    model = Toy()
    base_keys = set(model.state_dict())
    adapted = apply_lora(model, rank=2, targets=["key", "blocks.1.value"])
    assert adapted == ["blocks.0.key", "blocks.1.key", "blocks.1.value"]
    assert set(lora_layers(model)) == set(adapted)
    assert base_keys <= set(model.state_dict())
    assert not isinstance(model.head, LoRALinear)


def test_base_parameters_are_shared_not_copied():
    model = Toy()
    weight = model.head.weight
    apply_lora(model, targets=["head"])
    assert model.head.weight is weight


def test_only_adapters_train_and_base_stays_fixed():
    model = Toy()
    set_trainable(model, "lora", rank=2, alpha=4, targets=["key", "value"])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith(("lora_A", "lora_B")) for n in trainable)
    base = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    x = torch.randn(2, 3, 8)
    before = model(x).detach()
    _train_adapters(model)
    assert all(torch.equal(p, base[n]) for n, p in model.named_parameters() if n in base)
    assert not torch.allclose(model(x), before)


def test_merge_matches_unmerged_output_and_unmerge_restores_weights():
    model = Toy()
    apply_lora(model, rank=4, alpha=8, dropout=0.1)
    mark_only_lora_trainable(model)
    _train_adapters(model)
    model.eval()
    x = torch.randn(2, 3, 8)
    original = model.blocks[0].key.weight.detach().clone()
    adapted = model(x)
    merge_lora(model)
    merge_lora(model)  # idempotent
    assert torch.allclose(model(x), adapted, atol=1e-5)
    assert not torch.allclose(model.blocks[0].key.weight, original)
    unmerge_lora(model)
    assert torch.allclose(model.blocks[0].key.weight, original, atol=1e-6)
    assert torch.allclose(model(x), adapted, atol=1e-5)


def test_adapter_state_dict_round_trip():
    model = Toy()
    apply_lora(model, rank=2)
    mark_only_lora_trainable(model)
    _train_adapters(model)
    state = lora_state_dict(model)
    assert state and all(k.endswith(("lora_A", "lora_B")) for k in state)
    fresh = Toy()
    fresh.load_state_dict({k: v for k, v in model.state_dict().items() if k not in state}, strict=False)
    apply_lora(fresh, rank=2)
    load_lora_state_dict(fresh, state)
    x = torch.randn(2, 3, 8)
    assert torch.allclose(fresh(x), model(x))
    with pytest.raises(ConfigError, match="missing keys"):
        load_lora_state_dict(fresh, {k: v for k, v in list(state.items())[1:]})


def test_bad_lora_options_raise():
    with pytest.raises(ConfigError, match="match no nn.Linear.*blocks.0.key"):
        apply_lora(Toy(), targets=["attention"])
    with pytest.raises(ConfigError, match="rank must be >= 1"):
        apply_lora(Toy(), rank=0)


def test_set_trainable_modes():
    model = Toy()
    set_trainable(model, "frozen")
    assert not any(p.requires_grad for p in model.parameters())
    set_trainable(model, "full")
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(ConfigError, match="trainable mode 'half'.*frozen, full, lora"):
        set_trainable(model, "half")
    with pytest.raises(ConfigError, match="takes no LoRA options"):
        set_trainable(model, "full", rank=4)
