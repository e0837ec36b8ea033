"""From-scratch initialisation: the authors' RWKV-7 scheme and their earlier schemes for v4-v6.

Notation: C channels, N head size, L layers, V vocabulary; per layer l: ddd[i] = i/C, r0 = l/(L-1) (0 -> 1),
r1 = 1 - l/L (1 -> almost 0). These matter for from-scratch training; loaded checkpoints overwrite them.
"""

from __future__ import annotations

import math

import torch
from torch import nn


@torch.no_grad()
def init_weights(model) -> None:
    """Initialise every parameter of an `RWKV` model in place (emb, norms, blocks, head)."""
    config = model.config
    C, V = config.n_embd, config.vocab_size
    nn.init.uniform_(model.emb.weight, -1e-4, 1e-4)
    nn.init.orthogonal_(model.head.weight, gain=0.5 * math.sqrt(V / C) if V > C else 0.5)
    for module in model.modules():
        if isinstance(module, nn.LayerNorm | nn.GroupNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    init_block = _INIT[config.generation]
    for layer_id, block in enumerate(model.blocks):
        init_block(block, config, layer_id)


def _ratios(config, layer_id: int) -> tuple[torch.Tensor, float, float]:
    C, L = config.n_embd, config.n_layer
    ddd = (torch.arange(C, dtype=torch.float32) / C).view(1, 1, C)
    r0 = layer_id / (L - 1) if L > 1 else 0.0
    r1 = 1.0 - layer_id / L
    return ddd, r0, r1


def _zigzag(C: int, N: int) -> torch.Tensor:
    """Per-channel wave within each head, in [-1, 1], squared with its sign."""
    z = ((torch.arange(C) % N) - (N - 1) / 2) / max((N - 1) / 2, 1)
    return z * z.abs()


def _uniform(linear: nn.Linear, scale: float, C: int) -> None:
    nn.init.uniform_(linear.weight, -scale / math.sqrt(C), scale / math.sqrt(C))


def _init_v7(block, config, layer_id: int) -> None:
    C, N, L = config.n_embd, config.head_size, config.n_layer
    att, ffn = block.att, block.ffn
    ddd, r0, r1 = _ratios(config, layer_id)
    for name, power in (("r", 0.2), ("w", 0.9), ("k", 0.7), ("v", 0.7), ("a", 0.9), ("g", 0.2)):
        getattr(att, f"x_{name}").copy_(1.0 - ddd ** (power * r1))
    n = torch.arange(C, dtype=torch.float32)
    linear = n / (C - 1) - 0.5
    zigzag = _zigzag(C, N)
    decay_speed = -6 + 6 * (n / (C - 1)) ** (1 + r0**0.3)
    att.w0.copy_((decay_speed + 0.5 + zigzag * 2.5).view(1, 1, C))
    att.a0.copy_((-0.19 + zigzag * 0.3 + linear * 0.4).view(1, 1, C))
    att.k_k.copy_((0.71 - linear * 0.1).view(1, 1, C))
    att.k_a.fill_(1.02)
    att.r_k.fill_(-0.04)
    loras = [(att.w1, att.w2), (att.a1, att.a2), (att.g1, att.g2)]
    if layer_id > 0:
        att.v0.copy_((0.73 - linear * 0.4).view(1, 1, C))
        loras.append((att.v1, att.v2))
    for down, up in loras:
        nn.init.zeros_(down)
        nn.init.orthogonal_(up, gain=0.1)
    _uniform(att.receptance, 0.5, C)
    _uniform(att.key, 0.05, C)
    _uniform(att.value, 0.5, C)
    nn.init.zeros_(att.output.weight)
    att.ln_x.weight.copy_(torch.full((C,), ((1 + layer_id) / L) ** 0.7))
    ffn.x_k.copy_(1.0 - ddd ** (r1**4))
    _uniform(ffn.key, 0.5, C)
    nn.init.zeros_(ffn.value.weight)


def _decay_curve(config, layer_id: int, low: float, span: float) -> torch.Tensor:
    C = config.n_embd
    _, r0, _ = _ratios(config, layer_id)
    n = torch.arange(C, dtype=torch.float32)
    return low + span * (n / (C - 1)) ** (0.7 + 1.3 * r0)  # (C,)


def _init_linears(att, ffn) -> None:
    for name in ("receptance", "key", "value", "gate"):
        if hasattr(att, name):
            nn.init.orthogonal_(getattr(att, name).weight)
    nn.init.zeros_(att.output.weight)
    nn.init.orthogonal_(ffn.key.weight)
    nn.init.zeros_(ffn.receptance.weight)
    nn.init.zeros_(ffn.value.weight)


def _init_v4(block, config, layer_id: int) -> None:
    att, ffn = block.att, block.ffn
    ddd, r0, r1 = _ratios(config, layer_id)
    att.time_decay.copy_(_decay_curve(config, layer_id, -5.0, 8.0))
    zigzag = (torch.arange(config.n_embd) + 1) % 3 - 1
    att.time_first.copy_(math.log(0.3) + zigzag * 0.5)
    att.time_mix_k.copy_(ddd**r1)
    att.time_mix_v.copy_(ddd**r1 + 0.3 * r0)
    att.time_mix_r.copy_(ddd ** (0.5 * r1))
    ffn.time_mix_k.copy_(ddd**r1)
    ffn.time_mix_r.copy_(ddd**r1)
    _init_linears(att, ffn)


def _init_v5(block, config, layer_id: int) -> None:
    att, ffn = block.att, block.ffn
    ddd, r0, r1 = _ratios(config, layer_id)
    C, H = config.n_embd, config.n_head
    decay = _decay_curve(config, layer_id, -6.0, 5.0)
    if config.version == "5.2":
        att.time_decay.copy_(decay.view(H, -1))
        n = torch.arange(C, dtype=torch.float32)
        att.time_faaaa.copy_((r0 * (1 - n / (C - 1)) + ((n + 1) % 3 - 1) * 0.1).view(H, -1))
    else:
        att.time_decay.copy_(decay.view(H, -1).mean(dim=1))
        att.time_first.fill_(-3.0)
    att.time_mix_k.copy_(ddd**r1)
    att.time_mix_v.copy_(ddd**r1 + 0.3 * r0)
    att.time_mix_r.copy_(ddd ** (0.5 * r1))
    if hasattr(att, "time_mix_g"):
        att.time_mix_g.copy_(ddd ** (0.5 * r1))
    ffn.time_mix_k.copy_(ddd**r1)
    ffn.time_mix_r.copy_(ddd**r1)
    _init_linears(att, ffn)


def _init_v6(block, config, layer_id: int) -> None:
    att, ffn = block.att, block.ffn
    ddd, r0, r1 = _ratios(config, layer_id)
    C, H = config.n_embd, config.n_head
    for name in ("x", "w", "k"):
        getattr(att, f"time_maa_{name}").copy_(1.0 - ddd**r1)
    att.time_maa_v.copy_(1.0 - (ddd**r1 + 0.3 * r0))
    att.time_maa_r.copy_(1.0 - ddd ** (0.5 * r1))
    att.time_maa_g.copy_(1.0 - ddd ** (0.5 * r1))
    nn.init.zeros_(att.time_maa_w1)
    nn.init.uniform_(att.time_maa_w2, -0.01, 0.01)
    att.time_decay.copy_(_decay_curve(config, layer_id, -6.0, 5.0).view(1, 1, C))
    nn.init.zeros_(att.time_decay_w1)
    nn.init.uniform_(att.time_decay_w2, -0.01, 0.01)
    n = torch.arange(C, dtype=torch.float32)
    att.time_faaaa.copy_((r0 * (1 - n / (C - 1)) + ((n + 1) % 3 - 1) * 0.1).view(H, -1))
    ffn.time_maa_k.copy_(1.0 - ddd**r1)
    ffn.time_maa_r.copy_(1.0 - ddd**r1)
    _init_linears(att, ffn)


_INIT = {4: _init_v4, 5: _init_v5, 6: _init_v6, 7: _init_v7}
