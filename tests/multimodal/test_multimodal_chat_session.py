"""ChatSession state reuse across turns, the content-keyed prefix cache, bad input mid-session."""

import copy

import pytest
import torch

from mmrwkv.errors import MediaError
from mmrwkv.inference.generate import SamplingConfig
from mmrwkv.inference.prefix_cache import PrefixCache, content_key
from mmrwkv.inference.session import ChatSession
from mmrwkv.multimodal import Media

GREEDY = SamplingConfig(temperature=0, max_tokens=4, stop=["\n\n"])


def count_calls(module):
    calls = []
    module.register_forward_hook(lambda *_: calls.append(1))
    return calls


def states_close(a, b):
    return all(torch.allclose(x, y, atol=1e-5) for x, y in zip(a.tensors().values(), b.tensors().values(),
                                                                 strict=True))


def test_turn_two_runs_only_its_new_tokens_and_matches_a_full_rerun(tiny_model, png):
    session = ChatSession(tiny_model, sampling=GREEDY, system="Be brief.")
    answer = "".join(session.ask("What is it?", images=[png(1)]))
    first, closing = session.prefill_tokens, len(session._pending)
    "".join(session.ask("And the colour?"))
    second = session.prefill_tokens - first
    new_turn = session.template.encode_turns(session.turns[-2:-1]).ids
    # the new turn, plus the blank line closing the previous answer when the model did not write it
    assert second == closing + len(new_turn) and closing in (0, len(tiny_model.tokenizer.encode("\n\n")))
    assert session.turns[2].text == answer and [t.role for t in session.turns] == [
        "system", "user", "assistant", "user", "assistant"]
    with torch.inference_mode():
        ids = torch.tensor([session.history.ids])
        _, full_state = tiny_model(ids, session.history.media)
    assert states_close(session.state, full_state)


def test_second_question_about_a_cached_image_skips_encoder_and_prefix_prefill(tiny_model, png):
    cache = PrefixCache()
    calls = count_calls(tiny_model.encoders["image"])
    session = ChatSession(tiny_model, cache=cache, sampling=GREEDY)
    "".join(session.ask("What is in the picture?", images=[png(7)]))
    # lookups: the whole prompt, then the prefix up to the image
    assert len(calls) == 1 and (cache.hits, cache.misses) == (0, 2)
    session.reset()
    before = session.prefill_tokens
    cached_answer = "".join(session.ask("How many cats?", images=[png(7)]))
    question = session.template.encode_turns(session.turns[-2:-1]).ids
    after_image = len(question) - question.index(tiny_model.placeholder_ids["image"]) - 4
    assert len(calls) == 1 and (cache.hits, cache.misses) == (1, 3)
    assert session.prefill_tokens - before == after_image
    # the cached path gives what an uncached session gives
    plain = ChatSession(tiny_model, sampling=GREEDY)
    assert "".join(plain.ask("How many cats?", images=[png(7)])) == cached_answer
    assert states_close(plain.state, session.state)


def test_cache_is_keyed_by_content_not_by_source(tiny_model, png, tmp_path):
    cache = PrefixCache()
    calls = count_calls(tiny_model.encoders["image"])
    session = ChatSession(tiny_model, cache=cache, sampling=GREEDY)
    path = tmp_path / "a.png"
    path.write_bytes(png(3))
    for item in (path, png(3), png(4)):
        session.reset()
        "".join(session.ask("Describe.", images=[item]))
    # the same bytes again hit the whole prompt's entry; each new image misses it and its prefix
    assert (cache.hits, cache.misses, len(calls)) == (1, 4, 2)
    assert (cache.media_hits, cache.media_misses) == (1, 2)


def test_a_cache_shared_by_two_models_keeps_their_states_apart(tiny_model, png):
    cache = PrefixCache()
    other = copy.deepcopy(tiny_model, memo={id(tiny_model.tokenizer): tiny_model.tokenizer})
    for model in (tiny_model, other, tiny_model):
        "".join(ChatSession(model, cache=cache, sampling=GREEDY).ask("Describe.", images=[png(3)]))
    assert (cache.hits, cache.misses) == (1, 4) and (cache.media_hits, cache.media_misses) == (1, 2)


