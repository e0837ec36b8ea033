"""The CUDA WKV kernel sources against the reference: outputs, final state and every gradient.

Each case runs on two targets: "emulator" (the same .cu sources compiled as C++ for CPU, in the normal suite)
and "cuda" (the real build, @pytest.mark.gpu). Fresh buffers are NaN-filled so that a kernel reading memory
it never wrote fails. Sizes: B batch, T time, H heads, N head size, C channels.
"""

import pytest
import torch
import torch.utils.deterministic

from mmrwkv.kernels import cuda, reference

TARGETS = ["emulator", pytest.param("cuda", marks=pytest.mark.gpu)]
# T = 37 spans three checkpoint chunks of 16 steps, the last one partial
ODD_T = 2 * cuda.CHUNK + 5


@pytest.fixture(autouse=True)
def nan_filled_buffers():
    """torch.empty (also inside the C++ binding) returns NaN, so uninitialised reads poison the results."""
    det = torch.utils.deterministic
    prev = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        det.fill_uninitialized_memory,
    )
    torch.use_deterministic_algorithms(True, warn_only=True)
    det.fill_uninitialized_memory = True
    if torch.cuda.is_available():
        # recycled blocks of the caching allocator start as NaN too
        torch.full((1 << 26,), float("nan"), device="cuda")
    yield
    torch.use_deterministic_algorithms(prev[0], warn_only=prev[1])
    det.fill_uninitialized_memory = prev[2]


def kernels(target: str):
    """Something with wkv4 / wkv6 / wkv7: the emulator, or the module's public GPU entry points."""
    return cuda.EMULATOR if target == "emulator" else cuda


def device(target: str) -> str:
    return "cpu" if target == "emulator" else "cuda"


def v7_inputs(bsz, t, h, n, dev, dtype=torch.float32):
    """Model-like RWKV-7 inputs: log decay in (-0.61, 0), a = -kk, b = kk * gate with kk unit per head."""
    rnd = lambda: torch.randn(bsz, t, h, n, device=dev)  # noqa: E731
    kk = torch.nn.functional.normalize(rnd(), dim=-1)
    w = -0.6065 * torch.sigmoid(rnd())
    xs = [rnd(), w, rnd(), rnd(), -kk, kk * torch.sigmoid(rnd())]
    return [x.to(dtype) for x in xs] + [0.3 * torch.randn(bsz, h, n, n, device=dev)]


def v6_inputs(bsz, t, h, n, dev, dtype=torch.float32):
    rnd = lambda: torch.randn(bsz, t, h, n, device=dev)  # noqa: E731
    w = -torch.exp(0.5 * rnd() - 2)
    xs = [rnd(), w, rnd(), rnd()]
    return [x.to(dtype) for x in xs] + [torch.randn(h, n, device=dev), 0.3 * torch.randn(bsz, h, n, n, device=dev)]


def v4_inputs(bsz, t, c, dev, dtype=torch.float32):
    w, u = -torch.exp(0.5 * torch.randn(c, device=dev)), torch.randn(c, device=dev)
    k, v = torch.randn(bsz, t, c, device=dev).to(dtype), torch.randn(bsz, t, c, device=dev).to(dtype)
    aa, bb, pp = torch.randn(bsz, c, device=dev), 1 + torch.rand(bsz, c, device=dev), torch.randn(bsz, c, device=dev)
    return [w, u, k, v, torch.stack((aa, bb, pp), dim=1)]


def run_with_grads(fn, inputs, dy, ds):
    """(y, state, grads of every input) for loss = <y, dy> + <state, ds>."""
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    y, state = fn(*leaves)
    torch.autograd.backward((y, state), (dy, ds))
    return y.detach(), state.detach(), [x.grad for x in leaves]


def rel_err(got, want):
    assert got.dtype == want.dtype and got.shape == want.shape
    assert torch.isfinite(got).all(), "non-finite values (uninitialised memory?)"
    return ((got.double() - want.double()).abs().max() / want.double().abs().max().clamp_min(1e-6)).item()


def assert_parity(fn, ref_fn, inputs, tol, ref_dtype=None):
    """fn and ref_fn agree on y, final state and all gradients; ref_dtype runs the reference in fp64."""
    cast = (lambda x: x.to(ref_dtype)) if ref_dtype else (lambda x: x)  # noqa: E731
    # v is the fourth input and the state the last one in all three ops
    dy, ds = torch.randn_like(inputs[3]), torch.randn_like(inputs[-1])
    got = run_with_grads(fn, inputs, dy, ds)
    want = run_with_grads(ref_fn, [cast(x) for x in inputs], cast(dy), cast(ds))
    names = ["y", "state"] + [f"grad of input {i}" for i in range(len(inputs))]
    for name, g, w in zip(names, [got[0], got[1], *got[2]], [want[0], want[1], *want[2]], strict=True):
        err = rel_err(g, w.to(g.dtype))
        assert err < tol, f"{name}: relative error {err:.2e} >= {tol}"


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("t", [1, ODD_T])
def test_wkv7_matches_reference_fp32_with_all_gradients(target, t):
    inputs = v7_inputs(2, t, 2, 8 if target == "emulator" else 64, device(target))
    assert_parity(kernels(target).wkv7, reference.wkv7, inputs, tol=1e-4)


