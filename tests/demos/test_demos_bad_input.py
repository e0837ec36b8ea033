"""Bad input through the chat demo: a visible error line in the chat, and the same session goes on."""

import pytest
from gradio_client import Client, handle_file

from mmrwkv.demos.chat import BUSY, ChatDemo, ChatOptions
from mmrwkv.demos.common import RANDOM_TINY, ModelRegistry

CONTROLS = (0.0, 1.0, 6)


@pytest.fixture(scope="module")
def registry():
    """One model registry for the module, so the tiny checkpoint is loaded once."""
    return ModelRegistry(allow_random=True)


@pytest.fixture
def demo(tiny_checkpoint, tmp_path, registry):
    """Chat handlers over the tiny checkpoint, without a server; a fresh session store per test."""
    options = ChatOptions(checkpoint=tiny_checkpoint, runs_dir=str(tmp_path / "runs"), max_file_bytes=50_000)
    return ChatDemo(options, registry=registry)


def _run(demo: ChatDemo, message, sid: str = "s1", choice: str | None = None) -> list[dict]:
    *_, last = demo.respond(message, choice or demo.options.checkpoint, "", *CONTROLS, sid)
    return last


def _error(messages: list[dict]) -> str:
    content = messages[-1]["content"]
    assert messages[-1]["role"] == "assistant" and content.startswith("⚠️ Error:"), messages[-1]
    return content


def _works_after(demo: ChatDemo, images, sid: str = "s1") -> None:
    messages = _run(demo, {"text": "Is the chat still alive?", "files": [images[0]]}, sid)
    assert messages[-1]["role"] == "assistant" and not messages[-1]["content"].startswith("⚠️")
    assert demo.store.get(sid).chat.turns[-1].role == "assistant"


@pytest.fixture
def bad_files(tmp_path):
    corrupt = tmp_path / "broken.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    big = tmp_path / "huge.png"
    big.write_bytes(b"\0" * 60_000)
    noise = tmp_path / "noise.wav"
    noise.write_bytes(b"RIFF????WAVEfmt garbage")
    return {"corrupt": corrupt, "text": text, "empty": empty, "big": big, "noise": noise}


@pytest.mark.parametrize(
    "kind, words",
    [
        ("corrupt", "broken.png"),
        ("text", "not accepted"),
        ("empty", "empty"),
        ("big", "upload limit"),
        ("noise", "noise.wav"),
    ],
)
def test_bad_upload_shows_an_error_naming_the_file_and_the_session_goes_on(demo, images, bad_files, kind, words):
    _works_after(demo, images)
    turns_before = list(demo.store.get("s1").chat.turns)
    messages = _run(demo, {"text": "What is this?", "files": [str(bad_files[kind])]})
    assert words in _error(messages)
    # the failed turn left the conversation as it was
    assert demo.store.get("s1").chat.turns == turns_before
    _works_after(demo, images)


def test_message_sent_while_an_answer_streams_gets_a_busy_error(demo, images):
    first = demo.respond({"text": "A long answer please", "files": []}, demo.options.checkpoint, "", 0.0, 1.0, 50, "s1")
    next(first)  # the answer has started streaming
    second = list(demo.respond({"text": "Me too!", "files": []}, demo.options.checkpoint, "", *CONTROLS, "s1"))
    assert BUSY in _error(second[-1])
    rest = list(first)
    assert rest, "the first answer keeps streaming"
    assert any(BUSY in m["content"] for m in rest[-1])
    _works_after(demo, images)


def test_other_sessions_are_not_blocked_by_a_streaming_one(demo, images):
    first = demo.respond({"text": "Hello", "files": []}, demo.options.checkpoint, "", 0.0, 1.0, 50, "s1")
    next(first)
    _works_after(demo, images, sid="s2")
    first.close()


def test_stop_ends_the_answer_early_and_keeps_the_partial_reply(demo, images):
    stream = demo.respond({"text": "Tell me everything", "files": []}, demo.options.checkpoint, "", 0.0, 1.0, 200, "s1")
    updates = [next(stream), next(stream), next(stream)]
    demo.stop("s1")
    updates += list(stream)
    session = demo.store.get("s1")
    assert len(updates) < 20
    assert not session.busy
    reply = updates[-1][-1]["content"]
    # the partial reply is in the chat and in the session's history, and the state moved on
    assert session.chat.turns[-1].role == "assistant" and session.chat.turns[-1].text == reply
    _works_after(demo, images)


def test_reset_starts_a_new_conversation_but_keeps_the_image_cache(demo, images):
    _works_after(demo, images)
    session = demo.store.get("s1")
    assert demo.reset("s1") == []
    assert session.chat.turns == [] and session.chat.state is None and session.messages == []
    hits = session.chat.cache.hits
    _works_after(demo, images)
    assert session.chat.cache.hits == hits + 1


def test_without_a_checkpoint_the_chat_explains_how_to_make_one(tmp_path, registry):
    demo = ChatDemo(ChatOptions(checkpoint=None, runs_dir=str(tmp_path / "runs")), registry=registry)
    messages = list(demo.respond({"text": "hi", "files": []}, None, "", *CONTROLS, "s1"))[-1]
    assert "make run" in _error(messages) and "--random-tiny" in messages[-1]["content"]


