"""Prefill of a prompt piece of one sequence: ids or embeddings in, the last logits and the state after it out.

A chat's pieces after a cached image or a previous turn are often a few tokens, where sequence mode's fixed cost
per layer is most of the work; `mmrwkv.inference.engine.prefill` runs such a piece of a small RWKV-7 on CPU token
by token in one native call instead, by a fixed rule on the model's size (never by timing itself). Both routes
compute the same function (to float rounding, not bit for bit); a given model and piece length always takes the
same one.

Notation: T time, C channels, V vocabulary.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from mmrwkv.inference import engine


@torch.inference_mode()
def prefill_embeddings(backbone: Any, x: Tensor, state: Any) -> tuple[Tensor, Any]:
    """Embeddings x (1, T, C) (ln0 not applied) from `state` (None: the start state) -> (last logits (V,), state)."""
    return engine.prefill(backbone, x, state)
