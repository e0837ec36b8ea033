"""The Python side of the CUDA backend (validation, dtypes, layouts, autograd wiring), run on the emulator."""

import pytest
import torch

from mmrwkv.kernels import cuda, reference

EMU = cuda.EMULATOR
B, T, H, N = 2, 9, 2, 8


def v7_inputs(t=T):
    kk = torch.nn.functional.normalize(torch.randn(B, t, H, N), dim=-1)
    return [
        torch.randn(B, t, H, N),
        -0.6 * torch.rand(B, t, H, N),
        torch.randn(B, t, H, N),
        torch.randn(B, t, H, N),
        -kk,
        kk * torch.rand(B, t, H, N),
    ]


def test_public_entry_points_reject_cpu_tensors_with_a_reason():
    with pytest.raises(ValueError, match="r is on cpu; the CUDA kernels take GPU tensors"):
        cuda.wkv7(*v7_inputs())


def test_head_size_above_the_supported_range_is_rejected():
    x = torch.randn(1, 3, 1, cuda.MAX_HEAD_SIZE + 1)
    with pytest.raises(ValueError, match=f"head size N={cuda.MAX_HEAD_SIZE + 1}"):
        EMU.wkv6(x, -x.abs(), x, x, torch.randn(1, cuda.MAX_HEAD_SIZE + 1))


def test_mismatched_shapes_and_dtypes_name_the_input():
    r, w, k, v, a, b = v7_inputs()
    with pytest.raises(ValueError, match=r"k must be \[B, T, H, N\] like r"):
        EMU.wkv7(r, w, k[:, :-1], v, a, b)
    with pytest.raises(ValueError, match=r"state must be \[B, H, N, N\]"):
        EMU.wkv7(r, w, k, v, a, b, torch.zeros(B, H, N, N + 1))
    with pytest.raises(TypeError, match="v has dtype torch.int64"):
        EMU.wkv7(r, w, k, v.long(), a, b)
    with pytest.raises(ValueError, match=r"u must be \[H, N\]"):
        EMU.wkv6(r, w, k, v, torch.zeros(H + 1, N))
    with pytest.raises(ValueError, match=r"state must be \[B, 3, C\]"):
        EMU.wkv4(torch.zeros(4), torch.zeros(4), torch.zeros(1, 3, 4), torch.zeros(1, 3, 4), torch.zeros(1, 2, 4))


def test_no_state_means_zeros_and_the_v4_empty_state():
    xs = v7_inputs()
    y0, s0 = EMU.wkv7(*xs)
    y1, s1 = EMU.wkv7(*xs, torch.zeros(B, H, N, N))
    assert torch.equal(y0, y1) and torch.equal(s0, s1)
    w, u, k, v = -torch.rand(4), torch.randn(4), torch.randn(1, 5, 4), torch.randn(1, 5, 4)
    y_emu, s_emu = EMU.wkv4(w, u, k, v)
    y_ref, s_ref = reference.wkv4(w, u, k, v)
    torch.testing.assert_close(y_emu, y_ref)
    torch.testing.assert_close(s_emu, s_ref)


def test_state_carries_across_segments_like_one_pass():
    xs = v7_inputs(t=20)
    y_full, s_full = EMU.wkv7(*xs)
    y_a, s_a = EMU.wkv7(*(x[:, :7] for x in xs))
    y_b, s_b = EMU.wkv7(*(x[:, 7:] for x in xs), s_a)
    torch.testing.assert_close(torch.cat((y_a, y_b), 1), y_full)
    torch.testing.assert_close(s_b, s_full)


def test_empty_sequence_returns_the_initial_state():
    xs = [x[:, :0] for x in v7_inputs()]
    s = torch.randn(B, H, N, N)
    y, s_out = EMU.wkv7(*xs, s)
    assert y.shape == (B, 0, H, N) and torch.equal(s_out, s)


def test_inference_without_grad_matches_the_training_forward():
    xs = v7_inputs()
    with torch.no_grad():
        y_inf, s_inf = EMU.wkv7(*xs)
    y_tr, s_tr = EMU.wkv7(*(x.clone().requires_grad_() for x in xs))
    assert y_tr.requires_grad and not y_inf.requires_grad
    assert torch.equal(y_inf, y_tr.detach()) and torch.equal(s_inf, s_tr.detach())


def test_gradient_reaches_the_initial_state_alone():
    xs = v7_inputs()
    s_emu = torch.randn(B, H, N, N, requires_grad=True)
    s_ref = s_emu.detach().clone().requires_grad_()
    EMU.wkv7(*xs, s_emu)[0].square().sum().backward()
    reference.wkv7(*xs, s_ref)[0].square().sum().backward()
    torch.testing.assert_close(s_emu.grad, s_ref.grad, rtol=1e-4, atol=1e-5)


