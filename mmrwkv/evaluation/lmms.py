"""An lmms-eval model: `lmms-eval --model mmrwkv --model_args checkpoint=DIR[,device=cuda,max_new_tokens=64]`.

Needs the optional `lmms-eval` package (`pip install mmrwkv[lmms]`); lmms-eval finds this model through the
`lmms_eval.models` entry point of our package metadata. Requests run through our chat template and RNN-mode
generation, reusing state where a document's requests share a prefix:

- generate_until: a `ChatSession` with a `PrefixCache` (greedy unless the task samples): the prefill of an
  image is kept, so a second question about the same image (MME's pairs, POPE) runs only its own text.
- loglikelihood (multiple choice): the state after a document's prompt is computed once and cloned for each
  choice; a choice is scored over its tokens as the assistant would write them (" {choice}", after
  "Assistant:"). The value is the negative log-likelihood (the summed loss), as lmms-eval's own models return
  it: its multiple-choice scoring picks the choice with the smallest value (argmin).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import torch
from lmms_eval.api.instance import GenerationResult, Instance
from lmms_eval.api.model import lmms
from lmms_eval.api.registry import register_model

MODEL_ID = "mmrwkv"


def manifest():
    """The lmms-eval model manifest (entry point `lmms_eval.models: mmrwkv`)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, simple_class_path=f"{__name__}.MMRWKV")


def _images(visuals) -> list:
    """The PIL images among lmms-eval's visuals (nested lists flattened; other media are not supported)."""
    from PIL import Image

    out, stack = [], [visuals]
    while stack:
        item = stack.pop(0)
        if isinstance(item, list | tuple):
            stack[:0] = list(item)
        elif isinstance(item, Image.Image):
            out.append(item)
        elif item is not None:
            raise TypeError(f"mmrwkv lmms-eval model: only images are supported, got {type(item).__name__}")
    return out


def _text(context) -> str:
    context = context[0] if isinstance(context, list) else context
    # lmms-eval contexts may carry LLaVA's marker; our template places the images itself
    return context.replace("<image>", "").strip()


@register_model(MODEL_ID)
class MMRWKV(lmms):
    """mmrwkv checkpoints under lmms-eval (single process; `batch_size` is accepted and requests run one by one,
    which is what state reuse across a document's requests needs)."""

    def __init__(
        self, checkpoint: str, device: str = "cpu", max_new_tokens: int | str = 64, batch_size: int | str = 1, **kwargs
    ) -> None:
        super().__init__()
        from mmrwkv.evaluation.run_task import load_model
        from mmrwkv.inference.prefix_cache import PrefixCache
        from mmrwkv.inference.session import ChatSession

        self.model = load_model(checkpoint, device)
        self.cache = PrefixCache()
        self.session = ChatSession(self.model, cache=self.cache)
        self.max_new_tokens = int(max_new_tokens)
        self.batch_size_per_gpu = int(batch_size)
        self.prompt_prefills = 0

    def _doc_images(self, doc_to_visual, task: str, split: str, doc_id) -> list:
        if doc_to_visual is None:
            return []
        return _images(doc_to_visual(self.task_dict[task][split][doc_id]))

    def _sampling(self, gen_kwargs: dict):
        from mmrwkv.inference.generate import SamplingConfig

        until = gen_kwargs.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        sample = bool(gen_kwargs.get("do_sample")) and float(gen_kwargs.get("temperature") or 0) > 0
        return SamplingConfig(
            temperature=float(gen_kwargs["temperature"]) if sample else 0.0,
            top_p=float(gen_kwargs.get("top_p") or 1.0) if sample else 1.0,
            max_tokens=int(gen_kwargs.get("max_new_tokens") or self.max_new_tokens),
            stop=["\n\n", *[u for u in until if u]],
        )

    def generate_until(self, requests: list[Instance]) -> list[str]:
        """Greedy (or the task's sampling) replies, stopped at the end of the turn or the task's `until`."""
        out = []
        for request in requests:
            context, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
            images = self._doc_images(doc_to_visual, task, split, doc_id)
            self.session.reset()
            reply = "".join(self.session.ask(_text(context), images=images, sampling=self._sampling(gen_kwargs)))
            out.append(reply.strip())
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), reply)
        return out

    @torch.inference_mode()
    def _prompt_state(self, context, images: list, key: str):
        """(last logits (V,), state) after the user turn and "Assistant:", once per document prompt."""
        from mmrwkv.data.template import Turn
        from mmrwkv.multimodal import Media

        hit = self.cache.get(key)
        if hit is not None:
            return hit[1], hit[0]
        encoded = self.session.template.encode_turns([Turn("user", _text(context), images=images)])
        device = next(self.model.parameters()).device
        ids = torch.tensor([encoded.ids], device=device)  # (1, T)
        logits, state = self.model(ids, encoded.media if len(encoded.media) else Media(), None, last_only=True)
        self.prompt_prefills += 1
        self.cache.put(key, state, logits[0, -1])
        return logits[0, -1], state

    @torch.inference_mode()
    def _continuation(self, logits: torch.Tensor, state, text: str) -> tuple[float, bool]:
        """Negative log-likelihood of `text`'s tokens after the prompt, and whether greedy decoding writes it."""
        ids = self.model.tokenizer.encode(text if text.startswith(" ") else " " + text)
        if not ids:
            return 0.0, True
        device = logits.device
        rest, _ = self.model(torch.tensor([ids], device=device), None, state.clone())  # (1, T, V)
        steps = torch.cat([logits.view(1, -1), rest[0, :-1]], dim=0).float()  # (T, V): predicts ids[t]
        target = torch.tensor(ids, device=device)
        logprob = torch.log_softmax(steps, dim=-1).gather(1, target[:, None]).sum()
        return -float(logprob), bool((steps.argmax(-1) == target).all())

    def loglikelihood(self, requests: list[Instance]) -> list[GenerationResult]:
        """(-log P(continuation | prompt), is greedy) per request; a document's prompt is prefilled once.

        Each pair is wrapped in a GenerationResult: lmms-eval 0.7.3's evaluator passes a GenerationResult's payload
        through unchanged but turns a plain tuple into its str(), which its multiple-choice scoring cannot unpack."""
        out = []
        for request in requests:
            context, target, doc_to_visual, doc_id, task, split = request.args
            doc = self.task_dict[task][split][doc_id]
            continuation = target if isinstance(target, str) else target(doc)
            images = self._doc_images(doc_to_visual, task, split, doc_id)
            key = "loglikelihood:" + hashlib.sha256(repr((task, split, doc_id, _text(context))).encode()).hexdigest()
            logits, state = self._prompt_state(context, images, key)
            out.append(GenerationResult(text=self._continuation(logits, state, str(continuation))))
        return out

    def generate_until_multi_round(self, requests: Iterable[Instance]) -> list[str]:
        raise NotImplementedError("mmrwkv lmms-eval model: multi-round generation is not supported")
