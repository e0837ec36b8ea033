"""Fixtures for the demo tests: a tiny random checkpoint on disk, test images, a launched chat server."""

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import numpy as np
import pytest
from PIL import Image

from mmrwkv.demos.chat import ChatOptions, build_chat_app
from mmrwkv.demos.common import build_random_tiny, free_port, launch_app
from mmrwkv.inference.generate import SamplingConfig
from mmrwkv.inference.session import ChatSession
from mmrwkv.multimodal import MultimodalRWKV

MAX_FILE_BYTES = 200_000


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A saved random tiny multimodal model (image + audio encoders, World tokenizer)."""
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    build_random_tiny(seed=1).save(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint):
    """The tiny checkpoint loaded by the library (the reference the demo is compared to)."""
    return MultimodalRWKV.load(tiny_checkpoint).eval()


@pytest.fixture(scope="session")
def images(tmp_path_factory):
    """Eight PNG files of different random content."""
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for i in range(8):
        pixels = np.random.default_rng(i).integers(0, 255, (24 + i, 40, 3), dtype=np.uint8)
        path = folder / f"picture{i}.png"
        Image.fromarray(pixels).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="session")
def chat_server(tiny_checkpoint, tmp_path_factory):
    """The chat demo launched in-process on 127.0.0.1 and a free port: (url, app)."""
    options = ChatOptions(checkpoint=tiny_checkpoint, runs_dir=str(tmp_path_factory.mktemp("runs")), concurrency=8,
                          max_file_bytes=MAX_FILE_BYTES)
    app = build_chat_app(options)
    port = free_port()
    launch_app(app, port=port, block=False, max_file_bytes=MAX_FILE_BYTES)
    yield f"http://127.0.0.1:{port}/", app
    app.close()


def greedy(max_tokens: int) -> SamplingConfig:
    """The sampling the tests send through the UI controls (temperature 0, top-p 1)."""
    return SamplingConfig(temperature=0.0, top_p=1.0, max_tokens=max_tokens, stop=["\n\n"])


def library_chat(model, turns: list[tuple[str, list[str]]], max_tokens: int) -> tuple[list[str], int]:
    """Greedy answers of the library's ChatSession to (text, images) turns, and the tokens it prefilled."""
    session = ChatSession(model, sampling=greedy(max_tokens))
    answers = ["".join(session.ask(text, images=imgs)) for text, imgs in turns]
    return answers, session.prefill_tokens


def message_text(message: dict) -> str:
    """The text of one chat message as the Chatbot sends it (a list of typed parts)."""
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if part.get("type") == "text")


def last_reply(messages: list[dict]) -> str:
    """The text of the last assistant message."""
    return next(message_text(m) for m in reversed(messages) if m["role"] == "assistant")


def chat_messages(job) -> list[list[dict]]:
    """Every chatbot value a streaming /chat job produced."""
    return [out for out in job.outputs() if isinstance(out, list)]


@pytest.fixture(scope="session")
def demo_helpers():
    """The helper functions above, for test modules (importlib mode cannot import this file)."""
    import types

    return types.SimpleNamespace(greedy=greedy, library_chat=library_chat, message_text=message_text,
                                 last_reply=last_reply, chat_messages=chat_messages)
