"""LoRA adapters on nn.Linear layers of any module, and per-part trainable modes (frozen | full | lora).

A LoRALinear keeps the original `weight` / `bias` parameters under their original names (so base checkpoints
still load) and adds `lora_A` (r, in) and `lora_B` (out, r); B starts at zero, so a fresh adapter changes nothing.
    y = x W^T + b + dropout(x) A^T B^T * (alpha / r)
"""

from __future__ import annotations

import fnmatch
import math

import torch
from torch import nn
from torch.nn import functional as F

from mmrwkv.errors import ConfigError

TRAINABLE_MODES = ("frozen", "full", "lora")


class LoRALinear(nn.Linear):
    """nn.Linear with a low-rank adapter; `merge()` folds the adapter into `weight`, `unmerge()` takes it out."""

    def __init__(self, base: nn.Linear, *, rank: int, alpha: float, dropout: float = 0.0):
        nn.Module.__init__(self)
        if rank < 1:
            raise ConfigError(f"LoRA rank must be >= 1, got {rank}")
        self.in_features, self.out_features = base.in_features, base.out_features
        # share the base parameters (same objects): tied weights and optimizer references stay valid
        self.weight = base.weight
        self.bias = base.bias
        self.rank, self.alpha = rank, alpha
        self.scaling = alpha / rank
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, **factory))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False

    def delta(self) -> torch.Tensor:
        """The adapter's weight update (out, in)."""
        return (self.lora_B @ self.lora_A) * self.scaling

    def effective_weight(self) -> torch.Tensor:
        """`weight` with the adapter folded in, differentiable in both (out, in): for code that reads a layer's
        weight instead of calling it (the native inference route, `mmrwkv.inference.engine.native_weights`). Dropout
        does not apply on this path."""
        return self.weight if self.merged else self.weight + self.delta().to(self.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in) -> (..., out)."""
        y = F.linear(x, self.weight, self.bias)
        if self.merged:
            return y
        return y + F.linear(F.linear(self.lora_dropout(x), self.lora_A), self.lora_B) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the adapter into `weight` (faster inference); idempotent."""
        if not self.merged:
            self.weight += self.delta().to(self.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Undo `merge` (up to rounding); idempotent."""
        if self.merged:
            self.weight -= self.delta().to(self.weight.dtype)
            self.merged = False

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, alpha={self.alpha}, merged={self.merged}"


def apply_lora(
    module: nn.Module,
    *,
    rank: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
    targets: tuple[str, ...] | list[str] = ("*",),
    exclude: tuple[str, ...] | list[str] = (),
) -> list[str]:
    """Replace every nn.Linear whose qualified name matches a `targets` glob (and no `exclude` glob) by a LoRALinear.

    Returns the names adapted; raises ConfigError when nothing matches. Does not change requires_grad: call
    `mark_only_lora_trainable` (or `set_trainable(module, "lora")`) for that.
    """
    adapted = []
    for name, child in list(module.named_modules()):
        if type(child) is not nn.Linear or not _matches(name, targets) or _matches(name, exclude):
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, attr, LoRALinear(child, rank=rank, alpha=alpha, dropout=dropout))
        adapted.append(name)
    if not adapted and not any(isinstance(m, LoRALinear) for m in module.modules()):
        linears = [n for n, m in module.named_modules() if type(m) is nn.Linear][:10]
        raise ConfigError(f"LoRA targets {list(targets)} match no nn.Linear layer; some layers: {linears}")
    return adapted


def _matches(name: str, patterns) -> bool:
    return any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(name.rsplit(".", 1)[-1], p) for p in patterns)


def lora_layers(module: nn.Module) -> dict[str, LoRALinear]:
    """All LoRALinear layers by qualified name."""
    return {name: m for name, m in module.named_modules() if isinstance(m, LoRALinear)}


def mark_only_lora_trainable(module: nn.Module) -> None:
    """requires_grad only on lora_A / lora_B parameters."""
    for name, param in module.named_parameters():
        param.requires_grad = name.rsplit(".", 1)[-1] in ("lora_A", "lora_B")


def merge_lora(module: nn.Module) -> None:
    """Merge every adapter into its base weight."""
    for layer in lora_layers(module).values():
        layer.merge()


def unmerge_lora(module: nn.Module) -> None:
    """Take every merged adapter back out of its base weight."""
    for layer in lora_layers(module).values():
        layer.unmerge()


def lora_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapter tensors (keys ending in lora_A / lora_B), for small adapter checkpoints."""
    return {k: v for k, v in module.state_dict().items() if k.rsplit(".", 1)[-1] in ("lora_A", "lora_B")}


def merged_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """`module.state_dict()` with every adapter folded into its base weight and the adapter keys left out: the
    keys and values of a plain model (no LoRA) that computes the same function. The module is not changed."""
    state = module.state_dict()
    for name, layer in lora_layers(module).items():
        prefix = f"{name}." if name else ""
        state[prefix + "weight"] = layer.effective_weight().detach()
        del state[prefix + "lora_A"], state[prefix + "lora_B"]
    return state


def lora_summary(module: nn.Module) -> dict | None:
    """{rank, alpha, layers} of the adapters in `module` (None without adapters): what a merged save records."""
    layers = lora_layers(module)
    if not layers:
        return None
    ranks = sorted({layer.rank for layer in layers.values()})
    alphas = sorted({layer.alpha for layer in layers.values()})
    return {"rank": ranks[0] if len(ranks) == 1 else ranks, "alpha": alphas[0] if len(alphas) == 1 else alphas,
            "layers": sorted(layers)}


def load_lora_state_dict(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load adapter tensors saved by `lora_state_dict`; missing or unexpected adapter keys raise ConfigError."""
    own = lora_state_dict(module)
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise ConfigError(f"LoRA state: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")
    if any(layer.merged for layer in lora_layers(module).values()):
        raise ConfigError("LoRA state: unmerge the adapters before loading new ones")
    module.load_state_dict(state, strict=False)


def set_trainable(module: nn.Module, mode: str, **lora_kwargs) -> nn.Module:
    """Set which parameters of `module` train: "frozen" (none), "full" (all), "lora" (adapters only).

    "lora" adds adapters first (keyword arguments go to `apply_lora`) unless the module already has some.
    Returns the module.
    """
    if mode not in TRAINABLE_MODES:
        raise ConfigError(f"trainable mode {mode!r}: use one of {', '.join(TRAINABLE_MODES)}")
    if lora_kwargs and mode != "lora":
        raise ConfigError(f"trainable mode {mode!r} takes no LoRA options, got {sorted(lora_kwargs)}")
    if mode == "lora":
        if not lora_layers(module) or lora_kwargs:
            apply_lora(module, **lora_kwargs)
        mark_only_lora_trainable(module)
    else:
        module.requires_grad_(mode == "full")
    return module
