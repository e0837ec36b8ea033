"""`mmrwkv eval` decodes with the authors' penalty rule: whitespace/digit tokens count 0 for the frequency penalty."""

import torch

from mmrwkv.evaluation.predict import _decode
from mmrwkv.inference.generate import SamplingConfig
from mmrwkv.tokenizer import load_tokenizer


class FixedLogits:
    """A stand-in model whose next-token logits never change: ' ' leads 'x' by `lead`."""

    def __init__(self, tokenizer, lead: float):
        self.tokenizer = tokenizer
        self.space, self.x = tokenizer.encode(" ")[0], tokenizer.encode("x")[0]
        self.logits = torch.full((tokenizer.vocab_size,), -30.0)
        self.logits[self.space], self.logits[self.x] = lead, 0.0

    def __call__(self, ids, media, state):
        return self.logits.expand(ids.shape[0], 1, -1).clone(), state


def test_eval_decode_counts_space_zero_for_the_frequency_penalty():
    model = FixedLogits(load_tokenizer("world"), lead=0.5)
    sampling = SamplingConfig(temperature=0, frequency_penalty=1.0, penalty_decay=1.0, max_tokens=6, eos_ids=[])
    logits = model.logits.expand(2, -1).clone()
    # a counted space would fall 1.0 below 'x' after one draw; uncounted it keeps its 0.5 lead every step
    assert _decode(model, logits, None, sampling) == [" " * 6] * 2


def test_eval_decode_still_counts_other_tokens():
    model = FixedLogits(load_tokenizer("world"), lead=-0.5)
    sampling = SamplingConfig(temperature=0, frequency_penalty=1.0, penalty_decay=1.0, max_tokens=4, eos_ids=[])
    # 'x' leads, is counted (-1.0), so the space wins next; the space counts 0 and keeps winning
    assert _decode(model, model.logits[None].clone(), None, sampling) == ["x   "]
