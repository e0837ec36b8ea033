"""The resumable, rank-sharded batch order behind exact resume and multi-device training."""

import pytest

from mmrwkv.training.data import ResumableBatchSampler


def test_resumed_sampler_continues_the_uninterrupted_order():
    full = list(ResumableBatchSampler(23, 4, epochs=3, seed=7))
    for start in (0, 1, 5, 6, 11):
        assert list(ResumableBatchSampler(23, 4, epochs=3, seed=7, start=start)) == full[start:]


def test_each_epoch_is_a_fresh_permutation_without_repeats():
    batches = list(ResumableBatchSampler(12, 3, epochs=2, seed=1))
    first, second = sum(batches[:4], []), sum(batches[4:], [])
    assert sorted(first) == sorted(second) == list(range(12))
    assert first != second


def test_ranks_split_every_global_batch_into_disjoint_equal_parts():
    per_rank = [list(ResumableBatchSampler(20, 3, rank=r, world=2, seed=3)) for r in range(2)]
    assert len(per_rank[0]) == len(per_rank[1]) == 3
    for a, b in zip(*per_rank, strict=True):
        assert len(a) == len(b) == 3 and not set(a) & set(b)


def test_too_small_dataset_is_rejected():
    with pytest.raises(ValueError, match="smaller than one global batch"):
        ResumableBatchSampler(5, 4, world=2)
