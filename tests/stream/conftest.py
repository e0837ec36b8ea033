"""Tiny multimodal models for the stream tests: a 2-layer C=32 RWKV-7, small BPE, tiny audio and image encoders."""

import copy

import numpy as np
import pytest
import torch

from mmrwkv.multimodal import MultimodalRWKV

TEXTS = [
    "User: how many sounds so far?\n\nAssistant: 3\n\n",
    "User: what was the last shape?\n\nAssistant: red circle\n\n",
    "User: how many seconds did the last sound last?\n\nAssistant: 2\n\n",
] * 20
RATE = 8000


def stream_config(tokenizer: str, audio: dict | None = None, image: dict | None = None) -> dict:
    """A tiny v7 with tiny_whisper (8 kHz, 1 s -> 50 tokens -> avgpool:10 -> 5) and tiny_cnn (16 px, 4 tokens)."""
    from mmrwkv.tokenizer import load_tokenizer

    audio = audio or {"name": "tiny_whisper", "kwargs": {"width": 16, "depth": 1, "heads": 2, "sample_rate": RATE}}
    image = image or {"name": "tiny_cnn", "kwargs": {"image_size": 16, "width": 16, "grid": 2}}
    return {
        "backbone": {"size": "v7-tiny", "n_embd": 32, "vocab_size": load_tokenizer(tokenizer).vocab_size},
        "tokenizer": tokenizer,
        "encoders": {"audio": audio, "image": image},
        "projectors": {
            "audio": {"kind": "linear", "kwargs": {"reduction": "avgpool:10"}},
            "image": {"kind": "mlp2x_gelu"},
        },
        "placement": "inline",
    }


@pytest.fixture(scope="session")
def stream_tokenizer(tmp_path_factory) -> str:
    from mmrwkv.tokenizer import train_bpe

    path = tmp_path_factory.mktemp("bpe") / "tokenizer.json"
    train_bpe(TEXTS, 300, path)
    return str(path)


@pytest.fixture(scope="session")
def _stream_model_once(stream_tokenizer) -> MultimodalRWKV:
    torch.manual_seed(0)
    return MultimodalRWKV.from_config(stream_config(stream_tokenizer)).eval()


@pytest.fixture
def stream_model(_stream_model_once) -> MultimodalRWKV:
    """A fresh copy of one tiny stream model."""
    return copy.deepcopy(_stream_model_once, memo={id(_stream_model_once.tokenizer): _stream_model_once.tokenizer})


def make_tone(seconds: float, freq: float = 440.0, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def make_frame(seed: int, size: int = 20) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)


@pytest.fixture
def tone():
    """tone(seconds, freq=440, rate=8000) -> a float32 sine."""
    return make_tone


@pytest.fixture
def frame():
    """frame(seed, size=20) -> a random (size, size, 3) uint8 image."""
    return make_frame


@pytest.fixture
def config_for():
    """config_for(tokenizer, audio=None, image=None) -> a tiny stream model config dict."""
    return stream_config
