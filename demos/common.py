"""What both Gradio demos share: finding checkpoints, loading models once, checking uploads, sampling controls.

Models are shared between browser sessions (weights are read-only at inference); everything that changes
while chatting (RNN state, prefix cache, history) lives in a per-session object (`mmrwkv.demos.sessions`).
"""

from __future__ import annotations

import os
import re
import socket
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmrwkv.checkpoint_files import missing_checkpoint
from mmrwkv.errors import CheckpointError, ConfigError, MediaError

RANDOM_TINY = "random-tiny"
DEFAULT_RUNS_DIR = "runs"
# file suffixes the demos accept, per modality; anything else is refused before it reaches a decoder
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
DEFAULT_MAX_FILE_BYTES = 10 * 2**20
NO_CHECKPOINT_HELP = (
    "No model checkpoint was found under `{runs}/`. Train the default one with `make run` (it writes "
    "`runs/easy_vqa/all/final`), or start the demo with `mmrwkv demo --checkpoint DIR` (a directory with "
    "config.json + model.safetensors) or `mmrwkv demo --random-tiny` (an untrained model, for trying the UI)."
)


def offline_gradio() -> None:
    """Turn off Gradio's analytics and update checks before gradio is imported (this machine is offline)."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("GRADIO_SERVER_NAME", "127.0.0.1")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on `host`."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def find_checkpoints(runs_dir: str | os.PathLike = DEFAULT_RUNS_DIR) -> list[str]:
    """Multimodal model directories under `runs_dir`: final models first, then step checkpoints, newest first."""
    from mmrwkv.multimodal import CONFIG_FILE, is_multimodal_checkpoint

    root = Path(runs_dir)
    if not root.is_dir():
        return []
    found = [p.parent for p in root.rglob(CONFIG_FILE) if is_multimodal_checkpoint(p.parent)]
    # a `final` model is what `make run` leaves; step checkpoints are for looking back
    found.sort(key=lambda p: (p.name != "final", -p.stat().st_mtime, str(p)))
    return [str(p) for p in found]


def random_tiny_config() -> dict:
    """A tiny random multimodal model (v7 backbone, World tokenizer, tiny_cnn image + tiny_whisper audio)."""
    return {
        "backbone": {"size": "v7-tiny", "n_layer": 2, "n_embd": 64, "head_size": 32, "vocab_size": 65536},
        "tokenizer": "world",
        "encoders": {
            "image": {"name": "tiny_cnn", "kwargs": {"image_size": 32, "width": 16, "grid": 2}},
            "audio": {
                "name": "tiny_whisper",
                "kwargs": {"n_mels": 80, "width": 32, "depth": 1, "heads": 2, "max_seconds": 10.0},
            },
        },
        "projectors": {"image": {"kind": "linear"}, "audio": {"kind": "linear", "kwargs": {"reduction": "avgpool:4"}}},
        "placement": "first",
    }


def build_random_tiny(seed: int = 0, *, noise: float = 0.3):
    """The `random_tiny_config` model with weights drawn from a fixed seed (same model every time).

    RWKV-7's init zeroes the output projections, so an untrained model answers the same whatever it is
    shown; `noise` (std of normal noise added to every matrix) makes its answers depend on the input.
    """
    import torch

    from mmrwkv.multimodal import MultimodalRWKV

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = MultimodalRWKV.from_config(random_tiny_config()).eval()
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() >= 2:
                    p.add_(torch.randn_like(p) * noise)
    return model


class ModelRegistry:
    """Loads each checkpoint once and keeps the `max_models` most recently used; thread safe.

    Keys are resolved directory paths or `RANDOM_TINY`. A bad path raises CheckpointError naming it. A demo serves
    only the checkpoints in `serve` and those inside `allow_dirs` (`mmrwkv demo --allow-checkpoint-dir`): a client
    cannot point the server at any other directory, nor learn which exist. With neither given (library use) any
    path loads.
    """

    def __init__(
        self,
        *,
        max_models: int = 2,
        device: str = "cpu",
        allow_random: bool = False,
        serve: Iterable[str] | None = None,
        allow_dirs: Iterable[str] = (),
    ):
        self.max_models = max_models
        self.device = device
        self.allow_random = allow_random
        self.allow_dirs = [Path(d).expanduser().resolve() for d in allow_dirs]
        self.served = None if serve is None and not self.allow_dirs else {_resolved(p) for p in serve or ()}
        self._models: OrderedDict[str, Any] = OrderedDict()
        self._named: dict[str, Any] = {}
        self._lock = threading.Lock()

    def add(self, name: str, model: Any) -> None:
        """Offer an already built model under `name` (never evicted; benchmarks, tests)."""
        self._named[name] = model

    def key(self, choice: str) -> str:
        """The registry key of a picker choice or typed path."""
        choice = (choice or "").strip()
        if not choice:
            raise CheckpointError("no checkpoint selected")
        if choice in self._named:
            return choice
        if choice == RANDOM_TINY:
            if not self.allow_random:
                raise CheckpointError(f"{RANDOM_TINY!r} is only available when the demo runs with --random-tiny")
            return RANDOM_TINY
        key = _resolved(choice)
        if (
            self.served is not None
            and key not in self.served
            and not any(Path(key).is_relative_to(d) for d in self.allow_dirs)
        ):
            # the same answer whether the path exists or not
            raise CheckpointError(
                f"checkpoint {choice!r:.80} is not served by this demo: pick one from the list (whoever runs the "
                "demo can allow a folder with --allow-checkpoint-dir DIR)"
            )
        return key

    def get(self, choice: str) -> tuple[str, Any]:
        """(key, model) for a picker choice or a typed checkpoint path."""
        key = self.key(choice)
        if key in self._named:
            return key, self._named[key]
        with self._lock:
            if key not in self._models:
                self._models[key] = self._load(key)
                while len(self._models) > self.max_models:
                    self._models.popitem(last=False)
            self._models.move_to_end(key)
            return key, self._models[key]

    def _load(self, key: str):
        from mmrwkv.multimodal import MultimodalRWKV, is_multimodal_checkpoint

        if key == RANDOM_TINY:
            return build_random_tiny().to(self.device)
        if not Path(key).exists():
            raise missing_checkpoint(key, "checkpoint directory")
        if not Path(key).is_dir():
            raise CheckpointError(f"{key}: not a checkpoint directory")
        if not is_multimodal_checkpoint(key):
            raise CheckpointError(f"{key}: not a multimodal mmrwkv checkpoint (no config.json of kind 'multimodal')")
        return MultimodalRWKV.load(key, map_location=self.device).eval()


def _resolved(path: str) -> str:
    return str(Path(path).expanduser().resolve())


# an absolute path in a message (not the `/` of "1/2" or "and/or"): the server's files are nobody's business
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~-])/(?:[^\s/:'\"(),]+/)*([^\s/:'\"(),]*)")


def public_text(text: str, names: dict[str, str] | None = None) -> str:
    """`text` fit to show a client: each path in `names` replaced by its public name (an upload by its file name,
    a checkpoint by its label), any other absolute path by its last part."""
    for path, name in sorted((names or {}).items(), key=lambda item: -len(item[0])):
        text = text.replace(path, name)
    return _ABSOLUTE_PATH.sub(lambda m: m.group(1) or "/", text)


def checkpoint_label(choice: str) -> str:
    """How a checkpoint is named in messages: a relative path as picked or typed, else its last three parts."""
    if choice == RANDOM_TINY or not os.path.isabs(choice):
        return choice
    return "/".join(Path(choice).parts[-3:])


@dataclass
class Upload:
    """One uploaded file, checked: its modality and its path on the server."""

    modality: str
    path: str
    name: str


def check_upload(path: str, *, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> Upload:
    """Classify an uploaded file by suffix and refuse unknown types, empty and oversized files (MediaError)."""
    # os.path, not pathlib: this runs before every answer, and a Path costs more than the stat
    path = os.fspath(path)
    name = os.path.basename(path)
    suffix = os.path.splitext(name)[1].lower()
    if suffix in IMAGE_SUFFIXES:
        modality = "image"
    elif suffix in AUDIO_SUFFIXES:
        modality = "audio"
    else:
        raise MediaError(
            f"{name}: file type {suffix or '(none)'!r} is not accepted (images: "
            f"{', '.join(IMAGE_SUFFIXES)}; audio: {', '.join(AUDIO_SUFFIXES)})"
        )
    try:
        size = os.stat(path).st_size
    except OSError as err:
        raise MediaError(f"{name}: cannot read the upload ({err})") from err
    if size == 0:
        raise MediaError(f"{name}: the file is empty")
    if size > max_bytes:
        raise MediaError(f"{name}: {size / 2**20:.1f} MiB is over the {max_bytes / 2**20:.1f} MiB upload limit")
    return Upload(modality, path, name)


def sampling_from_controls(temperature: float, top_p: float, max_tokens: int):
    """The SamplingConfig of the UI controls; an answer ends at the chat template's blank line.

    The chat's answer event takes its inputs as sent (no gradio preprocess), so a control that is not a number
    raises ConfigError naming it.
    """
    from mmrwkv.inference.generate import SamplingConfig

    def number(name: str, value, kind: type):
        try:
            return kind(value)
        except (TypeError, ValueError):
            raise ConfigError(f"sampling control {name} = {value!r} is not a number") from None

    return SamplingConfig(
        temperature=number("temperature", temperature, float),
        top_p=number("top_p", top_p, float),
        max_tokens=number("max_tokens", max_tokens, int),
        stop=["\n\n"],
    )


def launch_app(
    app,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    block: bool = True,
):
    """Launch a demo page bound to `host` with the upload size limit; `block=False` returns at once (tests).

    The idle-session sweeper of the page's demo (if it keeps sessions) starts with the server.
    """
    store = getattr(getattr(app, "mmrwkv_demo", None), "store", None)
    if store is not None:
        store.start_sweeper()
    app.queue(default_concurrency_limit=4)
    return app.launch(
        server_name=host,
        server_port=port,
        max_file_size=max_file_bytes,
        prevent_thread_lock=not block,
        share=False,
        show_error=True,
        quiet=not block,
    )
