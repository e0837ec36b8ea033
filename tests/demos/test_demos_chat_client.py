"""The chat demo through gradio_client against a launched server: streaming, greedy parity, per-session state."""

import time

import numpy as np
import pytest
import soundfile
from gradio_client import Client, handle_file

from mmrwkv.inference.session import ChatSession

MAX_TOKENS = 6


def _ask(client: Client, text: str, files: list[str], checkpoint: str):
    message = {"text": text, "files": [handle_file(f) for f in files]}
    return client.submit(message, checkpoint, "", 0.0, 1.0, MAX_TOKENS, api_name="/chat")


def _partial_replies(h, job) -> list[str]:
    """The distinct texts of the streaming answer, in the order they arrived."""
    seen = []
    for messages in h.chat_messages(job):
        if messages and messages[-1]["role"] == "assistant":
            text = h.message_text(messages[-1])
            if not seen or seen[-1] != text:
                seen.append(text)
    return seen


def test_three_turn_chat_streams_and_equals_library_greedy_answers(chat_server, tiny_checkpoint, tiny_model, images,
                                                                  demo_helpers):
    url, app = chat_server
    turns = [("What is in this picture?", [images[0]]), ("And what colour is it?", []), ("Thanks, anything else?", [])]
    expected, prefilled = demo_helpers.library_chat(tiny_model, turns, MAX_TOKENS)
    client = Client(url, verbose=False, download_files=False)
    for (text, files), want in zip(turns, expected, strict=True):
        job = _ask(client, text, files, tiny_checkpoint)
        job.result(timeout=60)
        partial = _partial_replies(demo_helpers, job)
        assert len(partial) > 2, f"the answer did not stream: {partial}"
        # gr.Chatbot trims the text around a message (the reply's leading " " after "Assistant:")
        assert partial[-1] == want.strip()
    # each turn's updates carry that turn's messages only (the client keeps the conversation)
    assert [m["role"] for m in demo_helpers.chat_messages(job)[-1]] == ["user", "assistant"]
    session = app.mmrwkv_demo.store.get(client.session_hash)
    # image, three questions and three answers, in order
    assert [m["role"] for m in session.messages] == ["user", "user", "assistant", "user", "assistant", "user",
                                                     "assistant"]
    # state reuse: the demo prefilled exactly what the library's one-session chat did (no history re-runs)
    assert session.chat.prefill_tokens == prefilled
    client.close()


def test_eight_concurrent_sessions_each_get_their_own_answer(chat_server, tiny_checkpoint, tiny_model, images,
                                                            demo_helpers):
    url, app = chat_server
    questions = [f"Question number {i}: what do you see{'?' * (i % 3 + 1)}" for i in range(8)]
    expected = [demo_helpers.library_chat(tiny_model, [(q, [img])], MAX_TOKENS)[0][0]
                for q, img in zip(questions, images, strict=True)]
    assert len(set(expected)) > 1, "the inputs must lead to different answers for this test to mean anything"
    clients = [Client(url, verbose=False, download_files=False) for _ in range(8)]
    jobs = [_ask(c, q, [img], tiny_checkpoint) for c, q, img in zip(clients, questions, images, strict=True)]
    for job in jobs:
        job.result(timeout=90)
    store = app.mmrwkv_demo.store
    for client, job, question, want in zip(clients, jobs, questions, expected, strict=True):
        final = demo_helpers.chat_messages(job)[-1]
        assert demo_helpers.last_reply(final) == want.strip()
        user_texts = [demo_helpers.message_text(m) for m in final if m["role"] == "user"]
        assert [t for t in user_texts if t] == [question]
        assert len(store.get(client.session_hash).chat.turns) == 2
    caches = {id(store.get(c.session_hash).chat.cache) for c in clients}
    assert len(caches) == 8, "sessions must not share a prefix cache"
    for c in clients:
        c.close()


@pytest.mark.parametrize("text", ["", "   "])
def test_empty_message_shows_an_error_and_the_chat_goes_on(chat_server, tiny_checkpoint, images, demo_helpers, text):
    url, _ = chat_server
    client = Client(url, verbose=False, download_files=False)
    job = client.submit({"text": text, "files": []}, tiny_checkpoint, "", 0.0, 1.0, MAX_TOKENS, api_name="/chat")
    job.result(timeout=30)
    assert "empty message" in demo_helpers.last_reply(demo_helpers.chat_messages(job)[-1])
    job = _ask(client, "Now a real question", [images[1]], tiny_checkpoint)
    job.result(timeout=30)
    reply = demo_helpers.last_reply(demo_helpers.chat_messages(job)[-1])
    assert reply and "Error" not in reply
    client.close()


def test_audio_upload_is_heard_and_answered_like_the_library(chat_server, tiny_checkpoint, tiny_model, tmp_path,
                                                             demo_helpers):
    url, _ = chat_server
    wav = tmp_path / "tone.wav"
    soundfile.write(wav, (0.3 * np.sin(np.arange(8000) * 2 * np.pi * 440 / 16000)).astype("float32"), 16000)
    session = ChatSession(tiny_model, sampling=demo_helpers.greedy(MAX_TOKENS))
    want = "".join(session.ask("What do you hear?", audio=[str(wav)])).strip()
    client = Client(url, verbose=False, download_files=False)
    job = _ask(client, "What do you hear?", [str(wav)], tiny_checkpoint)
    job.result(timeout=60)
    final = demo_helpers.chat_messages(job)[-1]
    assert demo_helpers.last_reply(final) == want
    assert final[0]["content"][0]["type"] == "file"  # the sound is shown in the chat
    client.close()


def test_stop_endpoint_ends_the_streaming_answer_of_its_own_session(chat_server, tiny_checkpoint, tiny_model,
                                                                    demo_helpers):
    url, app = chat_server
    long_answer = demo_helpers.library_chat(tiny_model, [("Tell me a long story", [])], 300)[0][0]
    client = Client(url, verbose=False, download_files=False)
    job = client.submit({"text": "Tell me a long story", "files": []}, tiny_checkpoint, "", 0.0, 1.0, 300,
                        api_name="/chat")
    while len(demo_helpers.chat_messages(job)) < 3:
        assert not job.done(), "the answer ended before it could be stopped"
        time.sleep(0.01)
    client.predict(api_name="/stop")
    job.result(timeout=60)
    final = demo_helpers.chat_messages(job)[-1]
    reply = demo_helpers.last_reply(final)
    session = app.mmrwkv_demo.store.get(client.session_hash)
    assert long_answer.strip().startswith(reply) and len(reply) < len(long_answer.strip())
    # the partial answer is the session's history: the next turn continues after it
    assert not session.busy and session.chat.turns[-1].text.strip() == reply
    client.close()
