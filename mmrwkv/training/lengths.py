"""Training sequences within `data.max_text_tokens`, a byte-bounded media cache, and per-sample length estimates.

An over-long sample is cut (text only: its media slots stay whole) or skipped, as `data.overlong` says; the
collate counts both into the batch ("overlong"), and the training module logs the running totals, so a long
record never stops a run.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch

from mmrwkv.errors import DataError

IGNORE = -100
# characters per text token, for length estimates before tokenizing (English BPE: ~4)
CHARS_PER_TOKEN = 4


def fit_length(encoded, max_tokens: int | None, policy: str, placeholders: set[int], sample_id: str):
    """(`encoded` within `max_tokens`, or None to skip it; "" | "truncated" | "skipped").

    "truncate" cuts the ids and labels at the limit when every media slot lies before it and a labelled token
    is left; otherwise the sample is skipped. "error" raises DataError naming the sample.
    """
    if max_tokens is None or len(encoded.ids) <= max_tokens:
        return encoded, ""
    if policy == "error":
        raise DataError(
            f"sample {sample_id}: {len(encoded.ids)} tokens exceed data.max_text_tokens {max_tokens} "
            "(data.overlong: truncate or skip go on without it)"
        )
    if policy == "skip":
        return None, "skipped"
    last_slot = max((i for i, t in enumerate(encoded.ids) if t in placeholders), default=-1)
    labels = encoded.labels[:max_tokens]
    if last_slot >= max_tokens or not any(x != IGNORE for x in labels[1:]):
        return None, "skipped"
    encoded.ids, encoded.labels = encoded.ids[:max_tokens], labels
    return encoded, "truncated"


class MediaCache:
    """Stands in for the model inside the chat template: preprocesses media files, keeping the most recently used
    ones up to `max_bytes` (0: keeps none), so memory stays bounded whatever the dataset's size.

    Each DataLoader worker process holds its own cache (the dataset is copied into every worker).
    """

    def __init__(self, model, max_bytes: int = 256 << 20):
        self.model = model
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[tuple[str, str], torch.Tensor] = OrderedDict()

    def preprocess(self, modality: str, item) -> torch.Tensor:
        """The model's preprocessing of `item`; file paths are cached by (modality, path)."""
        if not isinstance(item, str | Path) or self.max_bytes <= 0:
            return self.model.preprocess(modality, item)
        key = (modality, str(item))
        hit = self._items.get(key)
        if hit is not None:
            self._items.move_to_end(key)
            return hit
        tensor = self.model.preprocess(modality, item)
        size = tensor.numel() * tensor.element_size()
        if size <= self.max_bytes:
            self._items[key] = tensor
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self.bytes -= old.numel() * old.element_size()
        return tensor

    def __len__(self) -> int:
        return len(self._items)

    def tokens_per_item(self, modality: str, preprocessed: torch.Tensor) -> int:
        """Placeholder slots of one item (the model's answer)."""
        return self.model.tokens_per_item(modality, preprocessed)

    def __getstate__(self) -> dict:
        # a DataLoader worker starts with an empty cache of its own
        return {**self.__dict__, "_items": OrderedDict(), "bytes": 0}


def media_slots(model) -> dict[str, int]:
    """Placeholder slots per item of each fixed-size media encoder (image encoders; audio varies: 0)."""
    return {m: int(getattr(e, "tokens_per_image", 0) or 0) for m, e in model.encoders.items()}


def estimated_lengths(samples: Sequence, slots: dict[str, int]) -> list[int]:
    """Rough token counts of `samples` (text characters / CHARS_PER_TOKEN + media slots), without tokenizing:
    what length-grouped batching sorts by."""
    out = []
    for sample in samples:
        chars = sum(len(text) for _, text in sample.conversation())
        media = len(sample.images) * slots.get("image", 0) + len(sample.audio) * slots.get("audio", 0)
        out.append(chars // CHARS_PER_TOKEN + media)
    return out
