"""Prepared synthetic datasets: generate a split once into a folder, then read it back as samples.

A split folder holds the media files and `manifest.json`: the generator parameters and one entry per item
(`id`, `file`, `captions`, `qa`: [[question, answer, answer_type], ...]). A split is regenerated only when its
manifest is missing or was made with other parameters. Generation writes to a temporary folder and renames it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmrwkv.checkpoint_files import replace_dir
from mmrwkv.data.sample import BadRecords, Dataset, Sample
from mmrwkv.errors import DataError

MANIFEST = "manifest.json"
TASKS = ("vqa", "caption", "both")

# (out folder, params) -> manifest items; the function writes the media files into the folder
Generator = Callable[[Path, dict[str, Any]], list[dict[str, Any]]]


def prepare(root: str | Path, split: str, params: dict[str, Any], generate: Generator) -> Path:
    """Make sure `root/split` holds the data for `params`; return the split folder."""
    folder = Path(root) / split
    manifest = folder / MANIFEST
    if manifest.is_file():
        try:
            if json.loads(manifest.read_text(encoding="utf-8")).get("params") == params:
                return folder
        except json.JSONDecodeError:
            pass
    # regenerating replaces the folder whole: only an empty one or one we generated (it has a manifest)
    if folder.is_file() or (folder.is_dir() and any(folder.iterdir()) and not manifest.is_file()):
        raise DataError(
            f"{folder}: exists and is not a generated split (no {MANIFEST}); generating would replace it: "
            "point data.root at another folder"
        )
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{split}-", dir=folder.parent))
    try:
        items = generate(tmp, params)
        (tmp / MANIFEST).write_text(json.dumps({"params": params, "items": items}, indent=1), encoding="utf-8")
        replace_dir(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return folder


def read_prepared(
    folder: str | Path, *, name: str, split: str, modality: str, task: str = "both", skip_bad_records: bool = False
) -> Dataset:
    """Samples of a prepared split: per item one captioning sample and/or one VQA sample per question."""
    if task not in TASKS:
        raise DataError(f"{name}: unknown task {task!r}; valid: {', '.join(TASKS)}")
    manifest = Path(folder) / MANIFEST
    if not manifest.is_file():
        raise DataError(f"{manifest}: manifest not found (prepare the split first)")
    try:
        items = json.loads(manifest.read_text(encoding="utf-8"))["items"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise DataError(f"{manifest}: not a valid manifest ({err})") from None
    bad = BadRecords(manifest, skip=skip_bad_records)
    samples: list[Sample] = []
    for i, item in enumerate(items):
        media = Path(folder) / str(item.get("file", ""))
        if not media.is_file():
            bad.bad(f"{i} (id {item.get('id')})", f"media file {media} not found")
            continue
        samples.extend(_item_samples(item, media, modality, task))
    return bad.finish(name, split, samples)


def _item_samples(item: dict, media: Path, modality: str, task: str) -> list[Sample]:
    key = "images" if modality == "image" else "audio"
    out = []
    if task in ("caption", "both"):
        out.append(Sample(id=str(item["id"]), captions=list(item["captions"]), **{key: [media]}))
    if task in ("vqa", "both"):
        for j, (question, answer, answer_type) in enumerate(item["qa"]):
            out.append(
                Sample(
                    id=f"{item['id']}-q{j}",
                    question=question,
                    answers=[answer],
                    answer_type=answer_type,
                    meta={"item": item["id"]},
                    **{key: [media]},
                )
            )
    return out


def join_words(parts: list[str]) -> str:
    """Join phrases as English: "a", "a and b", "a, b and c"."""
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def counted(count: int, noun: str) -> str:
    """A counted noun: "a red circle", "two red circles"."""
    if count == 1:
        return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"
    return f"{NUMBER_WORDS[count]} {noun}s"
