"""MME (`MME_Benchmark_release_version/`): one folder per subtask; each image has a `.txt` of two lines
"question<TAB>Yes|No" (one yes, one no), beside the image or, for artwork / celebrity / landmark / posters /
scene, in `questions_answers_YN/` with the images in `images/`.

Metric (MME's calculation): a reply reads as yes / no / other (lowercased, stripped, periods dropped; "yes" /
"no" / "y" / "n" exactly, else "yes" or "no" within its first four characters, as lmms-eval reads it); per
subtask acc = share of correct questions and acc+ = share of images with both questions correct, both x100,
score = acc + acc+; perception = the sum of the ten perception subtask scores, cognition of the four cognition
ones (2000 and 800 at most). Prompt: lmms-eval's, replacing the questions' " Please answer yes or no.".
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

from mmrwkv.data.sample import Sample, require_dir
from mmrwkv.errors import DataError
from mmrwkv.evaluation.tasks.base import IMAGE_SUFFIXES, SHORT_ANSWER, Task, check_predictions, turns, user_text

PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork", "OCR")
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
YES_NO_SUFFIX = " Please answer yes or no."
NORMALIZATION = "MME: yes / no / other from the reply's start (lmms-eval's parse_pred_ans)"


def mme_answer(reply: str) -> str:
    """ "yes", "no" or "other", as lmms-eval's MME task reads a reply."""
    text = reply.lower().strip().replace(".", "")
    if text in ("yes", "no"):
        return text
    if len(text) == 1:
        return {"y": "yes", "n": "no"}.get(text, "other")
    return "yes" if "yes" in text[:4] else "no" if "no" in text[:4] else "other"


def _question_files(folder: Path) -> tuple[list[Path], Path]:
    qa = folder / "questions_answers_YN"
    if qa.is_dir():
        return sorted(qa.glob("*.txt")), folder / "images"
    return sorted(folder.glob("*.txt")), folder


def _image_for(stem: str, folder: Path, txt: Path) -> Path:
    for suffix in IMAGE_SUFFIXES:
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    raise DataError(f"{txt}: no image {stem}.* ({'/'.join(IMAGE_SUFFIXES)}) in {folder}")


def _questions(txt: Path) -> list[tuple[str, str]]:
    pairs = []
    for number, line in enumerate(txt.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        question, sep, answer = line.rpartition("\t")
        if not sep or answer.strip().lower() not in ("yes", "no"):
            raise DataError(f"{txt}: line {number}: expected 'question<TAB>Yes|No', got {line!r:.80}")
        pairs.append((question.strip(), answer.strip().lower()))
    return pairs


def read_mme(paths: dict[str, Path], prompt: str) -> list[Sample]:
    """Every question of every subtask folder present (at least one)."""
    root = require_dir(paths["root"], "MME folder")
    samples = []
    for category in PERCEPTION + COGNITION:
        if not (root / category).is_dir():
            continue
        files, images = _question_files(root / category)
        for txt in files:
            image = _image_for(txt.stem, images, txt)
            for k, (question, answer) in enumerate(_questions(txt)):
                text = question.replace(YES_NO_SUFFIX, "") if prompt else question
                samples.append(
                    Sample(
                        id=f"{category}/{txt.stem}/{k}",
                        images=[image],
                        question=question,
                        answers=[answer],
                        answer_type=category,
                        turns=turns(user_text(text, prompt)),
                        meta={"image_key": f"{category}/{txt.stem}", "group": f"{category}/{txt.stem}"},
                    )
                )
    if not samples:
        raise DataError(f"{root}: no MME subtask folders ({', '.join(PERCEPTION + COGNITION)})")
    return samples


def score_mme(samples: list[Sample], predictions: Mapping[str, str]) -> dict:
    """Per subtask acc, acc+ and score; perception and cognition totals."""
    check_predictions(samples, predictions)
    per_sample = {s.id: {"correct": float(mme_answer(predictions[s.id]) == s.answers[0])} for s in samples}
    by_image: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for s in samples:
        by_image[s.answer_type][s.meta["image_key"]].append(per_sample[s.id]["correct"])
    metrics: dict[str, float] = {"perception": 0.0, "cognition": 0.0}
    for category, images in by_image.items():
        answers = [c for values in images.values() for c in values]
        acc = 100.0 * sum(answers) / len(answers)
        acc_plus = 100.0 * sum(all(v) for v in images.values()) / len(images)
        metrics.update({f"{category}/acc": acc, f"{category}/acc+": acc_plus, f"{category}/score": acc + acc_plus})
        metrics["perception" if category in PERCEPTION else "cognition"] += acc + acc_plus
    return {"metrics": metrics, "per_sample": per_sample, "normalization": NORMALIZATION}


TASK = Task(
    name="mme",
    description="MME perception (10 subtasks) and cognition (4), acc + acc+ per subtask, summed",
    split="all",
    files={"root": "MME_Benchmark_release_version"},
    source="MME_Benchmark_release_version.zip: https://github.com/BradyFU/Awesome-Multimodal-Large-Language-Models"
    "/tree/Evaluation (on request from the authors; also https://huggingface.co/datasets/darkyarding/MME)",
    prompt=SHORT_ANSWER,
    read=read_mme,
    score=score_mme,
    primary="perception",
    max_tokens=8,
)
