"""The chunked WKV backend equals the reference: outputs, final states and every input gradient."""

import pytest
import torch

from mmrwkv import kernels
from mmrwkv.kernels import chunked, reference
from mmrwkv.kernels.reference import random_inputs

# relative RMS error allowed for (outputs and states, gradients); bf16 outputs/gradients are rounded to bf16
TOLERANCE = {torch.float32: (2e-5, 1e-4), torch.bfloat16: (5e-3, 5e-3)}
SHAPES = [(1, 1, 1, 4), (2, 15, 3, 8), (2, 17, 3, 8), (1, 63, 2, 16), (3, 129, 1, 8)]


def _rel(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.detach().double(), want.detach().double()
    return float((got - want).norm() / want.norm().clamp_min(1e-30))


def _ids(shape, dtype):
    b, t, h, n = shape
    return f"B{b}-T{t}-H{h}-N{n}-{'fp32' if dtype == torch.float32 else 'bf16'}"


def _run_with_grads(fn, args, seed=1):
    """Outputs, final state and the gradient of every input for a fixed random projection of (y, state)."""
    args = {n: x.detach().clone().requires_grad_() for n, x in args.items()}
    y, s = fn(**args)
    gen = torch.Generator().manual_seed(seed)
    loss = (y.float() * torch.randn(y.shape, generator=gen)).sum() + (s * torch.randn(s.shape, generator=gen)).sum()
    grads = torch.autograd.grad(loss, list(args.values()))
    return y, s, dict(zip(args, grads, strict=True))


def _assert_matches(op, args, dtype, **chunk_kw):
    tol_out, tol_grad = TOLERANCE[dtype]
    y0, s0, g0 = _run_with_grads(getattr(reference, op), args)
    y1, s1, g1 = _run_with_grads(lambda **a: getattr(chunked, op)(**a, **chunk_kw), args)
    assert y1.dtype == y0.dtype == args["v"].dtype
    assert _rel(y1, y0) < tol_out, "y"
    assert _rel(s1, s0) < tol_out, "state"
    for name, g in g0.items():
        assert _rel(g1[name], g) < tol_grad, f"d/d{name}"


CASES = [pytest.param(s, d, id=_ids(s, d)) for d in (torch.float32, torch.bfloat16) for s in SHAPES]


@pytest.mark.parametrize(("shape", "dtype"), CASES)
def test_chunked_wkv7_matches_reference_with_gradients(shape, dtype):
    _assert_matches("wkv7", random_inputs("wkv7", *shape, dtype=dtype), dtype)


@pytest.mark.parametrize(("shape", "dtype"), CASES)
def test_chunked_wkv6_matches_reference_with_gradients(shape, dtype):
    _assert_matches("wkv6", random_inputs("wkv6", *shape, dtype=dtype), dtype)


@pytest.mark.parametrize(("shape", "dtype"), CASES)
def test_chunked_wkv4_matches_reference_with_gradients(shape, dtype):
    _assert_matches("wkv4", random_inputs("wkv4", *shape, dtype=dtype), dtype)


@pytest.mark.parametrize("op", ["wkv4", "wkv6", "wkv7"])
@pytest.mark.parametrize("chunk_len", [1, 4, 32])
def test_chunk_length_does_not_change_results(op, chunk_len):
    _assert_matches(op, random_inputs(op, 2, 37, 2, 4), torch.float32, chunk_len=chunk_len)


@pytest.mark.parametrize("op", ["wkv4", "wkv6", "wkv7"])
def test_missing_state_means_the_empty_state(op):
    _assert_matches(op, random_inputs(op, 2, 20, 2, 4, with_state=False), torch.float32)


@pytest.mark.parametrize("op", ["wkv4", "wkv6", "wkv7"])
def test_two_halves_with_state_handed_over_equal_one_pass(op):
    args = random_inputs(op, 2, 150, 2, 8)
    y, s = getattr(chunked, op)(**args)
    first = {n: x[:, :71] if x.dim() > 2 and n != "state" else x for n, x in args.items()}
    rest = {n: x[:, 71:] if x.dim() > 2 and n != "state" else x for n, x in args.items()}
    y1, s1 = getattr(chunked, op)(**first)
    y2, s2 = getattr(chunked, op)(**{**rest, "state": s1})
    torch.testing.assert_close(torch.cat((y1, y2), 1), y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s2, s, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("log_decay", [-1e-7, -0.6065], ids=["w-near-0", "w-min"])
def test_chunked_wkv7_at_the_decay_limits(log_decay):
    args = random_inputs("wkv7", 2, 130, 2, 8)
    args["w"] = torch.full_like(args["w"], log_decay)
    _assert_matches("wkv7", args, torch.float32)


@pytest.mark.parametrize("log_decay", [-1e-7, -3.0, -1e4, "mixed"])
def test_chunked_wkv6_with_weak_and_very_strong_decay(log_decay):
    args = random_inputs("wkv6", 2, 70, 2, 8)
    if log_decay == "mixed":
        # -exp(N(0, 4)): per-step decays from ~1 down to exp(-e^12), inside the same chunks
        args["w"] = -torch.exp(4 * torch.randn(args["w"].shape))
    else:
        args["w"] = torch.full_like(args["w"], log_decay)
    _assert_matches("wkv6", args, torch.float32)
    y, s = chunked.wkv6(**args)
    assert torch.isfinite(y).all() and torch.isfinite(s).all()


@pytest.mark.parametrize("k_scale", [20.0, 40.0])
def test_chunked_wkv4_with_large_keys_and_strong_decay(k_scale):
    args = random_inputs("wkv4", 2, 50, 2, 4)
    args["k"] = k_scale * torch.randn(args["k"].shape)
    args["w"] = -torch.exp(3 * torch.randn(args["w"].shape))
    _assert_matches("wkv4", args, torch.float32)


def test_dispatch_default_on_cpu_runs_chunked(monkeypatch):
    monkeypatch.delenv(kernels.ENV_VAR, raising=False)
    calls = []
    real = chunked.wkv7
    monkeypatch.setattr(chunked, "wkv7", lambda *a: calls.append(a[0].shape) or real(*a))
    args = random_inputs("wkv7", 1, 9, 2, 4)
    y, _ = kernels.wkv7(**args)
    assert calls == [args["r"].shape]
    torch.testing.assert_close(y, reference.wkv7(**args)[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("budget", [0, 1 << 30], ids=["recomputed", "saved"])
@pytest.mark.parametrize("op", ["wkv6", "wkv7"])
def test_time_segments_carry_the_state(op, budget, monkeypatch):
    # segments of 2 chunks of 4: T = 37 runs as 5 segments, the last one partial; their intermediates recomputed in
    # the backward pass only where saving them all would pass the budget
    monkeypatch.setattr(chunked, "SEGMENT_ELEMENTS", 2 * 2 * 2 * 4 * 4)
    monkeypatch.setattr(chunked, "CHECKPOINT_BYTES", budget)
    recomputed = []
    real = chunked.checkpoint
    monkeypatch.setattr(chunked, "checkpoint", lambda *a, **k: recomputed.append(1) or real(*a, **k))
    _assert_matches(op, random_inputs(op, 2, 37, 2, 4), torch.float32, chunk_len=4)
    assert len(recomputed) == (5 if budget == 0 else 0)


@pytest.mark.gpu
@pytest.mark.parametrize("op", ["wkv4", "wkv6", "wkv7"])
def test_chunked_on_cuda_matches_reference_on_cpu(op):
    args = random_inputs(op, 2, 100, 2, 16)
    y0, s0, g0 = _run_with_grads(getattr(reference, op), args)
    y1, s1, g1 = _run_with_grads(getattr(chunked, op), {n: x.cuda() for n, x in args.items()})
    assert y1.is_cuda and s1.is_cuda
    assert _rel(y1.cpu(), y0) < 1e-4 and _rel(s1.cpu(), s0) < 1e-4
    for name, g in g0.items():
        assert _rel(g1[name].cpu(), g) < 1e-3, f"d/d{name}"


def test_wkv4_time_segments_carry_the_state(monkeypatch):
    # segments of 2 chunks of 4 tokens: T = 37 runs as 5 segments, the last one with a 1-token remainder
    monkeypatch.setattr(chunked, "SEGMENT_ELEMENTS", 2 * 8 * 2 * 4)
    _assert_matches("wkv4", random_inputs("wkv4", 2, 37, 2, 4), torch.float32, chunk_len=4)
