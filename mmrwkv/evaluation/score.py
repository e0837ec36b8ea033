"""Score a split's predictions with the metrics a recipe asks for; the result says split, normalization,
tokenizer path and decoding next to every number."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from mmrwkv.data.sample import Sample
from mmrwkv.evaluation.captions import CAPTION_METRICS, caption_metrics
from mmrwkv.evaluation.vqa import score_vqa

VQA_METRICS = ("vqa_accuracy", "exact_match")


def _caption_scale(samples: Sequence[Sample]) -> float:
    # image captioning papers report x100, audio captioning papers raw values
    return 1.0 if samples and all(s.audio and not s.images for s in samples) else 100.0


def score_samples(
    samples: Sequence[Sample],
    predictions: Mapping[str, str],
    metrics: Sequence[str],
    *,
    split: str,
    decoding: str,
    tokenizer: str = "auto",
) -> dict:
    """Metrics of `predictions` ({sample id: text}) over `samples`: VQA metrics on the samples with a question
    and answers, caption metrics on the samples with captions. Returns one JSON-ready dict."""
    vqa = [s for s in samples if s.question is not None and s.answers]
    captioned = [s for s in samples if s.captions]
    result: dict = {"split": split, "decoding": decoding, "num_samples": len(samples), "metrics": {}}
    for metric in (m for m in metrics if m in VQA_METRICS):
        scored = score_vqa(
            {s.id: predictions[s.id] for s in vqa if s.id in predictions},
            {s.id: s.answers for s in vqa},
            {s.id: s.answer_type for s in vqa},
            metric=metric,
        )
        result["normalization"] = scored["normalization"]
        result["metrics"][metric] = scored["accuracy"]
        result["metrics"].update({f"{metric}/{k}": v for k, v in scored["per_answer_type"].items()})
        result.setdefault("per_sample", {}).update({k: {metric: v} for k, v in scored["per_question"].items()})
    wanted = [m for m in metrics if m in CAPTION_METRICS]
    if wanted and captioned:
        scored = caption_metrics(
            {s.id: predictions[s.id] for s in captioned if s.id in predictions},
            {s.id: s.captions for s in captioned},
            metrics=wanted,
            tokenizer=tokenizer,
            scale=_caption_scale(captioned),
        )
        result["metrics"].update(scored["metrics"])
        result["tokenizer"] = scored["tokenizer"]
        result["scale"] = scored["scale"]
        result["unavailable"] = scored["unavailable"]
        for key, values in scored["per_sample"].items():
            result.setdefault("per_sample", {}).setdefault(key, {}).update(values)
    return result


def score_for_recipe(cfg, samples: Sequence[Sample], predictions: Mapping[str, str]) -> dict:
    """`score_samples` with a RecipeConfig's eval metrics, split, caption tokenizer and decoding label."""
    return score_samples(
        samples,
        predictions,
        cfg.eval.metrics,
        split=cfg.eval.split,
        decoding=cfg.generation.decoding,
        tokenizer=cfg.eval.caption_tokenizer,
    )


def report_dir(cfg) -> Path:
    """Where a recipe's evaluation report goes: `eval.report.dir`, else `<train.output_dir>/eval-<split>`."""
    return Path(cfg.eval.report.dir) if cfg.eval.report.dir else Path(cfg.train.output_dir) / f"eval-{cfg.eval.split}"


def report_for_recipe(
    cfg, samples: Sequence[Sample], predictions: Mapping[str, str], result: dict, *, metrics_csv=None
) -> dict[str, Path]:
    """`write_report` into `eval.report.dir` (default `<train.output_dir>/eval-<split>`) with the recipe's report
    settings; curves only when `eval.report.curves` and a metrics CSV is given."""
    from mmrwkv.evaluation.report import write_report

    report = cfg.eval.report
    return write_report(
        report_dir(cfg),
        samples,
        predictions,
        result,
        title=f"{cfg.name}: {cfg.eval.split}",
        num_examples=report.num_examples,
        thumbnails=report.thumbnails,
        metrics_csv=metrics_csv if report.curves else None,
    )
