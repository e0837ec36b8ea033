"""Sampling and RNN-mode streaming generation.

Notation: B batch, T time, V vocabulary. Generation prefills the prompt in sequence mode, then steps the model
one token at a time with its constant-size state. Generators yield text pieces that never split a UTF-8
character and never contain a stop string; a `GenerationResult` passed in is filled with the tokens, the
final state and logits, so a chat can continue from where generation ended.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from mmrwkv.errors import TokenizerError
from mmrwkv.kernels import cpu as native

# defined in a torch-free module so that recipe configs (their `generation` section) share it
from mmrwkv.sampling import SamplingConfig


@dataclass
class GenerationResult:
    """Filled in while a generator runs; complete once the generator is exhausted.

    `tokens` are the generated tokens fed to the model (an eos token is not), `state` and `logits` (V,) are
    the model's after the last of them, so a caller can continue the conversation from `state`.
    `finish_reason`: "eos", "stop" (a stop string) or "length" (max_tokens).
    """

    tokens: list[int] = field(default_factory=list)
    text: str = ""
    state: object | None = None
    logits: torch.Tensor | None = None
    finish_reason: str | None = None


class Sampler:
    """Draws next tokens for B rows from logits (B, V), keeping the per-row penalty counts."""

    def __init__(self, sampling: SamplingConfig, batch_size: int, vocab_size: int, device=None, *, tokenizer=None):
        """`tokenizer` (optional) finds the whitespace/digit tokens that count 0 for the frequency penalty, and the
        ids it cannot turn into text (never drawn)."""
        self.cfg = sampling
        self.never = _undecodable_ids(tokenizer, vocab_size) if tokenizer is not None else []
        self._never = set(self.never)
        self.device = device or "cpu"
        self._generator: torch.Generator | None = None
        self.counts = self.seen = self.weight = None
        if sampling.penalized:
            self.counts = torch.zeros(batch_size, vocab_size, device=device)
            self.seen = torch.zeros(batch_size, vocab_size, dtype=torch.bool, device=device)
            self.weight = torch.ones(vocab_size, device=device)
            if tokenizer is not None:
                self.weight[[i for i in _uncounted_ids(tokenizer) if i < vocab_size]] = 0.0

    @property
    def generator(self) -> torch.Generator:
        """The random generator (seeded from `seed`, else from the OS), made on first use: greedy decoding,
        e.g. a chat's first token at temperature 0, never pays for seeding one."""
        if self._generator is None:
            self._generator = torch.Generator(device=self.device)
            if self.cfg.seed is not None:
                self._generator.manual_seed(self.cfg.seed)
            else:
                self._generator.seed()
        return self._generator

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """logits (B, V) -> token ids (B,)."""
        cfg = self.cfg
        if cfg.temperature == 0 and self.counts is None and not cfg.banned_ids and logits.shape[0] == 1:
            pick = native.step_pick(logits)  # found by the native step as it computed these logits (or None)
            if pick is not None and pick not in self._never:
                return torch.tensor([pick], device=logits.device)
        logits = logits.float().clone()
        if self.counts is not None:
            logits -= self.seen * cfg.presence_penalty + self.counts * cfg.frequency_penalty
        if cfg.banned_ids or self.never:
            logits[:, list(cfg.banned_ids) + self.never] = float("-inf")
        if cfg.temperature == 0:
            token = logits.argmax(dim=-1)
        else:
            # as the authors' sampler: top-k/top-p choose among the temperature-1 probabilities, then the
            # temperature reshapes the kept ones (probs ** (1 / T), renormalized)
            keep = _top_mask(torch.softmax(logits, dim=-1), cfg.top_k, cfg.top_p)
            scaled = logits / cfg.temperature
            probs = torch.softmax(scaled if keep is None else scaled.masked_fill(~keep, float("-inf")), dim=-1)
            token = torch.multinomial(probs, 1, generator=self.generator).squeeze(-1)
        if self.counts is not None:
            rows = torch.arange(len(token), device=token.device)
            self.counts *= cfg.penalty_decay
            self.counts[rows, token] += self.weight[token]
            self.seen[rows, token] = True
        return token


