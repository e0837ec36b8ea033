"""`mmrwkv serve` driven by the `openai` client over 127.0.0.1: text, image and audio parts, streaming, conversation
state reused by prefix and kept apart between conversations, bad requests answered 4xx with a message."""

import base64
import io
import threading
import time

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")

from mmrwkv.demos.common import build_random_tiny, free_port  # noqa: E402
from mmrwkv.inference.generate import SamplingConfig  # noqa: E402
from mmrwkv.inference.session import ChatSession  # noqa: E402
from mmrwkv.serve import ChatServer, ServeLimits  # noqa: E402
from mmrwkv.serve_app import create_app  # noqa: E402

GREEDY = {"temperature": 0.0, "max_tokens": 8}


@pytest.fixture(scope="module")
def served():
    torch.manual_seed(0)
    model = build_random_tiny()
    server = ChatServer(model, "tiny", ServeLimits(max_body_bytes=2 * 2**20, max_in_flight=4))
    port = free_port()
    config = uvicorn.Config(create_app(server), host="127.0.0.1", port=port, log_level="warning")
    web = uvicorn.Server(config)
    thread = threading.Thread(target=web.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not web.started and time.time() < deadline:
        time.sleep(0.05)
    assert web.started
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=60)
    yield server, client, model
    web.should_exit = True
    thread.join(timeout=10)


def _png(color) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (24, 24), color).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _wav() -> str:
    buf = io.BytesIO()
    wave = 0.3 * np.sin(np.linspace(0, 440 * 2 * np.pi, 16000)).astype(np.float32)
    soundfile.write(buf, wave, 16000, format="WAV")
    return base64.b64encode(buf.getvalue()).decode()


def _local(model, turns: list[str]) -> list[str]:
    """Greedy answers of a ChatSession asked `turns` in order (the reference the server must match)."""
    session = ChatSession(model, sampling=SamplingConfig(temperature=0.0, max_tokens=8, stop=["\n\n"]))
    return ["".join(session.ask(text)) for text in turns]


def test_models_lists_the_one_model(served):
    _, client, _ = served
    assert [m.id for m in client.models.list().data] == ["tiny"]


def test_stream_with_an_image_equals_the_non_streamed_answer(served):
    _, client, _ = served
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what color?"},
                {"type": "image_url", "image_url": {"url": _png("red")}},
            ],
        }
    ]
    whole = client.chat.completions.create(model="tiny", messages=messages, **GREEDY)
    pieces = list(client.chat.completions.create(model="tiny", messages=messages, stream=True, **GREEDY))
    text = "".join(p.choices[0].delta.content or "" for p in pieces)
    assert whole.choices[0].message.content == text and text
    assert pieces[-1].choices[0].finish_reason in ("stop", "length")
    text_only = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "what color?"}], **GREEDY
    )
    assert whole.usage.completion_tokens > 0
    assert whole.usage.prompt_tokens > text_only.usage.prompt_tokens  # the image's placeholders count


def test_audio_part_is_heard(served):
    _, client, _ = served
    audio = {"type": "input_audio", "input_audio": {"data": _wav(), "format": "wav"}}
    with_audio = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}, audio]}], **GREEDY
    )
    assert (
        with_audio.usage.prompt_tokens
        > client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], **GREEDY
        ).usage.prompt_tokens
    )


def test_two_conversations_at_once_keep_their_own_history(served):
    server, client, model = served
    firsts = {"a": "Tell me about cats.", "b": "Numbers please: 1 2 3"}
    seconds = {"a": "And dogs?", "b": "Continue."}
    answers = {
        k: client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": v}], **GREEDY)
        .choices[0]
        .message.content
        for k, v in firsts.items()
    }
    reused = server.reused
    out, errors = {}, []

    def follow_up(k: str) -> None:
        try:
            messages = [
                {"role": "user", "content": firsts[k]},
                {"role": "assistant", "content": answers[k]},
                {"role": "user", "content": seconds[k]},
            ]
            stream = client.chat.completions.create(model="tiny", messages=messages, stream=True, **GREEDY)
            out[k] = "".join(p.choices[0].delta.content or "" for p in stream)
        except Exception as err:  # noqa: BLE001 - reported by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=follow_up, args=(k,)) for k in firsts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assert server.reused == reused + 2  # both continued from their kept state, no re-prefill of the history
    for k in firsts:
        assert [answers[k], out[k]] == _local(model, [firsts[k], seconds[k]])


def test_a_history_never_seen_is_prefilled_whole(served):
    _, client, _ = served
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "an answer this server never gave"},
        {"role": "user", "content": "and now?"},
    ]
    reply = client.chat.completions.create(model="tiny", messages=messages, **GREEDY)
    assert reply.usage.prompt_tokens > 15


def test_file_url_is_refused_with_a_message(served):
    _, client, _ = served
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}]
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny", messages=messages, **GREEDY)
    assert err.value.status_code == 400 and "only data: URLs" in str(err.value)


def test_a_50_mb_body_gets_413(served):
    _, client, _ = served
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x" * 50_000_000}])
    assert err.value.status_code == 413 and "exceeds the limit" in str(err.value)


@pytest.mark.parametrize(
    "bad",
    [
        {"messages": []},
        {"messages": [{"role": "assistant", "content": "hi"}]},
        {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10**9},
        {
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@"}}]}
            ]
        },
        {
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}
            ]
        },
    ],
)
def test_bad_requests_get_400_with_a_message(served, bad):
    _, client, _ = served
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny", **bad)
    assert err.value.body and err.value.body.get("message")


def test_requests_past_the_in_flight_bound_get_429(served):
    server, _, _ = served
    bounded = ChatServer(server.model, "tiny", ServeLimits(max_in_flight=1))
    bounded.admit()
    with pytest.raises(Exception) as err:
        bounded.admit()
    assert err.value.status == 429 and "busy" in str(err.value)
    bounded.release()
    bounded.admit()


def test_a_stream_closed_early_frees_its_slot_and_keeps_nothing(served):
    server, client, _ = served
    kept = len(server.sessions)
    stream = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "count"}], stream=True, temperature=0.0, max_tokens=200
    )
    next(iter(stream))
    stream.close()
    deadline = time.time() + 20
    while server.in_flight and time.time() < deadline:
        time.sleep(0.05)
    assert server.in_flight == 0 and len(server.sessions) == kept


def test_a_text_only_backbone_is_served(tmp_path):
    from mmrwkv.checkpoint import save_rwkv
    from mmrwkv.commands.serve import load_model
    from mmrwkv.rwkv import RWKV, config_for

    torch.manual_seed(0)
    save_rwkv(RWKV(config_for("v7-tiny", n_layer=1, n_embd=32, head_size=16, vocab_size=65536)), tmp_path / "lm")
    model, name = load_model(str(tmp_path / "lm"))
    assert name == "lm" and not model.encoders
    session, stream = ChatServer(model, name).start(
        __import__("mmrwkv.serve", fromlist=["parse_messages"]).parse_messages(
            [{"role": "user", "content": "hi"}], ServeLimits()
        ),
        SamplingConfig(temperature=0.0, max_tokens=3),
    )
    assert isinstance("".join(stream), str) and session.last_result.tokens
