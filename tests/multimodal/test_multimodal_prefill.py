"""Short prompt pieces take the compiled short path when measured faster, and give sequence mode's result."""

import pytest
import torch

from mmrwkv import prefill
from mmrwkv.chat import ChatSession
from mmrwkv.multimodal import Media


def record_short_calls(monkeypatch):
    seen = []
    original = prefill._short

    def recording(backbone, x, state):
        seen.append(x.shape[1])
        return original(backbone, x, state)

    monkeypatch.setattr(prefill, "_short", recording)
    return seen


def assert_states_close(a, b):
    for x, y in zip(a.tensors().values(), b.tensors().values(), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n", [2, 3, 9])
@pytest.mark.parametrize("from_zero", [True, False])
def test_short_pieces_take_the_short_path_and_match_sequence_mode(tiny_model, n, from_zero, monkeypatch):
    monkeypatch.setattr(prefill, "short_prefill_max", lambda backbone: 16)
    ids = tiny_model.tokenizer.encode("User: a b c d e f g h i j k l m n")[:n]
    assert len(ids) == n
    with torch.inference_mode():
        state = None if from_zero else tiny_model(torch.tensor([[5, 6, 7]]))[1]
        seen = record_short_calls(monkeypatch)
        logits, got = ChatSession(tiny_model)._run(ids, Media(), state)
        want_logits, want = tiny_model(torch.tensor([ids]), None, state, last_only=True)
    assert seen == [n]
    torch.testing.assert_close(logits, want_logits[0, -1], rtol=1e-5, atol=1e-5)
    assert_states_close(got, want)


def test_one_token_and_longer_pieces_run_the_model_itself(tiny_model, monkeypatch):
    monkeypatch.setattr(prefill, "short_prefill_max", lambda backbone: 3)
    seen = record_short_calls(monkeypatch)
    with torch.inference_mode():
        for text in ("User", "User: a b c d e f g h"):
            ChatSession(tiny_model)._run(tiny_model.tokenizer.encode(text), Media(), None)
    assert seen == []


def test_short_path_applies_to_fp32_rwkv7_on_cpu_only(tiny_model, monkeypatch):
    monkeypatch.setattr(prefill, "measure_crossover", lambda backbone: 7)
    assert prefill.short_prefill_max(tiny_model.backbone) == 7
    tiny_model.backbone.to(torch.bfloat16)
    assert prefill.short_prefill_max(tiny_model.backbone) == 0


def test_the_crossover_is_measured_once_per_backbone_and_thread_count(tiny_model, monkeypatch):
    calls = []
    monkeypatch.setattr(prefill, "measure_crossover", lambda backbone: calls.append(1) or 5)
    backbone = tiny_model.backbone
    assert prefill.short_prefill_max(backbone) == prefill.short_prefill_max(backbone) == 5
    assert len(calls) == 1
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        prefill.short_prefill_max(backbone)
    finally:
        torch.set_num_threads(threads)
    assert len(calls) == 2


@pytest.mark.parametrize(("gaps", "expected"), [((1, 2), 0), ((-1, -2), 64), ((-1, 1), 18), ((-3, -1), 46)])
def test_the_crossover_is_where_the_timed_lines_cross(tiny_model, monkeypatch, gaps, expected):
    # a cheap first probe, then the short path: 10 + gap; sequence mode: 10 at both probe lengths (4 and 32)
    times = iter([0.001, 10 + gaps[0], 10 + gaps[1], 10, 10])
    monkeypatch.setattr(prefill, "_fastest", lambda run, repeats=3: next(times))
    assert prefill.measure_crossover(tiny_model.backbone) == expected


def test_the_measured_crossover_is_a_token_count_in_range(tiny_model):
    assert 0 <= prefill.measure_crossover(tiny_model.backbone) <= prefill.MAX_SHORT_TOKENS


def test_wkv7_steps_equal_the_reference_step_token_by_token():
    from mmrwkv.kernels.reference import random_inputs, wkv7_step

    args = random_inputs("wkv7", 2, 9, 3, 8)
    state = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    s, want = state, []
    for t in range(9):
        y, s = wkv7_step(*(args[n][:, t] for n in "rwkvab"), s)
        want.append(y)
    got, got_state = prefill.wkv7_steps(*(args[n] for n in "rwkvab"), state)
    torch.testing.assert_close(got, torch.stack(want, 1), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got_state, s, rtol=1e-6, atol=1e-6)


def test_a_compute_bound_model_is_not_timed_further(tiny_model, monkeypatch):
    calls = []
    monkeypatch.setattr(prefill, "_fastest", lambda run, repeats=3: calls.append(repeats) or 1.0)
    assert prefill.measure_crossover(tiny_model.backbone) == 0
    assert calls == [1]
