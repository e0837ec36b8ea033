"""MMBench dev (English): the official TSV (`mmbench_dev_20230712.tsv`) has columns index, question, hint, A..D,
answer, category, image (base64; a short number instead names the row whose image it shares), l2-category,
split. Images are decoded once into the cache (`$XDG_CACHE_HOME/mmrwkv/mmbench/...`).

Circular evaluation (MMBench's CircularEval): a question with n options is asked n times, the options rotated
left by 0..n-1 (round k gets id index + k * 1,000,000, as VLMEvalKit numbers them), and it counts as correct only
when every round is. The reply is read by rules only (no GPT judge): an option letter standing alone ("B",
"B.", "(B) ..."), else the one option whose text the reply contains; anything else is wrong.
Prompt (LLaVA-1.5): hint, question, "A. ..." lines, then the task prompt.
"""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import os
import re
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

from mmrwkv.data.sample import Sample, require_file
from mmrwkv.errors import DataError
from mmrwkv.evaluation.tasks.base import (
    OPTION_LETTER,
    Task,
    check_predictions,
    mean_x100,
    option_letters,
    options_text,
    turns,
    user_text,
)

ROUND = 1_000_000
NORMALIZATION = "MMBench rules: a standalone option letter, else the one option text in the reply (no GPT judge)"
_REQUIRED = ("index", "question", "A", "B", "answer", "image")


def _present(value: str | None) -> bool:
    return value is not None and value.strip() != "" and value.strip().lower() != "nan"


def mmbench_letter(reply: str, options: list[str]) -> str | None:
    """The option a reply picks: a leading option letter not followed by a letter or digit ("B", "B. cat",
    "B)"), else the one option letter of a short reply ("(B)", "answer: B"), else the only option whose text
    the reply contains; None when none or several match."""
    letters = option_letters(len(options))
    reply = reply.strip()
    if reply[:1] in letters and (len(reply) == 1 or not reply[1].isalnum()):
        return reply[0]
    tokens = [t for t in re.split(r"[^A-Za-z0-9]+", reply) if t]
    standalone = {t for t in tokens if t in letters}
    if len(standalone) == 1 and len(tokens) <= 3:
        return standalone.pop()
    low = reply.lower()
    hits = [letter for letter, text in zip(letters, options, strict=True) if text.strip().lower() in low]
    return hits[0] if len(hits) == 1 else None


def _rows(path: Path) -> list[dict[str, str]]:
    csv.field_size_limit(1 << 30)
    with require_file(path, "MMBench TSV").open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        missing = [c for c in _REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: MMBench TSV lacks column(s) {missing}; has {reader.fieldnames}")
        return list(reader)


def cache_root() -> Path:
    """Where decoded MMBench images go: `$XDG_CACHE_HOME/mmrwkv/mmbench` (default ~/.cache/...)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mmrwkv" / "mmbench"


def _cache_folder(path: Path) -> Path:
    stat = path.stat()
    key = hashlib.sha1(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_root() / f"{path.stem}-{key}"


def _image_file(row: dict, by_index: dict[str, dict], folder: Path, source: Path) -> Path:
    """The decoded image of a row (a short number in `image` points at another row's image)."""
    data = row["image"]
    if len(data) <= 64 and data.strip().isdigit():
        if data.strip() not in by_index:
            raise DataError(f"{source}: row index {row['index']}: image refers to missing row {data.strip()}")
        row = by_index[data.strip()]
    target = folder / f"{row['index']}.img"
    if not target.is_file():
        try:
            raw = base64.b64decode(row["image"], validate=True)
        except (binascii.Error, ValueError):
            raise DataError(f"{source}: row index {row['index']}: 'image' is not base64") from None
        folder.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(raw)
        os.replace(tmp, target)
    return target


def _rounds(row: dict, options: list[str], answer: int, prompt: str, image: Path) -> list[Sample]:
    hint = row.get("hint") if _present(row.get("hint")) else ""
    out = []
    for k in range(len(options)):
        rotated = options[k:] + options[:k]
        body = f"{hint}\n{row['question']}" if hint else row["question"]
        out.append(
            Sample(
                id=str(int(row["index"]) + k * ROUND),
                images=[image],
                question=row["question"],
                answers=[option_letters(len(options))[(answer - k) % len(options)]],
                answer_type=row.get("category"),
                turns=turns(user_text(f"{body}\n{options_text(rotated)}", prompt)),
                meta={"index": int(row["index"]), "round": k, "options": rotated, "group": row["index"]},
            )
        )
    return out


def read_mmbench(paths: dict[str, Path], prompt: str) -> list[Sample]:
    """Every circular round of every question with an answer (rounds of one question are adjacent)."""
    source = paths["tsv"]
    rows = _rows(source)
    by_index = {r["index"]: r for r in rows}
    folder = _cache_folder(source)
    samples = []
    for row in rows:
        if not row["index"].strip().lstrip("-").isdigit():
            raise DataError(f"{source}: row index {row['index']!r} is not an integer")
        options = [row[c] for c in "ABCD" if _present(row.get(c))]
        letters = option_letters(len(options))
        if row["answer"] not in letters:
            raise DataError(f"{source}: row index {row['index']}: answer {row['answer']!r} is not one of {letters}")
        image = _image_file(row, by_index, folder, source)
        samples += _rounds(row, options, letters.index(row["answer"]), prompt, image)
    return samples


def score_mmbench(samples: list[Sample], predictions: Mapping[str, str]) -> dict:
    """Circular accuracy x100 overall and per category, and the accuracy of the first round alone."""
    check_predictions(samples, predictions)
    per_sample, rounds = {}, defaultdict(list)
    category = {}
    for s in samples:
        correct = float(mmbench_letter(predictions[s.id], s.meta["options"]) == s.answers[0])
        per_sample[s.id] = {"correct": correct}
        rounds[s.meta["index"]].append((s.meta["round"], correct))
        category[s.meta["index"]] = s.answer_type or "unknown"
    circular = {i: float(all(c for _, c in r)) for i, r in rounds.items()}
    by_category = defaultdict(list)
    for i, value in circular.items():
        by_category[category[i]].append(value)
    metrics = {"accuracy": mean_x100(circular.values())}
    metrics.update({f"accuracy/{k}": mean_x100(v) for k, v in sorted(by_category.items())})
    metrics["single_round_accuracy"] = mean_x100(c for r in rounds.values() for k, c in r if k == 0)
    return {
        "metrics": metrics,
        "per_sample": per_sample,
        "normalization": NORMALIZATION,
        "num_questions": len(circular),
    }


TASK = Task(
    name="mmbench_dev",
    description="MMBench dev (English), circular evaluation, rule-based option matching",
    split="dev",
    files={"tsv": "mmbench_dev_20230712.tsv"},
    source="https://github.com/open-compass/MMBench (mmbench_dev_20230712.tsv; VLMEvalKit's MMBench_DEV_EN.tsv "
    "has the same columns)",
    prompt=OPTION_LETTER,
    read=read_mmbench,
    score=score_mmbench,
    primary="accuracy",
    max_tokens=8,
    choices=True,
)
