"""SamplingConfig validation and the Sampler's greedy / top-k / top-p / penalty behaviour."""

import pytest
import torch

from mmrwkv.errors import ConfigError
from mmrwkv.inference.generate import Sampler, SamplingConfig


def test_greedy_picks_argmax_per_row():
    logits = torch.tensor([[0.0, 3.0, 1.0], [5.0, 0.0, 1.0]])
    assert Sampler(SamplingConfig(temperature=0), 2, 3)(logits).tolist() == [1, 0]


def test_top_k_one_and_tiny_top_p_equal_greedy():
    logits = torch.randn(4, 50)
    greedy = logits.argmax(-1)
    assert torch.equal(Sampler(SamplingConfig(top_k=1, seed=0), 4, 50)(logits), greedy)
    assert torch.equal(Sampler(SamplingConfig(top_p=1e-6, seed=0), 4, 50)(logits), greedy)


def test_top_k_never_samples_outside_the_k_best():
    logits = torch.arange(10.0).repeat(200, 1)
    tokens = Sampler(SamplingConfig(top_k=3, temperature=5.0, seed=1), 200, 10)(logits)
    assert set(tokens.tolist()) == {7, 8, 9}


def test_top_p_keeps_the_smallest_set_reaching_the_mass():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log().repeat(400, 1)
    tokens = Sampler(SamplingConfig(top_p=0.7, seed=2), 400, 4)(logits)
    assert set(tokens.tolist()) == {0, 1}


def test_same_seed_same_tokens_and_banned_ids_never_drawn():
    logits = torch.randn(64, 20)
    cfg = SamplingConfig(temperature=1.5, seed=7, banned_ids=[3, 4])
    a, b = Sampler(cfg, 64, 20)(logits), Sampler(cfg, 64, 20)(logits)
    assert torch.equal(a, b)
    assert not set(a.tolist()) & {3, 4}


def test_penalties_follow_decayed_occurrence_counts():
    cfg = SamplingConfig(temperature=0, presence_penalty=0.5, frequency_penalty=0.25, penalty_decay=0.5)
    sampler = Sampler(cfg, 1, 3)
    assert sampler(torch.tensor([[2.0, 1.9, 0.0]])).item() == 0
    # token 0 occurred once: 2.0 - (0.5 + 0.25 * 1) = 1.25 < 1.9
    assert sampler(torch.tensor([[2.0, 1.9, 0.0]])).item() == 1
    # counts decayed by 0.5 each step: token 0 -> 0.5, token 1 -> 1
    assert sampler.counts.tolist() == [[0.5, 1.0, 0.0]]


@pytest.mark.parametrize(
    "field, value", [("temperature", -1.0), ("top_p", 0.0), ("top_k", -2), ("max_tokens", -1), ("stop", "\n")]
)
def test_bad_sampling_values_name_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        SamplingConfig(**{field: value})
