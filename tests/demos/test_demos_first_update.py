"""The chat's first update of an answer already carries its first piece; an empty answer still shows the turn."""

from mmrwkv.demos.chat import ChatDemo, ChatOptions
from mmrwkv.demos.common import ModelRegistry
from mmrwkv.inference.generate import SamplingConfig


class FixedSampling(ChatDemo):
    def __init__(self, options, registry, sampling):
        super().__init__(options, registry=registry)
        self.fixed = sampling

    def sampling(self, temperature, top_p, max_tokens):
        return self.fixed


def _updates(tiny_model, images, sampling) -> list[list[dict]]:
    registry = ModelRegistry()
    registry.add("tiny", tiny_model)
    demo = FixedSampling(ChatOptions(checkpoint="tiny"), registry, sampling)
    return list(demo.respond({"text": "What is it?", "files": [images[0]]}, "tiny", "", 0.0, 1.0, 4, "s1"))


def test_every_update_shows_reply_text_from_the_first_on(tiny_model, images):
    updates = _updates(tiny_model, images, SamplingConfig(temperature=0, max_tokens=4, stop=[], eos_ids=[]))
    assert len(updates) >= 2
    replies = [u[-1]["content"] for u in updates]
    assert all(u[-1]["role"] == "assistant" for u in updates) and all(replies)
    assert all(a != b and b.startswith(a) for a, b in zip(replies, replies[1:], strict=False))


def test_an_empty_answer_still_shows_the_message_and_an_empty_reply(tiny_model, images):
    updates = _updates(tiny_model, images, SamplingConfig(temperature=0, max_tokens=0))
    assert len(updates) == 1
    assert [m["role"] for m in updates[0]] == ["user", "user", "assistant"] and updates[0][-1]["content"] == ""
