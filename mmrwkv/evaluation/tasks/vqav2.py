"""VQAv2 val (official accuracy over 10 answers) and test-dev (no public answers: a result file for the official
server). Files: `v2_OpenEnded_mscoco_{val2014,test-dev2015,test2015}_questions.json`,
`v2_mscoco_val2014_annotations.json`, COCO `val2014/` and `test2015/`.

The server result file is a JSON list [{"question_id": int, "answer": str}] with answers passed through the
EvalAI answer processor (as LLaVA writes it). The server expects every test2015 question: when
`v2_OpenEnded_mscoco_test2015_questions.json` is beside the test-dev file, questions without a prediction are
listed with an empty answer, so a test-dev run can be submitted to either phase's server.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from mmrwkv.data.sample import Sample
from mmrwkv.evaluation.tasks.base import SHORT_ANSWER, Task, check_predictions, read_json, turns, user_text
from mmrwkv.evaluation.tasks.textvqa import evalai_normalize
from mmrwkv.evaluation.vqa import score_vqa

SERVER_FILE = "server_results.json"


def read_vqav2_split(paths: dict[str, Path], prompt: str) -> list[Sample]:
    """The questions (+ annotations when given) with the task's prompt after each question."""
    from mmrwkv.data.readers import read_vqav2

    dataset = read_vqav2(paths["questions"], paths["images"], paths.get("annotations"))
    for s in dataset.samples:
        s.turns = turns(user_text(s.question or "", prompt))
    return dataset.samples


def score_vqav2(samples: list[Sample], predictions: Mapping[str, str]) -> dict:
    """Official VQAv2 accuracy x100 overall and per answer type (val)."""
    check_predictions(samples, predictions)
    scored = score_vqa(
        {s.id: predictions[s.id] for s in samples},
        {s.id: s.answers for s in samples},
        {s.id: s.answer_type for s in samples},
    )
    metrics = {"accuracy": scored["accuracy"], **{f"accuracy/{k}": v for k, v in scored["per_answer_type"].items()}}
    per_sample = {k: {"accuracy": v} for k, v in scored["per_question"].items()}
    return {"metrics": metrics, "per_sample": per_sample, "normalization": scored["normalization"]}


def score_unanswered(samples: list[Sample], predictions: Mapping[str, str]) -> dict:
    """Test splits have no public answers: nothing to score here; the server scores the result file."""
    check_predictions(samples, predictions)
    return {"metrics": {}, "per_sample": {}, "normalization": "none (scored by the official server)"}


def server_results(
    samples: list[Sample], predictions: Mapping[str, str], all_questions: Path | None = None
) -> list[dict]:
    """[{"question_id", "answer"}] for the official server: the samples' predictions, plus every other question
    of `all_questions` (the test2015 questions file) with an empty answer."""
    answers = {int(s.id): evalai_normalize(predictions[s.id]) for s in samples}
    if all_questions is not None:
        for q in read_json(all_questions, "VQAv2 test2015 questions file")["questions"]:
            answers.setdefault(int(q["question_id"]), "")
    return [{"question_id": qid, "answer": answer} for qid, answer in answers.items()]


def write_server_file(
    samples: list[Sample], predictions: Mapping[str, str], paths: dict[str, Path], out: Path
) -> list[str]:
    """Write the server result file into `out` (aside, then renamed into place); returns its name."""
    records = server_results(samples, predictions, paths.get("all_questions"))
    tmp = out / f".{SERVER_FILE}.tmp"
    tmp.write_text(json.dumps(records), encoding="utf-8")
    os.replace(tmp, out / SERVER_FILE)
    return [SERVER_FILE]


VQAV2_VAL = Task(
    name="vqav2_val",
    description="VQAv2 val2014, official VQA accuracy over 10 answers",
    split="val2014",
    files={
        "questions": "v2_OpenEnded_mscoco_val2014_questions.json",
        "annotations": "v2_mscoco_val2014_annotations.json",
        "images": "val2014",
    },
    source="https://visualqa.org/download.html; images: COCO val2014 (https://cocodataset.org/#download)",
    prompt=SHORT_ANSWER,
    read=read_vqav2_split,
    score=score_vqav2,
    primary="accuracy",
)

VQAV2_TESTDEV = Task(
    name="vqav2_testdev",
    description="VQAv2 test-dev2015: writes server_results.json for the official EvalAI server",
    split="test-dev2015",
    files={
        "questions": "v2_OpenEnded_mscoco_test-dev2015_questions.json",
        "all_questions?": "v2_OpenEnded_mscoco_test2015_questions.json",
        "images": "test2015",
    },
    source="https://visualqa.org/download.html (test questions); images: COCO test2015; submit at "
    "https://eval.ai/web/challenges/challenge-page/830",
    prompt=SHORT_ANSWER,
    read=read_vqav2_split,
    score=score_unanswered,
    primary="",
    extra_files=write_server_file,
    extra_names=(SERVER_FILE,),
)