def test_cache_entries_are_private_copies(tiny_model):
    cache = PrefixCache()
    state = tiny_model.backbone.init_state(1)
    logits = torch.zeros(5)
    cache.put("k", state, logits)
    state.wkv.add_(1.0)
    logits.add_(1.0)
    got_state, got_logits = cache.get("k")
    assert got_state.wkv.abs().sum() == 0 and got_logits.abs().sum() == 0
    got_state.wkv.add_(2.0)
    assert cache.get("k")[0].wkv.abs().sum() == 0


def test_cache_is_lru_bounded_by_entries_and_bytes(tiny_model):
    state = tiny_model.backbone.init_state(1)
    logits = torch.zeros(4)
    one = state.nbytes + logits.numel() * 4
    cache = PrefixCache(max_entries=2)
    for key in "abc":
        cache.put(key, state, logits)
        if key == "b":
            assert cache.get("a") is not None  # a becomes the most recently used
    assert cache.get("b") is None and cache.get("a") is not None and len(cache) == 2
    small = PrefixCache(max_bytes=2 * one)
    for key in "abc":
        small.put(key, state, logits)
    assert len(small) == 2 and small.nbytes <= 2 * one and small.get("a") is None
    PrefixCache(max_bytes=one - 1).put("x", state, logits)


def test_content_key_depends_on_ids_media_and_parent():
    media = Media({"image": [torch.zeros(3, 2, 2)]})
    other = Media({"image": [torch.ones(3, 2, 2)]})
    base = content_key([1, 2], media)
    assert base == content_key([1, 2], Media({"image": [torch.zeros(3, 2, 2)]}))
    assert len({base, content_key([1, 3], media), content_key([1, 2], other), content_key([1, 2], media, parent="p"),
                content_key([1, 2], Media({"audio": [torch.zeros(3, 2, 2)]}))}) == 5


def test_corrupt_image_raises_naming_the_file_and_the_session_stays_usable(tiny_model, png, tmp_path):
    session = ChatSession(tiny_model, cache=PrefixCache(), sampling=GREEDY)
    "".join(session.ask("Hello"))
    state, turns, history = session.state.clone(), list(session.turns), list(session.history.ids)
    bad = tmp_path / "broken.png"
    bad.write_bytes(png(1)[:40])
    with pytest.raises(MediaError, match="broken.png"):
        session.ask("What is this?", images=[bad])
    with pytest.raises(MediaError, match="audio"):
        session.ask("What is this?", audio=[b"not a sound"])
    assert session.turns == turns and session.history.ids == history and states_close(session.state, state)
    assert "".join(session.ask("And this?", images=[png(2)])) == session.turns[-1].text
    assert len(session.turns) == 4


def test_closing_an_answer_early_keeps_what_was_generated(tiny_model):
    session = ChatSession(tiny_model, sampling=SamplingConfig(temperature=0, max_tokens=6, stop=[], eos_ids=[]))
    stream = session.ask("Count to ten.")
    next(stream)
    stream.close()
    assert session.turns[-1].role == "assistant" and session.turns[-1].text
    "".join(session.ask("Go on."))
    with torch.inference_mode():
        _, full_state = tiny_model(torch.tensor([session.history.ids]))
    assert states_close(session.state, full_state)


def test_fork_branches_without_touching_the_original(tiny_model, png):
    session = ChatSession(tiny_model, sampling=GREEDY)
    "".join(session.ask("What is it?", images=[png(1)]))
    state, turns, history = session.state.clone(), list(session.turns), list(session.history.ids)
    branch = session.fork()
    "".join(branch.ask("And then?"))
    assert len(branch.turns) == 4 and len(branch.history.ids) > len(history)
    assert session.turns == turns and session.history.ids == history and states_close(session.state, state)
    again = "".join(session.ask("And then?"))
    assert again == branch.turns[-1].text and states_close(session.state, branch.state)
