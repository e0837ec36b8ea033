"""ScienceQA-IMG: the test questions of ScienceQA that have an image (2,017 in the official data).
`problems.json` is {pid: {question, choices, answer (index), hint, image ("image.png" or null), subject, ...}},
`pid_splits.json` is {"test": [pid, ...], ...} and images are `test/<pid>/image.png`.

Prompt (LLaVA-1.5 / lmms-eval): "Context: {hint}\\n" when there is a hint, the question, the options as
"A. ...", then the task prompt. Metric: letter accuracy with LLaVA's reading of a reply: the reply is an option
letter, or starts with "X. ", or holds exactly one "The answer is X."; anything else is wrong.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

from mmrwkv.data.sample import Sample
from mmrwkv.errors import DataError
from mmrwkv.evaluation.tasks.base import (
    OPTION_LETTER,
    Task,
    check_predictions,
    field_of,
    mean_x100,
    option_letters,
    options_text,
    read_json,
    turns,
    user_text,
)

_THE_ANSWER_IS = re.compile(r"The answer is ([A-Z])\.")
NORMALIZATION = "LLaVA ScienceQA letter reading: 'X', 'X. ...' or one 'The answer is X.'"


def sqa_letter(reply: str, num_options: int) -> str | None:
    """The option letter LLaVA's ScienceQA evaluation reads from a reply, or None (a wrong answer)."""
    letters = option_letters(num_options)
    reply = reply.strip()
    if reply in letters:
        return reply
    if len(reply) >= 3 and reply[0] in letters and reply[1:3] == ". ":
        return reply[0]
    found = _THE_ANSWER_IS.findall(reply)
    return found[0] if len(found) == 1 and found[0] in letters else None


def _body(problem: Mapping) -> str:
    hint = problem.get("hint") or ""
    context = f"Context: {hint}\n" if hint.strip() else ""
    return f"{context}{problem['question']}\n{options_text([str(c) for c in problem['choices']])}"


def read_scienceqa_img(paths: dict[str, Path], prompt: str) -> list[Sample]:
    """The test problems with an image, in pid_splits order."""
    problems = read_json(paths["problems"], "ScienceQA problems file")
    splits = read_json(paths["splits"], "ScienceQA pid_splits file")
    if not isinstance(problems, Mapping) or not isinstance(splits, Mapping) or not isinstance(splits.get("test"), list):
        raise DataError(f"{paths['splits']}: expected {{'test': [pid, ...]}} beside problems.json {{pid: problem}}")
    samples = []
    for pid in splits["test"]:
        problem = problems.get(str(pid))
        if problem is None:
            raise DataError(f"{paths['problems']}: no problem {pid} (listed in {paths['splits']} test)")
        if not problem.get("image"):
            continue
        source = str(paths["problems"])
        choices = field_of(problem, "choices", list, source, pid)
        answer = field_of(problem, "answer", int, source, pid)
        field_of(problem, "question", str, source, pid)
        if not 0 <= answer < len(choices) or len(choices) > 26:
            raise DataError(f"{source}: record {pid}: answer {answer} is not an index of its {len(choices)} choices")
        image = paths["images"] / str(pid) / problem["image"]
        if not image.is_file():
            raise DataError(f"{source}: record {pid}: image file {image} not found")
        samples.append(
            Sample(
                id=str(pid),
                images=[image],
                question=problem["question"],
                answers=[option_letters(len(choices))[answer]],
                answer_type=problem.get("subject"),
                turns=turns(user_text(_body(problem), prompt)),
                meta={"choices": [str(c) for c in choices]},
            )
        )
    return samples


def score_scienceqa(samples: list[Sample], predictions: Mapping[str, str]) -> dict:
    """Letter accuracy x100 overall and per subject."""
    check_predictions(samples, predictions)
    per_sample, by_subject = {}, defaultdict(list)
    for s in samples:
        correct = float(sqa_letter(predictions[s.id], len(s.meta["choices"])) == s.answers[0])
        per_sample[s.id] = {"accuracy": correct}
        by_subject[s.answer_type or "unknown"].append(correct)
    metrics = {"accuracy": mean_x100(v["accuracy"] for v in per_sample.values())}
    metrics.update({f"accuracy/{k}": mean_x100(v) for k, v in sorted(by_subject.items())})
    return {"metrics": metrics, "per_sample": per_sample, "normalization": NORMALIZATION}


TASK = Task(
    name="scienceqa_img",
    description="ScienceQA-IMG test (questions with an image), option-letter accuracy",
    split="test",
    files={"problems": "problems.json", "splits": "pid_splits.json", "images": "test"},
    source="https://github.com/lupantech/ScienceQA (data/scienceqa/problems.json, pid_splits.json; test images "
    "from https://scienceqa.github.io)",
    prompt=OPTION_LETTER,
    read=read_scienceqa_img,
    score=score_scienceqa,
    primary="accuracy",
    max_tokens=8,
    choices=True,
)
