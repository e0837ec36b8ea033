"""Live streams into the constant-size RNN state: feed audio and video as they arrive, ask at any moment.

`StreamSession.feed(audio=chunk)` buffers samples and encodes every full window of `window_s` seconds through the
model's audio encoder; `feed(frame=image)` encodes at most one frame per `frame_interval_s` of stream time through
the image encoder. Each item's placeholder slots (then an optional time marker) run through the backbone at once
(`mmrwkv.inference.prefill.prefill_embeddings`), advancing one state whose size never changes. `ask(question)` copies
that state (a clone of fixed size), prefills the question on the copy and streams the answer from it; the stream itself
is left bit for bit as it was, so feeding can go on while (or after) a question is answered.

Token layout (the chat template's inline placement, so a model trained on `mmrwkv.data.streams` samples sees at
inference exactly the ids it saw in training):
    "User: " [slots of item 1] [marker 1] [slots of item 2] [marker 2] ...   <- the stream
    "\\n" + question + "\\n\\n"  "Assistant:"  -> answer ... "\\n\\n"        <- one ask, on a copy
each text piece tokenized on its own, as `ChatTemplate` does between media slots.

Notation: S samples, C channels, V vocabulary.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mmrwkv.data.template import clean_message
from mmrwkv.errors import MediaError
from mmrwkv.inference.generate import SamplingConfig, sample_stream
from mmrwkv.inference.prefill import prefill_embeddings
from mmrwkv.inference.session import ban_media_ids
from mmrwkv.multimodal import Media

DEFAULT_SAMPLING = SamplingConfig(temperature=0.0, max_tokens=32, stop=["\n\n"])
STREAM_PROMPT = "User: "


class StreamSession:
    """One live stream into a `MultimodalRWKV`'s RNN state (see the module docstring).

    `window_s`: seconds of audio per encoded window; `frame_interval_s`: least stream time between two encoded
    frames (None: `window_s`); `marker`: text fed after each item, formatted with `t` = stream seconds at its end
    (e.g. " {t:.0f}s"; None: nothing between items); `sampling`: how `ask` decodes (greedy, "\\n\\n" stop).
    """

    def __init__(
        self,
        model: Any,
        *,
        window_s: float = 1.0,
        frame_interval_s: float | None = None,
        marker: str | None = None,
        sampling: SamplingConfig | None = None,
        prompt: str = STREAM_PROMPT,
    ):
        if window_s <= 0 or (frame_interval_s is not None and frame_interval_s < 0):
            raise ValueError(f"stream: window_s {window_s} must be > 0 and frame_interval_s {frame_interval_s} >= 0")
        self.model = model
        self.tokenizer = model.tokenizer
        self.window_s = float(window_s)
        self.frame_interval_s = self.window_s if frame_interval_s is None else float(frame_interval_s)
        self.marker, self.prompt = marker, prompt
        self.sampling = ban_media_ids(sampling or DEFAULT_SAMPLING, self.tokenizer)
        self._lock = threading.Lock()
        self.reset()

    @property
    def device(self) -> torch.device:
        return self.model.backbone.head.weight.device

    def reset(self) -> None:
        """Start a new stream: the state after the prompt alone, no buffered audio, clock at zero."""
        with self._lock:
            self.state = self.model.backbone.init_state(1, device=self.device)
            self.logits: Tensor | None = None
            self.tokens = 0
            self.items = {"audio": 0, "image": 0}
            self.audio_s = 0.0
            self._buffer = torch.zeros(0)
            self._next_frame = 0.0
            self._last_frame = 0.0
            self._clock0: float | None = None
            if self.prompt:
                self._run(self.tokenizer.encode(self.prompt), None)

    @property
    def state_bytes(self) -> int:
        """Bytes of the RNN state: fixed by the model's size, whatever the stream's length."""
        return int(self.state.nbytes)

    @property
    def elapsed_s(self) -> float:
        """Stream time: seconds of audio received (buffered included) or the last encoded frame's time."""
        return max(self.audio_s, self._last_frame)

    def feed(
        self, *, audio: Any = None, frame: Any = None, sample_rate: int | None = None, at: float | None = None
    ) -> int:
        """Feed a piece of the stream; returns how many items (audio windows, frames) it encoded.

        audio: a mono or (channels, S) waveform (numpy or torch) at `sample_rate` (default the encoder's), or a
        `(waveform, sample_rate)` tuple; any length, windows are cut across calls. frame: an image (path, bytes,
        PIL, or an (H, W, 3) uint8 array) taken at stream time `at` seconds (None: the audio clock when audio has
        been fed, else wall time since the first feed); it is encoded only when `frame_interval_s` has passed since
        the last encoded frame.
        """
        encoded = 0
        if audio is not None:
            encoded += self._feed_audio(audio, sample_rate)
        if frame is not None:
            encoded += self._feed_frame(frame, at)
        return encoded

    def _feed_audio(self, audio: Any, sample_rate: int | None) -> int:
        encoder = self._encoder("audio")
        if isinstance(audio, tuple):
            audio, sample_rate = audio
        wave = _mono(audio)
        rate = int(sample_rate or encoder.sample_rate)
        if rate != encoder.sample_rate:
            import torchaudio.functional as AF

            wave = AF.resample(wave, rate, encoder.sample_rate)
        per = int(round(self.window_s * encoder.sample_rate))
        with self._lock:
            self.audio_s += wave.shape[0] / encoder.sample_rate
            self._buffer = torch.cat([self._buffer, wave])
            n = 0
            while self._buffer.shape[0] >= per:
                window, self._buffer = self._buffer[:per], self._buffer[per:]
                self._item("audio", encoder.features(window.contiguous()), self.audio_s - self._buffer_s(encoder))
                n += 1
        return n

    def _buffer_s(self, encoder: Any) -> float:
        return self._buffer.shape[0] / encoder.sample_rate

    def _feed_frame(self, frame: Any, at: float | None) -> int:
        self._encoder("image")
        if isinstance(frame, np.ndarray):
            from PIL import Image

            frame = Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8))
        with self._lock:
            if at is None:
                if self._clock0 is None:
                    self._clock0 = time.monotonic()
                at = self.audio_s if self.audio_s > 0 else time.monotonic() - self._clock0
            if self.items["image"] and at < self._next_frame:
                return 0
            pixels = self.model.preprocess("image", frame)
            self._last_frame = max(self._last_frame, float(at))
            self._next_frame = float(at) + self.frame_interval_s
            self._item("image", pixels, self._last_frame)
        return 1

    def _encoder(self, modality: str) -> Any:
        if modality not in self.model.encoders:
            raise MediaError(f"stream: this model has no {modality} encoder (it has: {sorted(self.model.encoders)})")
        return self.model.encoders[modality]

    def _item(self, modality: str, preprocessed: Tensor, t: float) -> None:
        """Run one preprocessed item's slots (and the marker after it) through the backbone; the lock is held."""
        media = Media()
        media.add(modality, preprocessed)
        ids = [self.model.placeholder_ids[modality]] * self.model.tokens_per_item(modality, preprocessed)
        if self.marker:
            ids += self.tokenizer.encode(self.marker.format(t=t))
        self._run(ids, media)
        self.items[modality] += 1

    @torch.inference_mode()
    def _run(self, ids: list[int], media: Media | None) -> None:
        tokens = torch.tensor([ids], dtype=torch.long, device=self.device)  # (1, T)
        x = self.model.embed(tokens, media) if media else self.model.backbone.embed(tokens)  # (1, T, C)
        self.logits, self.state = prefill_embeddings(self.model.backbone, x, self.state)
        self.tokens += len(ids)

    def fork_state(self) -> Any:
        """A copy of the stream's state now (constant size): what `ask` answers from."""
        with self._lock:
            return self.state.clone()

    def ask(self, question: str, sampling: SamplingConfig | None = None) -> Iterator[str]:
        """Answer `question` about the stream so far, streaming text pieces; the stream's state is not touched.

        The question is prefilled on a copy of the state before this returns (so feeding may go on at once).
        """
        state = self.fork_state()
        text = self.tokenizer.encode("\n" + clean_message(question) + "\n\n")
        ids = text + self.tokenizer.encode("Assistant:")
        with torch.inference_mode():
            x = self.model.backbone.embed(torch.tensor([ids], dtype=torch.long, device=self.device))  # (1, T, C)
            logits, state = prefill_embeddings(self.model.backbone, x, state)
        sampling = ban_media_ids(sampling, self.tokenizer) if sampling else self.sampling
        return sample_stream(self.model.backbone, self.tokenizer, logits, state, sampling)

    def answer(self, question: str, sampling: SamplingConfig | None = None) -> str:
        """The whole answer of `ask`, stripped."""
        return "".join(self.ask(question, sampling)).strip()

    def describe(self) -> dict:
        """What the demo and benchmark show: stream time, items and tokens fed, state size."""
        return {
            "elapsed_s": round(self.elapsed_s, 3),
            "audio_windows": self.items["audio"],
            "frames": self.items["image"],
            "tokens": self.tokens,
            "state_bytes": self.state_bytes,
        }


def _mono(audio: Any) -> Tensor:
    """A finite float32 (S,) waveform from a (S,) or (channels, S) / (S, channels) numpy or torch array."""
    wave = audio if isinstance(audio, Tensor) else torch.as_tensor(np.asarray(audio))
    if not wave.is_floating_point():
        # integer PCM (a browser microphone sends int16) scaled to [-1, 1]
        scale = float(torch.iinfo(wave.dtype).max) if wave.dtype != torch.bool else 1.0
        wave = wave.float() / scale
    wave = wave.float()
    if wave.dim() == 2:
        wave = wave.mean(dim=0 if wave.shape[0] <= wave.shape[1] else 1)
    if wave.dim() != 1:
        raise MediaError(f"stream: audio must be (S,) or (channels, S), got shape {tuple(wave.shape)}")
    if not torch.isfinite(wave).all():
        raise MediaError("stream: audio chunk holds NaN or infinite samples")
    return wave.cpu()
