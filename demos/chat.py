"""Streaming multimodal chat (Gradio): text, image and audio uploads, microphone, several turns.

Each browser session (Gradio's `session_hash`) has its own `DemoSession` in a `SessionStore`: a ChatSession
whose RNN state carries over, so turn N runs only its new tokens, with a private prefix cache of image states.
The answer streams into the chat one text piece per model step. Bad input (empty message, unknown or
oversized file, corrupt media, a message sent while an answer streams, a missing checkpoint) becomes an
error line in the chat; the session goes on.

Run it with `mmrwkv demo` (or `make demo`); `build_chat_app` returns the Blocks for tests.
"""

# no `from __future__ import annotations` here: gradio injects `gr.Request` by reading the real annotation
import logging
from collections.abc import Iterator
from dataclasses import dataclass

from mmrwkv.demos.common import (
    AUDIO_SUFFIXES,
    DEFAULT_MAX_FILE_BYTES,
    DEFAULT_RUNS_DIR,
    IMAGE_SUFFIXES,
    NO_CHECKPOINT_HELP,
    RANDOM_TINY,
    ModelRegistry,
    check_upload,
    checkpoint_label,
    find_checkpoints,
    offline_gradio,
    public_text,
    sampling_from_controls,
)
from mmrwkv.demos.sessions import DemoSession, SessionStore
from mmrwkv.errors import MMRWKVError

log = logging.getLogger(__name__)
BUSY = "an answer is still streaming: wait for it or press Stop, then send your message again"
EXPIRED = "(this chat was idle for too long and its memory was freed: a new conversation starts here)"
EMPTY = "empty message: type a question, or attach an image or an audio file"


@dataclass
class ChatOptions:
    """How the chat demo runs (the `mmrwkv demo` flags)."""

    checkpoint: str | None = None
    runs_dir: str = DEFAULT_RUNS_DIR
    random_tiny: bool = False
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    session_ttl_s: float = 1800.0
    max_sessions: int = 64
    concurrency: int = 4
    temperature: float = 1.0
    top_p: float = 0.3
    max_tokens: int = 128
    # folders whose checkpoints the typed path may name, besides the listed ones (--allow-checkpoint-dir)
    allow_dirs: tuple[str, ...] = ()


def error_message(text: str) -> dict:
    """A chat line that shows an error."""
    return {"role": "assistant", "content": f"⚠️ Error: {text}"}


def checkpoint_choices(options: ChatOptions) -> list[str]:
    """Picker entries: the --checkpoint given, checkpoints under runs/, and the random tiny model if allowed."""
    found = find_checkpoints(options.runs_dir)
    choices = ([options.checkpoint] if options.checkpoint else []) + [c for c in found if c != options.checkpoint]
    return choices + ([RANDOM_TINY] if options.random_tiny else [])


