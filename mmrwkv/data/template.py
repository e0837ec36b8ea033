"""The chat template: turns -> token ids, labels and media, the contract of training batches and of chat prompts.

Template (the RWKV World chat convention), one block per turn, blocks separated by a blank line:

    System: {system text}\\n\\n                       (optional, first)
    User: {user text}\\n\\n
    Assistant: {reply}\\n\\n

Inside a message "\\n\\n" (or more newlines) becomes "\\n", since a blank line ends a turn. A generation
prompt ends with "Assistant:" and the model writes " {reply}\\n\\n". Each media item becomes N reserved
placeholder ids (`tokenizer.special.image` / `.audio`; N from the encoder + projector for that item).
Placement of the media of a user turn:

    first     User: {media...}\\n{text}\\n\\n
    inline    User: {text with media where the turn's structure puts them}\\n\\n
    sandwich  User: {text}\\n{media...}\\n{text}\\n\\n
    last      User: {text}\\n{media...}\\n\\n          (media right before the answer: the shortest path
                                                   through the RNN state from the media to the reply)

For `inline`, a turn's text is a list of strings and `Slot` markers; each Slot takes the next item of
that modality. A plain string never creates a slot (typed "<image>" stays text); a plain-string turn with
media falls back to `first`. `parse_markers` turns trusted dataset text ("<image>" in LLaVA data) into
that list. Labels are -100 everywhere except an assistant reply's " {reply}\\n\\n", so the model learns
to stop.

Notation: B batch, T time, V vocabulary.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from mmrwkv.errors import DataError, MediaError
from mmrwkv.multimodal import Media
from mmrwkv.names import IGNORE, MODALITIES, PLACEMENTS

ROLES = {"system": "System", "user": "User", "assistant": "Assistant"}
_MARKER = re.compile(r"<(image|audio)>")
# the template remembers the ids of texts up to MEMO_CHARS long, the MEMO_ENTRIES most recent ones
MEMO_CHARS = 64
MEMO_ENTRIES = 256


@dataclass(frozen=True)
class Prepared:
    """A media item already preprocessed (the chat template uses the tensor instead of preprocessing again)."""

    tensor: Tensor


@dataclass(frozen=True)
class Slot:
    """The place of the next media item of `modality` inside a turn's text (inline placement)."""

    modality: str


@dataclass
class Turn:
    """One chat turn: role "system" | "user" | "assistant", text (str or list of str and Slot), media."""

    role: str
    text: str | list[str | Slot] = ""
    images: list = field(default_factory=list)
    audio: list = field(default_factory=list)


@dataclass
class Encoded:
    """Token ids, labels (-100 = no loss) and the media filling the ids' placeholder slots."""

    ids: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    media: Media = field(default_factory=Media)

    def extend(self, other: Encoded) -> Encoded:
        """Append `other` in place and return self."""
        self.ids += other.ids
        self.labels += other.labels
        for modality, tensors in other.media.items.items():
            for t in tensors:
                self.media.add(modality, t)
        return self


def parse_markers(text: str) -> list[str | Slot]:
    """Split TRUSTED text (dataset annotations) at "<image>" / "<audio>" markers into text and Slots."""
    parts: list[str | Slot] = []
    for i, piece in enumerate(_MARKER.split(text)):
        if i % 2:
            parts.append(Slot(piece))
        elif piece:
            parts.append(piece)
    return parts


def clean_message(text: str) -> str:
    """Strip a message and turn every run of blank lines into one newline (a blank line ends a turn)."""
    return re.sub(r"\n\s*\n", "\n", text.replace("\r\n", "\n")).strip()


