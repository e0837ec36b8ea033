"""Prompt pieces: a short piece of a small fp32 RWKV-7 on CPU takes the native route (a fixed rule on the model's
size, no timing), anything else sequence mode; both give sequence mode's result."""

import pytest
import torch

from mmrwkv.inference import engine
from mmrwkv.inference.session import ChatSession
from mmrwkv.kernels import cpu as native
from mmrwkv.multimodal import Media


def record_native_pieces(monkeypatch):
    seen = []
    original = engine._native_piece

    def recording(model, x, state):
        seen.append(x.shape[1])
        return original(model, x, state)

    monkeypatch.setattr(engine, "_native_piece", recording)
    return seen


def assert_states_close(a, b):
    for x, y in zip(a.tensors().values(), b.tensors().values(), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n", [1, 2, 3, 9])
@pytest.mark.parametrize("from_zero", [True, False])
def test_short_pieces_take_the_native_route_and_match_sequence_mode(tiny_model, n, from_zero, monkeypatch):
    ids = tiny_model.tokenizer.encode("User: a b c d e f g h i j k l m n")[:n]
    assert len(ids) == n and n <= engine.native_prefill_max(tiny_model.backbone)
    with torch.inference_mode():
        state = None if from_zero else tiny_model(torch.tensor([[5, 6, 7]]))[1]
        seen = record_native_pieces(monkeypatch)
        logits, got = ChatSession(tiny_model)._run(ids, Media(), state)
        want_logits, want = tiny_model(torch.tensor([ids]), None, state, last_only=True)
    assert seen == ([n] if native.enabled() else [])
    torch.testing.assert_close(logits, want_logits[0, -1], rtol=1e-5, atol=1e-5)
    assert_states_close(got, want)


def test_longer_pieces_and_native_off_run_sequence_mode(tiny_model, monkeypatch):
    monkeypatch.setattr(engine, "MAX_NATIVE_PREFILL", 3)
    seen = record_native_pieces(monkeypatch)
    with torch.inference_mode():
        ChatSession(tiny_model)._run(tiny_model.tokenizer.encode("User: a b c d e f g h"), Media(), None)
        monkeypatch.setenv(native.ENV_VAR, "0")
        ChatSession(tiny_model)._run(tiny_model.tokenizer.encode("Us"), Media(), None)
    assert seen == []


def test_the_native_prefill_length_follows_the_models_size_only(tiny_model):
    backbone = tiny_model.backbone
    longest = engine.native_prefill_max(backbone)
    assert longest == engine.native_prefill_max(backbone)  # nothing measured: the same answer every time
    layer = sum(p.numel() * p.element_size() for p in backbone.blocks[-1].parameters())
    assert longest == min(engine.MAX_NATIVE_PREFILL, engine.NATIVE_PREFILL_LAYER_BYTES // layer)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        assert engine.native_prefill_max(backbone) == longest
    finally:
        torch.set_num_threads(threads)


def test_a_large_or_bf16_model_prefills_one_token_at_most_natively(tiny_model, monkeypatch):
    backbone = tiny_model.backbone
    monkeypatch.setattr(engine, "NATIVE_PREFILL_MODEL_BYTES", 1)
    assert engine.native_prefill_max(backbone) == 1
    monkeypatch.undo()
    backbone.to(torch.bfloat16)
    try:
        assert engine.native_prefill_max(backbone) == 1
    finally:
        backbone.to(torch.float32)
