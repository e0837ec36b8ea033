"""The native CPU decode (mmrwkv.kernels.cpu) through the engine's native route: the same model as sequence mode
(its equations) and as the plain torch route at one token, batch 1."""

import platform

import pytest
import torch
import torch.nn.functional as F

from mmrwkv.inference import engine
from mmrwkv.inference.stepper import column_major_linears
from mmrwkv.kernels import cpu as native
from mmrwkv.rwkv import RWKV, config_for

pytestmark = pytest.mark.skipif(platform.system() != "Linux", reason="the native decode is built on Linux only")


def _model(dtype=torch.float32, *, column_major=False, seed=3, head_size=20):
    # odd widths on purpose: C = 100 (H = 5 of N = 20), F = 400, LoRA widths 16/12/5/19 (vector tails, remainders);
    # head_size=16 or 64: C = 80 or 320, whole vectors per state row (wkv.h's vector path, streaming stores)
    torch.manual_seed(seed)
    C = 100 if head_size == 20 else 5 * head_size
    cfg = config_for("v7-tiny", n_layer=3, n_embd=C, head_size=head_size, dim_w=16, dim_a=12, dim_v=5, dim_g=19)
    m = RWKV(cfg).eval()
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    if column_major:
        column_major_linears(m)
    return m.to(dtype)


def _steps(model, ids, *, native_on=True, monkeypatch=None):
    """Logits (1, T, V) and final state of the engine's one-token steps over ids (1, T)."""
    if not native_on:
        monkeypatch.setenv(native.ENV_VAR, "0")
    state, logits = model.init_state(1), []
    with torch.no_grad():
        for t in range(ids.shape[1]):
            out, state = engine.step(model, ids[:, t], state)
            logits.append(out.unsqueeze(1))
    if not native_on:
        monkeypatch.delenv(native.ENV_VAR)
    return torch.cat(logits, 1), state


@pytest.fixture(params=native.variants() if platform.system() == "Linux" else ["none"])
def isa(request, monkeypatch):
    """Each ISA variant this CPU runs (MMRWKV_CPU_ISA), proven to be the one that runs."""
    monkeypatch.setenv(native.ISA_VAR, request.param)
    assert native.load().isa == request.param
    return request.param


@pytest.fixture
def calls(monkeypatch):
    """Counts the engine's native token steps (each the whole token in one call, on a plan or on the parameters of
    the call): proves the native route ran."""
    counter = {"tokens": 0}
    real = engine._native_token

    def counting(*args):
        out = real(*args)
        counter["tokens"] += out is not None
        return out

    monkeypatch.setattr(engine, "_native_token", counting)
    return counter


@pytest.mark.parametrize("head_size", [20, 16, 64])
@pytest.mark.parametrize("column_major", [False, True], ids=["row-major", "column-major"])
def test_native_steps_equal_sequence_mode_and_the_plain_torch_step(column_major, head_size, isa, calls, monkeypatch):
    model = _model(column_major=column_major, head_size=head_size)
    ids = torch.randint(0, 256, (1, 7))
    with torch.no_grad():
        seq, seq_state = model(ids)
    steps, state = _steps(model, ids)
    assert calls["tokens"] == 7  # each token in one native call (ln0 .. head)
    ts, ts_state = _steps(model, ids, native_on=False, monkeypatch=monkeypatch)
    assert calls["tokens"] == 7
    _assert_close(steps, seq)
    _assert_close(steps, ts)
    for name in ("att_x_prev", "wkv", "ffn_x_prev"):
        _assert_close(getattr(state, name), getattr(seq_state, name))
        _assert_close(getattr(state, name), getattr(ts_state, name))


def test_native_steps_agree_where_the_gates_and_decay_saturate(isa, calls):
    """Decay, in-context rate, value residual and gate biases far out on both sides (sigmoid near 0 and 1, decay
    near 0 and 1, e^x of large arguments): the vectorised e^x and sigmoid of vmath.h agree with torch's."""
    model = _model(head_size=16)
    with torch.no_grad():
        for block in model.blocks:
            for name, p in block.named_parameters():
                if name.split(".")[-1] in ("w0", "a0", "v0"):
                    p.copy_(torch.linspace(-60, 60, p.numel()).view_as(p))
    ids = torch.randint(0, 256, (1, 5))
    with torch.no_grad():
        seq, seq_state = model(ids)
    steps, state = _steps(model, ids)
    assert calls["tokens"] == 5 and torch.isfinite(steps).all()
    _assert_close(steps, seq)
    _assert_close(state.wkv, seq_state.wkv)


