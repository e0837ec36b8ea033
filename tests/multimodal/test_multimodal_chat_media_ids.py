"""A chat never samples a media placeholder id: fed back, it would be a media slot with no media behind it."""

import torch

from mmrwkv.inference.generate import SamplingConfig
from mmrwkv.inference.session import ChatSession, ban_media_ids


def _wants(model, token: int):
    """Make every logit row of `model` peak at `token` (the head is what every decode path calls)."""
    real = model.backbone.logits

    def peaked(h):
        return real(h).index_fill(-1, torch.tensor([token]), 1e4)

    model.backbone.logits = peaked


def test_chat_skips_placeholder_ids_greedy_and_sampled(tiny_model, image_file):
    pid = tiny_model.placeholder_ids["image"]
    _wants(tiny_model, pid)
    for sampling in (SamplingConfig(temperature=0.0, max_tokens=4), SamplingConfig(temperature=1.0, max_tokens=4,
                                                                                   seed=3)):
        session = ChatSession(tiny_model, sampling=sampling)
        first = "".join(session.ask("What is it?", images=[image_file]))
        second = "".join(session.ask("And now?"))  # the first answer's tokens are fed back through the model
        assert isinstance(first, str) and isinstance(second, str)
        assert pid not in session.history.ids[-4:]


def test_ban_media_ids_adds_every_modality_once(tiny_model):
    tok = tiny_model.tokenizer
    banned = ban_media_ids(SamplingConfig(banned_ids=[7]), tok).banned_ids
    assert set(banned) == {7, *tiny_model.placeholder_ids.values()}
    again = ban_media_ids(SamplingConfig(banned_ids=banned), tok)
    assert again.banned_ids == banned
