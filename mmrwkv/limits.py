"""Resource limits checked before anything is allocated: model sizes from a config or a checkpoint's keys, and the
audio sample rates the media loaders accept. One place, so that every loader refuses the same inputs the same way.

Each limit has a default that fits a workstation and an environment variable that raises it (named in the error):
`MMRWKV_MAX_PARAMS`, `MMRWKV_MAX_MODEL_BYTES`, `MMRWKV_MAX_AUDIO_RATE`. `override(...)` sets them for a block.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from fractions import Fraction

from mmrwkv.errors import ConfigError

# the largest released RWKV models have ~14e9 parameters
DEFAULT_MAX_PARAMS = 20_000_000_000
DEFAULT_MAX_MODEL_BYTES = 80 * 2**30
# 384 kHz is the highest rate audio interfaces record at; the loaders resample anything up to it
DEFAULT_MAX_AUDIO_RATE = 384_000
MIN_AUDIO_RATE = 100
# frames x channels decoded from one clip (float32: 4 bytes each)
MAX_AUDIO_SAMPLES = 48_000_000
# a resampling ratio p/q is kept within this relative error (0.01 % speed/pitch: far below what people hear) ...
RATE_TOLERANCE = 1e-4
# ... with q at most this: the resampler's filter bank holds q rows of ~p taps
MAX_RATE_DENOMINATOR = 1000
# an exact ratio p/q is kept when its filter bank (~p * q taps) is at most this big (44100 -> 16000: 441 * 160)
MAX_EXACT_TAPS = 2_000_000

_ENV = {
    "max_params": ("MMRWKV_MAX_PARAMS", DEFAULT_MAX_PARAMS),
    "max_model_bytes": ("MMRWKV_MAX_MODEL_BYTES", DEFAULT_MAX_MODEL_BYTES),
    "max_audio_rate": ("MMRWKV_MAX_AUDIO_RATE", DEFAULT_MAX_AUDIO_RATE),
}
_overrides: dict[str, int] = {}


def get(name: str) -> int:
    """The current value of a limit: `override` > its environment variable > the default."""
    if name in _overrides:
        return _overrides[name]
    env, default = _ENV[name]
    raw = os.environ.get(env)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(float(raw))
    except ValueError:
        raise ConfigError(f"{env}={raw!r}: not a number") from None
    if value <= 0:
        raise ConfigError(f"{env}={raw!r}: must be positive")
    return value


@contextlib.contextmanager
def override(**limits: int) -> Iterator[None]:
    """Set limits (max_params, max_model_bytes, max_audio_rate) for the duration of a `with` block."""
    unknown = set(limits) - set(_ENV)
    if unknown:
        raise ValueError(f"unknown limits {sorted(unknown)}; known: {sorted(_ENV)}")
    saved = dict(_overrides)
    _overrides.update(limits)
    try:
        yield
    finally:
        _overrides.clear()
        _overrides.update(saved)


def model_parameters(config) -> int:
    """The parameter count of an RWKV model of `config`, from the sizes alone (two one- and two-layer models on
    the meta device: nothing is allocated, and the cost does not grow with n_layer or vocab_size)."""
    import dataclasses

    import torch

    from mmrwkv.rwkv import RWKV

    counts = []
    for layers in (1, 2):
        with torch.device("meta"):
            model = RWKV(dataclasses.replace(config, n_layer=layers))
        counts.append(sum(p.numel() for p in model.state_dict().values()))
    return counts[0] + (config.n_layer - 1) * (counts[1] - counts[0])


def check_model_size(config, source: str, *, bytes_per_param: int = 4) -> int:
    """Refuse a model whose parameter count or weight bytes (at `bytes_per_param`) are over the limits, before
    anything is allocated; returns the parameter count. The error names `source`, the sizes and how to raise it."""
    params = model_parameters(config)
    max_params, max_bytes = get("max_params"), get("max_model_bytes")
    sizes = f"n_layer={config.n_layer}, n_embd={config.n_embd}, vocab_size={config.vocab_size}"
    if params > max_params:
        raise ConfigError(
            f"{source}: {params:,} parameters ({sizes}) is over the limit of {max_params:,} "
            f"(set MMRWKV_MAX_PARAMS to raise it)"
        )
    if params * bytes_per_param > max_bytes:
        raise ConfigError(
            f"{source}: {params * bytes_per_param / 2**30:.1f} GiB of weights ({params:,} parameters, {sizes}) is "
            f"over the limit of {max_bytes / 2**30:.1f} GiB (set MMRWKV_MAX_MODEL_BYTES to raise it)"
        )
    return params


def check_audio_rate(rate: int, name: str) -> None:
    """Refuse a sample rate outside [MIN_AUDIO_RATE, max_audio_rate] (a MediaError naming the clip)."""
    from mmrwkv.errors import MediaError

    top = get("max_audio_rate")
    if rate < MIN_AUDIO_RATE or rate > top:
        raise MediaError(
            f"audio {name}: sample rate {rate} Hz is outside {MIN_AUDIO_RATE}..{top} Hz "
            "(set MMRWKV_MAX_AUDIO_RATE to raise the top)"
        )


def resample_ratio(rate: int, target: int) -> tuple[int, int]:
    """The resampling ratio (p, q) for `rate` -> `target`: the exact one when its filter bank (q rows of ~p taps) is
    small, as for every common rate (44100 -> 16000: 441/160); else the p/q of smallest q <= MAX_RATE_DENOMINATOR
    within RATE_TOLERANCE of it, where the exact ratio of an odd rate (48001 -> 16000) would take a bank of 16000
    rows of 48001 taps (3 GB)."""
    exact = Fraction(rate, target)
    if exact.numerator * exact.denominator <= MAX_EXACT_TAPS:
        return exact.numerator, exact.denominator
    bound = 1
    while bound < MAX_RATE_DENOMINATOR:
        near = exact.limit_denominator(bound)
        if abs(near - exact) <= RATE_TOLERANCE * exact:
            return near.numerator, near.denominator
        bound *= 2
    near = exact.limit_denominator(MAX_RATE_DENOMINATOR)
    return near.numerator, near.denominator


# M_ARENA_MAX in glibc's malloc.h
_M_ARENA_MAX = -8


def bound_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas for a long-running server (True when set). glibc gives each thread that allocates
    under contention an arena that reserves 64 MiB of address space; a Gradio or HTTP server's worker threads
    plus torch's then reserve gigabytes, and under a virtual-memory limit (`ulimit -v`) the server dies on a small
    allocation. A server's heavy data lives in torch tensors, so two arenas cost nothing measurable."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        # not glibc (macOS, musl): nothing to cap
        return False
    return bool(mallopt(_M_ARENA_MAX, int(arenas)))