def _assert_close(actual, expected):
    """fp32 agreement relative to the tensor's scale (the wkv state grows to ~40 with these weights)."""
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item())


def test_native_step_leaves_its_input_state_alone():
    model = _model()
    state = model.init_state(1)
    with torch.no_grad():
        _, state = engine.step(model, torch.tensor([5]), state)
        before = [t.clone() for t in state.tensors().values()]
        engine.step(model, torch.tensor([9]), state)
    for old, now in zip(before, state.tensors().values(), strict=True):
        assert torch.equal(old, now)


def test_native_bf16_steps_stay_as_close_to_fp32_as_the_plain_torch_bf16_step(isa, calls, monkeypatch):
    ids = torch.randint(0, 256, (1, 6))
    ref, _ = _steps(_model(), ids)
    bf16 = _model(torch.bfloat16)
    nat, state = _steps(bf16, ids)
    assert calls["tokens"] == 12 and state.wkv.dtype == torch.float32 and state.att_x_prev.dtype == torch.bfloat16
    ts, _ = _steps(bf16, ids, native_on=False, monkeypatch=monkeypatch)

    def err(x):
        return ((x.float() - ref).abs().max() / ref.abs().max()).item()

    assert err(nat) < 0.05
    assert err(nat) <= 1.5 * err(ts)


