"""GQA test-dev balanced (the split LLaVA-1.5 and lmms-eval report): `testdev_balanced_questions.json` is an
object {question id: {imageId, question, answer, fullAnswer, types: {structural, semantic, detailed}, ...}} and
images are `images/<imageId>.jpg` (ids such as "n161313" or "2354786").

Metric: accuracy as the official `eval.py` computes it on LLaVA's converted predictions: the prediction is
stripped, trailing periods removed and lowercased, then compared exactly with the stored answer; per structural
type too. `exact_match` (VQA normalization of both sides, as for easy-VQA) is reported beside it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

from mmrwkv.data.sample import Sample
from mmrwkv.errors import DataError
from mmrwkv.evaluation.tasks.base import (
    SHORT_ANSWER,
    Task,
    check_predictions,
    field_of,
    index_images,
    mean_x100,
    read_json,
    turns,
    user_text,
)
from mmrwkv.evaluation.vqa import exact_match

NORMALIZATION = "GQA: prediction stripped, trailing '.' removed, lowercased; exact match with the answer"


def read_gqa(paths: dict[str, Path], prompt: str) -> list[Sample]:
    """One sample per question of the balanced questions file, in the file's order."""
    source = paths["questions"]
    doc = read_json(source, "GQA questions file")
    if not isinstance(doc, Mapping):
        raise DataError(f"{source}: expected a JSON object {{question id: question}} (GQA questions file)")
    images = index_images(paths["images"])
    samples = []
    for qid, record in doc.items():
        image_id = str(field_of(record, "imageId", (str, int), str(source), qid))
        question = field_of(record, "question", str, str(source), qid)
        answer = field_of(record, "answer", str, str(source), qid)
        if image_id not in images:
            raise DataError(f"{source}: record {qid}: no image {image_id}.jpg in {paths['images']}")
        structural = (record.get("types") or {}).get("structural") if isinstance(record.get("types"), dict) else None
        samples.append(
            Sample(
                id=str(qid),
                images=[images[image_id]],
                question=question,
                answers=[answer],
                answer_type=structural,
                turns=turns(user_text(question, prompt)),
                meta={"image_id": image_id},
            )
        )
    return samples


def gqa_normalize(prediction: str) -> str:
    """LLaVA's conversion of a reply for GQA's official evaluation."""
    return prediction.strip().rstrip(".").lower()


def score_gqa(samples: list[Sample], predictions: Mapping[str, str]) -> dict:
    """Accuracy x100 overall and per structural type, and VQA-normalized exact match."""
    check_predictions(samples, predictions)
    per_sample, by_type = {}, defaultdict(list)
    for s in samples:
        correct = float(gqa_normalize(predictions[s.id]) == s.answers[0])
        per_sample[s.id] = {"accuracy": correct, "exact_match": exact_match(predictions[s.id], s.answers[0])}
        by_type[s.answer_type or "unknown"].append(correct)
    metrics = {"accuracy": mean_x100(v["accuracy"] for v in per_sample.values())}
    metrics.update({f"accuracy/{k}": mean_x100(v) for k, v in sorted(by_type.items())})
    metrics["exact_match"] = mean_x100(v["exact_match"] for v in per_sample.values())
    return {"metrics": metrics, "per_sample": per_sample, "normalization": NORMALIZATION}


TASK = Task(
    name="gqa",
    description="GQA test-dev balanced, accuracy (official eval.py on LLaVA-converted answers)",
    split="testdev_balanced",
    files={"questions": "testdev_balanced_questions.json", "images": "images"},
    source="https://cs.stanford.edu/people/dorarad/gqa/download.html (questions1.2.zip, images.zip)",
    prompt=SHORT_ANSWER,
    read=read_gqa,
    score=score_gqa,
    primary="accuracy",
)
