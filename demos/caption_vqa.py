"""Captioning / VQA side by side (Gradio): one image in, two checkpoints' streamed answers out.

An empty question asks for a caption with the training prompt ("Describe the image."). Each request gets
fresh ChatSessions (no state is kept between requests or shared between sessions); the two answers stream
together, one piece of each in turn. Meant for comparing two recipes that differ in one part, e.g. the image
encoder. Run it with `mmrwkv demo --app caption`; `build_caption_app` returns the Blocks for tests.
"""

from collections.abc import Iterator
from dataclasses import dataclass

from mmrwkv.data.sample import CAPTION_PROMPTS
from mmrwkv.demos.common import (
    DEFAULT_MAX_FILE_BYTES,
    DEFAULT_RUNS_DIR,
    NO_CHECKPOINT_HELP,
    RANDOM_TINY,
    ModelRegistry,
    check_upload,
    find_checkpoints,
    offline_gradio,
    public_text,
    sampling_from_controls,
)
from mmrwkv.errors import MediaError, MMRWKVError

# the prompt the recipes train captioning with
CAPTION_PROMPT = CAPTION_PROMPTS["image"]


@dataclass
class CaptionOptions:
    """How the caption/VQA demo runs (the `mmrwkv demo --app caption` flags)."""

    checkpoints: tuple[str, ...] = ()
    runs_dir: str = DEFAULT_RUNS_DIR
    random_tiny: bool = False
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    concurrency: int = 4
    max_tokens: int = 32
    # folders whose checkpoints a client may name, besides the listed ones (--allow-checkpoint-dir)
    allow_dirs: tuple[str, ...] = ()


class CaptionDemo:
    """The side-by-side handler, independent of the page layout."""

    def __init__(self, options: CaptionOptions, *, registry: ModelRegistry | None = None):
        self.options = options
        self.registry = registry or ModelRegistry(
            allow_random=options.random_tiny,
            serve=[c for c in self.choices() if c != RANDOM_TINY],
            allow_dirs=options.allow_dirs,
        )

    def choices(self) -> list[str]:
        """Picker entries: the checkpoints given, those under runs/, and the random tiny model if allowed."""
        given = list(self.options.checkpoints)
        found = [c for c in find_checkpoints(self.options.runs_dir) if c not in given]
        return given + found + ([RANDOM_TINY] if self.options.random_tiny else [])

    def compare(
        self,
        image: str | None,
        question: str | None,
        left: str | None,
        right: str | None,
        temperature: float,
        max_tokens: int,
    ) -> Iterator[tuple[str, str]]:
        """Stream (left answer, right answer) for one image and question (empty question: caption)."""
        prompt = (question or "").strip() or CAPTION_PROMPT
        try:
            if not image:
                raise MediaError("no image: upload one first")
            path = check_upload(image, max_bytes=self.options.max_file_bytes)
            if path.modality != "image":
                raise MediaError(f"{path.name}: not an image")
            sampling = sampling_from_controls(temperature, 1.0, max_tokens)
        except MMRWKVError as err:
            yield _error(err), _error(err)
            return
        streams = [self._stream(choice, prompt, path, sampling) for choice in (left, right)]
        texts = ["", ""]
        live = [True, True]
        while any(live):
            for side, stream in enumerate(streams):
                if not live[side]:
                    continue
                step = next(stream, None)
                if step is None:
                    live[side] = False
                    continue
                piece, replace = step
                texts[side] = piece if replace else texts[side] + piece
            yield texts[0].strip(), texts[1].strip()

    def _stream(self, choice: str | None, prompt: str, image, sampling) -> Iterator[tuple[str, bool]]:
        """(text piece, whether it replaces the text so far): answer pieces, or one error line."""
        from mmrwkv.inference.session import ChatSession

        try:
            if not choice:
                raise MMRWKVError(NO_CHECKPOINT_HELP.format(runs=self.options.runs_dir))
            _, model = self.registry.get(choice)
            for piece in ChatSession(model, sampling=sampling).ask(prompt, images=[image.path]):
                yield piece, False
        except MMRWKVError as err:
            yield _error(err, {image.path: image.name}), True


def _error(err: Exception, names: dict[str, str] | None = None) -> str:
    # no server path in a message: uploads by their file name, anything else by its last part
    return public_text(f"⚠️ Error: {err}", names)


def build_caption_app(options: CaptionOptions | None = None, demo: CaptionDemo | None = None):
    """The side-by-side page as a `gr.Blocks`; its API endpoint is `/compare`."""
    offline_gradio()
    import gradio as gr

    options = options or CaptionOptions()
    demo = demo or CaptionDemo(options)
    choices = demo.choices()
    with gr.Blocks(title="mmrwkv caption / VQA", analytics_enabled=False, delete_cache=(600, 3600)) as app:
        gr.Markdown(
            "## mmrwkv captioning / VQA, two checkpoints side by side\nLeave the question empty for a "
            "caption." + ("" if choices else "\n\n**" + NO_CHECKPOINT_HELP.format(runs=options.runs_dir) + "**")
        )
        with gr.Row():
            image = gr.Image(type="filepath", sources=["upload"], label="Image", elem_id="image", height=320)
            with gr.Column():
                question = gr.Textbox(label="Question (empty: caption)", elem_id="question")
                max_tokens = gr.Slider(1, 256, value=options.max_tokens, step=1, label="Max tokens")
                temperature = gr.Slider(0.0, 2.0, value=0.0, step=0.05, label="Temperature (0 = greedy)")
                run = gr.Button("Ask both", variant="primary", elem_id="ask")
        # the demo checks and decodes the upload itself, so a corrupt file is an error line, not a pop-up
        image.preprocess = lambda payload: None if payload is None else payload.path
        with gr.Row():
            outputs = []
            for side, default in (("A", 0), ("B", 1)):
                with gr.Column():
                    value = choices[min(default, len(choices) - 1)] if choices else None
                    pick = gr.Dropdown(choices, value=value, label=f"Checkpoint {side}", allow_custom_value=True)
                    outputs.append((pick, gr.Textbox(label=f"Answer {side}", lines=4, elem_id=f"answer{side}")))
        (left, left_out), (right, right_out) = outputs
        inputs = [image, question, left, right, temperature, max_tokens]
        run.click(
            demo.compare, inputs, [left_out, right_out], api_name="compare", concurrency_limit=options.concurrency
        )
        question.submit(
            demo.compare, inputs, [left_out, right_out], concurrency_limit=options.concurrency, api_visibility="private"
        )
    app.mmrwkv_demo = demo
    return app
