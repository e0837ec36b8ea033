"""Exception types. Every message names the file, field or value and the problem."""

from __future__ import annotations

import os
import re
from pathlib import Path

OFFICIAL_WEIGHTS = "https://huggingface.co/BlinkDL (rwkv-7-world, rwkv-6-world, ...)"


class MMRWKVError(Exception):
    """Base class of all errors raised on bad input."""


class CheckpointError(MMRWKVError):
    """A checkpoint file is missing, truncated, unsafe or does not fit the model."""


class ConfigError(MMRWKVError):
    """A recipe or model config has an unknown key, a wrong type or a bad value."""


class MediaError(MMRWKVError):
    """An image or audio input cannot be read or breaks a limit."""


class DataError(MMRWKVError):
    """A dataset file or record is missing or malformed."""


class TokenizerError(MMRWKVError):
    """A tokenizer file is missing or malformed, or a text cannot be tokenized."""


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
    from mmrwkv.rwkv.config import SIZES

    match = re.search(r"(?:x070|rwkv7)-.*?(\d+(?:\.\d+)?)[bB]", name)
    size = f"v7-{match.group(1)}b" if match else ""
    return size if size in SIZES else "SIZE"