@pytest.mark.parametrize(
    "path, words",
    [
        ("/no/such/dir", "no such checkpoint directory"),
        (".", "not a multimodal mmrwkv checkpoint"),
        (RANDOM_TINY, "--random-tiny"),
    ],
)
def test_bad_checkpoint_path_shows_an_error(tiny_checkpoint, tmp_path, path, words):
    demo = ChatDemo(ChatOptions(checkpoint=tiny_checkpoint, runs_dir=str(tmp_path)), registry=ModelRegistry())
    messages = list(demo.respond({"text": "hi", "files": []}, demo.options.checkpoint, path, *CONTROLS, "s1"))[-1]
    assert words in _error(messages)


def test_switching_checkpoint_starts_a_new_chat(demo, images):
    _works_after(demo, images)
    messages = _run(demo, {"text": "and now?", "files": []}, choice=RANDOM_TINY)
    assert any("new chat" in m["content"] for m in messages if isinstance(m["content"], str))
    assert len(demo.store.get("s1").chat.turns) == 2


def test_generation_failure_is_shown_and_resets_the_session(demo, images, monkeypatch):
    _works_after(demo, images)
    session = demo.store.get("s1")
    monkeypatch.setattr(session.chat.model.backbone, "forward", _boom)
    assert "generation failed" in _error(_run(demo, {"text": "crash now", "files": []}))
    monkeypatch.undo()
    assert session.chat.turns == []
    _works_after(demo, images)


def _boom(*args, **kwargs):
    raise RuntimeError("simulated failure")


def test_server_shows_errors_for_corrupt_and_wrong_type_uploads(
    chat_server, tiny_checkpoint, images, bad_files, demo_helpers
):
    url, _ = chat_server
    client = Client(url, verbose=False, download_files=False)
    for kind in ("corrupt", "text"):
        job = client.submit(
            {"text": "what?", "files": [handle_file(str(bad_files[kind]))]},
            tiny_checkpoint,
            "",
            *CONTROLS,
            api_name="/chat",
        )
        job.result(timeout=30)
        assert demo_helpers.last_reply(demo_helpers.chat_messages(job)[-1]).startswith("⚠️ Error:")
    job = client.submit(
        {"text": "fine?", "files": [handle_file(images[2])]}, tiny_checkpoint, "", *CONTROLS, api_name="/chat"
    )
    job.result(timeout=30)
    assert not demo_helpers.last_reply(demo_helpers.chat_messages(job)[-1]).startswith("⚠️")
    client.close()


def test_server_refuses_uploads_over_the_size_limit_and_keeps_serving(chat_server, tiny_checkpoint, tmp_path):
    url, _ = chat_server
    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * 400_000)
    client = Client(url, verbose=False, download_files=False)
    with pytest.raises(Exception, match="(?i)size|large|413"):
        client.predict(
            {"text": "big", "files": [handle_file(str(big))]}, tiny_checkpoint, "", *CONTROLS, api_name="/chat"
        )
    job = client.submit({"text": "still there?", "files": []}, tiny_checkpoint, "", *CONTROLS, api_name="/chat")
    job.result(timeout=30)
    assert job.outputs()
    client.close()


def test_chat_of_an_evicted_session_starts_over_with_a_note(demo, images):
    _works_after(demo, images)
    demo.store.ttl_s = 0
    demo.store.evict_idle()
    demo.store.ttl_s = 1800
    messages = _run(demo, {"text": "Are you still there?", "files": []})
    assert "idle for too long" in messages[0]["content"]
    assert [m["role"] for m in messages] == ["assistant", "user", "assistant"]


@pytest.mark.parametrize(
    "controls, name", [(("hot", 1.0, 6), "temperature"), ((0.0, None, 6), "top_p"), ((0.0, 1.0, "many"), "max_tokens")]
)
def test_a_sampling_control_that_is_not_a_number_is_an_error_naming_it(demo, images, controls, name):
    # the answer event passes the page's values through unprocessed: the handler checks them
    *_, messages = demo.respond({"text": "Hello?", "files": []}, demo.options.checkpoint, "", *controls, "s1")
    assert f"sampling control {name} = " in _error(messages)
    _works_after(demo, images)


def test_server_refuses_a_message_naming_a_file_that_was_not_uploaded(chat_server, tiny_checkpoint, images):
    """The answer event takes its inputs unprocessed: a client that names a server-side path instead of uploading
    must still be refused before the handler opens that file."""
    import json

    import httpx

    url, _ = chat_server
    outside = {"path": images[3], "meta": {"_type": "gradio.FileData"}, "orig_name": "picture3.png"}
    data = [{"text": "what is this?", "files": [outside]}, tiny_checkpoint, "", *CONTROLS]
    with httpx.Client(base_url=url, timeout=30) as http:
        posted = http.post("gradio_api/call/chat", json={"data": data})
        assert posted.status_code == 200, posted.text
        events = http.get(f"gradio_api/call/chat/{posted.json()['event_id']}").text
    kinds = [line.split(":", 1)[1].strip() for line in events.splitlines() if line.startswith("event:")]
    payloads = [line.split(":", 1)[1] for line in events.splitlines() if line.startswith("data:")]
    assert "error" in kinds and "not uploaded" in events, events
    # nothing was answered about the file: no update carried a reply
    for payload in payloads:
        body = json.loads(payload) if payload.strip() not in ("", "null") else None
        assert not (isinstance(body, list) and body and body[0]), events
