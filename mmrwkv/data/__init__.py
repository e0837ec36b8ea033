"""Dataset readers, generators, the one sample type, the chat template (`template`): `build_dataset(cfg, split)`."""

from __future__ import annotations

import inspect
from pathlib import Path

from mmrwkv.data.sample import BadRecords, Dataset, Sample
from mmrwkv.errors import ConfigError, DataError

__all__ = ["BadRecords", "Dataset", "Sample", "build_dataset", "DEFAULT_SIZES", "PATH_ROLES"]

# file roles each reader kind needs in `data.paths[split]` (optional ones end with "?")
PATH_ROLES = {
    "coco_captions": ("annotations", "images"),
    # the Karpathy split file (dataset_coco.json) and the COCO root holding its `filepath` folders
    "coco_karpathy": ("karpathy", "images"),
    "vqav2": ("questions", "images", "annotations?"),
    "llava": ("conversations", "images?"),
    "audiocaps": ("csv", "audio"),
    "clotho": ("csv", "audio"),
    "easy_vqa": (),
    "shapes": (),
    "tones": (),
    "streams": (),
}
# where the files of each reader kind come from (nothing is downloaded: a missing file names its source)
SOURCES = {
    "coco_captions": "COCO 2014/2017 images and annotations_trainval: https://cocodataset.org/#download",
    "coco_karpathy": "dataset_coco.json from Karpathy's caption_datasets.zip "
    "(https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip) beside COCO's train2014/ and "
    "val2014/ (https://cocodataset.org/#download)",
    "vqav2": "VQAv2 questions and annotations: https://visualqa.org/download.html; images: COCO 2014 "
    "(https://cocodataset.org/#download)",
    "llava": "LLaVA data: https://huggingface.co/datasets/liuhaotian/LLaVA-Pretrain (558K) and "
    "https://huggingface.co/datasets/liuhaotian/LLaVA-Instruct-150K (llava_v1_5_mix665k.json), images as LLaVA's "
    "README lists them",
    "audiocaps": "AudioCaps CSVs: https://github.com/cdjkim/audiocaps (the audio clips from YouTube by their ids)",
    "clotho": "Clotho: https://zenodo.org/records/4783391",
}
DEFAULT_SIZES = {"train": 1000}
DEFAULT_EVAL_SIZE = 200


def _roles(cfg, split: str) -> dict[str, str]:
    """The checked `paths[split]` mapping of a reader kind."""
    roles = PATH_ROLES[cfg.kind]
    given = dict(cfg.paths.get(split, {}))
    names = [r.rstrip("?") for r in roles]
    unknown = sorted(set(given) - set(names))
    missing = [r for r in roles if not r.endswith("?") and r not in given]
    if unknown or missing:
        raise DataError(
            f"data.paths.{split}: {cfg.kind} needs roles {', '.join(roles) or '(none)'}; "
            f"missing {missing or 'none'}, unknown {unknown or 'none'}"
        )
    root = Path(cfg.root) if cfg.root else Path()
    paths = {k: str(root / v) for k, v in given.items()}
    for role, path in paths.items():
        if not Path(path).exists():
            raise DataError(
                f"data.paths.{split}.{role}: {path} not found (get it: {SOURCES[cfg.kind]}; data.root is "
                f"{cfg.root or '.'!r})"
            )
    return paths


def _read(cfg, split: str) -> Dataset:
    from mmrwkv.data import audio_readers, readers

    skip = cfg.skip_bad_records
    outside = {"allow_outside_paths": cfg.allow_outside_paths}
    p = _roles(cfg, split)
    if cfg.kind == "coco_captions":
        return readers.read_coco_captions(p["annotations"], p["images"], split=split, skip_bad_records=skip, **outside)
    if cfg.kind == "coco_karpathy":
        return readers.read_coco_karpathy(p["karpathy"], p["images"], split=split, skip_bad_records=skip, **outside)
    if cfg.kind == "vqav2":
        return readers.read_vqav2(p["questions"], p["images"], p.get("annotations"), split=split, skip_bad_records=skip)
    if cfg.kind == "llava":
        return readers.read_llava(p["conversations"], p.get("images"), split=split, skip_bad_records=skip, **outside)
    if cfg.kind == "audiocaps":
        return audio_readers.read_audiocaps(p["csv"], p["audio"], split=split, skip_bad_records=skip)
    if cfg.kind == "clotho":
        return audio_readers.read_clotho(p["csv"], p["audio"], split=split, skip_bad_records=skip)
    return readers.read_easy_vqa(split, root=cfg.root, skip_bad_records=skip)


def _generated(cfg, split: str) -> Dataset:
    from mmrwkv.data.shapes import load_shapes, prepare_shapes
    from mmrwkv.data.streams import load_streams, prepare_streams
    from mmrwkv.data.tones import load_tones, prepare_tones

    size = cfg.sizes.get(split, DEFAULT_SIZES.get(split, DEFAULT_EVAL_SIZE))
    root = cfg.root or f"data/{cfg.kind}"
    task = "both" if cfg.task == "auto" else cfg.task
    load, prepare = {"shapes": (load_shapes, prepare_shapes), "tones": (load_tones, prepare_tones),
                     "streams": (load_streams, prepare_streams)}[cfg.kind]
    valid = [p for p in inspect.signature(prepare).parameters if p not in ("root", "split", "size", "seed")]
    unknown = sorted(set(cfg.generator) - set(valid))
    if unknown:
        raise ConfigError(f"data.generator: unknown option(s) {unknown} for {cfg.kind}; valid: {', '.join(valid)}")
    return load(root, split, size, seed=cfg.seed, task=task, skip_bad_records=cfg.skip_bad_records, **cfg.generator)


def build_dataset(cfg, split: str) -> Dataset:
    """The samples of `split` for a `DataConfig`: generated kinds are prepared under `root` (default
    `data/<kind>`) once; reader kinds read `paths[split]` (relative to `root`) and keep a seeded subset of
    `sizes[split]` samples when given."""
    if cfg.kind in ("shapes", "tones", "streams"):
        return _generated(cfg, split)
    return _read(cfg, split).subset(cfg.sizes.get(split), cfg.seed)
