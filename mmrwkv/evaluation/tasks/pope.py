"""POPE (object hallucination on COCO val2014): the official `coco_pope_{random,popular,adversarial}.json` files
are JSON lines {question_id, image, text, label: yes|no}; images are COCO `val2014/<image>`.

Metric as the official evaluate script computes it: a reply keeps its first sentence (up to the first "."),
commas are dropped, and it is "no" when one of its space-separated words is "No", "no" or "not", else "yes".
With "yes" as the positive class: accuracy, precision, recall, F1 and the yes-ratio (share of "yes" replies),
x100, per split and their mean over the splits present (LLaVA-1.5 reports the mean F1).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from mmrwkv.data.sample import Sample, require_dir
from mmrwkv.errors import DataError
from mmrwkv.evaluation.tasks.base import (
    SHORT_ANSWER,
    Task,
    check_predictions,
    field_of,
    read_json_lines,
    turns,
    user_text,
)

SPLITS = ("random", "popular", "adversarial")
POPE_METRICS = ("accuracy", "precision", "recall", "F1", "yes_ratio")
NORMALIZATION = "POPE: first sentence, commas dropped; 'no' if a word is No/no/not, else 'yes'"


def pope_answer(reply: str) -> str:
    """The official reading of a reply as "yes" or "no"."""
    text = reply.split(".")[0] if "." in reply else reply
    words = text.replace(",", "").split(" ")
    return "no" if any(w in ("No", "no", "not") for w in words) else "yes"


def pope_metrics(replies: list[str], labels: list[str]) -> dict[str, float]:
    """Accuracy, precision, recall, F1 and yes-ratio x100 of replies against yes/no labels ("yes" positive);
    a ratio with a zero denominator is 0."""
    preds = [pope_answer(r) == "yes" for r in replies]
    gold = [label == "yes" for label in labels]
    tp = sum(p and g for p, g in zip(preds, gold, strict=True))
    fp = sum(p and not g for p, g in zip(preds, gold, strict=True))
    fn = sum(g and not p for p, g in zip(preds, gold, strict=True))
    tn = len(preds) - tp - fp - fn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    n = len(preds) or 1
    values = {
        "accuracy": (tp + tn) / n,
        "precision": precision,
        "recall": recall,
        "F1": f1,
        "yes_ratio": sum(preds) / n,
    }
    return {k: 100.0 * v for k, v in values.items()}


def read_pope(paths: dict[str, Path], prompt: str) -> list[Sample]:
    """The questions of every split file present; sample ids are "<split>-<question_id>"."""
    present = [s for s in SPLITS if s in paths]
    if not present:
        raise DataError(f"POPE: none of {', '.join(f'coco_pope_{s}.json' for s in SPLITS)} found")
    folder = require_dir(paths["images"], "COCO val2014 image folder")
    samples = []
    for split in present:
        source = paths[split]
        for i, record in enumerate(read_json_lines(source, "POPE file")):
            qid = field_of(record, "question_id", (int, str), str(source), f"line {i + 1}")
            image = field_of(record, "image", str, str(source), f"line {i + 1}")
            text = field_of(record, "text", str, str(source), f"line {i + 1}")
            label = field_of(record, "label", str, str(source), f"line {i + 1}")
            if label not in ("yes", "no"):
                raise DataError(f"{source}: record line {i + 1}: label must be 'yes' or 'no', got {label!r}")
            if not (folder / image).is_file():
                raise DataError(f"{source}: record line {i + 1}: image file {folder / image} not found")
            samples.append(
                Sample(
                    id=f"{split}-{qid}",
                    images=[folder / image],
                    question=text,
                    answers=[label],
                    answer_type=split,
                    turns=turns(user_text(text, prompt)),
                )
            )
    return samples


def score_pope(samples: list[Sample], predictions: Mapping[str, str]) -> dict:
    """POPE metrics per split ("random/F1", ...) and their mean over the splits ("F1", ...)."""
    check_predictions(samples, predictions)
    metrics: dict[str, float] = {}
    splits = [s for s in SPLITS if any(x.answer_type == s for x in samples)]
    for split in splits:
        part = [s for s in samples if s.answer_type == split]
        values = pope_metrics([predictions[s.id] for s in part], [s.answers[0] for s in part])
        metrics.update({f"{split}/{k}": v for k, v in values.items()})
    for name in POPE_METRICS:
        metrics[name] = sum(metrics[f"{s}/{name}"] for s in splits) / max(len(splits), 1)
    answers = {s.id: pope_answer(predictions[s.id]) for s in samples}
    # per-sample scores are numbers (reports rank examples by them): "yes" is 1.0 when the reply reads as yes
    per_sample = {
        s.id: {"correct": float(answers[s.id] == s.answers[0]), "yes": float(answers[s.id] == "yes")} for s in samples
    }
    return {"metrics": metrics, "per_sample": per_sample, "normalization": NORMALIZATION}


TASK = Task(
    name="pope",
    description="POPE random / popular / adversarial on COCO val2014: accuracy, precision, recall, F1, yes-ratio",
    split="coco val2014",
    files={
        "random?": "coco_pope_random.json",
        "popular?": "coco_pope_popular.json",
        "adversarial?": "coco_pope_adversarial.json",
        "images": "val2014",
    },
    source="https://github.com/AoiDragon/POPE (output/coco/coco_pope_*.json); images: COCO val2014 "
    "(https://cocodataset.org/#download)",
    prompt=SHORT_ANSWER,
    read=read_pope,
    score=score_pope,
    primary="F1",
    max_tokens=8,
)
