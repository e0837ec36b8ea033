"""Readers for the standard image datasets: COCO captions (official files or the Karpathy split), VQAv2, LLaVA
conversations, easy-VQA.

Every reader checks that referenced media files exist; a malformed record raises DataError naming the file and
the record (index or id), or is skipped and counted with `skip_bad_records=True`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmrwkv.data.sample import BadRecords, Dataset, Sample, log, require_dir, require_file
from mmrwkv.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
_TRAILING_DIGITS = re.compile(r"(\d+)$")


def read_json(path: str | Path, what: str) -> Any:
    """Parse a JSON file; DataError names the file on a missing file or bad JSON."""
    path = require_file(path, what)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{what} {path}: not valid JSON ({err})") from None


def _list_field(doc: Any, key: str, path: Path) -> list:
    if not isinstance(doc, Mapping) or not isinstance(doc.get(key), list):
        raise DataError(f"{path}: expected a JSON object with a list '{key}'")
    return doc[key]


def index_images(folder: str | Path) -> dict[int, Path]:
    """Map image id -> file for a folder of images named by id (`123.png`, `COCO_val2014_000000000123.jpg`)."""
    folder = require_dir(folder, "image folder")
    out: dict[int, Path] = {}
    for path in folder.iterdir():
        match = _TRAILING_DIGITS.search(path.stem)
        if match and path.suffix.lower() in IMAGE_SUFFIXES:
            out[int(match.group(1))] = path
    return out


def is_text(value: Any) -> bool:
    """A non-empty string that is valid Unicode: JSON's `\\ud800` escapes give lone surrogates, which no encoder,
    tokenizer or report can write."""
    return isinstance(value, str) and bool(value.strip()) and _unicode(value)


def _str_field(record: Any, key: str) -> str | None:
    value = record.get(key) if isinstance(record, Mapping) else None
    return value if is_text(value) else None


def inside(folder: Path, *parts: str, allow_outside: bool = False) -> Path | str:
    """`folder / parts...`, or (unless `allow_outside`) what is wrong when a part is absolute or climbs out of
    `folder` with `..`: a dataset file names media inside its data root, never elsewhere on the machine. The check is
    on the names (symbolic links inside the root, e.g. to a shared image store, are followed as usual)."""
    path = folder.joinpath(*parts)
    if allow_outside:
        return path
    relative = os.path.normpath(os.path.join(*parts))
    if os.path.isabs(relative) or relative == ".." or relative.startswith(".." + os.sep):
        return (
            f"path {os.path.join(*parts)!r:.120} leads outside the data root {folder} "
            "(set data.allow_outside_paths: true to allow it)"
        )
    return path


def record_id(value: Any) -> str | None:
    """A record id as text when it is a JSON integer or a non-empty string (not a bool, float, list or object)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    return str(value) if isinstance(value, int) or is_text(value) else None


def _coco_image_files(doc: Any, annotations: Path, folder: Path, bad: BadRecords, allow_outside: bool) -> dict:
    """image id (as text) -> file of the `images` section (`id`; a Karpathy-style `filepath` sub-folder when
    present). Ids must be integers or strings and unique (`1`, `"1"` and `true` would name one image)."""
    files: dict[str, Path] = {}
    for i, image in enumerate(_list_field(doc, "images", annotations)):
        name = _str_field(image, "file_name")
        raw = image.get("id", image.get("image_id")) if isinstance(image, Mapping) else None
        image_id = record_id(raw)
        if name is None or image_id is None:
            bad.bad(f"images[{i}]", f"needs an integer or string 'id' and a string 'file_name' (id {raw!r:.40})")
            continue
        if image_id in files:
            bad.bad(f"images[{i}]", f"duplicate image id {raw!r:.40}")
            continue
        sub = _str_field(image, "filepath")
        path = inside(folder, name, allow_outside=allow_outside)
        if sub and not isinstance(path, str) and not path.is_file():
            path = inside(folder, sub, name, allow_outside=allow_outside)
        if isinstance(path, str):
            bad.bad(f"images[{i}] (id {raw!r:.40})", path)
            continue
        files[image_id] = path
    return files


