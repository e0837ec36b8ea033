"""The reference WKV recurrences against independent closed forms, gradcheck, and the dispatch point."""

import subprocess
import sys
import warnings

import pytest
import torch

from mmrwkv import kernels
from mmrwkv.kernels import reference as ref
from mmrwkv.kernels.reference import random_inputs


def _f64(args):
    return {name: x.double() for name, x in args.items()}


def test_wkv7_matches_explicit_transition_matrix_form():
    # S_t = S_{t-1} (diag(e^w) + a b^T) + v k^T, y_t = S_t r_t, written with dense matrices
    args = _f64(random_inputs("wkv7", 2, 6, 3, 4))
    y, s = ref.wkv7(**args)
    st = args["state"].clone()
    for t in range(6):
        r, w, k, v, a, b = (args[n][:, t] for n in "rwkvab")
        trans = torch.diag_embed(w.exp()) + a.unsqueeze(-1) * b.unsqueeze(-2)
        st = st @ trans + v.unsqueeze(-1) * k.unsqueeze(-2)
        torch.testing.assert_close(y[:, t], (st @ r.unsqueeze(-1)).squeeze(-1))
    torch.testing.assert_close(s, st)


def test_wkv6_matches_sum_over_past_tokens():
    # y_t = r_t . (sum_{i<t} prod_{i<j<t} e^{w_j} k_i v_i^T + prod_{j<t} e^{w_j} S0 + u k_t v_t^T)
    args = _f64(random_inputs("wkv6", 1, 5, 2, 3))
    y, _ = ref.wkv6(**args)
    r, w, k, v, u, s0 = (args[n] for n in ("r", "w", "k", "v", "u", "state"))
    for t in range(5):
        st = torch.exp(w[:, :t].sum(1)).unsqueeze(-1) * s0
        for i in range(t):
            st = st + torch.exp(w[:, i + 1:t].sum(1)).unsqueeze(-1) * k[:, i].unsqueeze(-1) * v[:, i].unsqueeze(-2)
        st = st + (u * k[:, t]).unsqueeze(-1) * v[:, t].unsqueeze(-2)
        torch.testing.assert_close(y[:, t], (r[:, t].unsqueeze(-2) @ st).squeeze(-2))


def test_wkv4_matches_unstabilised_formula_and_state_meaning():
    args = _f64(random_inputs("wkv4", 2, 7, 1, 5, with_state=False))
    y, s = ref.wkv4(**args)
    w, u, k, v = (args[n] for n in "wukv")
    for t in range(7):
        past = torch.exp((t - 1 - torch.arange(t)).double()[:, None] * w + k[:, :t])  # (B, t, C)
        now = torch.exp(u + k[:, t])
        expected = ((past * v[:, :t]).sum(1) + now * v[:, t]) / (past.sum(1) + now)
        torch.testing.assert_close(y[:, t], expected)
    # the final state holds e^pp * (aa, bb) = sum_i e^{(T-1-i) w + k_i} (v_i, 1)
    decayed = torch.exp((6 - torch.arange(7)).double()[:, None] * w + k)
    torch.testing.assert_close(s[:, 0] * s[:, 2].exp(), (decayed * v).sum(1))
    torch.testing.assert_close(s[:, 1] * s[:, 2].exp(), decayed.sum(1))


@pytest.mark.parametrize("op", ["wkv4", "wkv6", "wkv7"])
def test_reference_gradients_pass_gradcheck_in_float64(op):
    args = {n: x.requires_grad_() for n, x in _f64(random_inputs(op, 1, 3, 2, 2)).items()}
    names = list(args)
    fn = getattr(ref, op)
    assert torch.autograd.gradcheck(lambda *xs: fn(**dict(zip(names, xs, strict=True))), tuple(args.values()))


@pytest.mark.parametrize("op", ["wkv4", "wkv6", "wkv7"])
def test_dispatch_returns_y_in_v_dtype_and_fp32_state(op):
    args = random_inputs(op, 2, 5, 2, 4, dtype=torch.bfloat16)
    y, s = getattr(kernels, op)(**args)
    assert y.dtype == torch.bfloat16 and y.shape == args["v"].shape
    assert s.dtype == torch.float32 and s.shape == args["state"].shape


def test_dispatch_backend_argument_beats_env(monkeypatch):
    calls = []
    real = ref.wkv7
    monkeypatch.setattr(ref, "wkv7", lambda *a: calls.append("reference") or real(*a))
    args = random_inputs("wkv7", 1, 4, 1, 2)
    monkeypatch.setenv(kernels.ENV_VAR, "chunked")
    kernels.wkv7(**args, backend="reference")
    assert calls == ["reference"]
    monkeypatch.setenv(kernels.ENV_VAR, "reference")
    kernels.wkv7(**args)
    assert calls == ["reference", "reference"]


