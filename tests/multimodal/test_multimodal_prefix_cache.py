"""The prefix cache is exact, content-keyed, bounded, and avoids decoding re-sent files."""

import copy
import dataclasses
import gc

import torch

from mmrwkv.data import template as chat_template
from mmrwkv.inference.generate import SamplingConfig
from mmrwkv.inference.prefix_cache import PrefixCache, model_key
from mmrwkv.inference.session import ChatSession

GREEDY = SamplingConfig(temperature=0, max_tokens=3, stop=[], eos_ids=[])


def prefilled(session, text, images):
    """(logits, state) right after the prompt, as the session's cache path computes them."""
    prompt = chat_template.Turn("user", text, images=session._prepare("image", images))
    enc = session.template.encode_turns([prompt])
    logits, state, _ = session._prefill(enc.ids, enc.media)
    return logits, state


def assert_same(a, b):
    (la, sa), (lb, sb) = a, b
    assert torch.equal(la, lb)
    assert all(torch.equal(x, y) for x, y in zip(sa.tensors().values(), sb.tensors().values(), strict=True))


def count_decodes(monkeypatch, model):
    calls = []
    original = model.preprocess

    def counting(modality, item):
        calls.append(modality)
        return original(modality, item)

    monkeypatch.setattr(model, "preprocess", counting)
    return calls


def test_a_hit_gives_bit_identical_logits_and_state_to_the_miss(tiny_model, png):
    session = ChatSession(tiny_model, cache=PrefixCache(), sampling=GREEDY)
    miss = prefilled(session, "What is it?", [png(5)])
    full_hit = prefilled(session, "What is it?", [png(5)])
    assert session.cache.hits == 1
    assert_same(miss, full_hit)
    # a different question after the same image: the image prefix comes from the cache, the question is new
    other_miss = prefilled(ChatSession(tiny_model, cache=PrefixCache(), sampling=GREEDY), "Colour?", [png(5)])
    other_hit = prefilled(session, "Colour?", [png(5)])
    assert session.cache.hits == 2
    assert_same(other_miss, other_hit)


def test_an_exact_repeated_prompt_runs_no_prefill_and_answers_the_same(tiny_model, png):
    session = ChatSession(tiny_model, cache=PrefixCache(), sampling=GREEDY)
    first = "".join(session.ask("What is it?", images=[png(2)]))
    before, state = session.prefill_tokens, session.state
    session.reset()
    assert "".join(session.ask("What is it?", images=[png(2)])) == first
    assert session.prefill_tokens == before
    assert all(torch.equal(x, y) for x, y in zip(state.tensors().values(), session.state.tensors().values(),
                                                 strict=True))


def test_a_re_sent_file_is_hashed_not_decoded(tiny_model, png, tmp_path, monkeypatch):
    decodes = count_decodes(monkeypatch, tiny_model)
    path = tmp_path / "same.png"
    path.write_bytes(png(4))
    session = ChatSession(tiny_model, cache=PrefixCache(), sampling=GREEDY)
    for item, text in ((png(4), "a?"), (path, "b?"), (str(path), "a?"), (png(6), "a?")):
        session.reset()
        "".join(session.ask(text, images=[item]))
    assert decodes == ["image", "image"]
    assert (session.cache.media_hits, session.cache.media_misses, session.cache.media_entries) == (2, 2, 2)


def test_the_same_bytes_with_other_preprocessing_or_another_model_do_not_hit(tiny_model, png, monkeypatch):
    cache = PrefixCache()
    "".join(ChatSession(tiny_model, cache=cache, sampling=GREEDY).ask("a?", images=[png(1)]))
    other = copy.deepcopy(tiny_model, memo={id(tiny_model.tokenizer): tiny_model.tokenizer})
    "".join(ChatSession(other, cache=cache, sampling=GREEDY).ask("a?", images=[png(1)]))
    assert (cache.hits, cache.media_hits, cache.media_misses) == (0, 0, 2)
    encoder = tiny_model.encoders["image"]
    # same model object, same shape, another resampling filter: the memo must not serve the old tensor
    other_filter = "bicubic" if encoder.image_preprocess.interpolation == "bilinear" else "bilinear"
    monkeypatch.setattr(encoder, "image_preprocess", dataclasses.replace(encoder.image_preprocess,
                                                                         interpolation=other_filter))
    "".join(ChatSession(tiny_model, cache=cache, sampling=GREEDY).ask("a?", images=[png(1)]))
    assert (cache.media_hits, cache.media_misses) == (0, 3)


def test_model_keys_are_never_reused(tiny_model):
    keys = {model_key(tiny_model)}
    for _ in range(3):
        other = copy.deepcopy(tiny_model)
        keys.add(model_key(other))
        del other
        gc.collect()
    assert len(keys) == 4 and model_key(tiny_model) in keys


def test_media_memo_is_lru_bounded_by_entries_and_bytes(tiny_model, png):
    cache = PrefixCache(max_media=2)
    for seed in (1, 2, 1, 3):
        cache.preprocess(tiny_model, "image", png(seed))
    assert cache.media_entries == 2 and (cache.media_hits, cache.media_misses) == (1, 3)
    cache.preprocess(tiny_model, "image", png(1))
    assert cache.media_hits == 2, "1 was used after 2, so 2 went first"
    one = cache.nbytes // 2
    small = PrefixCache(max_bytes=one)
    for seed in (1, 2):
        small.preprocess(tiny_model, "image", png(seed))
    assert small.media_entries == 1 and small.nbytes <= one


def test_states_are_evicted_before_media_when_over_the_byte_budget(tiny_model, png):
    state, logits = tiny_model.backbone.init_state(1), torch.zeros(4)
    media = PrefixCache().preprocess(tiny_model, "image", png(1))
    budget = state.nbytes + logits.numel() * 4 + media.numel() * media.element_size()
    cache = PrefixCache(max_bytes=budget)
    cache.preprocess(tiny_model, "image", png(1))
    cache.put("a", state, logits)
    cache.put("b", state, logits)
    assert len(cache) == 1 and cache.get("b") is not None and cache.media_entries == 1


def test_byte_count_follows_overwrites_and_evictions(tiny_model, png):
    state, logits = tiny_model.backbone.init_state(1), torch.zeros(4)
    one = state.nbytes + logits.numel() * 4
    cache = PrefixCache(max_entries=2, max_media=1)
    for key in "aabc":
        cache.put(key, state, logits)
    assert cache.nbytes == 2 * one
    media = [cache.preprocess(tiny_model, "image", png(seed)) for seed in (1, 2)]
    assert cache.nbytes == 2 * one + media[1].numel() * media[1].element_size()