def read_coco_captions(
    annotations: str | Path,
    images: str | Path,
    *,
    split: str = "val",
    skip_bad_records: bool = False,
    allow_outside_paths: bool = False,
) -> Dataset:
    """COCO captions: one sample per image with all its reference captions (whitespace runs collapsed).

    Images without any caption are left out (logged, not bad records); a file without an `annotations`
    section (COCO's `image_info_*.json` of the test splits) gives every image with no captions, to caption.
    Image files stay inside `images` unless `allow_outside_paths`.
    """
    annotations = Path(annotations)
    doc = read_json(annotations, "COCO captions file")
    folder = require_dir(images, "COCO image folder")
    bad = BadRecords(annotations, skip=skip_bad_records)
    files = _coco_image_files(doc, annotations, folder, bad, allow_outside_paths)
    has_captions = not (isinstance(doc, Mapping) and "annotations" not in doc)
    captions: dict[str, list[str]] = {}
    for i, ann in enumerate(_list_field(doc, "annotations", annotations) if has_captions else []):
        caption = _str_field(ann, "caption")
        image_id = record_id(ann.get("image_id")) if isinstance(ann, Mapping) else None
        if caption is None or image_id not in files:
            bad.bad(
                f"annotations[{i}]",
                f"needs a non-empty, valid Unicode 'caption' and a known integer or string 'image_id' ({ann!r:.120})",
            )
            continue
        captions.setdefault(image_id, []).append(" ".join(caption.split()))
    samples, uncaptioned, by_number = [], 0, None
    for image_id, path in files.items():
        if has_captions and image_id not in captions:
            uncaptioned += 1
            continue
        number = _TRAILING_DIGITS.search(path.stem)
        if not path.is_file() and number and image_id.isdigit() and int(number.group(1)) == int(image_id):
            # COCO 2017 folders hold the 2014 images renamed (COCO_val2014_000000000139.jpg -> 000000000139.jpg)
            by_number = index_images(folder) if by_number is None else by_number
            path = by_number.get(int(image_id), path)
        if not path.is_file():
            bad.bad(f"image id {image_id}", f"image file {path} not found")
        else:
            samples.append(Sample(id=image_id, images=[path], captions=captions.get(image_id, [])))
    if uncaptioned:
        log.info("%s: left out %d images without captions", annotations, uncaptioned)
    return bad.finish("coco_captions", split, samples)


# Karpathy split names per recipe split: "train" folds restval in, as the field trains on 113,287 images
KARPATHY_SPLITS = {"train": ("train", "restval"), "restval": ("restval",), "val": ("val",), "test": ("test",)}


def _karpathy_image(image: Any, folder: Path, allow_outside: bool) -> tuple[str, Path, str, list[str]] | str:
    """(id, image file, Karpathy split, references from `raw`) of one `images` entry, or what is wrong with it."""
    if not isinstance(image, Mapping):
        return "is not a JSON object"
    name, sub = _str_field(image, "filename"), image.get("filepath", "")
    if name is None or not isinstance(sub, str):
        return "needs a string 'filename' (and a string 'filepath' sub-folder when present)"
    split = image.get("split")
    if not isinstance(split, str) or split not in KARPATHY_SPLITS:
        return f"'split' must be one of train, restval, val, test; got {split!r:.40}"
    sentences = image.get("sentences")
    if not isinstance(sentences, list) or not sentences:
        return "needs a non-empty list 'sentences'"
    raws = [_str_field(s, "raw") for s in sentences]
    if None in raws:
        return f"sentences[{raws.index(None)}] needs a non-empty string 'raw'"
    raw_id = image.get("cocoid", image.get("imgid", Path(name).stem))
    image_id = record_id(raw_id)
    if image_id is None:
        return f"'cocoid' must be an integer or a string, got {raw_id!r:.40}"
    file = inside(folder, sub, name, allow_outside=allow_outside)
    if isinstance(file, str):
        return file
    return image_id, file, split, [" ".join(raw.split()) for raw in raws]


def read_coco_karpathy(
    path: str | Path,
    images: str | Path,
    *,
    split: str = "test",
    skip_bad_records: bool = False,
    allow_outside_paths: bool = False,
) -> Dataset:
    """COCO captions in the Karpathy split (`dataset_coco.json`, the field's standard captioning split): one sample
    per image of `split` with its references (the `raw` sentences, whitespace runs collapsed).

    `split`: train (the `train` and `restval` images: 113,287 in COCO), val or test (5,000 each), or restval alone.
    Image files are `images/<filepath>/<filename>` (`images` is the COCO root holding train2014/ and val2014/).
    Entries of other splits are not checked beyond their `split` field.
    """
    path = Path(path)
    if split not in KARPATHY_SPLITS:
        raise DataError(f"{path}: the Karpathy split file has no split {split!r}; valid: train (with restval), val, "
                        "test, restval")
    doc = read_json(path, "Karpathy split file")
    folder = require_dir(images, "COCO image folder")
    bad = BadRecords(path, skip=skip_bad_records)
    wanted = KARPATHY_SPLITS[split]
    samples, seen = [], set()
    for i, image in enumerate(_list_field(doc, "images", path)):
        part = image.get("split") if isinstance(image, Mapping) else None
        if isinstance(part, str) and part in KARPATHY_SPLITS and part not in wanted:
            continue
        cocoid = image.get("cocoid") if isinstance(image, Mapping) else None
        name = f"images[{i}]" if cocoid is None else f"images[{i}] (cocoid {cocoid!r:.40})"
        parsed = _karpathy_image(image, folder, allow_outside_paths)
        if isinstance(parsed, str) or parsed[0] in seen:
            bad.bad(name, parsed if isinstance(parsed, str) else f"duplicate image id {parsed[0]!r}")
            continue
        image_id, file, source, captions = parsed
        seen.add(image_id)
        if not file.is_file():
            bad.bad(name, f"image file {file} not found")
            continue
        samples.append(Sample(id=image_id, images=[file], captions=captions, meta={"karpathy_split": source}))
    return bad.finish("coco_karpathy", split, samples)


