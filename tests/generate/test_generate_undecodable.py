"""Generation never draws an id the tokenizer cannot turn into text (the World vocabulary's unused 65535; a model's
rows past a smaller tokenizer's last id): a random or lightly trained model may rank one first."""

import time

import pytest
import torch

from mmrwkv.inference.generate import Sampler, SamplingConfig, _undecodable_ids
from mmrwkv.tokenizer import load_tokenizer

WORLD = load_tokenizer("world")


def test_the_world_vocabulary_leaves_only_65535_undecodable():
    start = time.perf_counter()
    assert _undecodable_ids(WORLD, 65536) == [65535]
    assert time.perf_counter() - start < 5
    assert _undecodable_ids(WORLD, 65540) == [65535, 65536, 65537, 65538, 65539]  # a padded head


@pytest.mark.parametrize("sampling", [SamplingConfig(temperature=0), SamplingConfig(temperature=1.0, top_p=1.0),
                                      SamplingConfig(temperature=0, presence_penalty=0.3)])  # fmt: skip
def test_an_undecodable_id_ranked_first_is_never_drawn(sampling):
    logits = torch.zeros(2, 65536)
    logits[:, 65535] = 50.0  # the undecodable id, far ahead
    logits[0, 123], logits[1, 77] = 10.0, 10.0
    sampler = Sampler(sampling, 2, 65536, tokenizer=WORLD)
    for _ in range(5):
        tokens = sampler(logits).tolist()
        assert 65535 not in tokens
    if sampling.temperature == 0:
        assert tokens == [123, 77]
    without = Sampler(sampling, 2, 65536)  # no tokenizer: nothing known to ban
    assert 65535 in without(logits).tolist()
