"""Random checkpoints in the official `.pth` layout, written from the key/shape tables of RWKV_SPEC.md
(independently of our modules, so the loader is tested against the format, not against itself)."""

from __future__ import annotations

import pytest
import torch


def _block_keys(version: str, C: int, H: int, N: int, F: int, layer: int, lora: dict) -> dict[str, tuple]:
    """key -> shape of one block's official tensors."""
    a, f = f"blocks.{layer}.att.", f"blocks.{layer}.ffn."
    keys = {f"blocks.{layer}.{n}.{p}": (C,) for n in ("ln1", "ln2") for p in ("weight", "bias")}
    if layer == 0:
        keys.update({"blocks.0.ln0.weight": (C,), "blocks.0.ln0.bias": (C,)})
    for name in ("key", "value", "receptance", "output"):
        keys[a + name + ".weight"] = (C, C)
    keys[f + "key.weight"] = (F, C)
    keys[f + "value.weight"] = (C, F)
    if version != "7":
        keys[f + "receptance.weight"] = (C, C)
    if version != "4":
        keys.update({a + "ln_x.weight": (C,), a + "ln_x.bias": (C,)})
    if version in ("5.1", "5.2", "6"):
        keys[a + "gate.weight"] = (C, C)
    keys.update(_time_keys(version, a, f, C, H, N, layer, lora))
    return keys


def _time_keys(version, a, f, C, H, N, layer, lora) -> dict[str, tuple]:
    mix = (1, 1, C)
    if version == "4":
        return {a + "time_decay": (C,), a + "time_first": (C,), a + "time_mix_k": mix, a + "time_mix_v": mix,
                a + "time_mix_r": mix, f + "time_mix_k": mix, f + "time_mix_r": mix}
    if version.startswith("5"):
        keys = {a + "time_mix_k": mix, a + "time_mix_v": mix, a + "time_mix_r": mix,
                f + "time_mix_k": mix, f + "time_mix_r": mix}
        if version != "5.0":
            keys[a + "time_mix_g"] = mix
        if version == "5.2":
            keys.update({a + "time_decay": (H, N), a + "time_faaaa": (H, N)})
        else:
            keys.update({a + "time_decay": (H,), a + "time_first": (H,)})
        return keys
    if version == "6":
        D, Dd = lora["maa"], lora["decay"]
        keys = {a + f"time_maa_{n}": mix for n in "xwkvrg"}
        keys.update({a + "time_maa_w1": (C, 5 * D), a + "time_maa_w2": (5, D, C), a + "time_decay": mix,
                     a + "time_decay_w1": (C, Dd), a + "time_decay_w2": (Dd, C), a + "time_faaaa": (H, N),
                     f + "time_maa_k": mix, f + "time_maa_r": mix})
        return keys
    keys = {a + f"x_{n}": mix for n in "rwkvag"}
    keys.update({a + "k_k": mix, a + "k_a": mix, a + "r_k": (H, N), f + "x_k": mix})
    for p, D in (("w", lora["w"]), ("a", lora["a"]), ("v", lora["v"]), ("g", lora["g"])):
        if p != "g":
            keys[a + p + "0"] = mix
        keys.update({a + p + "1": (C, D), a + p + "2": (D, C)})
    return keys


def _value(key: str, shape: tuple, C: int) -> torch.Tensor:
    """Random values of a magnitude each parameter plausibly has in a trained model."""
    if key.endswith(("ln0.weight", "ln1.weight", "ln2.weight", "ln_x.weight", "ln_out.weight")):
        return 1 + 0.2 * torch.randn(shape)
    if key.endswith(("time_decay", "w0")):
        return -1.0 + torch.randn(shape)
    if shape == (1, 1, C):
        return torch.rand(shape)
    if len(shape) >= 2 and not key.endswith(("time_faaaa", "r_k")):
        return torch.randn(shape) * (1.5 / C**0.5)
    return 0.5 * torch.randn(shape)


def make_official(version: str, *, n_layer=2, n_embd=128, head_size=64, vocab=512, seed=0,
                  lora=None, layer0_v=True) -> dict[str, torch.Tensor]:
    """A random official-layout state_dict (fp32) for `version` ("4", "5.0", "5.1", "5.2", "6", "7")."""
    C, N = n_embd, head_size
    H = C // N
    F = 4 * C if version in ("4", "7") else int(3.5 * C) // 32 * 32
    lora = lora or {"maa": 16, "decay": 32, "w": 32, "a": 32, "v": 16, "g": 32}
    keys = {"emb.weight": (vocab, C), "ln_out.weight": (C,), "ln_out.bias": (C,), "head.weight": (vocab, C)}
    for layer in range(n_layer):
        keys.update(_block_keys(version, C, H, N, F, layer, lora))
    if version == "7" and not layer0_v:
        keys = {k: s for k, s in keys.items() if not k.startswith(("blocks.0.att.v0", "blocks.0.att.v1",
                                                                   "blocks.0.att.v2"))}
    torch.manual_seed(seed)
    return {k: _value(k, s, C).contiguous() for k, s in keys.items()}


@pytest.fixture
def official_sd():
    """Factory: official_sd(version, **sizes) -> state_dict in the official layout."""
    return make_official


TINY = {"4": "v4-tiny", "5.0": "v5-tiny", "5.1": "v5-tiny", "5.2": "v5-tiny", "6": "v6-tiny", "7": "v7-tiny"}
VERSIONS = list(TINY)


def make_random_model(version: str, **overrides):
    """A tiny model of `version` whose parameters are all perturbed, so no branch is silenced by a zero init."""
    from mmrwkv.rwkv import RWKV, config_for

    torch.manual_seed(0)
    model = RWKV(config_for(TINY[version], version=version, **overrides))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


@pytest.fixture
def random_model():
    """Factory: random_model(version, **config overrides) -> RWKV in eval mode."""
    return make_random_model