def test_default_backend_on_cpu_is_chunked_and_one_token_uses_the_step(monkeypatch):
    monkeypatch.delenv(kernels.ENV_VAR, raising=False)
    assert kernels.resolve_backend(None, torch.device("cpu")) == "chunked"
    calls = []
    real = ref.wkv7
    monkeypatch.setattr(ref, "wkv7", lambda *a: calls.append(a[0].shape[1]) or real(*a))
    kernels.wkv7(**random_inputs("wkv7", 1, 1, 1, 2), backend="chunked")
    assert calls == [1]


def test_unknown_backend_names_its_source(monkeypatch):
    monkeypatch.setenv(kernels.ENV_VAR, "tpu")
    with pytest.raises(ValueError, match="MMRWKV_WKV_BACKEND='tpu'.*reference, chunked, cuda, triton, fla"):
        kernels.wkv6(**random_inputs("wkv6", 1, 3, 1, 2))
    with pytest.raises(ValueError, match="backend='fast'"):
        kernels.wkv6(**random_inputs("wkv6", 1, 3, 1, 2), backend="fast")


def test_cuda_request_on_cpu_falls_back_to_chunked_with_one_warning(monkeypatch):
    monkeypatch.setattr(kernels, "_warned", set())
    args = random_inputs("wkv7", 1, 4, 1, 2)
    with pytest.warns(RuntimeWarning, match="CUDA WKV backend cannot run wkv7.*not a CUDA GPU.*chunked"):
        y, _ = kernels.wkv7(**args, backend="cuda")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y2, _ = kernels.wkv7(**args, backend="cuda")
    torch.testing.assert_close(y, y2)


def test_importing_and_running_on_cpu_never_imports_the_cuda_backend():
    code = ("import sys, mmrwkv.kernels as K, mmrwkv.kernels.reference as R;"
            "K.wkv7(**R.random_inputs('wkv7', 1, 3, 1, 2));"
            "print('mmrwkv.kernels.cuda' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("op", "name", "bad", "error", "match"),
    [
        ("wkv7", "k", torch.zeros(1, 4, 2, 3), ValueError, r"wkv7: k must be \[B, T, H, N\] like r"),
        ("wkv7", "state", torch.zeros(1, 2, 2, 3), ValueError, r"wkv7: state must be \[B, H, N, N\]"),
        ("wkv7", "w", torch.zeros(1, 4, 2, 2, dtype=torch.int64), TypeError, "wkv7: w has dtype torch.int64"),
        ("wkv7", "r", torch.zeros(4, 2, 2), ValueError, r"wkv7: r must be \[B, T, H, N\]"),
        ("wkv7", "a", [[0.0]], TypeError, "wkv7: a must be a torch.Tensor, got list"),
        ("wkv6", "u", torch.zeros(2), ValueError, r"wkv6: u must be \[H, N\] = \(2, 2\)"),
        ("wkv4", "w", torch.zeros(5), ValueError, r"wkv4: w must be \[C\] = \(4,\)"),
        ("wkv4", "state", torch.zeros(1, 2, 4), ValueError, r"wkv4: state must be \[B, 3, C\]"),
        ("wkv4", "v", torch.zeros(1, 3, 4), ValueError, r"wkv4: v must be \[B, T, C\] like k"),
    ],
)
def test_bad_inputs_raise_errors_naming_the_argument(op, name, bad, error, match):
    args = random_inputs(op, 1, 4, 2, 2)
    args[name] = bad
    with pytest.raises(error, match=match):
        getattr(kernels, op)(**args)


def test_inputs_on_two_devices_are_rejected():
    args = random_inputs("wkv7", 1, 4, 2, 2)
    args["v"] = args["v"].to("meta")
    with pytest.raises(ValueError, match="wkv7: v is on meta but the other inputs are on cpu"):
        kernels.wkv7(**args)


def test_cuda_status_names_a_head_size_the_cuda_kernels_cannot_take(monkeypatch):
    import types

    fake = types.SimpleNamespace(wkv7=None, MAX_HEAD_SIZE=128, is_available=lambda: (True, ""))
    monkeypatch.setitem(sys.modules, "mmrwkv.kernels.cuda", fake)
    assert kernels._cuda_status(torch.device("cuda"), "wkv7", 64) == (True, "")
    ok, reason = kernels._cuda_status(torch.device("cuda"), "wkv7", 256)
    assert not ok and "head size 256 is above the CUDA kernels' maximum 128" in reason
    assert kernels._cuda_status(torch.device("cuda"), "wkv4", None) == (False, "mmrwkv.kernels.cuda has no wkv4")
