"""Fixtures for generation tests: a byte tokenizer and a tiny random RWKV-7 that fits it."""

import pytest
import torch

from mmrwkv.tokenizer import SpecialIds


class ByteTokenizer:
    """One token per byte (ids 0..255); reserved ids 256..261, eos 256."""

    vocab_size = 262
    special = SpecialIds(image=257, audio=258, eos=256, system=259, user=260, assistant=261)

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode_bytes(self, ids) -> bytes:
        return bytes(i for i in ids if i < 256)

    def decode(self, ids) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")


@pytest.fixture(scope="session")
def byte_tokenizer():
    return ByteTokenizer()


@pytest.fixture(scope="session")
def tiny_model():
    from mmrwkv.rwkv import RWKV, config_for

    torch.manual_seed(1)
    model = RWKV(config_for("v7-tiny", vocab_size=ByteTokenizer.vocab_size)).eval()
    # random weights large enough that greedy decoding does not collapse to one repeated token
    with torch.no_grad():
        model.head.weight.normal_(0, 1.0)
        for block in model.blocks:
            block.att.output.weight.normal_(0, 0.1)
            block.ffn.value.weight.normal_(0, 0.1)
    return model
