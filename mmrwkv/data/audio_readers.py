"""Readers for audio captioning CSVs: AudioCaps and Clotho. One sample per clip with all its captions."""

from __future__ import annotations

import csv
from pathlib import Path

from mmrwkv.data.sample import BadRecords, Dataset, Sample, require_dir, require_file
from mmrwkv.errors import DataError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


def _read_csv(path: Path, what: str, required: tuple[str, ...]) -> list[dict[str, str]]:
    require_file(path, what)
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in required if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(f"{what} {path}: missing column(s) {', '.join(missing)}; has {reader.fieldnames}")
            return list(reader)
    except (UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{what} {path}: not a readable CSV ({err})") from None


def _find_audio(folder: Path, stems: list[str]) -> Path | None:
    for stem in stems:
        for suffix in AUDIO_SUFFIXES:
            path = folder / f"{stem}{suffix}"
            if path.is_file():
                return path
    return None


def _audiocaps_stems(row: dict[str, str]) -> list[str]:
    """File names AudioCaps downloads commonly use for a clip."""
    yid, start, cap_id = row["youtube_id"], row["start_time"], row["audiocap_id"]
    return [f"{yid}_{start}", f"{yid}_{start}.0", f"Y{yid}", yid, cap_id]


def read_audiocaps(
    csv_path: str | Path, audio: str | Path, *, split: str = "val", skip_bad_records: bool = False
) -> Dataset:
    """AudioCaps CSV (`audiocap_id, youtube_id, start_time, caption`); rows of the same clip are grouped.

    A clip's file is looked up in `audio` as `<youtube_id>_<start_time>`, `Y<youtube_id>`, `<youtube_id>` or
    `<audiocap_id>` with a wav/flac/ogg/mp3 suffix.
    """
    csv_path = Path(csv_path)
    rows = _read_csv(csv_path, "AudioCaps CSV", ("audiocap_id", "youtube_id", "start_time", "caption"))
    folder = require_dir(audio, "AudioCaps audio folder")
    bad = BadRecords(csv_path, skip=skip_bad_records)
    clips: dict[tuple[str, str], Sample] = {}
    for i, row in enumerate(rows):
        caption = (row.get("caption") or "").strip()
        if not caption or not row.get("youtube_id"):
            bad.bad(f"row {i + 2} (audiocap_id {row.get('audiocap_id')})", "empty youtube_id or caption")
            continue
        key = (row["youtube_id"], row["start_time"])
        if key not in clips:
            path = _find_audio(folder, _audiocaps_stems(row))
            if path is None:
                bad.bad(f"row {i + 2} (audiocap_id {row['audiocap_id']})", f"no audio file for clip {key} in {folder}")
                continue
            clips[key] = Sample(id=f"{key[0]}_{key[1]}", audio=[path], meta={"audiocap_ids": []})
        clips[key].captions.append(caption)
        clips[key].meta["audiocap_ids"].append(row["audiocap_id"])
    return bad.finish("audiocaps", split, list(clips.values()))


def read_clotho(
    csv_path: str | Path, audio: str | Path, *, split: str = "evaluation", skip_bad_records: bool = False
) -> Dataset:
    """Clotho captions CSV (`file_name, caption_1..caption_5`) with the clips in `audio`."""
    csv_path = Path(csv_path)
    columns = ("file_name",) + tuple(f"caption_{i}" for i in range(1, 6))
    rows = _read_csv(csv_path, "Clotho CSV", columns)
    folder = require_dir(audio, "Clotho audio folder")
    bad = BadRecords(csv_path, skip=skip_bad_records)
    samples = []
    for i, row in enumerate(rows):
        name = (row.get("file_name") or "").strip()
        captions = [(row.get(c) or "").strip() for c in columns[1:]]
        if not name or not all(captions):
            bad.bad(f"row {i + 2} ({name or 'no file_name'})", "needs a file_name and five non-empty captions")
        elif not (folder / name).is_file():
            bad.bad(f"row {i + 2} ({name})", f"audio file {folder / name} not found")
        else:
            samples.append(Sample(id=name, audio=[folder / name], captions=captions))
    return bad.finish("clotho", split, samples)