def heads_inputs(op, target, t=ODD_T):
    make = v7_inputs if op == "wkv7" else v6_inputs
    return make(2, t, 2, 8 if target == "emulator" else 64, device(target))


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("op", ["wkv7", "wkv6"])
def test_strong_decays_are_recomputed_exactly(target, op):
    # decays down to exp(-6) cannot be stepped back through (the error grows by 1 / decay per step): the
    # chunks that hold one are replayed from their checkpoint instead; the others still step back
    inputs = heads_inputs(op, target)
    inputs[1] = inputs[1].clamp(min=-0.6)
    inputs[1][:, cuda.CHUNK : 2 * cuda.CHUNK] = -6 * torch.rand_like(inputs[1][:, cuda.CHUNK : 2 * cuda.CHUNK])
    assert_parity(getattr(kernels(target), op), getattr(reference, op), inputs, tol=1e-4)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("op", ["wkv7", "wkv6"])
def test_steps_back_accurately_at_the_strongest_decay_it_allows(target, op):
    inputs = heads_inputs(op, target)
    # every step at the strongest decay is the worst case for stepping back: ~7e-4 measured for v7 at T = 37
    inputs[1] = torch.full_like(inputs[1], -0.6065)
    assert_parity(getattr(kernels(target), op), getattr(reference, op), inputs, tol=2e-3, ref_dtype=torch.float64)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("t", [1, ODD_T])
def test_wkv6_matches_reference_fp32_with_all_gradients(target, t):
    inputs = v6_inputs(2, t, 2, 8 if target == "emulator" else 64, device(target))
    assert_parity(kernels(target).wkv6, reference.wkv6, inputs, tol=1e-4)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("t", [1, ODD_T])
def test_wkv4_matches_reference_fp32_with_all_gradients(target, t):
    # C = 12 fills part of one block; C = 300 spans three blocks of 128 threads with a partial last one
    inputs = v4_inputs(2, t, 12 if target == "emulator" else 300, device(target))
    assert_parity(kernels(target).wkv4, reference.wkv4, inputs, tol=1e-4)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("op", ["wkv7", "wkv6", "wkv4"])
def test_bf16_inputs_match_reference_on_the_same_rounded_inputs(target, op):
    n, t = (8, 19) if target == "emulator" else (64, 300)
    dev = device(target)
    make = {
        "wkv7": lambda: v7_inputs(2, t, 2, n, dev, torch.bfloat16),
        "wkv6": lambda: v6_inputs(2, t, 2, n, dev, torch.bfloat16),
        "wkv4": lambda: v4_inputs(2, t, 12, dev, torch.bfloat16),
    }[op]
    inputs = make()
    assert_parity(getattr(kernels(target), op), getattr(reference, op), inputs, tol=3e-2)


@pytest.mark.parametrize("target", TARGETS)
def test_head_size_64_build_matches_reference(target):
    # the emulator runs 64 threads per block: keep B, H and T tiny
    inputs = v7_inputs(1, 5, 1, 64, device(target))
    assert_parity(kernels(target).wkv7, reference.wkv7, inputs, tol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("op", ["wkv7", "wkv6", "wkv4"])
def test_long_sequences_match_fp64_reference_on_gpu(op):
    make = {
        "wkv7": lambda: v7_inputs(2, 1000, 3, 64, "cuda"),
        "wkv6": lambda: v6_inputs(2, 1000, 3, 64, "cuda"),
        "wkv4": lambda: v4_inputs(2, 1000, 200, "cuda"),
    }[op]
    assert_parity(getattr(cuda, op), getattr(reference, op), make(), tol=1e-3, ref_dtype=torch.float64)


@pytest.mark.gpu
def test_head_size_32_is_its_own_build_on_gpu():
    inputs = v7_inputs(3, 50, 2, 32, "cuda")
    assert_parity(cuda.wkv7, reference.wkv7, inputs, tol=1e-4)


@pytest.mark.gpu
def test_dispatcher_runs_the_cuda_backend_on_gpu():
    from mmrwkv import kernels as dispatch

    r, w, k, v, a, b, s = v7_inputs(2, 40, 2, 64, "cuda")
    y, state = dispatch.wkv7(r, w, k, v, a, b, s, backend="cuda")
    y_ref, state_ref = reference.wkv7(r, w, k, v, a, b, s)
    assert rel_err(y, y_ref) < 1e-4 and rel_err(state, state_ref) < 1e-4