# the authors' chat tool counts a generated token 0 (frequency) when its text is `in ' \t0123456789'`
_UNCOUNTED_TEXT = " \t0123456789"
_UNDECODABLE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_UNCOUNTED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _undecodable_ids(tokenizer, vocab_size: int) -> list[int]:
    """Ids of the model's vocabulary that the tokenizer cannot turn into text (the World vocabulary's unused 65535, a
    model's rows past a smaller tokenizer's last id): a random or lightly trained model may rank one first, and
    generation would stop on a decode error. Scanned once per tokenizer and vocabulary size."""
    try:
        return _UNDECODABLE[tokenizer][vocab_size]
    except (KeyError, TypeError):
        pass
    ids = []
    for i in range(vocab_size):
        try:
            tokenizer.decode_bytes([i])
        except (TokenizerError, KeyError, IndexError, ValueError):
            ids.append(i)
    try:
        _UNDECODABLE.setdefault(tokenizer, {})[vocab_size] = ids
    except TypeError:  # a tokenizer that cannot be weakly referenced: scanned again next time
        pass
    return ids


def _uncounted_ids(tokenizer) -> list[int]:
    """Ids whose text (strict UTF-8, as the authors decode one token) is a substring of ' \\t0123456789'."""
    try:
        return _UNCOUNTED[tokenizer]
    except (KeyError, TypeError):  # not seen yet, or a tokenizer that cannot be weakly referenced / hashed
        pass
    ids = []
    for i in range(int(tokenizer.vocab_size)):
        try:
            text = tokenizer.decode_bytes([i]).decode("utf-8")
        except (TokenizerError, UnicodeDecodeError, KeyError, IndexError, ValueError):
            continue
        if text in _UNCOUNTED_TEXT:
            ids.append(i)
    try:
        _UNCOUNTED[tokenizer] = ids
    except TypeError:
        pass
    return ids


