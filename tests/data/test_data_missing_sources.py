"""A reader kind's missing file or folder names the `data.paths` role, the path and where the files come from."""

from pathlib import Path

import pytest

from mmrwkv.config import expand_stages, load_config
from mmrwkv.data import PATH_ROLES, SOURCES, build_dataset
from mmrwkv.errors import DataError

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def test_every_reader_kind_names_a_source():
    readers = {k for k, roles in PATH_ROLES.items() if roles}
    assert readers == set(SOURCES)


@pytest.mark.parametrize(
    ("recipe", "split", "role", "source"),
    [
        ("coco_caption_v7", "test", "karpathy", "caption_datasets.zip"),
        ("llava_v7", "val", "questions", "visualqa.org"),
    ],
)
def test_shipped_gpu_recipe_on_a_fresh_clone_says_where_its_data_comes_from(
    recipe, split, role, source, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(RECIPES / f"{recipe}.yaml")
    data = cfg.data if recipe != "llava_v7" else _stage_data(cfg, "vqav2")
    with pytest.raises(DataError) as err:
        build_dataset(data, split)
    message = str(err.value)
    assert message.startswith(f"data.paths.{split}.{role}: ") and "not found" in message and source in message


def _stage_data(cfg, name):
    return next(s for s in expand_stages(cfg) if s.train.stage == name).data


def test_a_present_file_with_a_missing_folder_names_the_folder(tmp_path):
    cfg = load_config(RECIPES / "coco_caption_v7.yaml", [f"data.root={tmp_path}"])
    (tmp_path / "dataset_coco.json").write_text('{"images": []}')
    cfg.data.paths["test"]["images"] = "absent"
    with pytest.raises(DataError, match=r"data.paths.test.images: .*absent not found \(get it: "):
        build_dataset(cfg.data, "test")