def _vqa_answers(annotations: Path | None, bad: BadRecords) -> dict[Any, Mapping]:
    if annotations is None:
        return {}
    doc = read_json(annotations, "VQAv2 annotations file")
    out = {}
    for i, ann in enumerate(_list_field(doc, "annotations", annotations)):
        answers = ann.get("answers") if isinstance(ann, Mapping) else None
        qid = record_id(ann.get("question_id")) if isinstance(ann, Mapping) else None
        if not isinstance(answers, list) or not answers or qid is None:
            bad.bad(f"annotations[{i}]", "needs an integer or string 'question_id' and a non-empty list 'answers'")
            continue
        out[qid] = ann
    return out


def _answer_texts(ann: Mapping) -> list[str] | None:
    texts = [a.get("answer") if isinstance(a, Mapping) else None for a in ann["answers"]]
    return texts if all(isinstance(t, str) and _unicode(t) for t in texts) else None


def _unicode(text: str) -> bool:
    """Whether `text` is valid Unicode (no lone surrogate from a JSON `\\ud800` escape)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def read_vqav2(
    questions: str | Path,
    images: str | Path,
    annotations: str | Path | None = None,
    *,
    split: str = "val",
    skip_bad_records: bool = False,
) -> Dataset:
    """VQAv2 questions (+ annotations with 10 answers each, absent for test splits): one sample per question."""
    questions = Path(questions)
    doc = read_json(questions, "VQAv2 questions file")
    files = index_images(images)
    bad = BadRecords(questions, skip=skip_bad_records)
    answers = _vqa_answers(Path(annotations) if annotations is not None else None, bad)
    samples, seen = [], set()
    for i, q in enumerate(_list_field(doc, "questions", questions)):
        text = _str_field(q, "question")
        qid = record_id(q.get("question_id")) if isinstance(q, Mapping) else None
        image_id = q.get("image_id") if isinstance(q, Mapping) else None
        if text is None or qid is None or not isinstance(image_id, int) or isinstance(image_id, bool):
            bad.bad(f"questions[{i}]", "needs an integer or string 'question_id', an integer 'image_id' and a "
                    "string 'question'")
            continue
        if qid in seen:
            bad.bad(f"questions[{i}]", f"duplicate question_id {qid}")
            continue
        seen.add(qid)
        if image_id not in files:
            bad.bad(f"question_id {qid}", f"no image file for image_id {image_id} in {images}")
            continue
        sample = Sample(id=qid, images=[files[image_id]], question=text, meta={"image_id": image_id})
        if answers:
            ann = answers.get(qid)
            texts = _answer_texts(ann) if ann is not None else None
            if texts is None:
                bad.bad(f"question_id {qid}", "no annotation with string answers")
                continue
            sample.answers, sample.answer_type = texts, ann.get("answer_type")
            sample.meta["multiple_choice_answer"] = ann.get("multiple_choice_answer")
            sample.meta["question_type"] = ann.get("question_type")
        samples.append(sample)
    return bad.finish("vqav2", split, samples)


_ROLES = {"human": "user", "gpt": "assistant", "system": "system"}


def _llava_turns(record: Mapping) -> list[tuple[str, str]] | str:
    """The (role, text) turns of one record, or a string saying what is wrong."""
    conversations = record.get("conversations")
    if not isinstance(conversations, list) or not conversations:
        return "needs a non-empty list 'conversations'"
    turns = []
    for j, turn in enumerate(conversations):
        source = turn.get("from") if isinstance(turn, Mapping) else None
        role = _ROLES.get(source) if isinstance(source, str) else None
        if role is None or not isinstance(turn.get("value"), str) or not _unicode(turn["value"]):
            return f"conversations[{j}] needs 'from' in {sorted(_ROLES)} and a valid Unicode string 'value'"
        turns.append((role, turn["value"]))
    if not any(role == "assistant" for role, _ in turns):
        return "has no 'gpt' turn to learn from"
    return turns


def _llava_images(record: Mapping) -> list[str] | str:
    """The record's image paths (`image`: absent/null = text-only, a path, or a list of paths), or a problem."""
    image = record.get("image")
    if image is None or image == "":
        return []
    images = [image] if isinstance(image, str) else image
    if not isinstance(images, list) or not all(isinstance(x, str) and x for x in images):
        return f"'image' must be a path or a list of paths, got {image!r:.80}"
    return images


