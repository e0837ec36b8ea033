"""Benchmark tasks by name: `get_task("gqa")`, `TASKS` (each a `Task`: files, prompt, reader, metric)."""

from __future__ import annotations

from mmrwkv.errors import ConfigError
from mmrwkv.evaluation.tasks import gqa, karpathy, mmbench, mme, nocaps, pope, scienceqa, textvqa, vqav2
from mmrwkv.evaluation.tasks.base import OPTION_LETTER, SHORT_ANSWER, Task

TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        vqav2.VQAV2_VAL,
        vqav2.VQAV2_TESTDEV,
        gqa.TASK,
        textvqa.TASK,
        textvqa.TASK_OCR,
        pope.TASK,
        scienceqa.TASK,
        mmbench.TASK,
        mme.TASK,
        nocaps.TASK,
        karpathy.FLICKR30K,
        karpathy.COCO_KARPATHY,
    )
}

__all__ = ["OPTION_LETTER", "SHORT_ANSWER", "TASKS", "Task", "get_task"]


def get_task(name: str) -> Task:
    """The task called `name`; ConfigError lists the valid names otherwise."""
    if name not in TASKS:
        raise ConfigError(f"unknown evaluation task {name!r}; valid: {', '.join(TASKS)}")
    return TASKS[name]
