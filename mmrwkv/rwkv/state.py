"""Typed recurrent state: one class per generation, the constant-size memory of RNN-mode generation.

Notation: L layers, B batch, C channels, H heads, N head size. Fields, all stacked over layers:
    att_x_prev [L, B, C]   TimeMix token shift (the previous token's ln1 output)
    wkv        [L, B, H, N, N] fp32 (v4: [L, B, 3, C] = aa, bb, pp)
    ffn_x_prev [L, B, C]   ChannelMix token shift (the previous token's ln2 output)
The wkv index order is the kernel's: [key, value] for v5/v6, [value, key] for v7, hence one class each.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from mmrwkv.errors import CheckpointError

FIELDS = ("att_x_prev", "wkv", "ffn_x_prev")


@dataclass(eq=False)
class State:
    """Recurrent state of an RWKV model (use a generation subclass). Tensors are never mutated in place."""

    att_x_prev: torch.Tensor  # (L, B, C)
    wkv: torch.Tensor  # (L, B, H, N, N) fp32, v4: (L, B, 3, C)
    ffn_x_prev: torch.Tensor  # (L, B, C)

    generation: ClassVar[int] = 0

    @classmethod
    def zeros(cls, config, batch_size: int, *, device=None, dtype=torch.float32) -> State:
        """The empty state (`None` passed to the kernels means the same) for `config`."""
        L, C = config.n_layer, config.n_embd
        state_cls = STATE_CLASSES[config.generation]
        x_prev = torch.zeros(L, batch_size, C, device=device, dtype=dtype)
        return state_cls(x_prev, state_cls.empty_wkv(config, batch_size, device), x_prev.clone())

    @staticmethod
    def empty_wkv(config, batch_size: int, device) -> torch.Tensor:
        H, N = config.n_head, config.head_size
        return torch.zeros(config.n_layer, batch_size, H, N, N, device=device, dtype=torch.float32)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in FIELDS}

    def _map(self, fn) -> State:
        return type(self)(**{name: fn(t) for name, t in self.tensors().items()})

    @property
    def batch_size(self) -> int:
        return self.att_x_prev.shape[1]

    @property
    def n_layer(self) -> int:
        return self.att_x_prev.shape[0]

    @property
    def nbytes(self) -> int:
        """Bytes held by the state's tensors."""
        return sum(t.numel() * t.element_size() for t in self.tensors().values())

    @property
    def device(self) -> torch.device:
        return self.wkv.device

    def clone(self) -> State:
        return self._map(torch.clone)

    def detach(self) -> State:
        """The same values cut from the autograd graph (training across segments)."""
        return self._map(torch.Tensor.detach)

    def to(self, device=None, dtype: torch.dtype | None = None) -> State:
        """Move to `device`; `dtype` applies to the token-shift fields only (wkv stays fp32)."""
        return type(self)(
            att_x_prev=self.att_x_prev.to(device=device, dtype=dtype),
            wkv=self.wkv.to(device=device),
            ffn_x_prev=self.ffn_x_prev.to(device=device, dtype=dtype),
        )

    @classmethod
    def cat(cls, states: list[State]) -> State:
        """Join states along the batch axis."""
        if not states:
            raise ValueError("State.cat: empty list of states")
        kinds = {type(s) for s in states}
        if len(kinds) > 1:
            names = sorted(k.__name__ for k in kinds)
            raise ValueError(f"State.cat: cannot join states of different generations {names}")
        first = states[0]
        return type(first)(**{name: torch.cat([getattr(s, name) for s in states], dim=1) for name in FIELDS})

    def split(self) -> list[State]:
        """One state per batch row (views, no copy)."""
        return [self[i] for i in range(self.batch_size)]

    def __getitem__(self, index: int | slice) -> State:
        """Batch row(s) `index` as a state of batch size 1 (int) or len(slice)."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return self._map(lambda t: t[:, index])

    def save(self, path: str | Path) -> None:
        """Write a safetensors file with the generation and shapes as metadata; written aside and renamed into
        place, so an earlier file at `path` is whole until the new one is."""
        from safetensors.torch import save_file

        path = Path(path)
        if path.is_dir():
            raise CheckpointError(f"{path}: is a directory; a state is saved as one .safetensors file")
        shapes = {k: list(v.shape) for k, v in self.tensors().items()}
        meta = {"generation": str(self.generation), "shapes": json.dumps(shapes)}
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            save_file({k: v.detach().contiguous().cpu() for k, v in self.tensors().items()}, str(tmp), metadata=meta)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: str | Path, *, config=None, device=None) -> State:
        """Read a state written by `save`; with `config`, every field's shape is checked against that model."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: state file not found")
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as err:
            raise CheckpointError(f"{path}: not a readable safetensors state file ({err})") from err
        state_cls = _state_class_from_meta(path, meta)
        missing = [k for k in FIELDS if k not in tensors]
        if missing:
            raise CheckpointError(f"{path}: state file lacks fields {missing}")
        state = state_cls(**{k: tensors[k] for k in FIELDS})
        if config is not None:
            state.check_fits(config, source=str(path))
        return state.to(device) if device is not None else state

    def check_fits(self, config, *, source: str = "state") -> None:
        """Raise CheckpointError naming the first field whose shape does not fit `config`."""
        if self.generation != config.generation:
            raise CheckpointError(
                f"{source}: state of RWKV-{self.generation} cannot be used with an RWKV-{config.generation} model"
            )
        expected = State.zeros(config, self.batch_size, device="meta")
        for name in FIELDS:
            got, want = tuple(getattr(self, name).shape), tuple(getattr(expected, name).shape)
            if got != want:
                raise CheckpointError(
                    f"{source}: state field {name} has shape {list(got)}, the model needs {list(want)}"
                )


def _state_class_from_meta(path: Path, meta: dict) -> type[State]:
    try:
        return STATE_CLASSES[int(meta["generation"])]
    except (KeyError, ValueError) as err:
        found = meta.get("generation")
        raise CheckpointError(f"{path}: state metadata 'generation' is {found!r}, expected 4 to 7") from err


@dataclass(eq=False)
class RWKV4State(State):
    """RWKV-4: wkv [L, B, 3, C] holds (aa, bb, pp) per channel; pp starts at -1e38."""

    generation: ClassVar[int] = 4

    @staticmethod
    def empty_wkv(config, batch_size: int, device) -> torch.Tensor:
        wkv = torch.zeros(config.n_layer, batch_size, 3, config.n_embd, device=device, dtype=torch.float32)
        wkv[:, :, 2] = -1e38
        return wkv


@dataclass(eq=False)
class RWKV5State(State):
    """RWKV-5: wkv [L, B, H, N, N] indexed [key, value]."""

    generation: ClassVar[int] = 5


@dataclass(eq=False)
class RWKV6State(State):
    """RWKV-6: wkv [L, B, H, N, N] indexed [key, value]."""

    generation: ClassVar[int] = 6


@dataclass(eq=False)
class RWKV7State(State):
    """RWKV-7: wkv [L, B, H, N, N] indexed [value, key]."""

    generation: ClassVar[int] = 7


STATE_CLASSES: dict[int, type[State]] = {4: RWKV4State, 5: RWKV5State, 6: RWKV6State, 7: RWKV7State}