def _lead_with_marker(turns: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """LLaVA's own preprocessing of a one-image record: the turn holding `<image>` becomes "<image>\n" + the
    rest of its text stripped, so "<image>\nQ" and "Q\n<image>" train alike."""
    return [(role, "<image>\n" + text.replace("<image>", "").strip()) if "<image>" in text else (role, text)
            for role, text in turns]


def read_llava(
    path: str | Path,
    images: str | Path | None = None,
    *,
    split: str = "train",
    skip_bad_records: bool = False,
    allow_outside_paths: bool = False,
) -> Dataset:
    """LLaVA conversation JSON: `[{id, image?, conversations: [{from: human|gpt, value}]}]`, `<image>` in the
    human text exactly once per image; `image` paths (sub-folders allowed) are relative to `images` (default:
    the JSON's folder) and stay inside it unless `allow_outside_paths`. Records without `image` are text-only."""
    path = Path(path)
    records = read_json(path, "LLaVA conversation file")
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a JSON list of conversation records")
    bad = BadRecords(path, skip=skip_bad_records)
    folder = Path(images) if images is not None else path.parent
    samples = []
    for i, record in enumerate(records):
        rid = record.get("id", i) if isinstance(record, Mapping) else i
        turns = _llava_turns(record) if isinstance(record, Mapping) else "is not a JSON object"
        names = _llava_images(record) if isinstance(record, Mapping) else []
        problem = turns if isinstance(turns, str) else names if isinstance(names, str) else None
        if problem is not None:
            bad.bad(f"{i} (id {rid})", problem)
            continue
        markers = sum(text.count("<image>") for _, text in turns)
        if markers != len(names):
            bad.bad(f"{i} (id {rid})", f"has {markers} <image> markers for {len(names)} images")
            continue
        files = [inside(folder, name, allow_outside=allow_outside_paths) for name in names]
        outside = [f for f in files if isinstance(f, str)]
        if outside:
            bad.bad(f"{i} (id {rid!r:.40})", outside[0])
            continue
        missing = [f for f in files if not f.is_file()]
        if missing:
            bad.bad(f"{i} (id {rid})", f"image file {missing[0]} not found")
            continue
        samples.append(Sample(id=str(rid), images=files, turns=_lead_with_marker(turns) if markers == 1 else turns))
    return bad.finish("llava", split, samples)


def _easy_vqa_folder(split: str) -> Path:
    import easy_vqa

    # easy-VQA ships train and test only; "val" evaluates on its test images.
    name = {"train": "train", "test": "test", "val": "test"}.get(split)
    if name is None:
        raise DataError(f"easy-VQA has no split {split!r}; valid: train, val (= test), test")
    return Path(easy_vqa.__file__).parent / "data" / name


def read_easy_vqa(split: str = "train", *, root: str | Path | None = None, skip_bad_records: bool = False) -> Dataset:
    """easy-VQA (bundled offline with the `easy_vqa` package, or a copy at `root/<split>`): one sample per question,
    one reference answer."""
    folder = Path(root) / split if root is not None else _easy_vqa_folder(split)
    questions = folder / "questions.json"
    records = read_json(questions, "easy-VQA questions file")
    files = index_images(folder / "images")
    bad = BadRecords(questions, skip=skip_bad_records)
    samples = []
    for i, record in enumerate(records):
        ok = isinstance(record, list) and len(record) == 3 and all(isinstance(x, str) for x in record[:2])
        if not ok:
            bad.bad(i, f"expected [question, answer, image_id], got {record!r:.120}")
        elif record[2] not in files:
            bad.bad(i, f"no image file for image_id {record[2]!r}")
        else:
            answer_type = "yes/no" if record[1] in ("yes", "no") else "other"
            samples.append(
                Sample(
                    id=f"{split}-{i}",
                    images=[files[record[2]]],
                    question=record[0],
                    answers=[record[1]],
                    answer_type=answer_type,
                )
            )
    return bad.finish("easy_vqa", split, samples)
