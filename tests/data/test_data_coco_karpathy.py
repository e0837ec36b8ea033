"""COCO captions in the Karpathy split (dataset_coco.json): split selection with restval folded into train,
references from `raw`, errors naming the file and the record, and the recipe's `coco_karpathy` data kind."""

import json

import pytest
from PIL import Image

from mmrwkv.config import config_from_dict
from mmrwkv.data import build_dataset
from mmrwkv.data.readers import read_coco_karpathy
from mmrwkv.errors import ConfigError, DataError

# (cocoid, filepath, split)
IMAGES = [(11, "train2014", "train"), (12, "val2014", "restval"), (13, "val2014", "val"), (14, "val2014", "test"),
          (15, "train2014", "train")]


def _entry(cocoid: int, folder: str, split: str) -> dict:
    name = f"COCO_{folder}_{cocoid:012d}.jpg"
    raws = [f"A  photo of thing {cocoid}.\n", f"Thing number {cocoid} on a table "]
    return {"filepath": folder, "filename": name, "imgid": cocoid - 11, "split": split, "cocoid": cocoid,
            "sentids": [2 * cocoid, 2 * cocoid + 1],
            "sentences": [{"tokens": raw.lower().split(), "raw": raw, "imgid": cocoid - 11, "sentid": 2 * cocoid + j}
                          for j, raw in enumerate(raws)]}


@pytest.fixture
def karpathy(tmp_path):
    """A COCO root with train2014/ and val2014/ images and a five-image dataset_coco.json."""
    for cocoid, folder, _ in IMAGES:
        (tmp_path / folder).mkdir(exist_ok=True)
        Image.new("RGB", (8, 8), (cocoid, 0, 0)).save(tmp_path / folder / f"COCO_{folder}_{cocoid:012d}.jpg")
    doc = {"images": [_entry(*image) for image in IMAGES], "dataset": "coco"}
    (tmp_path / "dataset_coco.json").write_text(json.dumps(doc))
    return tmp_path


def _write(root, entries) -> None:
    (root / "dataset_coco.json").write_text(json.dumps({"images": entries, "dataset": "coco"}))


def test_train_folds_restval_in_and_val_test_are_their_own(karpathy):
    ids = {split: [s.id for s in read_coco_karpathy(karpathy / "dataset_coco.json", karpathy, split=split)]
           for split in ("train", "val", "test", "restval")}
    assert ids == {"train": ["11", "12", "15"], "val": ["13"], "test": ["14"], "restval": ["12"]}


def test_references_are_the_raw_sentences_and_files_follow_filepath(karpathy):
    (sample,) = read_coco_karpathy(karpathy / "dataset_coco.json", karpathy, split="test")
    assert sample.captions == ["A photo of thing 14.", "Thing number 14 on a table"]
    assert sample.images == [karpathy / "val2014" / "COCO_val2014_000000000014.jpg"]
    assert sample.task == "caption" and sample.meta["karpathy_split"] == "test"


@pytest.mark.parametrize(("change", "problem"), [
    ({"split": "dev"}, "'split' must be one of train, restval, val, test; got 'dev'"),
    ({"sentences": []}, "needs a non-empty list 'sentences'"),
    ({"sentences": [{"tokens": ["a"]}]}, "sentences[0] needs a non-empty string 'raw'"),
    ({"filename": None}, "needs a string 'filename'"),
    ({"filename": "COCO_val2014_000000000099.jpg"}, "COCO_val2014_000000000099.jpg not found"),
])
def test_malformed_entry_names_the_file_and_the_record(karpathy, change, problem):
    entries = [_entry(*image) for image in IMAGES]
    entries[3].update(change)
    _write(karpathy, entries)
    path = karpathy / "dataset_coco.json"
    with pytest.raises(DataError) as err:
        read_coco_karpathy(path, karpathy, split="test")
    assert str(path) in str(err.value) and "images[3] (cocoid 14)" in str(err.value)
    assert problem in str(err.value)
    skipped = read_coco_karpathy(path, karpathy, split="test", skip_bad_records=True)
    assert len(skipped) == 0 and skipped.skipped == 1


def test_entry_that_is_not_an_object_and_a_file_without_images(karpathy):
    path = karpathy / "dataset_coco.json"
    _write(karpathy, [_entry(*IMAGES[0]), "oops"])
    with pytest.raises(DataError, match=r"record images\[1\]: is not a JSON object"):
        read_coco_karpathy(path, karpathy, split="train")
    path.write_text(json.dumps({"annotations": []}))
    with pytest.raises(DataError, match=r"dataset_coco.json: expected a JSON object with a list 'images'"):
        read_coco_karpathy(path, karpathy)


def test_unknown_split_and_missing_file_are_named(karpathy):
    with pytest.raises(DataError, match=r"no split 'dev'; valid: train \(with restval\), val, test, restval"):
        read_coco_karpathy(karpathy / "dataset_coco.json", karpathy, split="dev")
    with pytest.raises(DataError, match="Karpathy split file .*nope.json: file not found"):
        read_coco_karpathy(karpathy / "nope.json", karpathy)


def test_recipe_data_kind_points_at_the_split_file(karpathy):
    paths = {split: {"karpathy": "dataset_coco.json", "images": "."} for split in ("train", "test")}
    cfg = config_from_dict({"data": {"kind": "coco_karpathy", "root": str(karpathy), "paths": paths}})
    assert [s.id for s in build_dataset(cfg.data, "train")] == ["11", "12", "15"]
    assert [s.id for s in build_dataset(cfg.data, "test")] == ["14"]
    wrong = config_from_dict({"data": {"kind": "coco_karpathy", "paths": {"test": {"annotations": "x.json"}}}})
    with pytest.raises(DataError, match="coco_karpathy needs roles karpathy, images"):
        build_dataset(wrong.data, "test")
    with pytest.raises(ConfigError, match="coco_karpathy"):
        config_from_dict({"data": {"kind": "coco_karpathi"}})