def test_strided_views_give_the_same_result_as_contiguous_inputs():
    xs = v7_inputs()
    # [B, H, T, N] storage viewed as [B, T, H, N]: not contiguous
    views = [x.transpose(1, 2).contiguous().transpose(1, 2) for x in xs]
    assert not views[0].is_contiguous()
    y_v, s_v = EMU.wkv7(*views)
    y_c, s_c = EMU.wkv7(*xs)
    assert torch.equal(y_v, y_c) and torch.equal(s_v, s_c)


def test_expanded_v5_decay_is_accepted():
    r, _, k, v, _, _ = v7_inputs()
    w = (-torch.rand(H, N)).expand(B, T, H, N)
    u = torch.randn(H, N)
    y_emu, s_emu = EMU.wkv6(r, w, k, v, u)
    y_ref, s_ref = reference.wkv6(r, w, k, v, u)
    torch.testing.assert_close(y_emu, y_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(s_emu, s_ref, rtol=1e-4, atol=1e-5)


def test_half_and_mixed_inputs_run_in_fp32_and_return_the_dtype_of_v():
    xs = v7_inputs()
    y16, s16 = EMU.wkv7(*(x.half() for x in xs))
    assert y16.dtype == torch.float16 and s16.dtype == torch.float32
    mixed = [x.bfloat16() for x in xs]
    mixed[1] = xs[1]
    y_mix, _ = EMU.wkv7(*mixed)
    y_ref, _ = reference.wkv7(*mixed)
    assert y_mix.dtype == torch.bfloat16
    torch.testing.assert_close(y_mix, y_ref, rtol=2e-2, atol=2e-2)


def _op_calls(save: bool):
    """(op name, args) for every op of the build, on tiny inputs."""
    xs = v7_inputs()
    s0, dy = torch.randn(B, H, N, N), torch.randn(B, T, H, N)
    ops = cuda.load_ops(N, emulate=True)
    y, s_t, sa, ck7 = ops.wkv7_forward(*xs, s0, True)
    u = torch.randn(H, N)
    _, _, ck6 = ops.wkv6_forward(*xs[:4], u, s0, True)
    c = H * N
    w4, u4, k4, v4 = -torch.rand(c), torch.randn(c), torch.randn(B, T, c), torch.randn(B, T, c)
    s4 = torch.stack((torch.zeros(B, c), torch.ones(B, c), torch.zeros(B, c)), 1)
    _, _, ck4 = ops.wkv4_forward(w4, u4, k4, v4, s4, True)
    return ops, [
        ("wkv7_forward", (*xs, s0, save)),
        ("wkv7_backward", (*xs, sa, ck7, dy, s_t)),
        ("wkv6_forward", (*xs[:4], u, s0, save)),
        ("wkv6_backward", (*xs[:4], u, ck6, dy, s_t)),
        ("wkv4_forward", (w4, u4, k4, v4, s4, save)),
        ("wkv4_backward", (w4, u4, k4, v4, ck4, k4, s4)),
    ]


@pytest.mark.parametrize("save", [True, False])
def test_fake_kernels_report_the_real_output_shapes(save):
    from torch._subclasses.fake_tensor import FakeTensorMode

    ops, calls = _op_calls(save)
    for name, args in calls:
        real = getattr(ops, name)(*args)
        with FakeTensorMode() as mode:
            fake_args = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
            fake = getattr(ops, name)(*fake_args)
        assert [(t.shape, t.dtype) for t in fake] == [(t.shape, t.dtype) for t in real], name


def test_torch_compile_traces_the_kernels_in_one_graph():
    xs = v7_inputs()
    EMU.wkv7(*xs)  # built before tracing: the first build takes a lock, which breaks a graph
    compiled = torch.compile(EMU.wkv7, backend="aot_eager", fullgraph=True)
    leaves = [x.clone().requires_grad_() for x in xs]
    y, s = compiled(*leaves)
    (y.square().sum() + s.sum()).backward()
    ref_leaves = [x.clone().requires_grad_() for x in xs]
    y_ref, s_ref = reference.wkv7(*ref_leaves)
    (y_ref.square().sum() + s_ref.sum()).backward()
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-5)
    for got, want in zip(leaves, ref_leaves, strict=True):
        torch.testing.assert_close(got.grad, want.grad, rtol=1e-3, atol=1e-3)