class ChatTemplate:
    """Turns -> ids, labels and media, per the module docstring.

    `model` (a MultimodalRWKV) preprocesses media and sizes their slots; turns without media need none.
    """

    def __init__(self, tokenizer: Any, placement: str = "inline", *, model: Any = None):
        if placement not in PLACEMENTS:
            raise DataError(f"chat template: placement {placement!r} is not one of {PLACEMENTS}")
        self.tokenizer = tokenizer
        self.placement = placement
        self.model = model
        # ids of short texts seen before ("User: ", "Assistant:", ...): every chat turn encodes them again
        self._memo: dict[str, list[int]] = {}

    @classmethod
    def for_model(cls, model: Any, placement: str | None = None) -> ChatTemplate:
        """The template of a MultimodalRWKV: its tokenizer, and its saved placement unless one is given."""
        saved = (model.config or {}).get("placement", "inline")
        return cls(model.tokenizer, placement or saved, model=model)

    def encode_turns(self, turns: Sequence[Turn], *, train: bool = False) -> Encoded:
        """Encode a conversation; without `train`, a trailing user turn gets the "Assistant:" prompt."""
        out = Encoded()
        for index, turn in enumerate(turns):
            out.extend(self.encode_turn(turn, index=index))
        if not train and turns and turns[-1].role == "user":
            out.extend(self.generation_prompt())
        return out

    def encode_turn(self, turn: Turn, *, index: int = 0) -> Encoded:
        """Encode one turn; `index` only names the turn in error messages."""
        if turn.role not in ROLES:
            raise DataError(f"turn {index}: role {turn.role!r} is not one of {sorted(ROLES)}")
        if turn.role != "user" and (turn.images or turn.audio):
            raise DataError(f"turn {index} ({turn.role}): only user turns may carry media")
        if turn.role == "assistant":
            reply = self._text(f" {clean_message(_plain(turn.text))}\n\n")
            reply.labels = list(reply.ids)
            return self.generation_prompt().extend(reply)
        pieces = [f"{ROLES[turn.role]}: ", *self._body(turn, index), "\n\n"]
        return self._encode_pieces(pieces, turn)

    def generation_prompt(self) -> Encoded:
        """The tokens that hand the word to the assistant ("Assistant:")."""
        return self._text("Assistant:")

    def _body(self, turn: Turn, index: int) -> list[str | Slot]:
        slots = [Slot("image")] * len(turn.images) + [Slot("audio")] * len(turn.audio)
        text = clean_message(_plain(turn.text))
        if self.placement == "inline" and isinstance(turn.text, list):
            return self._inline_body(turn, index)
        if not slots or not text:
            return [*slots, text]
        if self.placement == "sandwich":
            return [text, "\n", *slots, "\n", text]
        if self.placement == "last":
            return [text, "\n", *slots]
        return [*slots, "\n", text]

    def _inline_body(self, turn: Turn, index: int) -> list[str | Slot]:
        body = [p if isinstance(p, Slot) else re.sub(r"\n\s*\n", "\n", p) for p in turn.text]
        for modality, items in (("image", turn.images), ("audio", turn.audio)):
            n = sum(isinstance(p, Slot) and p.modality == modality for p in body)
            if n != len(items):
                raise MediaError(f"turn {index}: the text has {n} {modality} slot(s) but {len(items)} "
                                 f"{modality} item(s) were given")
        return body

    def _encode_pieces(self, pieces: list[str | Slot], turn: Turn) -> Encoded:
        out, pending = Encoded(), ""
        queues = {"image": iter(turn.images), "audio": iter(turn.audio)}
        for piece in pieces:
            if isinstance(piece, str):
                pending += piece
                continue
            out.extend(self._text(pending))
            out.extend(self._media(piece.modality, next(queues[piece.modality])))
            pending = ""
        return out.extend(self._text(pending))

    def _text(self, text: str) -> Encoded:
        ids = self._memo.get(text)
        if ids is None:
            ids = list(self.tokenizer.encode(text)) if text else []
            if len(text) <= MEMO_CHARS:
                if len(self._memo) >= MEMO_ENTRIES:
                    self._memo.pop(next(iter(self._memo)))
                self._memo[text] = ids
        return Encoded(list(ids), [IGNORE] * len(ids))

    def _media(self, modality: str, item: Any) -> Encoded:
        if modality not in MODALITIES:
            raise MediaError(f"unknown modality {modality!r} (valid: {MODALITIES})")
        if self.model is None:
            raise MediaError(f"a {modality} item was given but the chat template has no model to encode it")
        tensor = item.tensor if isinstance(item, Prepared) else self.model.preprocess(modality, item)
        n = self.model.tokens_per_item(modality, tensor)
        media = Media()
        media.add(modality, tensor)
        return Encoded([int(getattr(self.tokenizer.special, modality))] * n, [IGNORE] * n, media)


def _plain(text: str | list[str | Slot]) -> str:
    return text if isinstance(text, str) else "".join(p for p in text if isinstance(p, str))


def collate(samples: Sequence[Encoded], *, pad_id: int = 0, meta: list[dict] | None = None) -> dict:
    """Right-pad samples into the training batch contract: input_ids, labels (-100 on pads), media, meta."""
    if not samples:
        raise DataError("collate: empty batch")
    length = max(len(s.ids) for s in samples)
    ids = torch.full((len(samples), length), pad_id, dtype=torch.long)  # (B, T)
    labels = torch.full((len(samples), length), IGNORE, dtype=torch.long)  # (B, T)
    for b, s in enumerate(samples):
        ids[b, : len(s.ids)] = torch.tensor(s.ids, dtype=torch.long)
        labels[b, : len(s.labels)] = torch.tensor(s.labels, dtype=torch.long)
    meta = meta if meta is not None else [{} for _ in samples]
    return {"input_ids": ids, "labels": labels, "media": Media.cat([s.media for s in samples]), "meta": meta}
