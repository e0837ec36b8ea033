"""Preparing a generated split replaces its folder only when the folder is empty or one we generated."""

import json

import pytest

from mmrwkv.data.generated import MANIFEST, prepare
from mmrwkv.errors import DataError


def _generate(folder, params):
    (folder / "0.txt").write_text(str(params["n"]))
    return [{"id": "0", "file": "0.txt", "captions": ["zero"], "qa": []}]


def test_a_folder_of_other_files_is_refused_and_kept(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "photo.jpg").write_bytes(b"\xff\xd8 mine")
    with pytest.raises(DataError, match=rf"{tmp_path / 'train'}: exists and is not a generated split"):
        prepare(tmp_path, "train", {"n": 1}, _generate)
    assert [p.name for p in (tmp_path / "train").iterdir()] == ["photo.jpg"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train"]


def test_our_split_is_regenerated_for_other_parameters_and_an_empty_folder_is_filled(tmp_path):
    (tmp_path / "train").mkdir()
    folder = prepare(tmp_path, "train", {"n": 1}, _generate)
    assert json.loads((folder / MANIFEST).read_text())["params"] == {"n": 1}
    prepare(tmp_path, "train", {"n": 2}, _generate)
    assert (folder / "0.txt").read_text() == "2" and sorted(p.name for p in tmp_path.iterdir()) == ["train"]
