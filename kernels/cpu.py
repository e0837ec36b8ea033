"""Native CPU decode for RWKV-7 at batch 1: every block of a one-token step (or of a short prompt piece's tokens,
one after another) in one C++ call, and the head's mat-vec.

Batch-1 decode reads every weight once per token, so its speed is set by how fast the mat-vecs stream weights and
by what runs between them. Sequence mode at one token (`mmrwkv.rwkv.v7`, the specification this is tested
against) spends as long on ~90 small ops per layer as on the mat-vecs; `cpu/decode7.cpp` fuses each elementwise
stage into one loop, updates the WKV state in one pass, and streams weights (fp32, or bf16 widened on the fly with
fp32 accumulate) with its own mat-vec loops. Built on first use (never at import) with
`torch.utils.cpp_extension.load` into the kernels' cache directory; a failed build is remembered and the callers
fall back to sequence mode (`mmrwkv.inference.engine`). MMRWKV_NATIVE_DECODE=0 turns it off.

One source builds to every ISA (`cpu/simd.h`: GCC vector extensions whose width follows the target): avx512,
avx2 (+FMA), portable (x86-64 baseline) and neon (aarch64), each its own module, chosen at run time by what the CPU
has (`isa`, /proc/cpuinfo; no higher than torch's own kernel level, which ATEN_CPU_CAPABILITY lowers);
MMRWKV_CPU_ISA=avx512|avx2|portable|neon picks one, refused in one line where the CPU cannot run it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import platform
import threading
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

ENV_VAR = "MMRWKV_NATIVE_DECODE"
ISA_VAR = "MMRWKV_CPU_ISA"
_NAME = "mmrwkv_decode_cpu"
SOURCE = Path(__file__).resolve().parent / "cpu" / "decode7.cpp"
# included by SOURCE: part of the build's digest
_HEADER_NAMES = ("simd.h", "matvec.h", "team.h", "buffers.h", "pick.h", "argmax.h", "vmath.h", "wkv.h", "plan.h")
HEADERS = tuple(SOURCE.parent / name for name in _HEADER_NAMES)
# one layer's parameters in the order decode7.cpp reads them, by their module names in a block (the checkpoint keys
# after "blocks.{i}.", as `mmrwkv.inference.engine.native_weights` gives them)
LAYER_PARAMS = (
    "ln1.weight", "ln1.bias", "att.x_r", "att.x_w", "att.x_k", "att.x_v", "att.x_a", "att.x_g", "att.w0", "att.w1",
    "att.w2", "att.a0", "att.a1", "att.a2", "att.v0", "att.v1", "att.v2", "att.g1", "att.g2", "att.k_k", "att.k_a",
    "att.r_k", "att.receptance.weight", "att.key.weight", "att.value.weight", "att.output.weight", "att.ln_x.weight",
    "att.ln_x.bias", "ln2.weight", "ln2.bias", "ffn.x_k", "ffn.key.weight", "ffn.value.weight",
)  # fmt: skip
_DTYPES = (torch.float32, torch.bfloat16)
_ABSENT = torch.empty(0)
# The ISA variants, best first: the compiler's target for each (simd.h takes its vector width from it) and the CPU
# flags (as /proc/cpuinfo names them) it needs. x86-64-v3 is AVX2 + FMA + F16C + BMI1/2 + LZCNT (abm) + MOVBE;
# v4 adds AVX-512 F/BW/CD/DQ/VL. aarch64's NEON is its baseline; "portable" is the machine's baseline elsewhere.
_V3 = ("avx", "avx2", "fma", "f16c", "bmi1", "bmi2", "abm", "movbe")
_V4 = (*_V3, "avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl")
VARIANTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "avx512": (("-march=x86-64-v4", "-mtune=native"), _V4),
    "avx2": (("-march=x86-64-v3", "-mtune=native"), _V3),
    "neon": (("-march=armv8-a",), ()),
    "portable": (("-march=x86-64", "-mtune=native"), ()),
}
_MACHINE_VARIANTS = {"x86_64": ("avx512", "avx2", "portable"), "aarch64": ("neon",)}
# torch's own kernel level (torch.backends.cpu.get_cpu_capability, which ATEN_CPU_CAPABILITY lowers): the best variant
# the default route takes under it, so that an emulated AVX2 machine is one for both
_TORCH_CAP = {"AVX512": "avx512", "AVX2": "avx2", "DEFAULT": "portable"}

_lock = threading.Lock()
_modules: dict[str, Any] = {}
_failures: dict[str, str] = {}


def variants() -> tuple[str, ...]:
    """The ISA variants this CPU can run, best first (x86-64: avx512, avx2, portable as its flags allow; aarch64:
    neon; another machine: portable, its compiler's default target)."""
    machine = platform.machine().lower()
    if machine in ("amd64", "x86-64"):
        machine = "x86_64"
    if machine == "arm64":
        machine = "aarch64"
    return _runnable(machine, _cpu_flags())


@functools.cache
def _runnable(machine: str, cpu_flags: str) -> tuple[str, ...]:
    names = _MACHINE_VARIANTS.get(machine, ("portable",))
    flags = set(cpu_flags.split())
    return tuple(n for n in names if all(f in flags for f in VARIANTS[n][1]))


def isa() -> str:
    """The variant the native kernels run: MMRWKV_CPU_ISA when set (ValueError, one line, for a name this CPU
    cannot run), else the best this CPU runs, no higher than torch's own kernel level."""
    runnable = variants()
    asked = os.environ.get(ISA_VAR, "").strip().lower()
    if asked and asked != "auto":
        if asked not in runnable:
            known = asked in VARIANTS
            why = "this CPU cannot run it" if known else f"not one of {', '.join(VARIANTS)}"
            raise ValueError(f"{ISA_VAR}={asked}: {why} (it runs: {', '.join(runnable)})")
        return asked
    cap = _TORCH_CAP.get(torch.backends.cpu.get_cpu_capability().upper())
    return cap if cap in runnable else runnable[0]


def load(variant: str | None = None) -> Any:
    """The compiled module of a variant (default `isa()`), built on first use, then cached on disk and in memory;
    RuntimeError if it cannot be built here."""
    variant = variant or isa()
    if variant in _modules:
        return _modules[variant]
    with _lock:
        if variant in _failures:
            raise RuntimeError(_failures[variant])
        if variant not in _modules:
            try:
                _modules[variant] = _build(variant)
            # any compiler or loader failure becomes one clear message, remembered so it is not retried
            except Exception as err:
                what = f"building the native CPU decode ({SOURCE.name}, {variant})"
                _failures[variant] = f"{what} failed: {str(err)[:2000]}"
                raise RuntimeError(_failures[variant]) from err
    return _modules[variant]


def build_flags(variant: str) -> list[str]:
    """The compiler flags of a variant's build (-ffp-contract=fast: a*b + c as one fused multiply-add where the ISA
    has one)."""
    return ["-O3", *VARIANTS[variant][0], "-ffp-contract=fast", "-Wno-psabi", "-fopenmp", "-std=c++17"]


def _build(variant: str) -> Any:
    from mmrwkv.kernels.cuda import cache_dir

    flags, name = build_flags(variant), f"{_NAME}_{variant}"
    build_dir = cache_dir() / f"{name}-{_digest(flags)}"
    built = build_dir / f"{name}.so"
    if built.exists():
        # the directory's name hashes the source, flags, torch and CPU: a finished build is current; importing it
        # directly skips cpp_extension (its import warns about CUDA on machines without it, and it runs ninja)
        try:
            return _import(built, name)
        except ImportError:
            pass
    build_dir.mkdir(parents=True, exist_ok=True)
    from torch.utils import cpp_extension

    return cpp_extension.load(
        name=name, sources=[str(SOURCE)], extra_cflags=flags, extra_ldflags=["-fopenmp"],
        build_directory=str(build_dir), verbose=False,
    )  # fmt: skip


def _import(path: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _digest(flags: list[str]) -> str:
    h = hashlib.sha256(SOURCE.read_bytes())
    for header in HEADERS:
        h.update(header.read_bytes())
    h.update(" ".join(flags).encode())
    h.update(f"{torch.__version__} {platform.machine()} {_cpu_flags()}".encode())
    return h.hexdigest()[:16]


@functools.cache
def _cpu_flags() -> str:
    """The CPU's feature flags, read once: `enabled()` (so `variants()`) runs on every decode step."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line.split(":", 1)[-1]
    except OSError:
        pass
    return platform.processor()


def cpu_model() -> str:
    """The CPU's model name with its family and model numbers where /proc/cpuinfo has them (a virtual machine's
    name can be as vague as "AMD EPYC"), else what the platform reports; and the logical CPU count."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = fields.get("model name") or fields.get("Model") or platform.processor() or platform.machine()
    if "cpu family" in fields:
        name += f" (family {fields['cpu family']} model {fields.get('model', '?')})"
    elif "CPU part" in fields:
        name += f" (implementer {fields.get('CPU implementer', '?')} part {fields['CPU part']})"
    return f"{name}, {os.cpu_count()} CPUs"


def route() -> str:
    """One line for benchmark headers: the CPU, the native kernels' variant (or why they are off) and torch's own
    kernel level."""
    torch_cap = torch.backends.cpu.get_cpu_capability()
    try:
        native = f"native {isa()} (CPU runs {', '.join(variants())})" if enabled() else "native off (plain torch)"
    except ValueError as err:
        native = f"native refused: {err}"
    return f"CPU {cpu_model()}; {native}; torch kernels {torch_cap}"


def enabled() -> bool:
    """Whether the native decode may be used here (switched on, and the build works: built on the first call)."""
    if os.environ.get(ENV_VAR, "1") == "0" or platform.system() != "Linux":
        return False
    try:
        load()
    except RuntimeError:
        return False
    return True


def _row(t: Tensor) -> bool:
    """One CPU row (B = 1) without autograd."""
    return t.device.type == "cpu" and t.numel() == t.shape[-1] and not (torch.is_grad_enabled() and t.requires_grad)


def _matrix_ok(w: Tensor) -> bool:
    rows, cols = w.shape
    return w.stride() in ((cols, 1), (1, rows))


def layer_args(params: list[dict[str, Tensor]]) -> list[Tensor]:
    """The flat parameter list `layers_step` reads (the native side checks dtypes, shapes and layouts)."""
    return [p.get(name, _ABSENT) for p in params for name in LAYER_PARAMS]


def applies(x: Tensor, wkv: Tensor) -> bool:
    """Whether `layers_step` can take this step: x one CPU row (fp32 or bf16) without autograd, an fp32 state, and
    the native build on and working (built here on first use)."""
    ok = x.dtype in _DTYPES and _row(x) and not torch.is_grad_enabled()
    return ok and wkv.dtype == torch.float32 and wkv.is_contiguous() and enabled()


def layers_step(
    x: Tensor,
    att_prev: Tensor,
    wkv: Tensor,
    ffn_prev: Tensor,
    H: int,
    params: list[dict[str, Tensor]],
    threads: int = 0,
) -> tuple[Tensor, Tensor, Tensor, Tensor] | None:
    """Every block on one token natively: x (1, C) after ln0 and the stacked state -> (x (1, C) in x's dtype, att,
    wkv, ffn), as sequence mode computes them.

    None when it does not apply (batch > 1, autograd, another device or dtype, a shape or layout it does not read,
    or the native build is off or failed); the caller then runs sequence mode. threads: how many threads
    split the work (0: torch's thread count, or one for a model too small to be worth splitting).
    """
    if not (att_prev.dtype in _DTYPES and ffn_prev.dtype in _DTYPES and applies(x, wkv)):
        return None
    out = load().layers_step(x, att_prev, wkv, ffn_prev, H, layer_args(params), threads)
    if not out:  # a parameter it does not read (dtype, device, shape, layout)
        return None
    x_out, att, wkv_out, ffn = out
    return x_out.to(x.dtype), att, wkv_out, ffn


def layers_prefill(
    x: Tensor,
    att_prev: Tensor,
    wkv: Tensor,
    ffn_prev: Tensor,
    H: int,
    params: list[dict[str, Tensor]],
    threads: int = 0,
) -> tuple[Tensor, Tensor, Tensor, Tensor] | None:
    """`layers_step` over the T tokens of x (T, C) one after another, in one native call -> (x (1, C) of the last
    token in x's dtype, att, wkv, ffn after it): a short prompt piece without T calls' overhead.

    None where `layers_step` would decline (see there), or for x that is not (T, C); the caller runs its own path.
    """
    ok = x.dim() == 2 and x.device.type == "cpu" and x.dtype in _DTYPES and not torch.is_grad_enabled()
    ok = ok and att_prev.dtype in _DTYPES and ffn_prev.dtype in _DTYPES and wkv.dtype == torch.float32
    if not (ok and wkv.is_contiguous() and wkv.dim() == 5 and wkv.shape[1] == 1 and enabled()):
        return None
    out = load().layers_prefill(x, att_prev, wkv, ffn_prev, H, layer_args(params), threads)
    if not out:
        return None
    x_out, att, wkv_out, ffn = out
    return x_out.to(x.dtype), att, wkv_out, ffn


def token_step(
    x: Tensor,
    att_prev: Tensor,
    wkv: Tensor,
    ffn_prev: Tensor,
    H: int,
    params: list[dict[str, Tensor]],
    ends: tuple[Tensor, Tensor, Tensor, Tensor, Tensor],
    threads: int = 0,
) -> tuple[Tensor, Tensor, Tensor, Tensor] | None:
    """A whole one-token forward in one native call: x (1, C) the raw embedding row -> (logits (1, V) in x's dtype,
    att, wkv, ffn). `ends` = (ln0 weight, ln0 bias, ln_out weight, ln_out bias, head weight [V, C]): ln0, every block
    (`layers_step`), ln_out and the head, with no Python between them (the per-token overhead of a batch-1 decode).

    None where `layers_step` would decline, or where x's dtype is not the weights'; the caller runs its own path.
    """
    if not (att_prev.dtype in _DTYPES and ffn_prev.dtype in _DTYPES and x.dtype == ends[0].dtype and applies(x, wkv)):
        return None
    out = load().token_step(x, att_prev, wkv, ffn_prev, H, layer_args(params), list(ends), threads)
    return tuple(out) if out else None


def token_plan(
    H: int, params: list[dict[str, Tensor]], ends: tuple[Tensor, ...], threads: int = 0, variant: str | None = None
) -> Any:
    """`token_step`'s parameters taken once (a native object; `plan_step` runs one token on it): the per-token call
    then builds and converts no list of ~400 tensors, a cost paid per token with the caches cold from streaming the
    weights. The plan holds the tensors themselves, so it reads what they hold at each call (in-place updates, new
    `.data`, another dtype); a module or parameter swapped for another is the caller's to notice (the engine
    takes a new plan whenever one is registered anywhere). variant: the ISA build that runs it (default `isa()`)."""
    return load(variant).Plan(layer_args(params), list(ends), H, threads)


def plan_step(plan: Any, x: Tensor, att_prev: Tensor, wkv: Tensor, ffn_prev: Tensor) -> tuple | None:
    """`token_step` on a `token_plan`; None where token_step would decline."""
    if not (att_prev.dtype in _DTYPES and ffn_prev.dtype in _DTYPES and applies(x, wkv)):
        return None
    out = plan.step(x, att_prev, wkv, ffn_prev)
    return tuple(out) if out else None


def step_pick(logits: Tensor) -> int | None:
    """The argmax (torch's ties and NaN rule) that the last native token step found while computing `logits` (the
    tensor it returned or any view of all of it), without reading the 65536 logits again; None for other logits.
    Logits changed in place since are refused where torch counts versions; an inference tensor has no count, so
    only a caller that has not changed them may ask (a greedy sampler that reads them as they came)."""
    if logits.device.type != "cpu" or not enabled():
        return None
    pick = load().step_pick(logits)
    return None if pick < 0 else pick


def argmax(logits: Tensor) -> Tensor:
    """The greedy token of one row of logits (V,) as a (1,) int64 tensor: one native pass (faster than
    torch.argmax on 65536 fp32 logits, same ties and NaN rule) where it applies, else torch.argmax. The logits the
    last native token step returned, unchanged since, need no pass: it picked their argmax as it computed them."""
    if logits.dtype == torch.float32 and logits.device.type == "cpu" and logits.is_contiguous() and enabled():
        index = None if logits.is_inference() else step_pick(logits)  # (an inference tensor's changes are unseen)
        return torch.tensor([load().argmax(logits) if index is None else index])
    return logits.argmax().view(1)


def linear(x: Tensor, weight: Tensor) -> Tensor | None:
    """x (..., in) with one row @ weight [out, in]^T -> (..., out) in x's dtype, or None when it does not apply."""
    ok = _row(x) and weight.device.type == "cpu" and weight.dim() == 2 and weight.dtype in _DTYPES
    if not (ok and not torch.is_grad_enabled() and _matrix_ok(weight) and enabled()):
        return None
    y = load().linear(x.reshape(1, -1), weight)
    return y.to(x.dtype).view(*x.shape[:-1], weight.shape[0])
