"""A prompt piece in one native call (`kernels.cpu.layers_prefill`): the same as T native one-token steps and as
sequence mode."""

import platform

import pytest
import torch

from mmrwkv.inference import engine
from mmrwkv.kernels import cpu as native

pytestmark = pytest.mark.skipif(platform.system() != "Linux", reason="the native decode is built on Linux only")


def _inputs(model, n: int):
    backbone = model.backbone
    with torch.inference_mode():
        state = backbone(backbone.embed(torch.tensor([[5, 6, 7]])), None)[1]
        x = backbone.embed(torch.arange(10, 10 + n).reshape(1, n))  # (1, T, C), before ln0
    return backbone, x, state


@pytest.mark.parametrize("n", [1, 2, 9])
def test_native_prefill_equals_one_native_step_per_token(tiny_model, n):
    backbone, x, state = _inputs(tiny_model, n)
    H = backbone.blocks[0].att.n_head
    params = [engine.native_weights(block) for block in backbone.blocks]
    with torch.inference_mode():
        h = backbone.blocks[0].ln0(x)[0]  # (T, C)
        before = [t.clone() for t in (state.att_x_prev, state.wkv, state.ffn_x_prev)]
        got = native.layers_prefill(h, state.att_x_prev, state.wkv, state.ffn_x_prev, H, params)
        s = state
        for t in range(n):
            want = native.layers_step(h[t : t + 1], s.att_x_prev, s.wkv, s.ffn_x_prev, H, params)
            s = type(state)(*want[1:])
    assert got is not None and want is not None
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b)  # the same loop: bit for bit
    for a, b in zip(before, (state.att_x_prev, state.wkv, state.ffn_x_prev), strict=True):
        assert torch.equal(a, b)  # inputs untouched


@pytest.mark.parametrize("native_on", [True, False], ids=["native", "sequence-mode"])
def test_prefill_matches_sequence_mode_with_and_without_native(tiny_model, native_on, monkeypatch):
    if not native_on:
        monkeypatch.setenv(native.ENV_VAR, "0")
    calls = []
    real = native.layers_prefill
    monkeypatch.setattr(native, "layers_prefill", lambda *a: calls.append(1) or real(*a))
    backbone, x, state = _inputs(tiny_model, 7)
    with torch.inference_mode():
        logits, got = engine.prefill(backbone, x, state)
        want_logits, want = backbone(x, state, last_only=True)
    assert calls == ([1] if native_on else [])
    torch.testing.assert_close(logits, want_logits[0, -1], rtol=1e-5, atol=1e-5)
    for a, b in zip(got.tensors().values(), want.tensors().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_native_prefill_declines_what_it_does_not_compute(tiny_model):
    backbone, x, state = _inputs(tiny_model, 3)
    H = backbone.blocks[0].att.n_head
    params = [engine.native_weights(block) for block in backbone.blocks]
    two = backbone.init_state(2)
    with torch.inference_mode():
        assert native.layers_prefill(x, state.att_x_prev, state.wkv, state.ffn_x_prev, H, params) is None  # (1, T, C)
        assert native.layers_prefill(x[0], two.att_x_prev, two.wkv, two.ffn_x_prev, H, params) is None  # batch 2
        assert native.layers_prefill(x[0].double(), state.att_x_prev, state.wkv, state.ffn_x_prev, H, params) is None
    assert native.layers_prefill(x[0], state.att_x_prev, state.wkv, state.ffn_x_prev, H, params) is None  # autograd
