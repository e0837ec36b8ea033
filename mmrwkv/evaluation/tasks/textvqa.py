"""TextVQA val (v0.5.1): `TextVQA_0.5.1_val.json` is {"dataset_name", "dataset_version", "data": [{question_id,
image_id, question, answers (10), ...}]}; image ids are hex strings ("0054c91397f2fe05") naming
`train_images/<image_id>.jpg` (val images ship in the train_val archive).

Metric: the TextVQA accuracy of the m4c / EvalAI evaluator that LLaVA-1.5 and lmms-eval use: both the prediction
and every human answer go through the EvalAI answer processor (lowercase, drop "," and "?", split "'s", then the
VQA punctuation and number/article/contraction steps), and a prediction scores the mean over the ten
leave-one-out subsets of min(1, matches / 3). Unlike VQAv2's script, human answers get the full processing.

`textvqa_ocr` is the setting LLaVA-1.5 (and the RWKV anchors that reuse its scripts) report: the prompts of
LLaVA's `llava_textvqa_val_v051_ocr.jsonl` ({question_id, image, text: "question\nReference OCR token: a, b\n
Answer the question using a single word or phrase."}), whose trailing prompt line gives way to the task prompt,
scored against the answers of `TextVQA_0.5.1_val.json` by question id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
    read_json_lines,
    turns,
    user_text,
)
from mmrwkv.evaluation.vqa import normalize_answer

NORMALIZATION = "EvalAI answer processor (TextVQA / m4c) on prediction and human answers"


def evalai_normalize(text: str) -> str:
    """The EvalAI answer processor: its word step (lowercase, drop "," and "?", "'s" -> " 's"), then the VQA
    normalization (whitespace, punctuation, periods, number words, articles, contractions)."""
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    return normalize_answer(text)


def textvqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """Mean over the leave-one-out subsets of the processed human answers of min(1, matches / 3)."""
    if len(answers) < 2:
        raise ValueError(f"TextVQA accuracy needs the 10 human answers, got {list(answers)!r}")
    pred = evalai_normalize(prediction)
    gts = [evalai_normalize(a) for a in answers]
    matches = sum(g == pred for g in gts)
    # leaving out a matching answer removes one match, leaving out another answer removes none
    scores = [min(1.0, (matches - (g == pred)) / 3) for g in gts]
    return sum(scores) / len(scores)


def read_textvqa(paths: dict[str, Path], prompt: str) -> list[Sample]:
    """One sample per question, with its ten answers (absent answers: a test file, nothing to score)."""
    source = paths["questions"]
    doc = read_json(source, "TextVQA file")
    data = doc.get("data") if isinstance(doc, Mapping) else None
    if not isinstance(data, list):
        raise DataError(f"{source}: expected a JSON object with a list 'data' (TextVQA_0.5.1_val.json)")
    images = index_images(paths["images"])
    samples = []
    for i, record in enumerate(data):
        qid = field_of(record, "question_id", (int, str), str(source), f"data[{i}]")
        image_id = field_of(record, "image_id", str, str(source), f"data[{i}]")
        question = field_of(record, "question", str, str(source), f"data[{i}]")
        answers = record.get("answers", [])
        if not isinstance(answers, list) or (answers and len(answers) != 10):
            raise DataError(f"{source}: record data[{i}] (question_id {qid}): 'answers' must list 10 answers")
        if image_id not in images:
            raise DataError(
                f"{source}: record data[{i}] (question_id {qid}): no image {image_id}.jpg in {paths['images']}"
            )
        samples.append(
            Sample(
                id=str(qid),
                images=[images[image_id]],
                question=question,
                answers=[str(a) for a in answers],
                turns=turns(user_text(question, prompt)),
                meta={"image_id": image_id},
            )
        )
    return samples


def read_textvqa_llava_ocr(paths: dict[str, Path], prompt: str) -> list[Sample]:
    """LLaVA's OCR prompts (its own prompt line replaced by `prompt`) with the official answers."""
    official = {s.id: s for s in read_textvqa({"questions": paths["annotations"], "images": paths["images"]}, "")}
    samples = []
    for i, record in enumerate(read_json_lines(paths["questions"], "LLaVA TextVQA question file")):
        qid = str(field_of(record, "question_id", (int, str), str(paths["questions"]), f"line {i + 1}"))
        text = field_of(record, "text", str, str(paths["questions"]), f"line {i + 1}")
        if qid not in official:
            raise DataError(f"{paths['questions']}: line {i + 1}: question_id {qid} is not in {paths['annotations']}")
        lines = text.strip().split("\n")
        body = "\n".join(lines[:-1] if lines[-1].strip() == SHORT_ANSWER else lines)
        sample = official[qid]
        sample.turns = turns(user_text(body, prompt))
        samples.append(sample)
    return samples


def score_textvqa(samples: list[Sample], predictions: Mapping[str, str]) -> dict:
    """TextVQA accuracy x100."""
    check_predictions(samples, predictions)
    per_sample = {s.id: {"accuracy": textvqa_accuracy(predictions[s.id], s.answers)} for s in samples}
    metrics = {"accuracy": mean_x100(v["accuracy"] for v in per_sample.values())}
    return {"metrics": metrics, "per_sample": per_sample, "normalization": NORMALIZATION}


TASK = Task(
    name="textvqa",
    description="TextVQA val v0.5.1, VQA accuracy over 10 answers (EvalAI processor), no OCR tokens in the prompt",
    split="val",
    files={"questions": "TextVQA_0.5.1_val.json", "images": "train_images"},
    source="https://textvqa.org/dataset/ (TextVQA_0.5.1_val.json, train_val_images.zip)",
    prompt=SHORT_ANSWER,
    read=read_textvqa,
    score=score_textvqa,
    primary="accuracy",
)

TASK_OCR = Task(
    name="textvqa_ocr",
    description="TextVQA val v0.5.1 with LLaVA-1.5's OCR-token prompts, VQA accuracy (EvalAI processor)",
    split="val",
    files={
        "questions": "llava_textvqa_val_v051_ocr.jsonl",
        "annotations": "TextVQA_0.5.1_val.json",
        "images": "train_images",
    },
    source="llava_textvqa_val_v051_ocr.jsonl from LLaVA's eval.zip (https://github.com/haotian-liu/LLaVA/blob/main/"
    "docs/Evaluation.md); TextVQA_0.5.1_val.json and train_val_images.zip from https://textvqa.org/dataset/",
    prompt=SHORT_ANSWER,
    read=read_textvqa_llava_ocr,
    score=score_textvqa,
    primary="accuracy",
)
