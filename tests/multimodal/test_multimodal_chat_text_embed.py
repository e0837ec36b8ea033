"""A chat piece without media is embedded by the backbone alone: the same numbers as the multimodal embedding,
and a media slot without its media still fails as before."""

import pytest
import torch

from mmrwkv.errors import MediaError
from mmrwkv.inference.session import ChatSession
from mmrwkv.multimodal import Media


def test_text_pieces_skip_the_media_embedding_with_the_same_result(tiny_model, monkeypatch):
    session = ChatSession(tiny_model)
    ids = tiny_model.tokenizer.encode("User: what colour is it?\n\nAssistant:")
    with torch.inference_mode():
        want_logits, want_state = tiny_model(torch.tensor([ids]), None, None, last_only=True)
        calls = []
        real = type(tiny_model).embed
        monkeypatch.setattr(type(tiny_model), "embed", lambda self, *a: calls.append(1) or real(self, *a))
        logits, state = session._run(ids, None, None)
        session._run(ids, Media(), None)
    assert calls == []
    torch.testing.assert_close(logits, want_logits[0, -1], rtol=1e-5, atol=1e-5)
    for a, b in zip(state.tensors().values(), want_state.tensors().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("modality", ["image", "audio"])
def test_a_media_slot_without_media_still_raises(tiny_model, modality):
    session = ChatSession(tiny_model)
    slot = int(getattr(tiny_model.tokenizer.special, modality))
    with torch.inference_mode(), pytest.raises(MediaError):
        session._run([5, slot, 6], None, None)
