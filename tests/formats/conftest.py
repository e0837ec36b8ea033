"""Shared fixture of the format tests: random checkpoints in the layout of the authors' released `.pth` files."""

import pytest
import torch

C, N, L = 128, 64, 3
H = C // N


def _shapes(version: str, V: int) -> dict[str, tuple]:
    """key -> shape of a release checkpoint, in the order the authors' training code saves them."""
    mix = (1, 1, C)
    keys = {"emb.weight": (V, C)}
    for i in range(L):
        b, a, f = f"blocks.{i}.", f"blocks.{i}.att.", f"blocks.{i}.ffn."
        if i == 0:
            keys.update({b + "ln0.weight": (C,), b + "ln0.bias": (C,)})
        keys.update({b + p: (C,) for p in ("ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias")})
        if version == "7":
            keys.update({a + f"x_{n}": mix for n in "rwkvag"})
            keys.update({a + "w0": mix, a + "w1": (C, 64), a + "w2": (64, C), a + "a0": mix, a + "a1": (C, 64),
                         a + "a2": (64, C)})
            if i > 0:
                keys.update({a + "v0": mix, a + "v1": (C, 32), a + "v2": (32, C)})
            keys.update({a + "g1": (C, 128), a + "g2": (128, C), a + "k_k": mix, a + "k_a": mix, a + "r_k": (H, N)})
        elif version == "6":
            keys.update({a + f"time_maa_{n}": mix for n in "xwkvrg"})
            keys.update({a + "time_maa_w1": (C, 5 * 32), a + "time_maa_w2": (5, 32, C), a + "time_decay": mix,
                         a + "time_decay_w1": (C, 64), a + "time_decay_w2": (64, C), a + "time_faaaa": (H, N)})
        elif version == "5.2":
            keys.update({a + f"time_mix_{n}": mix for n in "kvrg"})
            keys.update({a + "time_decay": (H, N), a + "time_faaaa": (H, N)})
        else:
            keys.update({a + "time_decay": (C,), a + "time_first": (C,)})
            keys.update({a + f"time_mix_{n}": mix for n in "kvr"})
        keys.update({a + f"{n}.weight": (C, C) for n in ("receptance", "key", "value", "output")})
        if version in ("5.2", "6"):
            keys[a + "gate.weight"] = (C, C)
        if version != "4":
            keys.update({a + "ln_x.weight": (C,), a + "ln_x.bias": (C,)})
        ffn = int(3.5 * C) if version in ("5.2", "6") else 4 * C
        keys.update({f + "x_k": mix} if version == "7" else {f + f"time_{'maa' if version == '6' else 'mix'}_{n}": mix
                                                              for n in "kr"})
        keys.update({f + "key.weight": (ffn, C), f + "value.weight": (C, ffn)})
        if version != "7":
            keys[f + "receptance.weight"] = (C, C)
    keys.update({"ln_out.weight": (C,), "ln_out.bias": (C,), "head.weight": (V, C)})
    return keys


def release_checkpoint(version: str, dtype: torch.dtype, seed: int = 0, vocab: int = 65536) -> dict[str, torch.Tensor]:
    """Random values of trained magnitudes, stored in `dtype` like the released files."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in _shapes(version, vocab).items():
        if key.endswith(("ln0.weight", "ln1.weight", "ln2.weight", "ln_x.weight", "ln_out.weight")):
            value = 1 + 0.2 * torch.randn(shape, generator=gen)
        elif key.endswith(("time_decay", "w0")):
            value = -1 + torch.randn(shape, generator=gen)
        elif len(shape) == 3 and shape[:2] == (1, 1):
            value = torch.rand(shape, generator=gen)
        elif len(shape) >= 2 and not key.endswith(("time_faaaa", "r_k")):
            value = torch.randn(shape, generator=gen) * (1.5 / shape[-1] ** 0.5)
        else:
            value = 0.5 * torch.randn(shape, generator=gen)
        out[key] = value.to(dtype)
    return out


@pytest.fixture(scope="session")
def release_sd():
    """Factory: release_sd(version, dtype, seed=0, vocab=65536) -> state_dict as the authors release it."""
    return release_checkpoint
