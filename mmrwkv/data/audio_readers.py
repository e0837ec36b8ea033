"""Readers for audio captioning CSVs: AudioCaps and Clotho. One sample per clip with all its captions."""

from __future__ import annotations

import csv
import unicodedata
from pathlib import Path

from mmrwkv.data.sample import BadRecords, Dataset, Sample, require_dir, require_file
from mmrwkv.errors import DataError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


def _read_csv(path: Path, what: str, required: tuple[str, ...]) -> list[dict[str, str]]:
    require_file(path, what)
    try:
        # utf-8-sig: spreadsheet tools write a byte-order mark that would otherwise stick to the first column name
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in required if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(f"{what} {path}: missing column(s) {', '.join(missing)}; has {reader.fieldnames}")
            return list(reader)
    except (UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{what} {path}: not a readable CSV ({err})") from None


def _find_audio(folder: Path, names: set[str], stems: list[str]) -> Path | None:
    """The first `<stem><suffix>` among the folder's file `names` (listed once: a clip has ~40 candidates)."""
    for stem in stems:
        for suffix in AUDIO_SUFFIXES:
            if f"{stem}{suffix}" in names:
                return folder / f"{stem}{suffix}"
    return None


def _audiocaps_stems(rows: list[dict[str, str]]) -> list[str]:
    """File names AudioCaps downloads commonly use for a clip: `<youtube_id>_<start>`, AudioSet's
    `Y<youtube_id>_<start>.000_<end>.000`, `Y<youtube_id>`, `<youtube_id>`, or any of its `<audiocap_id>`s."""
    yid, start = rows[0]["youtube_id"], rows[0]["start_time"]
    stems = [f"{yid}_{start}", f"{yid}_{start}.0"]
    try:
        begin = float(start)
        stems += [f"Y{yid}_{begin:.3f}_{begin + 10:.3f}", f"{yid}_{begin:.3f}_{begin + 10:.3f}", f"{yid}_{int(begin)}"]
    except ValueError:
        pass
    return stems + [f"Y{yid}", yid] + [row["audiocap_id"] for row in rows]


def read_audiocaps(
    csv_path: str | Path, audio: str | Path, *, split: str = "val", skip_bad_records: bool = False
) -> Dataset:
    """AudioCaps CSV (`audiocap_id, youtube_id, start_time, caption`); rows of the same clip are grouped (train has
    one caption per clip, val/test five).

    A clip's file is looked up in `audio` as `<youtube_id>_<start_time>`, `Y<youtube_id>_<start>.000_<end>.000`,
    `Y<youtube_id>`, `<youtube_id>` or one of its `<audiocap_id>`s, with a wav/flac/ogg/mp3 suffix.
    """
    csv_path = Path(csv_path)
    rows = _read_csv(csv_path, "AudioCaps CSV", ("audiocap_id", "youtube_id", "start_time", "caption"))
    folder = require_dir(audio, "AudioCaps audio folder")
    bad = BadRecords(csv_path, skip=skip_bad_records)
    rows = [{k: (v or "").strip() for k, v in row.items() if k is not None} for row in rows]
    names = {path.name for path in folder.iterdir() if path.is_file()}
    clips: dict[tuple[str, str], list[dict[str, str]]] = {}
    for row in rows:
        if row["youtube_id"] and row["caption"]:
            clips.setdefault((row["youtube_id"], row["start_time"]), []).append(row)
    samples: dict[tuple[str, str], Sample | None] = {}
    for i, row in enumerate(rows):
        where = f"row {i + 2} (audiocap_id {row['audiocap_id']})"
        key = (row["youtube_id"], row["start_time"])
        if not row["caption"] or not row["youtube_id"]:
            bad.bad(where, "empty youtube_id or caption")
            continue
        if key not in samples:
            path = _find_audio(folder, names, _audiocaps_stems(clips[key]))
            samples[key] = None if path is None else Sample(id=f"{key[0]}_{key[1]}", audio=[path],
                                                            meta={"audiocap_ids": []})
            if path is None:
                bad.bad(where, f"no audio file for clip {key} in {folder}")
        if samples[key] is not None:
            samples[key].captions.append(" ".join(row["caption"].split()))
            samples[key].meta["audiocap_ids"].append(row["audiocap_id"])
    return bad.finish("audiocaps", split, [s for s in samples.values() if s is not None])


def _clotho_file(folder: Path, name: str) -> Path | None:
    """The clip file; names with accents may be stored composed (NFC) or decomposed (NFD) on disk."""
    for form in (name, unicodedata.normalize("NFC", name), unicodedata.normalize("NFD", name)):
        if (folder / form).is_file():
            return folder / form
    return None


def read_clotho(
    csv_path: str | Path, audio: str | Path, *, split: str = "evaluation", skip_bad_records: bool = False
) -> Dataset:
    """Clotho captions CSV (`file_name, caption_1..caption_5`) with the clips in `audio`.

    One to five caption columns (`caption_1` at least: subsets and user data often have fewer than Clotho's
    five); a row needs a file name and at least one non-empty caption, and keeps all its non-empty ones.
    """
    csv_path = Path(csv_path)
    rows = _read_csv(csv_path, "Clotho CSV", ("file_name", "caption_1"))
    present = [f"caption_{i}" for i in range(1, 6) if rows and f"caption_{i}" in rows[0]]
    folder = require_dir(audio, "Clotho audio folder")
    bad = BadRecords(csv_path, skip=skip_bad_records)
    samples = []
    for i, row in enumerate(rows):
        name = (row.get("file_name") or "").strip()
        captions = [c for c in (" ".join((row.get(col) or "").split()) for col in present) if c]
        path = _clotho_file(folder, name) if name else None
        if not name or not captions:
            bad.bad(f"row {i + 2} ({name or 'no file_name'})", "needs a file_name and at least one non-empty caption")
        elif path is None:
            bad.bad(f"row {i + 2} ({name})", f"audio file {folder / name} not found")
        else:
            samples.append(Sample(id=name, audio=[path], captions=captions))
    return bad.finish("clotho", split, samples)
