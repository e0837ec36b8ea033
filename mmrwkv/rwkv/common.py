"""Small pieces every generation shares: token shift and the head view."""

from __future__ import annotations

import torch


def shifted(x: torch.Tensor, x_prev: torch.Tensor) -> torch.Tensor:
    """The previous token of every position: (B, T, C) with `x_prev` (B, C) in front."""
    if x.shape[1] == 1:
        # RNN mode: no concatenation, only a view of the state
        return x_prev.unsqueeze(1)
    return torch.cat((x_prev.unsqueeze(1), x[:, :-1]), dim=1)


def heads(x: torch.Tensor, n_head: int) -> torch.Tensor:
    """(B, T, C) -> (B, T, H, N), a view."""
    B, T, _ = x.shape
    return x.view(B, T, n_head, -1)
