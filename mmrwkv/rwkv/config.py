"""`RWKVConfig` and the named model sizes (as data, each entry naming its source).

Notation: L layers, C channels (n_embd), H heads of N = head_size channels, F = dim_ffn, V vocabulary.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from mmrwkv.errors import ConfigError
from mmrwkv.names import VERSIONS

LN0_DTYPES = (None, "bfloat16", "float16")


@dataclass
class RWKVConfig:
    """Shape of one RWKV model. `None` widths get the authors' defaults for the generation.

    version: "4" | "5.0" | "5.1" | "5.2" | "6" | "7".
    dim_ffn: ChannelMix hidden width (4C for v4/v7, 3.5C rounded down to 32 for v5/v6).
    v6 LoRA widths: dim_maa (per ddlerp branch), dim_decay. v7 LoRA widths: dim_w, dim_a, dim_v, dim_g.
    ln0_dtype: "bfloat16" | "float16" | None: the dtype ln0's output is rounded to (`RWKV.apply_ln0`), as the
    authors' package computes ln0 for an RWKV-4/5/6 file stored in that dtype; kept so that our format round-trips.
    """

    version: str
    n_layer: int
    n_embd: int
    vocab_size: int
    head_size: int = 64
    dim_ffn: int | None = None
    dim_maa: int | None = None
    dim_decay: int | None = None
    dim_w: int | None = None
    dim_a: int | None = None
    dim_v: int | None = None
    dim_g: int | None = None
    ln0_dtype: str | None = None

    def __post_init__(self) -> None:
        self.version = str(self.version)
        if self.version not in VERSIONS:
            raise ConfigError(f"RWKVConfig.version: {self.version!r} is not one of {', '.join(VERSIONS)}")
        for name in ("n_layer", "n_embd", "vocab_size", "head_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"RWKVConfig.{name}: {value!r} must be a positive integer")
        if self.version != "4" and self.n_embd % self.head_size:
            raise ConfigError(
                f"RWKVConfig.head_size: {self.head_size} does not divide n_embd {self.n_embd} (version {self.version})"
            )
        if self.ln0_dtype not in LN0_DTYPES:
            raise ConfigError(
                f"RWKVConfig.ln0_dtype: {self.ln0_dtype!r} is not one of {', '.join(map(repr, LN0_DTYPES))}"
            )
        if self.ln0_dtype is not None and self.version == "7":
            # the package casts RWKV-7 weights before ln0, and the native one-token step has no such rounding
            raise ConfigError(f"RWKVConfig.ln0_dtype: {self.ln0_dtype!r} is for RWKV-4/5/6; RWKV-7 takes None")
        self._fill_defaults()

    def _fill_defaults(self) -> None:
        C = self.n_embd
        if self.dim_ffn is None:
            self.dim_ffn = 4 * C if self.version in ("4", "7") else int(3.5 * C) // 32 * 32
        if self.version == "6":
            self.dim_maa = self.dim_maa or (64 if C >= 4096 else 32)
            self.dim_decay = self.dim_decay or (128 if C >= 4096 else 64)
        if self.version == "7":
            # The RWKV-7 demo's width rule (rounded to 32, at least 32); loaders read real widths from tensors.
            self.dim_w = self.dim_w or _lora_width(1.8 * C**0.5)
            self.dim_a = self.dim_a or _lora_width(1.8 * C**0.5)
            self.dim_v = self.dim_v or _lora_width(1.3 * C**0.5)
            self.dim_g = self.dim_g or _lora_width(0.6 * C**0.8)

    @property
    def n_head(self) -> int:
        """Number of heads H (C for v4, whose WKV is per channel)."""
        return self.n_embd if self.version == "4" else self.n_embd // self.head_size

    @property
    def generation(self) -> int:
        """4, 5, 6 or 7 (the 5.x sub-versions share generation 5)."""
        return int(float(self.version))

    def to_dict(self) -> dict:
        """Plain JSON-able dict; `RWKVConfig.from_dict` reads it back."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, *, source: str = "config") -> RWKVConfig:
        """Strict: unknown keys raise ConfigError naming them and the valid ones."""
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - valid)
        if unknown:
            raise ConfigError(f"{source}: unknown RWKVConfig keys {unknown}; valid keys: {sorted(valid)}")
        return cls(**data)


def _lora_width(x: float) -> int:
    return max(32, int(round(x / 32)) * 32)


@dataclass(frozen=True)
class ModelSize:
    """A named size: the config fields plus where the numbers come from."""

    name: str
    source: str
    fields: dict = field(default_factory=dict)

    def config(self, **overrides) -> RWKVConfig:
        return RWKVConfig(**{**self.fields, **overrides})


