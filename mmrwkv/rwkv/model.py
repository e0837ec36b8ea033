"""The RWKV skeleton shared by every generation: emb, ln0, blocks, ln_out, head.

Notation: B batch, T time, C channels, V vocabulary, L layers. Module names equal the official checkpoint keys
(emb, blocks.{i}.ln0/ln1/ln2, blocks.{i}.att.*, blocks.{i}.ffn.*, ln_out, head). ln0 stays an explicit op
(official loaders fold it into the embedding) because media embeddings enter the stream after the lookup.
The same modules serve sequence mode (any B, T) and RNN mode (T = 1 with a state); the inference engine
(`mmrwkv.inference.engine`) picks a faster route for one token where one applies.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmrwkv.rwkv import v4, v5, v6, v7
from mmrwkv.rwkv.config import RWKVConfig
from mmrwkv.rwkv.state import State

GENERATIONS = {4: v4, 5: v5, 6: v6, 7: v7}
# fp16 inference of RWKV-4/5/6 halves the residual stream after every 6th block (the authors' RESCALE_LAYER): the
# stream of large models outgrows fp16's 65504 otherwise. The rwkv package does not rescale RWKV-7.
FP16_RESCALE_EVERY = 6


class Block(nn.Module):
    """x + TimeMix(ln1(x)), then x + ChannelMix(ln2(x)); block 0 also owns ln0."""

    def __init__(self, config: RWKVConfig, layer_id: int):
        super().__init__()
        C = config.n_embd
        gen = GENERATIONS[config.generation]
        if layer_id == 0:
            self.ln0 = nn.LayerNorm(C)
        self.ln1 = nn.LayerNorm(C)
        self.ln2 = nn.LayerNorm(C)
        self.att = gen.TimeMix(config, layer_id)
        self.ffn = gen.ChannelMix(config, layer_id)

    def forward(self, x, att_x_prev, wkv, ffn_x_prev, v_first=None, *, backend=None, scale: float = 1.0):
        """x (B, T, C) and this layer's state -> (x, (att_x_prev, wkv, ffn_x_prev), v_first).

        `scale`: the residual stream x is the model's stream times `scale` (a power of two, fp16 rescaling), so
        both sub-block outputs are added times `scale`; the LayerNorms make the rest scale-free.
        """
        h = self.ln1(x)
        dx, wkv, v_first = self.att(h, att_x_prev, wkv, v_first, backend=backend)
        x = x + (dx if scale == 1.0 else dx * scale)
        h2 = self.ln2(x)
        dx = self.ffn(h2, ffn_x_prev)
        x = x + (dx if scale == 1.0 else dx * scale)
        # token shift keeps the last post-LayerNorm input of each sub-block
        return x, (h[:, -1], wkv, h2[:, -1]), v_first


class RWKV(nn.Module):
    """An RWKV language model of any generation (`config.version`)."""

    def __init__(self, config: RWKVConfig):
        super().__init__()
        self.config = config
        C = config.n_embd
        self.emb = nn.Embedding(config.vocab_size, C)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.ln_out = nn.LayerNorm(C)
        self.head = nn.Linear(C, config.vocab_size, bias=False)
        # the state every sequence starts from; a state-tuned checkpoint sets it (batch 1, see mmrwkv.checkpoint)
        self.tuned_state: State | None = None
        # fp16 rescaling period in blocks (0: off), see FP16_RESCALE_EVERY; only a float16 stream is rescaled
        self.fp16_rescale_every = FP16_RESCALE_EVERY if config.generation <= 6 else 0
        if not self.emb.weight.is_meta:
            from mmrwkv.rwkv.init import init_weights

            init_weights(self)

    @property
    def ln0_dtype(self) -> torch.dtype | None:
        """RWKV-4/5/6 weights stored in bf16/fp16: the rwkv package folds ln0 into the embedding in that dtype, so
        its `cpu fp32` logits carry ln0's output rounded to it; the checkpoint loader sets this (see `apply_ln0`).
        Kept in `config.ln0_dtype`, so that it is saved with the config."""
        name = self.config.ln0_dtype
        return None if name is None else getattr(torch, name)

    @ln0_dtype.setter
    def ln0_dtype(self, dtype: torch.dtype | None) -> None:
        if dtype not in (None, torch.bfloat16, torch.float16) or (dtype is not None and self.config.generation == 7):
            raise ValueError(f"RWKV.ln0_dtype: {dtype} is not None, torch.bfloat16 or torch.float16 (RWKV-4/5/6)")
        self.config.ln0_dtype = None if dtype is None else str(dtype).removeprefix("torch.")

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Raw embedding rows (B, T) -> (B, T, C), without ln0."""
        return self.emb(ids)

    def apply_ln0(self, x: torch.Tensor) -> torch.Tensor:
        """ln0 on embeddings (B, T, C); with `ln0_dtype` set (and x of another dtype) computed in that dtype and
        cast back, as the authors' package does for RWKV-4/5/6 files stored in bf16/fp16."""
        ln0, dtype = self.blocks[0].ln0, self.ln0_dtype
        if dtype is None or x.dtype == dtype:
            return ln0(x)
        # bf16/fp16 input with fp32 affine: the same numbers as all-bf16/fp16 (fp32 inside, one rounding at the end)
        # and as the package's fold of a bf16 embedding with an fp32 ln0
        weight, bias = ln0.weight.float(), ln0.bias.float()
        return F.layer_norm(x.to(dtype), ln0.normalized_shape, weight, bias, ln0.eps).to(x.dtype)

    def init_state(self, batch_size: int, *, device=None) -> State:
        """The start state for `batch_size` sequences (zeros, or the tuned state of a state-tuned checkpoint), on
        the model's device unless told."""
        p = self.ln_out.weight
        if self.tuned_state is not None:
            return State.cat([self.tuned_state] * batch_size).to(device or p.device, p.dtype)
        return State.zeros(self.config, batch_size, device=device or p.device, dtype=p.dtype)

    def forward_hidden(self, x: torch.Tensor, state: State | None = None, *, backend: str | None = None):
        """ids (B, T) or embeddings (B, T, C) -> (h (B, T, C) after ln_out, new state)."""
        x = self._inputs(x)
        B = x.shape[0]
        state = self.init_state(B, device=x.device) if state is None else state
        if state.batch_size != B:
            raise ValueError(f"RWKV.forward: state batch size {state.batch_size} != input batch size {B}")
        x = self.apply_ln0(x)
        att_prev, wkv, ffn_prev = [], [], []
        v_first = None
        every = self.fp16_rescale_every if x.dtype == torch.float16 else 0
        for i, block in enumerate(self.blocks):
            scale = 0.5 ** (i // every) if every else 1.0
            x, (a, s, f), v_first = block(
                x, state.att_x_prev[i], state.wkv[i], state.ffn_x_prev[i], v_first, backend=backend, scale=scale
            )
            if every and (i + 1) % every == 0:
                x = x * 0.5
            att_prev.append(a)
            wkv.append(s)
            ffn_prev.append(f)
        new_state = type(state)(torch.stack(att_prev), torch.stack(wkv), torch.stack(ffn_prev))
        return self.ln_out(x), new_state

    def forward(
        self, x: torch.Tensor, state: State | None = None, *, last_only: bool = False, backend: str | None = None
    ):
        """ids (B, T) or embeddings (B, T, C) -> (logits (B, T, V), or (B, 1, V) with last_only; new state)."""
        h, state = self.forward_hidden(x, state, backend=backend)
        return self.logits(h[:, -1:] if last_only else h), state

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """The head on hidden states h (B, T, C) after ln_out -> (B, T, V)."""
        return self.head(h)

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() >= 2 and x.shape[1] == 0:
            raise ValueError(f"RWKV.forward: the input has no tokens (shape {list(x.shape)})")
        if not torch.is_floating_point(x):
            if x.dim() != 2:
                raise ValueError(f"RWKV.forward: token ids must be (B, T), got shape {list(x.shape)}")
            return self.emb(x)
        if x.dim() != 3 or x.shape[-1] != self.config.n_embd:
            raise ValueError(f"RWKV.forward: embeddings must be (B, T, {self.config.n_embd}), got {list(x.shape)}")
        return x

    def num_parameters(self) -> int:
        """Total parameter count."""
        return sum(p.numel() for p in self.parameters())
