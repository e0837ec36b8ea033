"""Live stream demo (Gradio): the microphone and the webcam feed one RNN state as they stream; ask at any moment.

Each browser session (Gradio's `session_hash`) owns one `mmrwkv.inference.stream.StreamSession`. Microphone chunks
(int16, the browser's sample rate) are cut into windows and encoded as they arrive; webcam frames are encoded at most
once per `frame_interval_s`. A question forks the state and streams its answer while the stream goes on. The status
line shows the elapsed stream time, the windows and frames fed, and the state's size, which never grows.

Run it with `mmrwkv demo --app stream`; `build_stream_app` returns the Blocks for tests.
"""

# no `from __future__ import annotations` here: gradio injects `gr.Request` by reading the real annotation
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

from mmrwkv.demos.common import DEFAULT_RUNS_DIR, RANDOM_TINY, ModelRegistry, find_checkpoints, offline_gradio
from mmrwkv.errors import MMRWKVError

log = logging.getLogger(__name__)
NO_STREAM = "nothing streamed yet: start the microphone or the webcam, then ask"


@dataclass
class StreamOptions:
    """What the stream page serves: a checkpoint (None: the newest under runs_dir, else the random tiny model)."""

    checkpoint: str | None = None
    runs_dir: str = DEFAULT_RUNS_DIR
    random_tiny: bool = False
    window_s: float = 1.0
    frame_interval_s: float = 1.0
    max_tokens: int = 32
    max_sessions: int = 16
    stream_every_s: float = 0.25


class StreamDemo:
    """Per-session stream state and the page's handlers (usable without a browser)."""

    def __init__(self, options: StreamOptions, *, registry: ModelRegistry | None = None):
        self.options = options
        self.registry = registry or ModelRegistry(allow_random=options.random_tiny)
        self._sessions: OrderedDict[str, object] = OrderedDict()
        self._lock = threading.Lock()

    def model_choice(self) -> str:
        """The checkpoint the page serves: the given one, the newest run, or the random tiny model."""
        if self.options.checkpoint:
            return self.options.checkpoint
        found = find_checkpoints(self.options.runs_dir)
        return found[0] if found else RANDOM_TINY

    def session(self, sid: str):
        """The StreamSession of browser session `sid` (made on first use; the least recently used beyond
        `max_sessions` are dropped)."""
        from mmrwkv.inference.generate import SamplingConfig
        from mmrwkv.inference.stream import StreamSession

        with self._lock:
            if sid not in self._sessions:
                _, model = self.registry.get(self.model_choice())
                sampling = SamplingConfig(temperature=0.0, max_tokens=self.options.max_tokens, stop=["\n\n"])
                self._sessions[sid] = StreamSession(
                    model,
                    window_s=self.options.window_s,
                    frame_interval_s=self.options.frame_interval_s,
                    sampling=sampling,
                )
                while len(self._sessions) > self.options.max_sessions:
                    self._sessions.popitem(last=False)
            self._sessions.move_to_end(sid)
            return self._sessions[sid]

    def sessions(self) -> list:
        with self._lock:
            return list(self._sessions.values())

    def status(self, sid: str) -> str:
        """The status line: elapsed stream time, windows and frames fed, state size."""
        info = self.session(sid).describe()
        return (
            f"stream time {info['elapsed_s']:.1f} s | audio windows {info['audio_windows']} | frames "
            f"{info['frames']} | tokens {info['tokens']} | state {info['state_bytes']:,} bytes (constant)"
        )

    def on_audio(self, chunk, sid: str) -> str:
        """One microphone chunk (sample_rate, int16 samples) into the session's state."""
        if chunk is not None:
            rate, samples = chunk
            try:
                self.session(sid).feed(audio=samples, sample_rate=int(rate))
            except MMRWKVError as err:
                return f"error: {err}"
        return self.status(sid)

    def on_frame(self, frame, sid: str) -> str:
        """One webcam frame (H, W, 3 uint8) into the state when the frame interval has passed."""
        if frame is not None:
            try:
                self.session(sid).feed(frame=frame)
            except MMRWKVError as err:
                return f"error: {err}"
        return self.status(sid)

    def ask(self, question: str, sid: str) -> Iterator[str]:
        """The answer so far after every streamed piece (the stream keeps being fed meanwhile)."""
        question = (question or "").strip()
        if not question:
            yield "type a question first"
            return
        session = self.session(sid)
        if not session.tokens or not (session.items["audio"] or session.items["image"]):
            yield NO_STREAM
            return
        text = ""
        try:
            for piece in session.ask(question):
                text += piece
                yield text
        except MMRWKVError as err:
            yield f"error: {err}"
            return
        yield text.strip() or "(empty answer)"

    def reset(self, sid: str) -> str:
        self.session(sid).reset()
        return self.status(sid)


def build_stream_app(options: StreamOptions | None = None, demo: StreamDemo | None = None):
    """The live stream page as a `gr.Blocks`; endpoints `/audio`, `/frame`, `/ask`, `/reset`."""
    offline_gradio()
    import gradio as gr

    options = options or StreamOptions()
    demo = demo or StreamDemo(options)

    def on_audio(chunk, request: gr.Request):
        return demo.on_audio(chunk, request.session_hash)

    def on_frame(frame, request: gr.Request):
        return demo.on_frame(frame, request.session_hash)

    def ask(question, request: gr.Request):
        yield from demo.ask(question, request.session_hash)

    def reset(request: gr.Request):
        return demo.reset(request.session_hash)

    with gr.Blocks(title="mmrwkv live stream", analytics_enabled=False) as app:
        gr.Markdown(
            "## mmrwkv live stream\nThe microphone and the webcam feed one RNN state as they stream; its "
            "size never grows. Ask a question at any moment: it is answered from a copy of the state."
        )
        status = gr.Markdown(NO_STREAM, elem_id="status")
        with gr.Row():
            mic = gr.Audio(sources=["microphone"], streaming=True, type="numpy", label="Microphone", elem_id="mic")
            cam = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="Webcam", elem_id="cam")
        with gr.Row():
            question = gr.Textbox(label="Question", elem_id="question", scale=4)
            ask_btn = gr.Button("Ask", variant="primary", elem_id="ask", scale=1)
            reset_btn = gr.Button("New stream", elem_id="reset", scale=1)
        answer = gr.Textbox(label="Answer", elem_id="answer", lines=3)
        every = options.stream_every_s
        mic.stream(
            on_audio,
            inputs=[mic],
            outputs=[status],
            stream_every=every,
            api_name="audio",
            concurrency_limit=None,
            show_progress="hidden",
        )
        cam.stream(
            on_frame,
            inputs=[cam],
            outputs=[status],
            stream_every=every,
            api_name="frame",
            concurrency_limit=None,
            show_progress="hidden",
        )
        ask_btn.click(ask, inputs=[question], outputs=[answer], api_name="ask")
        question.submit(ask, inputs=[question], outputs=[answer])
        reset_btn.click(reset, outputs=[status], api_name="reset")
    app.mmrwkv_demo = demo
    return app