class ChatDemo:
    """The chat handlers, independent of the page layout (tests call them directly too)."""

    def __init__(
        self, options: ChatOptions, *, registry: ModelRegistry | None = None, store: SessionStore | None = None
    ):
        self.options = options
        self.registry = registry or ModelRegistry(
            allow_random=options.random_tiny,
            serve=[c for c in checkpoint_choices(options) if c != RANDOM_TINY],
            allow_dirs=options.allow_dirs,
        )
        self.store = store or SessionStore(ttl_s=options.session_ttl_s, max_sessions=options.max_sessions)

    def respond(
        self,
        message: dict | str | None,
        choice: str | None,
        path: str | None,
        temperature: float,
        top_p: float,
        max_tokens: int,
        sid: str,
    ) -> Iterator[list[dict]]:
        """Answer one message of session `sid`, yielding the chat's messages after every streamed piece."""
        session = self.store.get(sid)
        if not session.try_begin():
            session.messages.append(error_message(BUSY))
            yield _copy(session.messages)
            return
        if session.expired:
            session.expired = False
            session.messages.append({"role": "assistant", "content": EXPIRED})
        try:
            yield from self._turn(session, message, (path or "").strip() or choice, (temperature, top_p, max_tokens))
        except Exception as err:  # a model failure must not take the server down
            log.exception("chat session %s: the turn failed", sid)
            session.reset()
            session.messages.append(error_message(public_text(f"generation failed ({err}); the chat was reset")))
            yield _copy(session.messages)
        finally:
            session.end()
            session.last_used = self.store.clock()

    def respond_changes(
        self,
        message: dict | str | None,
        choice: str | None,
        path: str | None,
        temperature: float,
        top_p: float,
        max_tokens: int,
        sid: str,
    ) -> Iterator[tuple[int, list[dict]]]:
        """`respond` as changes: each update is (base, the messages from index base on); the client keeps the first
        `base` messages it shows and replaces the rest. A turn only adds messages at the end (base = the count before
        it), so an update carries this turn's messages whatever the length of the chat; a chat reset (or freed) while
        answering starts again from 0."""
        session = self.store.get(sid)
        shown, base = session.messages, len(session.messages)
        for messages in self.respond(message, choice, path, temperature, top_p, max_tokens, sid):
            if session.messages is not shown or len(messages) < base:
                base = 0
            yield base, messages[base:]

    def _turn(self, session: DemoSession, message, choice: str | None, controls: tuple) -> Iterator[list[dict]]:
        text, files = _split_message(message)
        uploads, names = [], {}
        try:
            for f in files:
                uploads.append(check_upload(f, max_bytes=self.options.max_file_bytes))
                names[uploads[-1].path] = uploads[-1].name
            if not text.strip() and not uploads:
                raise MMRWKVError(EMPTY)
            sampling = self.sampling(*controls)
            if not choice:
                raise MMRWKVError(NO_CHECKPOINT_HELP.format(runs=self.options.runs_dir))
            label = checkpoint_label(choice)
            key, model = self.registry.get(choice)
            names[key] = label
            previous = session.model_key
            if session.bind(key, model) and previous is not None:
                session.messages.append({"role": "assistant", "content": f"(model changed to {label}: new chat)"})
            session.messages += _user_messages(text, uploads)
            stream = session.chat.ask(
                text,
                images=[u.path for u in uploads if u.modality == "image"],
                audio=[u.path for u in uploads if u.modality == "audio"],
                sampling=sampling,
            )
        except MMRWKVError as err:
            session.messages.append(error_message(public_text(str(err), names)))
            yield _copy(session.messages)
            return
        yield from self._stream(session, stream)

    def sampling(self, temperature: float, top_p: float, max_tokens: int):
        """The SamplingConfig of the page's controls (the benchmark overrides it for fixed-length answers)."""
        return sampling_from_controls(temperature, top_p, max_tokens)

    def _stream(self, session: DemoSession, stream: Iterator[str]) -> Iterator[list[dict]]:
        # the first update carries the first piece: an update before it (an empty reply) would cost the page one
        # more round through the server (postprocess, diff, send) before the first token shows
        index = len(session.messages)
        session.messages.append({"role": "assistant", "content": ""})
        reply, shown = "", False
        try:
            for piece in stream:
                reply += piece
                session.messages[index] = {"role": "assistant", "content": reply}
                shown = True
                yield _copy(session.messages)
                if session.stop.is_set():
                    break
        finally:
            # closing commits the partial answer to the session's state (ChatSession keeps what was streamed)
            stream.close()
        if not shown:  # an empty answer: the user's message and an empty reply still show
            yield _copy(session.messages)

    def stop(self, sid: str) -> None:
        """Ask the answer streaming in session `sid` to stop after the current token."""
        if sid in self.store:
            self.store.get(sid).stop.set()

    def reset(self, sid: str) -> list[dict]:
        """Start a new conversation in session `sid` (the model and its image cache stay)."""
        session = self.store.get(sid)
        if not session.try_begin():
            session.stop.set()
            session.messages.append(error_message(f"{BUSY} (Reset waits for the answer to end)"))
            return _copy(session.messages)
        try:
            session.reset()
        finally:
            session.end()
        return []

    def unload(self, sid: str) -> None:
        """The browser tab closed: forget its session."""
        self.store.drop(sid)


def _split_message(message) -> tuple[str, list[str]]:
    if message is None:
        return "", []
    if isinstance(message, str):
        return message, []
    files = [f if isinstance(f, str) else f.get("path", "") for f in message.get("files") or []]
    return message.get("text") or "", files


def _user_messages(text: str, uploads: list) -> list[dict]:
    shown = [{"role": "user", "content": {"path": u.path}} for u in uploads]
    return shown + ([{"role": "user", "content": text}] if text.strip() else [])


def _copy(messages: list[dict]) -> list[dict]:
    # Gradio diffs successive outputs: every yield gets its own list and dicts
    return [dict(m) for m in messages]


def upload_box(gr, **kwargs):
    """A MultimodalTextbox whose `file_types` only filter the browser's file picker.

    Gradio's own type check raises before the handler runs and shows a pop-up instead of an error line in the
    chat; the handlers check every upload themselves (`check_upload`). Replacing `preprocess` on the instance
    rather than subclassing keeps gradio from writing a .pyi stub beside this module.
    """
    box = gr.MultimodalTextbox(**kwargs)

    def preprocess(payload):
        if payload is None:
            return None
        return {"text": payload.text, "files": [f.path for f in payload.files]}

    box.preprocess = preprocess
    return box


