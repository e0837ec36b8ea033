"""`mmrwkv eval`: RNN-mode batched generation over a recipe's eval split, scored and written as a report.

Prompts of equal length share one sequence-mode prefill (padding is state in an RNN, so they are bucketed
by length instead of padded), then the batch decodes one token per step in RNN mode.
Notation: B batch, T time, V vocabulary.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mmrwkv.checkpoint_files import missing_checkpoint
from mmrwkv.config import RecipeConfig
from mmrwkv.errors import CheckpointError


@dataclass
class EvalReport:
    """The scores of one evaluation and where its files went."""

    metrics: dict
    markdown: str
    paths: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0


def resolve_checkpoint(path: str | Path) -> Path:
    """The model directory behind `path`: a model dir, a step checkpoint, a stage dir or a run's checkpoints dir."""
    from mmrwkv.training.checkpoints import last_checkpoint

    path = Path(path)
    if not path.exists():
        raise missing_checkpoint(path, "checkpoint directory")
    for candidate in (path, path / "model", path / "final"):
        if (candidate / "config.json").is_file():
            return candidate
    for ckpt_dir in (path, path / "checkpoints"):
        if (ckpt_dir / "last").is_file():
            return last_checkpoint(ckpt_dir) / "model"
    raise CheckpointError(f"{path}: no model here (expected config.json, model/, final/ or checkpoints/last)")


def _prompts(model, samples: Sequence, placement: str) -> list:
    from mmrwkv.data.template import ChatTemplate
    from mmrwkv.training.build import MediaCache, to_turns

    template = ChatTemplate(model.tokenizer, placement, model=MediaCache(model))
    return [template.encode_turns(to_turns(s, train=False), train=False) for s in samples]


def _buckets(prompts: list, batch_size: int) -> list[list[int]]:
    by_length: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        by_length.setdefault(len(p.ids), []).append(i)
    return [rows[j : j + batch_size] for rows in by_length.values() for j in range(0, len(rows), batch_size)]


@torch.inference_mode()
def _decode(model, logits: torch.Tensor, state, sampling) -> list[str]:
    """Greedy / sampled RNN-mode decoding of B rows from their last prompt logits (B, V)."""
    from mmrwkv.inference.generate import Sampler, TextStream

    tokenizer = model.tokenizer
    eos = set(sampling.eos_ids) if sampling.eos_ids is not None else {tokenizer.special.eos}
    # the tokenizer finds the whitespace/digit tokens that count 0 for the frequency penalty, as in generate()
    sampler = Sampler(sampling, logits.shape[0], logits.shape[-1], device=logits.device, tokenizer=tokenizer)
    streams = [TextStream(sampling.stop) for _ in range(logits.shape[0])]
    texts = [""] * logits.shape[0]
    active = set(range(logits.shape[0]))
    for _ in range(sampling.max_tokens):
        tokens = sampler(logits).tolist()
        for row in sorted(active):
            if tokens[row] in eos:
                active.discard(row)
                continue
            texts[row] += streams[row].feed(tokenizer.decode_bytes([tokens[row]]))
            if streams[row].stopped:
                active.discard(row)
        if not active:
            break
        # finished rows ride along; their output is already final
        step_logits, state = model(torch.tensor(tokens, device=logits.device).view(-1, 1), None, state)
        logits = step_logits[:, -1]
    return [text + stream.flush() for text, stream in zip(texts, streams, strict=True)]


def predict(model, samples: Sequence, cfg: RecipeConfig, *, progress: bool = False) -> dict[str, str]:
    """{sample id: generated text} for `samples`, batched by prompt length."""
    from mmrwkv.inference.session import ban_media_ids
    from mmrwkv.multimodal import Media

    model.eval()
    sampling = ban_media_ids(cfg.generation.to_sampling(), model.tokenizer)
    prompts = _prompts(model, samples, cfg.template.placement)
    out: dict[str, str] = {}
    buckets = _buckets(prompts, cfg.eval.batch_size)
    device = next(model.parameters()).device
    for n, rows in enumerate(buckets):
        ids = torch.tensor([prompts[i].ids for i in rows], device=device)  # (B, T)
        media = Media.cat([prompts[i].media for i in rows])
        with torch.inference_mode():
            logits, state = model(ids, media, None, last_only=True)
        for i, text in zip(rows, _decode(model, logits[:, -1], state, sampling), strict=True):
            out[samples[i].id] = text.strip()
        if progress and (n + 1) % 10 == 0:
            print(f"eval: {len(out)}/{len(prompts)} samples", flush=True)
    return out