_TINY = "test size (ours)"
_V7_CARD = "RWKV_SPEC.md: official x070 checkpoints (BlinkDL/rwkv-7-world)"
_V7_CFG = "RWKV_SPEC.md: public x070 configs; LoRA widths from the x070 demo rule"
_V4_CARD = "BlinkDL/rwkv-4-world model card"
_V5_CARD = "BlinkDL/rwkv-5-world model card"
_V6_CARD = "BlinkDL/rwkv-6-world model card"

_SIZE_LIST = [
    ModelSize("v4-tiny", _TINY, dict(version="4", n_layer=2, n_embd=64, vocab_size=256)),
    ModelSize("v5-tiny", _TINY, dict(version="5.2", n_layer=2, n_embd=64, vocab_size=256, head_size=16)),
    ModelSize(
        "v6-tiny", _TINY, dict(version="6", n_layer=2, n_embd=64, vocab_size=256, head_size=16, dim_maa=8, dim_decay=16)
    ),
    ModelSize(
        "v7-tiny",
        _TINY,
        dict(version="7", n_layer=2, n_embd=64, vocab_size=256, head_size=16, dim_w=16, dim_a=16, dim_v=8, dim_g=16),
    ),
    ModelSize(
        "v7-0.1b",
        _V7_CARD,
        dict(version="7", n_layer=12, n_embd=768, vocab_size=65536, dim_w=64, dim_a=64, dim_v=32, dim_g=128),
    ),
    ModelSize(
        "v7-0.4b",
        _V7_CARD,
        dict(version="7", n_layer=24, n_embd=1024, vocab_size=65536, dim_w=64, dim_a=64, dim_v=32, dim_g=128),
    ),
    ModelSize(
        "v7-1.5b",
        _V7_CARD,
        dict(version="7", n_layer=24, n_embd=2048, vocab_size=65536, dim_w=96, dim_a=96, dim_v=64, dim_g=256),
    ),
    ModelSize("v7-2.9b", _V7_CFG, dict(version="7", n_layer=32, n_embd=2560, vocab_size=65536)),
    ModelSize("v7-7.2b", _V7_CFG, dict(version="7", n_layer=32, n_embd=4096, vocab_size=65536)),
    ModelSize("v4-world-0.1b", _V4_CARD, dict(version="4", n_layer=12, n_embd=768, vocab_size=65536)),
    ModelSize("v4-world-0.4b", _V4_CARD, dict(version="4", n_layer=24, n_embd=1024, vocab_size=65536)),
    ModelSize("v4-world-1.5b", _V4_CARD, dict(version="4", n_layer=24, n_embd=2048, vocab_size=65536)),
    ModelSize("v4-world-3b", _V4_CARD, dict(version="4", n_layer=32, n_embd=2560, vocab_size=65536)),
    ModelSize("v4-world-7b", _V4_CARD, dict(version="4", n_layer=32, n_embd=4096, vocab_size=65536)),
    ModelSize("v5-world-0.4b", _V5_CARD, dict(version="5.2", n_layer=24, n_embd=1024, vocab_size=65536)),
    ModelSize("v5-world-1.5b", _V5_CARD, dict(version="5.2", n_layer=24, n_embd=2048, vocab_size=65536)),
    ModelSize("v5-world-3b", _V5_CARD, dict(version="5.2", n_layer=32, n_embd=2560, vocab_size=65536)),
    ModelSize("v5-world-7b", _V5_CARD, dict(version="5.2", n_layer=32, n_embd=4096, vocab_size=65536)),
    ModelSize("v6-world-1.6b", _V6_CARD, dict(version="6", n_layer=24, n_embd=2048, vocab_size=65536)),
    ModelSize("v6-world-3b", _V6_CARD, dict(version="6", n_layer=32, n_embd=2560, vocab_size=65536)),
    ModelSize("v6-world-7b", _V6_CARD, dict(version="6", n_layer=32, n_embd=4096, vocab_size=65536)),
    ModelSize("v6-world-14b", _V6_CARD, dict(version="6", n_layer=61, n_embd=4096, vocab_size=65536)),
]

SIZES: dict[str, ModelSize] = {size.name: size for size in _SIZE_LIST}


def config_for(name: str, **overrides) -> RWKVConfig:
    """The config of a named size, with field overrides (`config_for("v7-tiny", n_layer=3)`)."""
    if name not in SIZES:
        raise ConfigError(f"unknown model size {name!r}; known sizes: {', '.join(SIZES)}")
    return SIZES[name].config(**overrides)
