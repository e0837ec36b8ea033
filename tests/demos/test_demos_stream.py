"""The live stream page: microphone chunks and webcam frames feed a per-session state, questions answer from a
copy; in a real headless Chromium a fake microphone and camera stream, a question asked mid-stream gets a streamed
answer and the stream goes on."""

import math
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from mmrwkv.demos.common import free_port, launch_app
from mmrwkv.demos.stream import NO_STREAM, StreamDemo, StreamOptions, build_stream_app
from mmrwkv.rwkv.state import FIELDS

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "outputs" / "demo_screenshots"


def pcm(seconds: float, rate: int = 48000, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.3 * np.sin(2 * math.pi * freq * t) * 32767).astype(np.int16)


@pytest.fixture
def demo(tiny_model):
    options = StreamOptions(checkpoint="tiny", max_tokens=6)
    demo = StreamDemo(options)
    demo.registry.add("tiny", tiny_model)
    return demo


def test_microphone_and_webcam_feed_the_state_and_questions_leave_it(demo):
    status = demo.on_audio((48000, pcm(0.6)), "a")
    assert "audio windows 0" in status  # 0.6 s buffered, no whole window yet
    status = demo.on_audio((48000, pcm(0.6)), "a")
    assert "audio windows 1" in status and "stream time 1.2 s" in status
    status = demo.on_frame(np.zeros((48, 64, 3), dtype=np.uint8), "a")
    assert "frames 1" in status
    session = demo.session("a")
    before = session.state.clone()
    answers = list(demo.ask("what do you hear?", "a"))
    assert answers and answers[-1] and not answers[-1].startswith("error")
    assert all(torch.equal(getattr(session.state, f), getattr(before, f)) for f in FIELDS)
    size = session.state_bytes
    for _ in range(5):
        demo.on_audio((16000, pcm(1.0, 16000)), "a")
    assert session.items["audio"] == 6 and session.state_bytes == size
    # another browser session has its own stream; a question before anything streamed says so
    assert list(demo.ask("anything?", "b")) == [NO_STREAM]
    assert "audio windows 0" in demo.reset("a")


@pytest.mark.browser
@pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason=f"{CHROMIUM} is missing: apt-get install -y chromium")
def test_browser_fake_microphone_streams_and_a_question_mid_stream_is_answered(tiny_model, tmp_path):
    from playwright.sync_api import sync_playwright

    wav = tmp_path / "mic.wav"
    soundfile.write(wav, pcm(4.0, 48000, 660.0), 48000, subtype="PCM_16")
    demo = StreamDemo(StreamOptions(checkpoint="tiny", max_tokens=8))
    demo.registry.add("tiny", tiny_model)
    app = build_stream_app(demo.options, demo)
    port = free_port()
    launch_app(app, port=port, block=False)
    args = [
        *CHROMIUM_ARGS,
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
    ]
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
            try:
                page = browser.new_page(viewport={"width": 1100, "height": 900})
                page.goto(f"http://127.0.0.1:{port}/", wait_until="load")
                page.locator("#mic button[aria-label='Start recording'], #mic button:has-text('Record')").first.click(
                    timeout=60_000
                )
                # the fake camera's frames join the same state
                page.locator("#cam").click(timeout=60_000)
                page.locator("#cam button[aria-label='capture photo']").click(timeout=60_000)
                # the state grows by whole windows and frames as the fake devices stream
                page.wait_for_function(
                    "() => { const s = document.querySelector('#status').innerText;"
                    " return /audio windows [2-9]/.test(s) && /frames [1-9]/.test(s); }",
                    timeout=120_000,
                )
                page.locator("#question textarea").fill("what do you hear?")
                page.locator("#ask").click()
                page.wait_for_function(
                    "() => document.querySelector('#answer textarea').value.trim().length > 0", timeout=60_000
                )
                SCREENSHOTS.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(SCREENSHOTS / "stream_microphone.png"), full_page=True)
                answer = page.locator("#answer textarea").input_value()
                windows_at_answer = demo.sessions()[0].items["audio"]
                # the stream goes on after the question
                deadline = time.monotonic() + 60
                while demo.sessions()[0].items["audio"] <= windows_at_answer and time.monotonic() < deadline:
                    time.sleep(0.2)
            finally:
                browser.close()
    finally:
        app.close()
    assert answer.strip() and answer != NO_STREAM and not answer.startswith("error")
    assert demo.sessions()[0].items["audio"] > windows_at_answer
