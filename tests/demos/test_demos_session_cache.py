"""Each demo session has its own prefix cache and media memo: nothing cached in one session serves another."""

from mmrwkv.demos.sessions import DemoSession
from mmrwkv.inference.generate import SamplingConfig

GREEDY = SamplingConfig(temperature=0, max_tokens=2, stop=[], eos_ids=[])


def test_the_same_image_in_two_sessions_is_decoded_and_prefilled_in_each(tiny_model, images, monkeypatch):
    decodes = []
    original = tiny_model.preprocess
    monkeypatch.setattr(tiny_model, "preprocess", lambda kind, item: decodes.append(item) or original(kind, item))
    a, b = DemoSession("a"), DemoSession("b")
    for session in (a, b):
        session.bind("tiny", tiny_model)
        "".join(session.chat.ask("look", images=[images[0]], sampling=GREEDY))
    assert a.chat.cache is not b.chat.cache
    assert len(decodes) == 2 and b.chat.cache.hits == 0 and b.chat.cache.media_hits == 0
    a.reset()
    "".join(a.chat.ask("look", images=[images[0]], sampling=GREEDY))
    assert a.chat.cache.hits == 1 and len(decodes) == 2
    assert a.nbytes > 0 and a.nbytes >= a.chat.cache.nbytes
