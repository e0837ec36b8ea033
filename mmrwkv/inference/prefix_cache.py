"""Content-keyed caches of a chat: RNN states after prompt prefixes, and preprocessed media.

A `PrefixCache` holds two bounded LRU maps (one byte budget for both):
- states: `content_key` (sha256 of a parent key, token ids and preprocessed media) -> (State, last logits (V,)).
  A chat roots its keys in the model object (`model_key`), so one cache never mixes two models' states;
- media: (model, modality, the encoder's preprocessing constants, sha256 of the file's raw bytes) -> the
  preprocessed tensor. A re-sent file is hashed, never decoded or resized again.

Both are exact: a hit returns a copy of what the miss computed (the same preprocessed tensor, the same state and
logits). Entries do not follow weight updates: use a new cache after changing a model's weights.
"""

from __future__ import annotations

import array
import hashlib
import itertools
import os
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from mmrwkv.multimodal import Media

# the preprocessing constants an encoder may carry (image and audio bases); part of every media key
PREPROCESS_FIELDS = ("image_preprocess", "max_pixels", "sample_rate", "max_seconds", "truncate")
_MODEL_TOKENS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_COUNTER = itertools.count()


def model_key(model: Any) -> str:
    """A name for `model` unique in this process: unlike id(), never reused by a later model object."""
    token = _MODEL_TOKENS.get(model)
    if token is None:
        token = _MODEL_TOKENS[model] = f"model#{next(_COUNTER)}"
    return token


def content_key(ids: Sequence[int], media: Media | None = None, *, parent: str = "") -> str:
    """sha256 of a parent key, token ids and preprocessed media (modality, dtype, shape, bytes)."""
    h = hashlib.sha256(parent.encode())
    h.update(array.array("q", ids).tobytes())  # int64 in native byte order, as a torch int64 tensor's bytes
    for modality, tensors in sorted((media.items if media else {}).items()):
        for t in tensors:
            t = t.detach().cpu().contiguous()
            h.update(f"{modality}|{t.dtype}|{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def raw_bytes(item: Any) -> bytes | None:
    """The raw bytes of a path or bytes item; None for other items (PIL images, waveforms) or unreadable files."""
    if isinstance(item, bytes | bytearray):
        return bytes(item)
    if isinstance(item, str | os.PathLike):
        try:
            with open(item, "rb") as f:
                return f.read()
        except OSError:
            return None
    return None


def preprocess_fingerprint(model: Any, modality: str) -> str:
    """The model and the preprocessing constants of its `modality` encoder, as text (part of a media key)."""
    encoder = model.encoders[modality] if modality in getattr(model, "encoders", {}) else None
    fields = [f"{name}={getattr(encoder, name)!r}" for name in PREPROCESS_FIELDS if hasattr(encoder, name)]
    return "|".join([model_key(model), modality, type(encoder).__qualname__, *fields])


class PrefixCache:
    """Content-keyed LRU cache of (state, last logits) after prompt prefixes, and of preprocessed media files.

    Bounded by `max_entries` states, `max_media` media tensors and `max_bytes` for both together (states are
    evicted first). States and logits are cloned on the way in and out; media tensors are shared (never modify one
    in place). Not thread-safe: one cache per chat session (the demo) or a lock around it.
    """

    def __init__(self, max_bytes: int = 256 * 2**20, max_entries: int = 64, max_media: int = 16):
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.max_media = max_media
        self._entries: OrderedDict[str, tuple[Any, Tensor]] = OrderedDict()
        self._media: OrderedDict[str, Tensor] = OrderedDict()
        self._nbytes = 0
        self.hits = 0
        self.misses = 0
        self.media_hits = 0
        self.media_misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        """Bytes held by the cached states, logits and media tensors."""
        return self._nbytes

    def get(self, key: str) -> tuple[Any, Tensor] | None:
        """A private copy of the (state, logits) stored under `key`, or None."""
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return entry[0].clone(), entry[1].clone()

    def put(self, key: str, state: Any, logits: Tensor) -> None:
        """Store copies of `state` and `logits`; evicts least recently used entries past the bounds."""
        entry = (state.clone(), logits.detach().clone())
        if _entry_bytes(entry) > self.max_bytes:
            return
        self._drop(self._entries, key)
        self._entries[key] = entry
        self._nbytes += _entry_bytes(entry)
        self._shrink()

    def preprocess(self, model: Any, modality: str, item: Any) -> Tensor:
        """`model.preprocess(modality, item)`, memoized by the raw bytes of a path or bytes item.

        A hit costs reading and hashing the file; errors (a corrupt file) come from the model and are not kept.
        """
        data = raw_bytes(item)
        if data is None:
            return model.preprocess(modality, item)
        key = hashlib.sha256(f"{preprocess_fingerprint(model, modality)}\0".encode() + data).hexdigest()
        tensor = self._media.get(key)
        if tensor is not None:
            self.media_hits += 1
            self._media.move_to_end(key)
            return tensor
        self.media_misses += 1
        tensor = model.preprocess(modality, item)
        if _bytes(tensor) <= self.max_bytes:
            self._media[key] = tensor
            self._nbytes += _bytes(tensor)
            self._shrink()
        return tensor

    @property
    def media_entries(self) -> int:
        """Preprocessed media tensors held."""
        return len(self._media)

    def _shrink(self) -> None:
        while len(self._entries) > self.max_entries:
            self._drop(self._entries, next(iter(self._entries)))
        while len(self._media) > self.max_media:
            self._drop(self._media, next(iter(self._media)))
        while self._nbytes > self.max_bytes and (self._entries or self._media):
            table = self._entries or self._media
            self._drop(table, next(iter(table)))

    def _drop(self, table: OrderedDict, key: str) -> None:
        value = table.pop(key, None)
        if value is not None:
            self._nbytes -= _entry_bytes(value) if isinstance(value, tuple) else _bytes(value)


def _bytes(t: Tensor) -> int:
    return t.numel() * t.element_size()


def _entry_bytes(entry: tuple[Any, Tensor]) -> int:
    return entry[0].nbytes + _bytes(entry[1])
