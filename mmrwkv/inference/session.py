"""Chat sessions that carry the RNN state across turns, and one-shot answers from a multimodal checkpoint.

The prompt of each turn comes from the chat template (`mmrwkv.data.template`); media and prompt prefixes go
through a content-keyed `mmrwkv.inference.prefix_cache.PrefixCache` when one is given.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from mmrwkv.data.template import ChatTemplate, Encoded, Prepared, Turn
from mmrwkv.inference.generate import GenerationResult, SamplingConfig, sample_stream
from mmrwkv.inference.prefill import prefill_embeddings
from mmrwkv.inference.prefix_cache import PrefixCache, content_key, model_key
from mmrwkv.multimodal import Media
from mmrwkv.names import IGNORE, MODALITIES


def ban_media_ids(sampling: SamplingConfig, tokenizer) -> SamplingConfig:
    """`sampling` that never draws a media placeholder id: fed back, one would be a media slot with no media."""

    media = {int(getattr(tokenizer.special, m)) for m in MODALITIES if getattr(tokenizer.special, m, None) is not None}
    if media <= set(sampling.banned_ids):
        return sampling
    return replace(sampling, banned_ids=sorted(media | set(sampling.banned_ids)))


class ChatSession:
    """A multi-turn chat whose RNN state carries over: turn N runs only its new tokens.

    With a `cache`, media files are preprocessed once per content (hashed before decoding), a turn with media is
    prefilled up to its last placeholder through the cache, and the state after the whole prompt is kept too: a
    second question about the same image after the same history neither re-encodes it nor re-runs that prefill,
    and the same question again runs no prefill at all. A hit gives exactly the state and logits of a miss.
    """

    def __init__(self, model: Any, template: ChatTemplate | None = None, *, cache: PrefixCache | None = None,
                 system: str | None = None, sampling: SamplingConfig | None = None):
        self.model = model
        self.template = template or ChatTemplate.for_model(model)
        self.cache = cache
        self.system = system
        self.sampling = sampling or SamplingConfig(temperature=1.0, top_p=0.3, stop=["\n\n"])
        self.prefill_tokens = 0
        # every id that stands for media (the model's placeholders, the tokenizer's reserved media ids): a piece
        # without them and without media is embedded by the backbone alone
        special = self.template.tokenizer.special
        self._media_ids = set(getattr(model, "placeholder_ids", {}).values()) | {
            int(getattr(special, m)) for m in MODALITIES if getattr(special, m, None) is not None}
        self.reset()

    def reset(self) -> None:
        """Forget the conversation (the cache is kept)."""
        self.state = None
        self.turns: list[Turn] = []
        # every token the state has consumed, with its media: the whole-history equivalent of `state`
        self.history = Encoded()
        self._pending: list[int] = []
        self.last_result: GenerationResult | None = None
        # the root of the content keys: a cache shared by two models never mixes their states
        self._key = model_key(self.model)

    def fork(self) -> ChatSession:
        """An independent copy of the conversation so far (same model, template and cache), e.g. to branch."""
        other = copy.copy(self)
        other.state = None if self.state is None else self.state.clone()
        other.turns = list(self.turns)
        other.history = Encoded(list(self.history.ids), list(self.history.labels), Media.cat([self.history.media]))
        other._pending = list(self._pending)
        return other

    def ask(self, text: str, images: Sequence = (), audio: Sequence = (),
            sampling: SamplingConfig | None = None) -> Iterator[str]:
        """Prefill the new turn now (bad media raise here, leaving the session as it was); stream the answer.

        `text` is plain user text: it never creates media slots. The session's state advances as the
        returned iterator is consumed; closing it early keeps what was generated so far.
        """
        turn = Turn("user", text, list(images), list(audio))
        head = [Turn("system", self.system)] if self.system and not self.turns else []
        prepared = replace(turn, images=self._prepare("image", images), audio=self._prepare("audio", audio))
        enc = self.template.encode_turns([*head, prepared])
        new = Encoded(self._pending + enc.ids, [IGNORE] * len(self._pending) + enc.labels, enc.media)
        logits, state, key = self._prefill(new.ids, new.media)
        return self._answer([*head, turn], new, (logits, state, key), sampling or self.sampling)

    def add_turns(self, turns: Sequence[Turn]) -> None:
        """Consume earlier turns of a conversation (assistant replies included) without generating, e.g. a
        history sent whole by a stateless client; the state then equals having chatted them (same template)."""
        if not turns:
            return
        head = [Turn("system", self.system)] if self.system and not self.turns and turns[0].role != "system" else []
        prepared = [replace(t, images=self._prepare("image", t.images), audio=self._prepare("audio", t.audio))
                    for t in [*head, *turns]]
        enc = self.template.encode_turns(prepared, train=True)
        new = Encoded(self._pending + enc.ids, [IGNORE] * len(self._pending) + enc.labels, enc.media)
        _, state, key = self._prefill(new.ids, new.media)
        self.state, self._key, self._pending = state, key, []
        self.history.extend(new)
        self.turns += [*head, *turns]

    def _prepare(self, modality: str, items: Sequence) -> list:
        if self.cache is None or not items:
            return list(items)
        return [Prepared(self.cache.preprocess(self.model, modality, item)) for item in items]

    @torch.inference_mode()
    def _prefill(self, ids: list[int], media: Media) -> tuple[Tensor, Any, str]:
        """(last logits, state, content key) after `ids`, through the cache when the prompt holds media."""
        placeholders = set(self.model.placeholder_ids.values())
        cut = max((i + 1 for i, t in enumerate(ids) if t in placeholders), default=0)
        if not cut or self.cache is None:
            logits, state = self._run(ids, media, self.state)
            return logits, state, content_key(ids, media, parent=self._key)
        prefix = content_key(ids[:cut], media, parent=self._key)
        rest = ids[cut:]
        key = content_key(rest, parent=prefix) if rest else prefix
        hit = self.cache.get(key)
        if hit is not None:
            return hit[1], hit[0], key
        hit = self.cache.get(prefix) if rest else None
        if hit is None:
            logits, state = self._run(ids[:cut], media, self.state)
            self.cache.put(prefix, state, logits)
        else:
            state, logits = hit
        if rest:
            logits, state = self._run(rest, None, state)
            self.cache.put(key, state, logits)
        return logits, state, key

    def _run(self, ids: list[int], media: Media | None, state: Any) -> tuple[Tensor, Any]:
        device = next(self.model.parameters()).device
        tokens = torch.tensor([ids], dtype=torch.long, device=device)  # (1, T)
        if media or not self._media_ids.isdisjoint(ids):
            x = self.model.embed(tokens, media)  # (1, T, C)
        else:  # plain text (a question after a cached image): no media slots to check or fill
            x = self.model.backbone.embed(tokens)
        self.prefill_tokens += len(ids)
        # a short piece of a small model runs token by token in one native call (mmrwkv.inference.engine)
        return prefill_embeddings(self.model.backbone, x, state)

    def _answer(self, turns: list[Turn], new: Encoded, prefilled: tuple[Tensor, Any, str],
                sampling: SamplingConfig) -> Iterator[str]:
        logits, state, key = prefilled
        result = GenerationResult()
        sampling = ban_media_ids(sampling, self.template.tokenizer)
        try:
            yield from sample_stream(self.model.backbone, self.template.tokenizer, logits, state, sampling,
                                     result=result)
        finally:
            self._commit(turns, new, result, key)

    def _commit(self, turns: list[Turn], new: Encoded, result: GenerationResult, key: str) -> None:
        # the state covers every token in result.tokens; with the "\n\n" stop the blank line is among them
        self.state = result.state
        self.last_result = result
        self._key = content_key(result.tokens, parent=key)
        self.history.extend(new).extend(Encoded(list(result.tokens), list(result.tokens)))
        ended = self.template.tokenizer.decode_bytes(result.tokens).endswith(b"\n\n")
        self._pending = [] if ended else list(self.template.tokenizer.encode("\n\n"))
        self.turns += [*turns, Turn("assistant", result.text)]


def answer_once(checkpoint: str, prompt: str, *, images: Sequence = (), audio: Sequence = (),
                sampling: SamplingConfig | None = None, device: str = "cpu") -> Iterator[str]:
    """Load a multimodal checkpoint and stream its answer to one user turn (`mmrwkv generate --image ...`).

    The answer ends at the end-of-turn blank line: "\\n\\n" is added to the stop strings.
    """
    from mmrwkv.multimodal import MultimodalRWKV

    model = MultimodalRWKV.load(checkpoint, map_location=device).eval()
    sampling = sampling or SamplingConfig()
    if "\n\n" not in sampling.stop:
        sampling = replace(sampling, stop=[*sampling.stop, "\n\n"])
    return ChatSession(model, sampling=sampling).ask(prompt, images, audio)
