"""`mmrwkv eval --task NAME` / `--suite a,b,c`: a benchmark task (`mmrwkv.evaluation.tasks`) on a checkpoint
without a recipe: read the official files under a data root, prompt with the task's prompt, greedy RNN-mode
generation (batched by prompt length), score, write the report; a suite writes one Markdown table beside the
per-task reports (rows = tasks; columns = metric, samples, wall time).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mmrwkv.data.sample import Sample
from mmrwkv.errors import CheckpointError, ConfigError
from mmrwkv.evaluation.tasks import Task, get_task

SUITE_FILE = "suite.md"
DECODING = "greedy"


@dataclass
class TaskRun:
    """The outcome of one task: its metrics, primary metric, sample count, wall time and report directory."""

    task: str
    metrics: dict
    primary: str
    num_samples: int
    seconds: float
    out_dir: Path
    files: list[str] = field(default_factory=list)

    @property
    def value(self) -> float | None:
        """The primary metric's value (None for tasks scored elsewhere, e.g. by a server)."""
        return self.metrics.get(self.primary)


def load_model(checkpoint: str | Path, device: str | None = None):
    """The MultimodalRWKV behind `checkpoint` (a model dir, step checkpoint, stage dir), in eval mode."""
    from mmrwkv.evaluation.predict import resolve_checkpoint
    from mmrwkv.multimodal import MultimodalRWKV

    model = MultimodalRWKV.load(resolve_checkpoint(checkpoint))
    return model.to(device or "cpu").eval()


def generate(
    model, samples: Sequence[Sample], *, max_tokens: int, batch_size: int = 8, progress: bool = False
) -> dict[str, str]:
    """{sample id: reply}: greedy decoding of each sample's user turns with the model's chat template, stopping
    at the end of the assistant turn or after `max_tokens`."""
    from mmrwkv.config import RecipeConfig
    from mmrwkv.evaluation.predict import predict

    cfg = RecipeConfig()
    cfg.generation.temperature = 0.0
    cfg.generation.max_tokens = max_tokens
    cfg.template.placement = (model.config or {}).get("placement", "inline")
    cfg.eval.batch_size = batch_size
    return predict(model, samples, cfg, progress=progress)


def subset(samples: list[Sample], max_samples: int | None, seed: int = 0) -> list[Sample]:
    """A seeded subset of `max_samples` groups in file order; the samples of one group (`meta["group"]`: the
    circular rounds of an MMBench question, the two questions of an MME image) stay together."""
    groups: dict[str, list[Sample]] = {}
    for s in samples:
        groups.setdefault(str(s.meta.get("group", s.id)), []).append(s)
    if max_samples is None or max_samples >= len(groups):
        return samples
    keep = set(random.Random(seed).sample(sorted(groups), max_samples))
    return [s for s in samples if str(s.meta.get("group", s.id)) in keep]


def _result(task: Task, samples: list[Sample], scored: dict, prompt: str, checkpoint: str) -> dict:
    result = {
        "task": task.name,
        "split": task.split,
        "decoding": DECODING,
        "num_samples": len(samples),
        "prompt": prompt,
        "checkpoint": checkpoint,
    }
    result.update(scored)
    return result


def evaluate_task(
    name: str,
    model,
    data_root: str | Path | None,
    *,
    out_dir: str | Path,
    max_samples: int | None = None,
    batch_size: int = 8,
    prompt: str | None = None,
    paths: Mapping[str, str] | None = None,
    checkpoint: str = "",
    caption_tokenizer: str = "auto",
    progress: bool = False,
) -> TaskRun:
    """Run task `name` with `model` on the official files under `data_root` (`paths` overrides file roles) and
    write its report into `out_dir`. `prompt` replaces the task's prompt."""
    from mmrwkv.evaluation.report import check_report_dir, write_report

    task = get_task(name)
    out = Path(out_dir)
    check_report_dir(out)
    start = time.perf_counter()
    prompt = task.prompt if prompt is None else prompt
    files = task.paths(data_root, paths)
    samples = subset(task.read(files, prompt), max_samples)
    predictions = generate(model, samples, max_tokens=task.max_tokens, batch_size=batch_size, progress=progress)
    options = {"tokenizer": caption_tokenizer} if task.captions else {}
    result = _result(task, samples, task.score(samples, predictions, **options), prompt, checkpoint)
    write_report(out, samples, predictions, result, title=f"{task.name}: {task.description}", metrics_csv=None)
    extra = task.extra_files(samples, predictions, files, out) if task.extra_files else []
    seconds = time.perf_counter() - start
    return TaskRun(task.name, result["metrics"], task.primary, len(samples), seconds, out, extra)


