"""Backend "triton" (chunked RWKV-7 in Triton) against the fp64 reference, under the Triton interpreter on CPU.

The interpreter runs the very kernels the GPU compiles (fp32 only: it has no bf16 dot). Tiny shapes: B batch,
T time, H heads, N head size.
"""

import pytest
import torch

import mmrwkv.kernels as kernels
from mmrwkv.kernels import reference, triton_wkv

pytest.importorskip("triton")


@pytest.fixture
def interpret():
    """CPU tensors: the interpreter must have been chosen before triton was imported (see conftest.py)."""
    from triton import knobs

    if not knobs.runtime.interpret:
        pytest.skip("triton was imported without TRITON_INTERPRET=1, so Triton kernels cannot run on CPU tensors")


def run(fn, xs: dict, dtype, seed=1):
    """y, final state and the gradients of every input for loss = <y, gy> + <state, gs>."""
    leaves = {name: x.detach().to(dtype).clone().requires_grad_() for name, x in xs.items()}
    y, s = fn(**leaves)
    gen = torch.Generator().manual_seed(seed)
    gy = torch.randn(y.shape, generator=gen, dtype=torch.float64).to(y.dtype)
    gs = torch.randn(s.shape, generator=gen, dtype=torch.float64).to(s.dtype)
    torch.autograd.backward((y, s), (gy, gs))
    return {"y": y, "state": s, **{f"d{n}": x.grad for n, x in leaves.items()}}


def assert_matches_reference(xs, tol):
    got = run(triton_wkv.wkv7, xs, torch.float32)
    want = run(reference.wkv7, xs, torch.float64)
    for name, w in want.items():
        g = got[name]
        assert g.dtype == torch.float32 and torch.isfinite(g).all(), name
        err = ((g.double() - w).abs().max() / w.abs().max()).item()
        assert err < tol, f"{name}: relative error {err:.1e}"


@pytest.mark.parametrize("schedule, chunk", [("parallel", "16"), ("parallel", "32"), ("sequential", "16")])
def test_forward_backward_and_state_match_the_reference(interpret, monkeypatch, schedule, chunk):
    monkeypatch.setenv("MMRWKV_TRITON_SCHEDULE", schedule)
    monkeypatch.setenv("MMRWKV_TRITON_CHUNK", chunk)
    # T = 37: two or three chunks, the last one partial; a random initial state
    xs = reference.random_inputs("wkv7", 2, 37, 2, 16, dtype=torch.float64)
    assert_matches_reference(xs, 2e-5)


@pytest.mark.parametrize("schedule", ["parallel", "sequential"])
def test_strong_decays_stay_finite_and_exact(interpret, monkeypatch, schedule):
    monkeypatch.setenv("MMRWKV_TRITON_SCHEDULE", schedule)
    monkeypatch.setenv("MMRWKV_TRITON_CHUNK", "16")
    xs = reference.random_inputs("wkv7", 1, 20, 1, 16, dtype=torch.float64)
    # exp(-4) per step: 16 steps span exp(-64), beyond what a chunk-start-relative factor could hold
    xs["w"] = torch.full_like(xs["w"], -4.0)
    assert_matches_reference(xs, 2e-5)


def test_dispatch_runs_triton_under_the_interpreter_and_falls_back_without_it(interpret, monkeypatch):
    xs = reference.random_inputs("wkv7", 1, 5, 1, 16)
    calls = []
    real = triton_wkv.wkv7
    monkeypatch.setattr(triton_wkv, "wkv7", lambda *a: calls.append(1) or real(*a))
    y, s = kernels.wkv7(**xs, backend="triton")
    assert calls == [1]
    y_ref, s_ref = reference.wkv7(**xs)
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-5)
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # what available() reads
    monkeypatch.setattr(kernels, "_warned", set())
    with pytest.warns(RuntimeWarning, match="triton WKV backend cannot run wkv7.*TRITON_INTERPRET=1.*chunked"):
        kernels.wkv7(**xs, backend="triton")
    with pytest.warns(RuntimeWarning, match="triton WKV backend cannot run wkv6.*wkv7 only"):
        kernels.wkv6(**reference.random_inputs("wkv6", 1, 5, 1, 16), backend="triton")
    assert calls == [1]


def test_unsupported_head_size_and_chunk_are_refused_with_the_value(interpret, monkeypatch):
    xs = reference.random_inputs("wkv7", 1, 3, 1, 24, with_state=False)
    with pytest.raises(ValueError, match="head size N=24"):
        triton_wkv.wkv7(**xs)
    monkeypatch.setenv("MMRWKV_TRITON_CHUNK", "48")
    with pytest.raises(ValueError, match="MMRWKV_TRITON_CHUNK='48'"):
        triton_wkv.wkv7(**reference.random_inputs("wkv7", 1, 3, 1, 16, with_state=False))
    monkeypatch.setenv("MMRWKV_TRITON_CHUNK", "16")
    monkeypatch.setenv("MMRWKV_TRITON_SCHEDULE", "fast")
    with pytest.raises(ValueError, match="MMRWKV_TRITON_SCHEDULE='fast'"):
        triton_wkv.wkv7(**reference.random_inputs("wkv7", 1, 3, 1, 16, with_state=False))


@pytest.mark.slow
def test_kernels_compile_for_sm90_without_a_gpu():
    """The compiler accepts what the interpreter runs; registers and spills stay within bounds (N = 64, chunk 16).

    In a fresh process: the interpreter, chosen at triton's import here, replaces the code generator.
    """
    import json
    import os
    import subprocess
    import sys

    code = (
        "import json; from mmrwkv.kernels import triton_wkv as t;"
        "print(json.dumps({s: t.compile_usage(16, 90, s) for s in ('parallel', 'sequential')}))"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    usage = json.loads(run.stdout.strip().splitlines()[-1])
    assert [r["kernel"] for r in usage["parallel"]] == ["prep", "scan", "out", "bscan", "grads"]
    for row in usage["parallel"]:
        # the light and the forward kernels spill nothing; the gradient kernel at most a little
        assert row["registers"] <= 255 and row["stack"] <= (256 if row["kernel"] == "grads" else 0), row