CAPTION_DEFAULT = ["cider", "bleu", "meteor", "rouge_l"]
CAPTION_ONLY = {"bleu", "meteor", "rouge_l", "cider", "spice", "spider"}
ANSWER_ONLY = {"vqa_accuracy", "exact_match"}


def task_metrics(metrics: Sequence[str], samples: Sequence) -> list[str]:
    """The metrics to score `samples` with: `metrics` when given, else the task's standard ones (captions:
    CIDEr-D, BLEU-4, METEOR, ROUGE-L; VQA with several human answers per question (VQAv2): VQA accuracy;
    other short-answer QA: exact match). A metric that cannot apply to the samples raises ConfigError."""
    from mmrwkv.errors import ConfigError

    captioned = any(s.captions for s in samples)
    answered = [s for s in samples if s.question is not None and s.answers]
    if not metrics:
        chosen = list(CAPTION_DEFAULT) if captioned else []
        if answered:
            chosen.append("vqa_accuracy" if max(len(s.answers) for s in answered) > 1 else "exact_match")
        return chosen or ["exact_match"]
    for metric in metrics:
        if metric in CAPTION_ONLY and not captioned:
            raise ConfigError(f"eval.metrics: {metric!r} scores captions, and these samples have no reference "
                              "captions (use vqa_accuracy or exact_match)")
        if metric in ANSWER_ONLY and not answered:
            raise ConfigError(f"eval.metrics: {metric!r} scores answers to questions, and these samples have "
                              "none (captions: use cider, bleu, meteor, rouge_l)")
    return list(metrics)


def last_stage(cfg: RecipeConfig) -> RecipeConfig:
    """The config `mmrwkv run` evaluates with: the last stage's (its data section), or `cfg` without stages."""
    from mmrwkv.config import expand_stages

    return expand_stages(cfg)[-1] if cfg.stages else cfg


def eval_samples(cfg: RecipeConfig) -> list:
    """The recipe's eval split, capped at `eval.max_samples`."""
    from mmrwkv.training.build import load_split

    dataset = load_split(cfg.data, cfg.eval.split)
    return list(dataset.subset(cfg.eval.max_samples, seed=cfg.data.seed))


def evaluate_recipe(
    cfg: RecipeConfig,
    checkpoint: str | Path,
    *,
    out_dir: str | Path | None = None,
    metrics_csv: str | Path | None = None,
    progress: bool = True,
) -> EvalReport:
    """Generate on the eval split with the model at `checkpoint`, score, write predictions/metrics JSON and
    report.md (+ curves.png given a metrics CSV)."""
    from mmrwkv.evaluation import report_for_recipe, score_for_recipe
    from mmrwkv.evaluation.report import check_report_dir
    from mmrwkv.evaluation.score import report_dir
    from mmrwkv.multimodal import MultimodalRWKV

    start = time.perf_counter()
    # the same data section `mmrwkv run` evaluates with: the last stage's
    cfg = last_stage(cfg)
    if out_dir is not None:
        cfg.eval.report.dir = str(out_dir)
    # a directory the report may not be written to is refused before the model generates
    check_report_dir(report_dir(cfg))
    samples = eval_samples(cfg)
    cfg.eval.metrics = task_metrics(cfg.eval.metrics, samples)
    model = MultimodalRWKV.load(resolve_checkpoint(checkpoint))
    predictions = predict(model, samples, cfg, progress=progress)
    result = score_for_recipe(cfg, samples, predictions)
    paths = report_for_recipe(cfg, samples, predictions, result, metrics_csv=metrics_csv)
    result["seconds"] = round(time.perf_counter() - start, 1)
    return EvalReport(
        {k: v for k, v in result.items() if k != "per_sample"}, paths["report"].read_text(), paths, result["seconds"]
    )
