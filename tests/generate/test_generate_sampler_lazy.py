"""The Sampler makes its random generator only when it draws: greedy steps never seed one; seeds still repeat."""

import torch

from mmrwkv.inference.generate import Sampler, SamplingConfig


def test_greedy_never_makes_a_generator():
    sampler = Sampler(SamplingConfig(temperature=0), 1, 5)
    for _ in range(3):
        sampler(torch.randn(1, 5))
    assert sampler._generator is None


def test_a_seed_gives_the_same_draws_and_no_seed_draws_differ():
    logits = torch.zeros(1, 1000)
    draws = [[int(Sampler(SamplingConfig(seed=s), 1, 1000)(logits)[0]) for s in (7, 7, 8)] for _ in range(2)]
    assert draws[0] == draws[1] and draws[0][0] == draws[0][1]
    unseeded = {int(Sampler(SamplingConfig(), 1, 1000)(logits)[0]) for _ in range(20)}
    assert len(unseeded) > 1
