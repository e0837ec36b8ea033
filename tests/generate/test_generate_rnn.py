"""RNN-mode generation on a tiny RWKV-7: equals sequence mode, exposes its state, batches like one at a time."""

import torch

from mmrwkv.inference.generate import GenerationResult, SamplingConfig, generate, generate_batch, prefill, sample_stream

GREEDY = SamplingConfig(temperature=0, max_tokens=12, eos_ids=[])


def _greedy_by_full_sequence(model, ids: list[int], n: int) -> list[int]:
    ids = list(ids)
    out = []
    with torch.no_grad():
        for _ in range(n):
            logits, _ = model(torch.tensor([ids]))
            out.append(int(logits[0, -1].argmax()))
            ids.append(out[-1])
    return out


def test_greedy_rnn_generation_equals_full_sequence_recompute(tiny_model, byte_tokenizer):
    prompt = "Hello, wor"
    result = GenerationResult()
    "".join(generate(tiny_model, byte_tokenizer, prompt, GREEDY, result=result))
    assert result.tokens == _greedy_by_full_sequence(tiny_model, byte_tokenizer.encode(prompt), 12)
    assert result.finish_reason == "length"
    assert len(set(result.tokens)) > 1


def test_result_state_covers_prompt_and_generated_tokens(tiny_model, byte_tokenizer):
    prompt = byte_tokenizer.encode("state?")
    result = GenerationResult()
    list(generate(tiny_model, byte_tokenizer, prompt, GREEDY, result=result))
    with torch.no_grad():
        logits, state = tiny_model(torch.tensor([prompt + result.tokens]))
    torch.testing.assert_close(result.state.wkv, state.wkv, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(result.logits, logits[0, -1], rtol=1e-4, atol=1e-4)


def test_continuing_from_result_state_equals_one_long_generation(tiny_model, byte_tokenizer):
    first = GenerationResult()
    list(
        generate(
            tiny_model, byte_tokenizer, "abc", SamplingConfig(temperature=0, max_tokens=5, eos_ids=[]), result=first
        )
    )
    second = GenerationResult()
    list(sample_stream(tiny_model, byte_tokenizer, first.logits, first.state, GREEDY, result=second))
    whole = GenerationResult()
    list(
        generate(
            tiny_model, byte_tokenizer, "abc", SamplingConfig(temperature=0, max_tokens=17, eos_ids=[]), result=whole
        )
    )
    assert first.tokens + second.tokens == whole.tokens


def test_sample_stream_from_precomputed_logits_equals_generate(tiny_model, byte_tokenizer):
    logits, state = prefill(tiny_model, byte_tokenizer.encode("prefix"))
    a = "".join(sample_stream(tiny_model, byte_tokenizer, logits, state, GREEDY))
    b = "".join(generate(tiny_model, byte_tokenizer, "prefix", GREEDY))
    assert a == b


def test_eos_token_stops_and_is_not_fed(tiny_model, byte_tokenizer):
    greedy = _greedy_by_full_sequence(tiny_model, byte_tokenizer.encode("xyz"), 4)
    sampling = SamplingConfig(temperature=0, max_tokens=20, eos_ids=[greedy[3]])
    result = GenerationResult()
    list(generate(tiny_model, byte_tokenizer, "xyz", sampling, result=result))
    expected = greedy[: greedy.index(greedy[3])]
    assert result.tokens == expected and result.finish_reason == "eos"


def test_stop_string_ends_generation_without_emitting_it(tiny_model, byte_tokenizer):
    text = byte_tokenizer.decode(_greedy_by_full_sequence(tiny_model, byte_tokenizer.encode("q"), 12))
    stop = text[4:6]
    result = GenerationResult()
    pieces = list(
        generate(
            tiny_model,
            byte_tokenizer,
            "q",
            SamplingConfig(temperature=0, max_tokens=12, eos_ids=[], stop=[stop]),
            result=result,
        )
    )
    assert "".join(pieces) == text[: text.find(stop)]
    assert result.finish_reason == "stop"


def test_batched_greedy_equals_one_at_a_time(tiny_model, byte_tokenizer):
    prompts = ["a", "a much longer prompt here", "mid length"]
    batched = generate_batch(tiny_model, byte_tokenizer, prompts, GREEDY)
    for prompt, got in zip(prompts, batched, strict=True):
        single = GenerationResult()
        text = "".join(generate(tiny_model, byte_tokenizer, prompt, GREEDY, result=single))
        assert got.tokens == single.tokens
        assert got.text == text
        torch.testing.assert_close(got.state.wkv, single.state.wkv, rtol=1e-4, atol=1e-5)


def test_batched_rows_finish_independently(tiny_model, byte_tokenizer):
    prompts = ["first", "second prompt"]
    singles = [_greedy_by_full_sequence(tiny_model, byte_tokenizer.encode(p), 6) for p in prompts]
    sampling = SamplingConfig(temperature=0, max_tokens=6, eos_ids=[singles[0][2]])
    results = generate_batch(tiny_model, byte_tokenizer, prompts, sampling)
    assert results[0].finish_reason == "eos"
    assert results[0].tokens == singles[0][: singles[0].index(singles[0][2])]
    cut = singles[1].index(singles[0][2]) if singles[0][2] in singles[1] else 6
    assert results[1].tokens == singles[1][:cut]
