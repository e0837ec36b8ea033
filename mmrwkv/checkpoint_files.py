"""The file side of checkpoints: reading `.pth` safely, safetensors headers, paths, and atomic directory saves
that never replace anything but one of our checkpoints. `mmrwkv.checkpoint` builds models on these."""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
import zipfile
from pathlib import Path

import torch

from mmrwkv.errors import CheckpointError
from mmrwkv.rwkv.config import SIZES

OFFICIAL_WEIGHTS = "https://huggingface.co/BlinkDL (rwkv-7-world, rwkv-6-world, ...)"

FORMAT = "mmrwkv"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def cut_zip(path: Path) -> bool:
    """A file that starts as a zip archive (torch's format) but whose end record is missing."""
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04" and not zipfile.is_zipfile(path)


def unpickling_reason(err: Exception) -> str:
    """The one useful line of torch's weights-only refusal (its advice to disable the check is left out)."""
    match = re.search(r"GLOBAL ([\w.]+)", str(err))
    if match:
        return f"the pickle calls or builds {match.group(1)!r}, not only tensors (code is never run)"
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip() and "weights_only" not in ln]
    return f"not a plain pickle of tensors ({lines[0] if lines else type(err).__name__})"


def torch_load(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as err:
        # files saved with the legacy (non-zip) format cannot be memory-mapped
        if "mmap" not in str(err) or zipfile.is_zipfile(path):
            raise
        return torch.load(path, map_location="cpu", weights_only=True)


def unshared(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each tensor with memory of its own: a file may store two keys over one storage (an embedding tied to the
    head, slices of one flat buffer); as parameters they would train as one, and safetensors refuses to save them."""
    seen, out = set(), {}
    for key, tensor in tensors.items():
        ptr = tensor.untyped_storage().data_ptr() if tensor.numel() else None
        out[key] = tensor.clone() if ptr in seen else tensor
        seen.add(ptr)
    return out


def check_replaceable(directory: Path) -> None:
    """Saving replaces `directory` whole: only an empty directory or one of our checkpoints may be there."""
    if directory.is_file():
        raise CheckpointError(f"{directory}: is a file; a checkpoint is saved as a directory (a .pth name: official)")
    if not directory.is_dir() or not any(directory.iterdir()):
        return
    try:
        ours = json.loads((directory / CONFIG_FILE).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise CheckpointError(
            f"{directory}: exists and is not an mmrwkv checkpoint directory (no {CONFIG_FILE} of format {FORMAT!r}); "
            "saving would replace everything in it: choose a new directory or remove this one"
        )


def replace_dir(src: Path, dst: Path) -> None:
    if not dst.exists():
        os.replace(src, dst)
        return
    old = dst.parent / f".{dst.name}.old-{uuid.uuid4().hex[:8]}"
    os.replace(dst, old)
    os.replace(src, dst)
    shutil.rmtree(old, ignore_errors=True)


SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def safetensors_meta(weights: Path) -> dict[str, tuple]:
    """key -> (shape, dtype) from a safetensors header (non-float dtypes read as int8), without reading data."""
    from safetensors import safe_open

    if not weights.is_file():
        raise CheckpointError(f"{weights.parent}: missing {weights.name}")
    try:
        with safe_open(str(weights), "pt") as f:
            slices = {k: f.get_slice(k) for k in f.keys()}
            return {
                k: (tuple(v.get_shape()), SAFETENSORS_DTYPES.get(v.get_dtype(), torch.int8)) for k, v in slices.items()
            }
    except Exception as err:
        raise CheckpointError(f"{weights}: cannot read safetensors (truncated or corrupt?): {err}") from err


def resolve(path: Path) -> Path:
    """A path to one of our checkpoint's files means its directory; a bare .safetensors file is refused."""
    if path.is_file() and path.name in (CONFIG_FILE, WEIGHTS_FILE) and (path.parent / CONFIG_FILE).is_file():
        return path.parent
    if path.is_file() and path.suffix == ".safetensors":
        raise CheckpointError(
            f"{path}: a .safetensors file alone has no config: pass the checkpoint directory that holds it with "
            f"{CONFIG_FILE} (ours), or an official .pth"
        )
    return path


def missing_checkpoint(path: str | os.PathLike, what: str = "checkpoint file or directory") -> CheckpointError:
    """The error for a checkpoint path that does not exist, saying where one comes from: an official `.pth`
    is downloaded (or `mmrwkv init` writes random weights of a size), a directory is what training writes."""
    path = Path(path)
    if path.suffix == ".pth":
        how = (
            f"official RWKV weights are at {OFFICIAL_WEIGHTS}; `mmrwkv init {_size_of(path.name)} {path}` writes "
            "random weights of a named size"
        )
    else:
        how = (
            "training writes one: `make run` (= `mmrwkv run recipes/easy_vqa.yaml`) leaves "
            "runs/easy_vqa/all/final; a recipe writes <train.output_dir>/final, with stages "
            "<train.output_dir>/<last stage>/final; `mmrwkv init v7-tiny DIR` writes a random text model"
        )
    return CheckpointError(f"{path}: no such {what} ({how})")


def _size_of(name: str) -> str:
    """The named size an official RWKV-7 file name implies (RWKV-x070-World-1.5B-... or the G1 series'
    rwkv7-g1-0.4b-... -> v7-1.5b / v7-0.4b), else SIZE."""
    match = re.search(r"(?:x070|rwkv7)-.*?(\d+(?:\.\d+)?)[bB]", name)
    size = f"v7-{match.group(1)}b" if match else ""
    return size if size in SIZES else "SIZE"