def _top_mask(probs: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor | None:
    """Which tokens stay (B, V): the top_k most likely and the smallest set whose mass reaches top_p (with every
    token as likely as the last one in it, as the authors' cutoff keeps); None when neither applies."""
    if top_k == 0 and top_p >= 1:
        return None
    sorted_p, order = probs.sort(dim=-1, descending=True)
    keep = torch.ones_like(sorted_p, dtype=torch.bool)
    if top_k > 0:
        keep[:, top_k:] = False
    if top_p < 1:
        # the mass before each token; the most likely token is always kept
        inside = (sorted_p.cumsum(dim=-1) - sorted_p) < top_p
        cutoff = (sorted_p * inside).masked_fill(~inside, float("inf")).amin(dim=-1, keepdim=True)
        keep &= sorted_p >= cutoff
    return torch.zeros_like(keep).scatter(-1, order, keep)


def _incomplete_utf8_tail(data: bytes) -> int:
    """How many trailing bytes form the start of a UTF-8 character that is not complete yet."""
    for back in range(1, min(3, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:  # continuation byte: keep looking for the lead byte
            continue
        need = 2 if byte & 0xE0 == 0xC0 else 3 if byte & 0xF0 == 0xE0 else 4 if byte & 0xF8 == 0xF0 else 1
        return back if need > back else 0
    return 0


class TextStream:
    """Turns token bytes into text pieces: holds back an incomplete UTF-8 character and any text that may be
    the start of a stop string; never emits a stop string or anything after it."""

    def __init__(self, stop: Sequence[str] = ()):
        self.stop = list(stop)
        self._bytes = b""
        self._text = ""
        self.stopped = False

    def feed(self, data: bytes) -> str:
        """Add token bytes; return the text that is now safe to show (may be empty)."""
        if self.stopped:
            return ""
        self._bytes += data
        hold = _incomplete_utf8_tail(self._bytes)
        ready = self._bytes[: len(self._bytes) - hold]
        self._bytes = self._bytes[len(ready) :]
        self._text += ready.decode("utf-8", errors="replace")
        return self._release()

    def _release(self) -> str:
        hits = [i for i in (self._text.find(s) for s in self.stop) if i >= 0]
        if hits:
            self.stopped = True
            out, self._text = self._text[: min(hits)], ""
            return out
        keep = max((_overlap(self._text, s) for s in self.stop), default=0)
        out = self._text[: len(self._text) - keep]
        self._text = self._text[len(out) :]
        return out

    def flush(self) -> str:
        """The held-back text at the end of generation (an incomplete character becomes U+FFFD)."""
        if self.stopped:
            return ""
        out = self._text + self._bytes.decode("utf-8", errors="replace")
        self._text, self._bytes = "", b""
        return out


def _overlap(text: str, stop: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `stop`."""
    for n in range(min(len(text), len(stop) - 1), 0, -1):
        if text.endswith(stop[:n]):
            return n
    return 0


def _eos_ids(sampling: SamplingConfig, tokenizer) -> set[int]:
    return set(sampling.eos_ids) if sampling.eos_ids is not None else {tokenizer.special.eos}


@torch.inference_mode()
def prefill(model, ids: Sequence[int] | torch.Tensor, state=None):
    """Run prompt ids through the model -> (last logits (V,), state): for an RWKV backbone the inference engine's
    prefill (`mmrwkv.inference.engine.prefill`: sequence mode, or a short piece natively), else sequence mode."""
    from mmrwkv.rwkv import RWKV

    ids = torch.as_tensor(ids, dtype=torch.long, device=_device(model)).reshape(1, -1)
    if ids.shape[1] == 0:
        raise ValueError("prefill: the prompt has no tokens")
    if isinstance(model, RWKV):
        from mmrwkv.inference import engine

        return engine.prefill(model, ids, state)
    logits, state = model(ids, state, last_only=True)
    return logits[0, -1], state


def _device(model) -> torch.device:
    return next(model.parameters()).device


def sample_stream(
    model,
    tokenizer,
    logits: torch.Tensor,
    state,
    sampling: SamplingConfig | None = None,
    *,
    result: GenerationResult | None = None,
) -> Iterator[str]:
    """Stream text from precomputed last logits (V,) and the state after the prompt (RNN mode).

    The multimodal chat prefills embeddings itself and calls this; `result` (if given) is filled in.
    """
    sampling = sampling or SamplingConfig()
    result = result if result is not None else GenerationResult()
    result.state, result.logits = state, logits
    sampler = Sampler(sampling, 1, logits.shape[-1], device=logits.device, tokenizer=tokenizer)
    stream, eos = TextStream(sampling.stop), _eos_ids(sampling, tokenizer)
    result.finish_reason = "length"
    for _ in range(sampling.max_tokens):
        token = int(sampler(result.logits.reshape(1, -1))[0])
        if token in eos:
            result.finish_reason = "eos"
            break
        piece = stream.feed(tokenizer.decode_bytes([token]))
        if piece:
            result.text += piece
            yield piece
        result.tokens.append(token)
        result.logits, result.state = _step(model, [token], result.state)
        if stream.stopped:
            result.finish_reason = "stop"
            break
    tail = stream.flush()
    if tail:
        result.text += tail
        yield tail


_STEPPERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def stepper_for(model):
    """The one-token step for `model`: `RWKVStepper` for an RWKV backbone (the inference engine's step),
    else `model` at T = 1.

    Returns a function (ids (B,), state) -> (logits (B, V), state); RWKVStepper objects are cached per model.
    """
    from mmrwkv.rwkv import RWKV

    if isinstance(model, RWKV):
        if model not in _STEPPERS:
            from mmrwkv.inference.stepper import RWKVStepper

            _STEPPERS[model] = RWKVStepper(model)
        return _STEPPERS[model]
    return functools.partial(_forward_step, model)


@torch.inference_mode()
def _forward_step(model, ids: torch.Tensor, state, *, by_rows: bool = True):  # (by_rows: RWKVStepper's; no rows here)
    logits, state = model(ids.view(-1, 1), state)
    return logits[:, -1], state


def _step(model, tokens: list[int], state, *, exact: bool = True):
    """Feed one token per row in RNN mode -> (logits (V,) for one row or (B, V), state); exact=False lets a batch
    take the batched step rather than each row the one-sequence step (`mmrwkv.inference.stepper.RWKVStepper`)."""
    ids = torch.tensor(tokens, dtype=torch.long, device=_device(model))
    step = stepper_for(model)
    logits, state = step(ids, state) if exact or len(tokens) == 1 else step(ids, state, by_rows=False)
    return (logits[0] if len(tokens) == 1 else logits), state


def generate(
    model,
    tokenizer,
    prompt: str | Sequence[int],
    sampling: SamplingConfig | None = None,
    *,
    state=None,
    result: GenerationResult | None = None,
) -> Iterator[str]:
    """Stream the continuation of `prompt` (text or ids): sequence-mode prefill, then RNN-mode steps.

    `state` continues from an earlier state; `result` (if given) receives tokens, final state and logits.
    """
    ids = tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
    logits, state = prefill(model, ids, state)
    yield from sample_stream(model, tokenizer, logits, state, sampling, result=result)


def generate_batch(
    model, tokenizer, prompts: Sequence[str | Sequence[int]], sampling: SamplingConfig | None = None
) -> list[GenerationResult]:
    """Generate for several prompts of different lengths at once: prefill each, join the states, step the batch.

    With temperature 0 the tokens equal those of one-at-a-time `generate`: each prompt is prefilled alone, and on
    CPU each row takes the one-sequence native step (`mmrwkv.inference.engine`), so they are equal in bf16 too.
    Sampled rows (temperature > 0) cannot equal one-at-a-time draws anyway (one generator serves the batch): a batch
    of more than two of them takes the batched step, which reads the weights once for all rows.
    """
    from mmrwkv.rwkv import State

    sampling = sampling or SamplingConfig()
    prefilled = [prefill(model, tokenizer.encode(p) if isinstance(p, str) else p) for p in prompts]
    logits = torch.stack([lg for lg, _ in prefilled])  # (B, V)
    state = State.cat([s for _, s in prefilled])
    results = [GenerationResult() for _ in prompts]
    streams = [TextStream(sampling.stop) for _ in prompts]
    sampler, eos = (
        Sampler(sampling, len(prompts), logits.shape[-1], device=logits.device, tokenizer=tokenizer),
        _eos_ids(sampling, tokenizer),
    )
    active = set(range(len(prompts)))
    for _ in range(sampling.max_tokens):
        tokens = sampler(logits).tolist()
        fed = []
        for row in sorted(active):
            if _advance(results[row], streams[row], tokenizer, tokens[row], eos):
                fed.append(row)
            else:
                _snapshot(results[row], row, logits, state)
        active = set(fed)
        if not fed:
            break
        # finished rows ride along with their token; their snapshot was taken before this step
        logits, state = _step(model, tokens, state, exact=sampling.temperature == 0)
        logits = logits.view(len(prompts), -1)
        active = {row for row in fed if results[row].finish_reason is None}
        for row in set(fed) - active:
            _snapshot(results[row], row, logits, state)
    for row in active:
        results[row].finish_reason = "length"
        _snapshot(results[row], row, logits, state)
    for row, result in enumerate(results):
        result.text += streams[row].flush()
    return results


def _snapshot(result: GenerationResult, row: int, logits: torch.Tensor, state) -> None:
    result.logits, result.state = logits[row].clone(), state[row].clone()


def _advance(result: GenerationResult, stream: TextStream, tokenizer, token: int, eos: set[int]) -> bool:
    """Record one sampled token of a batch row; False when it is eos (not fed to the model)."""
    if token in eos:
        result.finish_reason = "eos"
        return False
    result.tokens.append(token)
    result.text += stream.feed(tokenizer.decode_bytes([token]))
    if stream.stopped:
        # fed once more, like single generation, so the state covers every token in `result.tokens`
        result.finish_reason = "stop"
    return True
