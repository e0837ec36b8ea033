"""A short sequence pads to its own length rounded up to a power of two, not to the longest chunk."""

import pytest
import torch

from mmrwkv.kernels import chunked, reference
from mmrwkv.kernels.reference import random_inputs


@pytest.mark.parametrize(("t", "expected"), [(1, 1), (2, 2), (3, 4), (10, 16), (64, 64), (500, 64)])
def test_chunk_length_is_capped_by_the_sequence_length(t, expected):
    w = torch.full((1, t, 2, 4), -0.1)  # weak decay: only the length caps the chunk
    assert chunked._factored_chunk_len(w, chunked.MAX_CHUNK) == expected


@pytest.mark.parametrize("op", ["wkv6", "wkv7"])
@pytest.mark.parametrize("t", [2, 3, 10])
def test_short_sequences_with_a_start_state_match_the_reference(op, t):
    args = random_inputs(op, 2, t, 2, 8)
    n = args["v"].shape[-1]
    args["state"] = torch.randn(2, 2, n, n, generator=torch.Generator().manual_seed(t)) * 0.1
    y0, s0 = getattr(reference, op)(**args)
    y1, s1 = getattr(chunked, op)(**args)
    torch.testing.assert_close(y1, y0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s1, s0, rtol=1e-5, atol=1e-5)
