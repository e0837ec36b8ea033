"""The chat page in a real headless Chromium: upload an image, send a message, see the streamed reply."""

import re
import shutil
import time
from pathlib import Path

import pytest

from mmrwkv.demos.caption_vqa import CaptionOptions, build_caption_app
from mmrwkv.demos.common import free_port, launch_app

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

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        shutil.which(CHROMIUM) is None, reason=f"{CHROMIUM} is missing: apt-get update && apt-get install -y chromium"
    ),
]


# the microphone recorder's clock (m:ss) shows at least one recorded second
RECORDED_A_SECOND = (
    "() => { const t = document.querySelector('#message .timestamp');"
    " return !!t && /^\\d+:\\d\\d$/.test(t.innerText.trim()) && t.innerText.trim() !== '0:00'; }"
)


def _normal(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _letters(text: str) -> str:
    """Letters and digits only: the rendered reply loses markdown marks the raw tokens may hold."""
    return "".join(ch for ch in text if ch.isalnum())


def _session_with(store, question: str, timeout: float = 60.0):
    """The server-side session whose chat holds `question`, once its answer has finished streaming."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for session in store.sessions():
            if any(m.get("content") == question for m in session.messages) and not session.busy:
                return session
        time.sleep(0.1)
    raise AssertionError(f"no finished session holds {question!r}")


def test_browser_chat_with_an_image_shows_the_streamed_reply(chat_server, tiny_model, images, demo_helpers):
    from playwright.sync_api import sync_playwright

    url, app = chat_server
    question = "Browser here: what is in this picture?"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(url, wait_until="load")
            page.locator("#message textarea").wait_for(timeout=60_000)
            page.locator("#message input[type=file]").set_input_files(images[5])
            page.locator("#message textarea").fill(question)
            page.locator("#message textarea").press("Enter")
            bot = page.locator("#chat .message-row.bot-row, #chat [data-testid=bot]").last
            bot.wait_for(timeout=60_000)
            page.wait_for_function(
                "() => { const b = document.querySelectorAll('#chat [data-testid=bot]');"
                " return b.length && b[b.length - 1].innerText.trim().length > 0; }",
                timeout=60_000,
            )
            # the page samples (temperature 1): hold it to what the server-side session generated
            session = _session_with(app.mmrwkv_demo.store, question)
            want = _letters(session.chat.turns[-1].text)
            page.wait_for_function(
                "n => { const b = document.querySelectorAll('#chat [data-testid=bot]');"
                " return [...b[b.length - 1].innerText].filter(c => /[\\p{L}\\p{N}]/u.test(c)).length >= n; }",
                arg=len(want),
                timeout=30_000,
            )
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / "chat.png"), full_page=True)
            reply = _normal(page.locator("#chat [data-testid=bot]").last.inner_text())
            user = _normal(page.locator("#chat [data-testid=user]").last.inner_text())
            images_shown = page.locator("#chat img").count()
        finally:
            browser.close()
    assert user == question
    assert images_shown >= 1, "the uploaded image is shown in the chat"
    assert reply and "Error" not in reply
    assert _letters(reply) == want


def test_browser_microphone_recording_is_sent_and_heard(chat_server):
    from playwright.sync_api import sync_playwright

    url, app = chat_server
    question = "Browser microphone: what do you hear?"
    # Chromium's fake capture device plays a beep; the fake UI grants the microphone permission
    args = [*CHROMIUM_ARGS, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(url, wait_until="load")
            page.locator("#message textarea").wait_for(timeout=60_000)
            page.locator("#message button[aria-label='Record audio']").click(timeout=60_000)
            page.locator("#message button[aria-label='Start recording']").click(timeout=60_000)
            # the recorder records only once the microphone has opened (seconds on a loaded machine); its clock
            # starts then, and Stop pressed before it is ignored: no recording ends, so none can be attached
            page.wait_for_function(RECORDED_A_SECOND, timeout=120_000)
            page.locator("#message button[aria-label='Stop recording']").click()
            # the recording is decoded, encoded as WAV and uploaded, then previewed; attaching it puts it beside
            # the text as a file
            page.locator("#message button[aria-label='Attach audio']").click(timeout=120_000)
            page.locator("#message .thumbnail-item").wait_for(timeout=60_000)
            page.locator("#message textarea").fill(question)
            page.locator("#message textarea").press("Enter")
            session = _session_with(app.mmrwkv_demo.store, question, timeout=120.0)
            page.wait_for_timeout(500)
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / "chat_microphone.png"), full_page=True)
        finally:
            browser.close()
    files = [m["content"]["path"] for m in session.messages if isinstance(m["content"], dict)]
    assert len(files) == 1 and files[0].endswith(".wav")
    assert len(session.chat.history.media.get("audio")) == 1, "the recording reached the model"
    assert not session.messages[-1]["content"].startswith("⚠️")


def test_browser_caption_page_streams_two_answers(tiny_checkpoint, images, tmp_path):
    from playwright.sync_api import sync_playwright

    app = build_caption_app(
        CaptionOptions(checkpoints=(tiny_checkpoint,), random_tiny=True, runs_dir=str(tmp_path), max_tokens=8)
    )
    port = free_port()
    launch_app(app, port=port, block=False)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1100, "height": 800})
                page.goto(f"http://127.0.0.1:{port}/", wait_until="load")
                page.locator("#image input[type=file]").set_input_files(images[6])
                page.locator("#image img").wait_for(timeout=30_000)
                page.locator("#ask").click()
                for side in "AB":
                    page.wait_for_function(
                        f"() => document.querySelector('#answer{side} textarea').value.trim().length > 0",
                        timeout=60_000,
                    )
                page.wait_for_timeout(1000)
                SCREENSHOTS.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(SCREENSHOTS / "caption_vqa.png"), full_page=True)
                answers = [page.locator(f"#answer{side} textarea").input_value() for side in "AB"]
            finally:
                browser.close()
    finally:
        app.close()
    assert all(a and not a.startswith("⚠️") for a in answers)
    assert answers[0] != answers[1], "two different models answer differently"