def task_root(data_root: str | Path | None, name: str) -> str | Path | None:
    """`data_root/<name>` when that folder exists, else `data_root`."""
    if data_root is not None and (Path(data_root) / name).is_dir():
        return Path(data_root) / name
    return data_root


def suite_paths(paths: Mapping[str, str], task: Task) -> dict[str, str]:
    """The file roles of one task of a suite: "TASK.ROLE" keys for that task, plain "ROLE" keys for every task
    that has the role."""
    roles = {r.rstrip("?") for r in task.files}
    out = {k: v for k, v in paths.items() if "." not in k and k in roles}
    out.update({k.split(".", 1)[1]: v for k, v in paths.items() if k.startswith(f"{task.name}.")})
    return out


def check_suite_paths(paths: Mapping[str, str], tasks: Sequence[Task]) -> None:
    """ConfigError for a "ROLE" no task of the suite has, or a "TASK.ROLE" of a task outside it or unknown to it."""
    for key in paths:
        task_name, _, role = key.rpartition(".")
        owners = [t for t in tasks if (not task_name or t.name == task_name)]
        if not any(role in {r.rstrip("?") for r in t.files} for t in owners):
            raise ConfigError(
                f"--path {key}: no task of the suite ({', '.join(t.name for t in tasks)}) has that file "
                "role; use ROLE or TASK.ROLE (mmrwkv eval --list-tasks)"
            )


def check_suite_dir(out: Path, names: Sequence[str]) -> None:
    """Refuse a suite directory holding anything but an earlier suite's table and task reports."""
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"{out}: is a file; a suite report is written to a directory")
    allowed = {SUITE_FILE, *names}
    others = (
        sorted(p.name for p in out.iterdir() if p.name not in allowed and not p.name.startswith("."))
        if out.is_dir()
        else []
    )
    if others:
        raise CheckpointError(
            f"{out}: exists and is not a suite report directory (it holds {', '.join(others[:5])}); "
            "choose a new --out directory"
        )


def suite_table(runs: Sequence[TaskRun], *, checkpoint: str = "") -> str:
    """The Markdown table of a suite: one row per task with its primary metric, samples and wall time."""
    lines = ["# Evaluation suite", ""]
    if checkpoint:
        lines += [f"Checkpoint: `{checkpoint}`; decoding: {DECODING}; reports in the task folders.", ""]
    lines += ["| task | metric | samples | wall time |", "|---|---|---:|---:|"]
    for run in runs:
        metric = (
            f"{run.primary} {run.value:.2f}"
            if run.value is not None
            else "scored by the server: " + ", ".join(run.files)
        )
        lines.append(f"| [{run.task}]({run.task}/report.md) | {metric} | {run.num_samples} | {run.seconds:.1f} s |")
    return "\n".join(lines) + "\n"


def evaluate_suite(
    names: Sequence[str],
    model,
    data_root: str | Path | None,
    *,
    out_dir: str | Path,
    checkpoint: str = "",
    **options,
) -> tuple[list[TaskRun], Path]:
    """Run each task into `out_dir/<task>/` and write `out_dir/suite.md`; returns the runs and the table's path.
    Each task reads `data_root/<task>/` when that folder exists (one root holding every benchmark), else
    `data_root`; `paths` keys are "ROLE" (every task with that role) or "TASK.ROLE"."""
    for name in names:
        get_task(name)
    out = Path(out_dir)
    check_suite_dir(out, names)
    paths = options.pop("paths", None) or {}
    check_suite_paths(paths, [get_task(n) for n in names])
    runs = [
        evaluate_task(
            n,
            model,
            task_root(data_root, n),
            out_dir=out / n,
            checkpoint=checkpoint,
            paths=suite_paths(paths, get_task(n)),
            **options,
        )
        for n in names
    ]
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{SUITE_FILE}.tmp"
    tmp.write_text(suite_table(runs, checkpoint=checkpoint), encoding="utf-8")
    os.replace(tmp, out / SUITE_FILE)
    return runs, out / SUITE_FILE
