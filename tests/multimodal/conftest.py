"""Tiny real multimodal models for the fusion / chat tests, and a test-only audio encoder."""

import copy
import io
import math

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image
from torch import nn

from mmrwkv.encoders.base import AudioEncoder
from mmrwkv.encoders.registry import register
from mmrwkv.multimodal import MultimodalRWKV


@register("test_frames_audio")
class FramesAudio(AudioEncoder):
    """Frames of 4 samples -> linear -> pairs averaged: (S,) at 800 Hz -> S // 8 tokens of width `width`."""

    def __init__(self, *, width: int = 8):
        super().__init__(sample_rate=800, max_seconds=2.0)
        self.proj = nn.Linear(4, width)
        self.out_dim = width

    def features(self, wave: torch.Tensor) -> torch.Tensor:
        frames = wave[: wave.shape[0] // 8 * 8].reshape(-1, 4)  # (T, 4)
        return frames.T.contiguous()  # (4, T)

    def num_tokens(self, preprocessed: torch.Tensor) -> int:
        return preprocessed.shape[-1] // 2

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        feats, _ = self.split_batch(batch, 4)  # (B, 4, T)
        h = self.proj(feats.transpose(1, 2))  # (B, T, D)
        return h.unflatten(1, (-1, 2)).mean(2)  # (B, T // 2, D)


CHAT_TEXTS = ["System: Be brief.\n\nUser: What is in the picture?\n\nAssistant: A cat on a red mat.\n\n",
              "User: How many cats?\n\nAssistant: Two cats, one dog and three birds.\n\n"] * 20


def tiny_config(placement: str = "first", audio: bool = True, tokenizer: str = "world") -> dict:
    """A 2-layer C=32 v7 with a 16 px tiny_cnn (4 tokens) and the test audio encoder (8 samples per token)."""
    from mmrwkv.tokenizer import load_tokenizer

    config = {
        "backbone": {"size": "v7-tiny", "n_embd": 32, "vocab_size": load_tokenizer(tokenizer).vocab_size},
        "tokenizer": tokenizer,
        "encoders": {"image": {"name": "tiny_cnn", "kwargs": {"image_size": 16, "width": 16, "grid": 2}}},
        "projectors": {"image": {"kind": "mlp2x_gelu"}},
        "placement": placement,
    }
    if audio:
        config["encoders"]["audio"] = {"name": "test_frames_audio", "kwargs": {"width": 8}}
        config["projectors"]["audio"] = {"kind": "linear"}
    return config


@pytest.fixture(scope="session")
def small_tokenizer(tmp_path_factory) -> str:
    """Path of a 320-token byte-level BPE (a small head keeps the model tests fast)."""
    from mmrwkv.tokenizer import train_bpe

    path = tmp_path_factory.mktemp("bpe") / "tokenizer.json"
    train_bpe(CHAT_TEXTS, 320, path)
    return str(path)


@pytest.fixture(scope="session")
def _tiny_model_once(small_tokenizer) -> MultimodalRWKV:
    torch.manual_seed(0)
    return MultimodalRWKV.from_config(tiny_config(tokenizer=small_tokenizer)).eval()


@pytest.fixture
def tiny_model(_tiny_model_once) -> MultimodalRWKV:
    """A fresh copy of one tiny v7 model (image: tiny_cnn 16 px, 4 tokens; audio: 8 samples per token)."""
    return copy.deepcopy(_tiny_model_once, memo={id(_tiny_model_once.tokenizer): _tiny_model_once.tokenizer})


def png_bytes(seed: int, size: int = 20) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def wav_bytes(seconds: float, freq: float = 50.0) -> bytes:
    t = np.arange(int(800 * seconds)) / 800
    buf = io.BytesIO()
    soundfile.write(buf, (0.5 * np.sin(2 * math.pi * freq * t)).astype(np.float32), 800, format="WAV")
    return buf.getvalue()


@pytest.fixture
def image_file(tmp_path):
    path = tmp_path / "cat.png"
    path.write_bytes(png_bytes(1))
    return path


@pytest.fixture
def png():
    """png(seed) -> bytes of a small random PNG."""
    return png_bytes


@pytest.fixture
def wav():
    """wav(seconds) -> bytes of a WAV sine at 800 Hz."""
    return wav_bytes


@pytest.fixture
def config():
    """config(placement="first", audio=True, tokenizer="world") -> a tiny multimodal config dict."""
    return tiny_config
