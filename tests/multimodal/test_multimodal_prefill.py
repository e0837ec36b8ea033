"""Short prompt pieces are prefilled with one-token steps when measured faster, and give sequence mode's result."""

import pytest
import torch

from mmrwkv import prefill
from mmrwkv.chat import ChatSession
from mmrwkv.multimodal import Media


def record_lengths(monkeypatch, backbone):
    seen = []
    original = backbone.forward_hidden

    def recording(x, *args, **kwargs):
        seen.append(x.shape[1])
        return original(x, *args, **kwargs)

    monkeypatch.setattr(backbone, "forward_hidden", recording)
    return seen


@pytest.mark.parametrize("n", [1, 2, 3])
def test_short_pieces_run_as_steps_and_match_sequence_mode(tiny_model, n, monkeypatch):
    monkeypatch.setattr(prefill, "step_prefill_max", lambda backbone: 3)
    ids = tiny_model.tokenizer.encode("User: a b c d e f")[:n]
    state = tiny_model.backbone.init_state(1)
    seen = record_lengths(monkeypatch, tiny_model.backbone)
    with torch.inference_mode():
        logits, got = ChatSession(tiny_model)._run(ids, Media(), state)
        assert seen == [1] * n
        want_logits, want = tiny_model(torch.tensor([ids]), None, state, last_only=True)
    torch.testing.assert_close(logits, want_logits[0, -1], rtol=1e-5, atol=1e-5)
    for x, y in zip(got.tensors().values(), want.tensors().values(), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)


def test_longer_pieces_run_in_sequence_mode(tiny_model, monkeypatch):
    monkeypatch.setattr(prefill, "step_prefill_max", lambda backbone: 3)
    ids = tiny_model.tokenizer.encode("User: a b c d e f g h")
    assert len(ids) > 3
    seen = record_lengths(monkeypatch, tiny_model.backbone)
    with torch.inference_mode():
        ChatSession(tiny_model)._run(ids, Media(), None)
    assert seen == [len(ids)]


def test_the_crossover_is_measured_once_per_backbone_and_thread_count(tiny_model, monkeypatch):
    calls = []
    monkeypatch.setattr(prefill, "measure_crossover", lambda backbone: calls.append(1) or 5)
    backbone = tiny_model.backbone
    assert prefill.step_prefill_max(backbone) == prefill.step_prefill_max(backbone) == 5
    assert len(calls) == 1
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        prefill.step_prefill_max(backbone)
    finally:
        torch.set_num_threads(threads)
    assert len(calls) == 2


def test_the_measured_crossover_is_a_token_count_in_range(tiny_model):
    assert 1 <= prefill.measure_crossover(tiny_model.backbone) <= prefill.MAX_STEP_TOKENS