@pytest.mark.parametrize("shape", [(37, 45), (256, 64), (64, 256), (1000, 33)])
@pytest.mark.parametrize("layout", ["row-major", "column-major"])
def test_native_linear_equals_f_linear(shape, layout):
    w = torch.randn(*shape)
    if layout == "column-major":
        w = w.t().contiguous().t()
    x = torch.randn(1, 1, shape[1])
    with torch.no_grad():
        y = native.linear(x, w)
        y16 = native.linear(x, w.bfloat16())
    assert y.shape == (1, 1, shape[0])
    torch.testing.assert_close(y, F.linear(x, w), rtol=1e-5, atol=1e-5)
    # bf16 weights, fp32 accumulate: the fp32 product with the bf16-rounded weights
    torch.testing.assert_close(y16, F.linear(x, w.bfloat16().float()), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", ["row-major", "column-major"])
def test_native_linear_on_two_threads_equals_f_linear(layout):
    # large enough (>= 2^18 weights) to be split across threads
    w = torch.randn(1001, 300)
    if layout == "column-major":
        w = w.t().contiguous().t()
    x, threads = torch.randn(1, 300), torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.no_grad():
            torch.testing.assert_close(native.linear(x, w), F.linear(x, w), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(native.linear(x, w.bfloat16()), F.linear(x, w.bfloat16().float()),
                                       rtol=1e-5, atol=1e-5)  # fmt: skip
    finally:
        torch.set_num_threads(threads)


def test_native_path_declines_what_it_does_not_compute(monkeypatch):
    model = _model()
    x, w = torch.randn(1, 1, 100), model.head.weight
    wkv = model.init_state(1).wkv
    with torch.no_grad():
        assert native.applies(x, wkv)
        assert not native.applies(torch.randn(2, 1, 100), model.init_state(2).wkv)  # batch 2: by rows
        assert not native.applies(x.double(), wkv)
        assert native.linear(torch.randn(2, 100), w) is None
        assert native.linear(x, w[:, ::2]) is None  # neither row- nor column-major
        state = model.init_state(1)
        for bad in (torch.randn(100, 200)[:, ::2], torch.randn(100, 99), torch.randn(100, 100).double()):
            params = [engine.native_weights(block) for block in model.blocks]
            params[1]["att.receptance.weight"] = bad  # strided, wrong shape, wrong dtype
            assert native.layers_step(x[:, 0], state.att_x_prev, state.wkv, state.ffn_x_prev, 5, params) is None
    assert native.linear(x, w) is None  # autograd on: the eager path keeps the gradients
    monkeypatch.setenv(native.ENV_VAR, "0")
    with torch.no_grad():
        assert not native.enabled() and native.linear(x, w) is None


@pytest.mark.parametrize("n", [1, 37, 1000, 65536])
def test_native_argmax_equals_torch_argmax_with_ties_and_nan(n):
    torch.manual_seed(n)
    logits = torch.randn(n)
    cases = [logits, torch.full((n,), float("-inf")), logits.round()]  # rounding makes ties
    if n > 2:
        tied = logits.clone()
        tied[n // 3] = tied[2 * n // 3] = tied.max() + 1  # two equal maxima: the first wins
        nan = logits.clone()
        nan[n - 2], nan[n // 2] = float("nan"), float("nan")  # torch.argmax: the first NaN
        cases += [tied, nan]
    for row in cases:
        assert native.argmax(row).tolist() == [row.argmax().item()]
    assert native.argmax(logits[::2]).tolist() == [logits[::2].argmax().item()]  # strided: torch's


def test_token_step_declines_an_unreadable_head_and_keeps_a_lora_head(calls, monkeypatch):
    from mmrwkv.lora import apply_lora

    model = _model()
    state = model.init_state(1)
    x = torch.randn(1, 100)
    with torch.no_grad():
        params = [engine.native_weights(block) for block in model.blocks]
        ln0, ln_out, head = model.blocks[0].ln0, model.ln_out, model.head.weight
        for bad in (head.bfloat16(), head[:, ::2], head.double()):
            ends = (ln0.weight, ln0.bias, ln_out.weight, ln_out.bias, bad)
            assert native.token_step(x, state.att_x_prev, state.wkv, state.ffn_x_prev, 5, params, ends) is None
    # adapters (LoRA) act in one-token steps as in sequence mode: on the blocks in the one-call step, on the head
    # through the head's own forward (both with the native build on, and off)
    ids = torch.randint(0, 256, (1, 4))
    for exclude, one_call in ((["head"], 4), ([], 0)):
        model = _model()
        apply_lora(model, rank=4, exclude=exclude)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.3)
            seq, _ = model(ids)
        tokens = calls["tokens"]
        steps, _ = _steps(model, ids)
        assert calls["tokens"] - tokens == one_call
        _assert_close(steps, seq)
        ts, _ = _steps(model, ids, native_on=False, monkeypatch=monkeypatch)
        _assert_close(ts, seq)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_native_token_step_on_a_team_of_threads_equals_one_thread(dtype):
    # 5 heads and 400 hidden units split 2/3 and 1/2/2 between the threads; the team's partial products are summed
    # in another order than one thread's, so agreement is to rounding, not bit for bit
    model = _model(dtype, column_major=dtype == torch.bfloat16)
    params = [engine.native_weights(block) for block in model.blocks]
    ends = (model.blocks[0].ln0.weight, model.blocks[0].ln0.bias, model.ln_out.weight, model.ln_out.bias,
            model.head.weight)  # fmt: skip
    ids = torch.randint(0, 256, (6,))
    runs = {}
    with torch.no_grad():
        for threads in (1, 2, 3):
            state, logits = model.init_state(1), []
            s = (state.att_x_prev, state.wkv, state.ffn_x_prev)
            for i in ids:
                out = native.token_step(model.emb.weight[i].view(1, -1), *s, 5, params, ends, threads=threads)
                logits.append(out[0].float())
                s = out[1:]
            runs[threads] = (torch.cat(logits), *s)
    for threads in (2, 3):
        for got, want in zip(runs[threads], runs[1], strict=True):
            if dtype == torch.float32:
                _assert_close(got, want)
            else:  # bf16 shift states and logits: one rounding step apart at most
                torch.testing.assert_close(got.float(), want.float(), rtol=2e-2, atol=2e-2 * want.abs().max().item())


def test_native_steps_reuse_a_state_buffer_only_once_nobody_holds_it():
    model = _model()
    ids = torch.randint(0, 256, (1, 8))
    with torch.no_grad():
        _, kept = engine.step(model, ids[:, 0], model.init_state(1))
        copy = kept.wkv.clone()
        state, seen = kept, set()
        for t in range(1, 8):
            _, state = engine.step(model, ids[:, t], state)
            seen.add(state.wkv.data_ptr())
    # the kept state was never written over, while the dropped ones' memory was used again (no fresh mmap per token)
    assert torch.equal(kept.wkv, copy)
    assert kept.wkv.data_ptr() not in seen and len(seen) < 7
