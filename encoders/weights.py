"""Local weights files for encoders: safetensors or torch pickles loaded with weights_only, strict key checks."""

from __future__ import annotations

import contextlib
import contextvars
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from mmrwkv.errors import CheckpointError

_FROM_CHECKPOINT = contextvars.ContextVar("mmrwkv_weights_from_checkpoint", default=False)


@contextlib.contextmanager
def weights_from_checkpoint() -> Iterator[None]:
    """Build encoders without reading their original weights files or caches: a saved multimodal checkpoint holds
    every encoder weight in its own model.safetensors, so it loads from its directory alone."""
    token = _FROM_CHECKPOINT.set(True)
    try:
        yield
    finally:
        _FROM_CHECKPOINT.reset(token)


def skip_weight_files() -> bool:
    """True inside `weights_from_checkpoint`: encoders build with random weights that the checkpoint replaces."""
    return _FROM_CHECKPOINT.get()


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state_dict from `.safetensors` or a torch file (`.pt`, `.pth`, `.bin`); bad files raise CheckpointError.

    A torch file holding {"state_dict": ...} or {"model": ...} is unwrapped. TorchScript archives (OpenAI's CLIP
    `.pt` files) are read with torch.jit.load, which `torch.load(weights_only=True)` refuses.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path}: does not exist or is not a file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        elif _is_torchscript(path):
            state = dict(torch.jit.load(str(path), map_location="cpu").state_dict())
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any reader failure means an unreadable file
        raise CheckpointError(f"weights file {path}: cannot be read ({type(err).__name__}: {err})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"weights file {path}: expected a state_dict of tensors, got {type(state).__name__}")
    return state


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())


def strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Keys starting with `prefix`, without it; the dict unchanged when no key has it."""
    if not any(k.startswith(prefix) for k in state):
        return state
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Load `state` into `module`; missing / unexpected keys or shape mismatches raise CheckpointError."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})")
        if wrong:
            k = wrong[0]
            shapes = f"file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
            parts.append(f"{len(wrong)} shape mismatches (e.g. {k}: {shapes})")
        raise CheckpointError(f"weights file {path}: does not fit {type(module).__name__}: {'; '.join(parts)}")
    module.load_state_dict(state)