def build_chat_app(options: ChatOptions | None = None, demo: ChatDemo | None = None):
    """The chat page as a `gr.Blocks` (launch it with `launch_app`); its API endpoint is `/chat`."""
    offline_gradio()
    import gradio as gr

    options = options or ChatOptions()
    demo = demo or ChatDemo(options)
    choices = checkpoint_choices(options)
    with gr.Blocks(title="mmrwkv chat", analytics_enabled=False, delete_cache=(600, 3600)) as app:
        gr.Markdown(
            "## mmrwkv chat\nRNN-mode multimodal chat: each turn runs only its new tokens."
            + ("" if choices else "\n\n**" + NO_CHECKPOINT_HELP.format(runs=options.runs_dir) + "**")
        )
        with gr.Row():
            picker = gr.Dropdown(choices, value=choices[0] if choices else None, label="Checkpoint", scale=3)
            path = gr.Textbox(label="...or a checkpoint directory", placeholder="runs/easy_vqa/all/final", scale=3)
        chatbot = gr.Chatbot(label="Chat", height=420, elem_id="chat")
        box = upload_box(
            gr,
            placeholder="Ask about an image or a sound...",
            file_count="multiple",
            file_types=list(IMAGE_SUFFIXES + AUDIO_SUFFIXES),
            sources=["upload", "microphone"],
            show_label=False,
            elem_id="message",
        )
        with gr.Row():
            stop_btn = gr.Button("Stop", variant="stop", elem_id="stop")
            reset_btn = gr.Button("Reset", elem_id="reset")
        with gr.Accordion("Sampling", open=False):
            controls = [
                gr.Slider(0.0, 2.0, value=options.temperature, step=0.05, label="Temperature (0 = greedy)"),
                gr.Slider(0.05, 1.0, value=options.top_p, step=0.05, label="Top-p"),
                gr.Slider(1, 1024, value=options.max_tokens, step=1, label="Max tokens"),
            ]
        _wire(gr, app, demo, box, chatbot, [picker, path, *controls], stop_btn, reset_btn)
    app.mmrwkv_demo = demo
    return app


# the page merges a change into the chat it shows: keep the first `base` messages, append the rest (a js handler
# returns the list of its outputs' values)
MERGE_JS = "(chat, change) => [change ? (chat || []).slice(0, change.base).concat(change.messages) : chat]"


def _wire(gr, app, demo: ChatDemo, box, chatbot, inputs: list, stop_btn, reset_btn) -> None:
    """Connect the page's events to the demo's handlers, each with the browser session's id.

    Answers stream as changes (`ChatDemo.respond_changes`): the page's event writes {base, messages} into a hidden
    JSON that the browser merges into the Chatbot itself (MERGE_JS, no server round trip), and `/chat` yields this
    turn's messages. Gradio sends an event's first and last value whole (and diffs every one in between against the
    previous): with the whole chat as the value, each turn sent the history twice and diffed it per piece.
    """
    pending = gr.State(None)
    # rendered but not shown: a component left out of the page would not report its changes
    change = gr.JSON(visible="hidden")
    api_trigger = gr.Button(visible=False)
    limit = demo.options.concurrency

    def take(message):
        # a plain value (not a component update) clears the box, so gradio keeps this very component
        return {"text": "", "files": []}, message

    def changes(message, choice, typed, temp, p, n, request: gr.Request):
        # the Chatbot's own postprocess, here in the handler's thread: the event skips gradio's, which hops to a
        # worker thread per update
        for base, messages in demo.respond_changes(message, choice, typed, temp, p, n, request.session_hash):
            yield {"base": base, "messages": chatbot.postprocess(messages).model_dump()}

    def respond(message, choice, typed, temp, p, n, request: gr.Request):
        for _, messages in demo.respond_changes(message, choice, typed, temp, p, n, request.session_hash):
            yield chatbot.postprocess(messages).model_dump()

    def stop(request: gr.Request):
        demo.stop(request.session_hash)

    def reset(request: gr.Request):
        return demo.reset(request.session_hash)

    def unload(request: gr.Request):
        demo.unload(request.session_hash)

    # the answer's event takes its inputs as sent (no per-input preprocess, each a hop to a worker thread: the
    # handler reads the message dict, checks every upload and the checkpoint itself) and yields the Chatbot's value
    # already postprocessed; gradio still checks that uploaded files came from its upload folder
    chat = dict(concurrency_limit=limit, concurrency_id="chat", preprocess=False, postprocess=False)
    # the page: move the message out of the box at once, then stream the answer into the chat
    taken = box.submit(take, box, [box, pending], queue=False, trigger_mode="multiple", api_visibility="private")
    sent = taken.then(changes, [pending, *inputs], change, api_visibility="private", **chat)
    change.change(None, [chatbot, change], chatbot, js=MERGE_JS, queue=False, api_visibility="private")
    # the same handler for API clients (gradio_client): POST the message to /chat; each update holds this turn's
    # messages (the client keeps the conversation)
    api_trigger.click(respond, [box, *inputs], chatbot, api_name="chat", **chat)
    # Stop sets the session's flag (the stream ends after its current token) and cancels the event, which
    # closes the handler so the partial answer is committed to the session's state
    stop_btn.click(stop, None, None, api_name="stop", queue=False)
    stop_btn.click(None, None, None, cancels=[sent])
    reset_btn.click(reset, None, chatbot, api_name="reset")
    app.unload(unload)
