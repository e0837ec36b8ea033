"""Batched greedy generation gives exactly the tokens, logits and states of one-at-a-time generation, in fp32 and in
bf16 (an official .pth loads in bf16): rows of a batch take the same one-token step one sequence takes."""

import pytest
import torch

from mmrwkv.inference import engine
from mmrwkv.inference.generate import GenerationResult, SamplingConfig, generate, generate_batch
from mmrwkv.inference.stepper import RWKVStepper
from mmrwkv.kernels import cpu as native

# different lengths; with the tiny model below, row 0 ("a") flipped a bf16 near-tie when the batch ran a batched
# step at (B, 1) while one sequence ran the native step
PROMPTS = ["a", "a much longer prompt here", "mid length", "xyz 123"]
GREEDY = SamplingConfig(temperature=0, max_tokens=24, eos_ids=[])
PENALIZED = SamplingConfig(temperature=0, max_tokens=24, eos_ids=[], presence_penalty=0.5, frequency_penalty=0.5)


@pytest.fixture(scope="module", params=[torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def model(request, tiny_model):
    # a copy: the session's tiny model stays fp32 for the other tests
    import copy

    return copy.deepcopy(tiny_model).to(request.param)


def _assert_same(got: torch.Tensor, want: torch.Tensor) -> None:
    """Bit for bit where the rows take the native step; where it is off or not built, both run plain torch (B rows
    vs one), whose fp32 sums may differ in the last bits: close then (the tokens are still compared exactly)."""
    if native.enabled():
        assert torch.equal(got, want)
    else:
        tol = 2e-2 if want.dtype == torch.bfloat16 else 1e-4
        torch.testing.assert_close(got, want, rtol=tol, atol=tol * max(1.0, want.abs().max().item()))


def _one_at_a_time(model, tokenizer, prompt, sampling) -> GenerationResult:
    result = GenerationResult()
    result.text = "".join(generate(model, tokenizer, prompt, sampling, result=result))
    return result


@pytest.mark.parametrize("sampling", [GREEDY, PENALIZED], ids=["greedy", "penalties"])
@pytest.mark.parametrize("batch_size", [1, 2, 3, 4])
def test_batched_greedy_equals_one_at_a_time_exactly(model, byte_tokenizer, sampling, batch_size):
    prompts = PROMPTS[:batch_size]
    batched = generate_batch(model, byte_tokenizer, prompts, sampling)
    for prompt, got in zip(prompts, batched, strict=True):
        single = _one_at_a_time(model, byte_tokenizer, prompt, sampling)
        assert got.tokens == single.tokens, f"prompt {prompt!r}"
        assert got.text == single.text
        assert got.finish_reason == single.finish_reason == "length"
        assert got.logits.dtype == single.logits.dtype == model.head.weight.dtype
        _assert_same(got.logits, single.logits)
        for name in ("att_x_prev", "wkv", "ffn_x_prev"):
            _assert_same(getattr(got.state, name), getattr(single.state, name))


def test_batched_prefill_equals_one_at_a_time_prefill(model, byte_tokenizer):
    nothing = SamplingConfig(temperature=0, max_tokens=0, eos_ids=[])
    batched = generate_batch(model, byte_tokenizer, PROMPTS, nothing)
    for prompt, got in zip(PROMPTS, batched, strict=True):
        single = _one_at_a_time(model, byte_tokenizer, prompt, nothing)
        assert got.tokens == single.tokens == []
        assert torch.equal(got.logits, single.logits)
        assert torch.equal(got.state.wkv, single.state.wkv)
        assert torch.equal(got.state.att_x_prev, single.state.att_x_prev)


def test_stepper_batch_rows_equal_batch_one_steps(model):
    step = RWKVStepper(model)
    state = model.init_state(3)
    ids = torch.tensor([5, 70, 200])
    for _ in range(3):  # a few tokens, so the rows' states differ and the row states are cut from a joined one
        logits, new = step(ids, state)
        assert logits.shape == (3, model.config.vocab_size) and new.batch_size == 3
        for row in range(3):
            one_logits, one = step(ids[row : row + 1], state[row].clone())
            _assert_same(logits[row], one_logits[0])
            _assert_same(new.wkv[:, row], one.wkv[:, 0])
            _assert_same(new.ffn_x_prev[:, row], one.ffn_x_prev[:, 0])
        state, ids = new, logits.float().argmax(dim=-1)


def test_rows_are_stepped_natively_only_where_one_sequence_is(model, monkeypatch):
    by_rows = []
    real = engine._by_rows
    monkeypatch.setattr(engine, "_by_rows", lambda *a: by_rows.append(1) or real(*a))
    step = RWKVStepper(model)
    state, ids = model.init_state(2), torch.tensor([1, 2])
    step(ids, state)
    assert by_rows == ([1] if native.enabled() else [])
    before = len(by_rows)
    monkeypatch.setenv(native.ENV_VAR, "0")
    step(ids, state)
    assert len(by_rows) == before
    # switched off: the batch takes the model's (B, 1) step, which still agrees with one row at a time closely
    logits, _ = step(ids, state)
    one, _ = step(ids[:1], state[0].clone())
    torch.testing.assert_close(logits[0].float(), one[0].float(), rtol=2e-2, atol=2e-2)


def test_sampled_batches_take_the_batched_step(model, byte_tokenizer, monkeypatch):
    # sampled rows cannot equal one-at-a-time draws (one generator serves the batch): they keep the step that reads
    # the weights once for all rows
    by_rows = []
    real = engine._by_rows
    monkeypatch.setattr(engine, "_by_rows", lambda *a: by_rows.append(1) or real(*a))
    sampled = SamplingConfig(temperature=0.8, top_p=0.9, max_tokens=4, eos_ids=[], seed=1)
    results = generate_batch(model, byte_tokenizer, PROMPTS[:3], sampled)
    assert [r.finish_reason for r in results] == ["length"] * 3 and not by_rows
    generate_batch(model, byte_tokenizer, PROMPTS[:2], sampled)  # two rows: stepped by rows all the same
    assert by_rows == [1] * sampled.max_tokens or not native.enabled()
    by_rows.clear()
    generate_batch(model, byte_tokenizer, PROMPTS[:3], GREEDY)
    assert by_rows == [1] * GREEDY.max_tokens or not native.enabled()
