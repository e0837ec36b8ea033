"""COCO and LLaVA records from an untrusted file: media paths stay inside the data root unless the recipe allows
outside paths, ids are checked for type and uniqueness, and lone-surrogate text is a bad record, not a traceback."""

import json

import pytest
from PIL import Image

from mmrwkv.config import DataConfig
from mmrwkv.data import build_dataset
from mmrwkv.data.readers import read_coco_captions, read_coco_karpathy, read_llava
from mmrwkv.errors import DataError


def _images(tmp_path):
    root = tmp_path / "data"
    (root / "val2014").mkdir(parents=True)
    for i in (1, 2):
        Image.new("RGB", (4, 4)).save(root / "val2014" / f"{i}.png")
    Image.new("RGB", (4, 4)).save(tmp_path / "secret.png")
    return root


def _coco(root, images, annotations):
    path = root / "captions.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    return path


def _read(root, images, annotations, **kw):
    return read_coco_captions(_coco(root, images, annotations), root / "val2014", **kw)


@pytest.mark.parametrize("name", ["../../secret.png", "/etc/passwd", "sub/../../../secret.png"])
def test_a_file_name_leading_outside_the_data_root_is_refused(tmp_path, name):
    root = _images(tmp_path)
    images = [{"id": 1, "file_name": name}]
    with pytest.raises(
        DataError,
        match=r"captions\.json: record images\[0\] .* leads outside the data root .*"
        r"data\.allow_outside_paths",
    ):
        _read(root, images, [{"image_id": 1, "caption": "a cat"}])


def test_outside_paths_are_read_when_the_recipe_allows_them(tmp_path):
    root = _images(tmp_path)
    data = _read(
        root,
        [{"id": 1, "file_name": "../../secret.png"}],
        [{"image_id": 1, "caption": "a cat"}],
        allow_outside_paths=True,
    )
    assert data.samples[0].images[0].resolve() == (tmp_path / "secret.png").resolve()


def test_a_karpathy_filepath_leading_outside_is_refused(tmp_path):
    root = _images(tmp_path)
    entry = {"filename": "secret.png", "filepath": "..", "split": "test", "cocoid": 1, "sentences": [{"raw": "x"}]}
    path = root / "karpathy.json"
    path.write_text(json.dumps({"images": [entry]}))
    with pytest.raises(DataError, match="leads outside the data root"):
        read_coco_karpathy(path, root / "val2014", split="test")


def test_a_llava_image_leading_outside_is_refused(tmp_path):
    root = _images(tmp_path)
    record = {
        "id": "a",
        "image": "../secret.png",
        "conversations": [{"from": "human", "value": "<image>\nQ"}, {"from": "gpt", "value": "A"}],
    }
    path = root / "llava.json"
    path.write_text(json.dumps([record]))
    with pytest.raises(DataError, match=r"record 0 \(id 'a'\): path '../secret.png' leads outside"):
        read_llava(path, root)


def test_duplicate_and_bool_ids_are_not_merged(tmp_path):
    root = _images(tmp_path)
    duplicate = [{"id": 1, "file_name": "1.png"}, {"id": 1, "file_name": "2.png"}]
    with pytest.raises(DataError, match=r"images\[1\]: duplicate image id 1"):
        _read(root, duplicate, [{"image_id": 1, "caption": "a cat"}])
    # JSON true == 1 in Python: it would have taken image 1's captions
    flagged = [{"id": 1, "file_name": "1.png"}, {"id": True, "file_name": "2.png"}]
    with pytest.raises(DataError, match=r"images\[1\]: needs an integer or string 'id'.*\(id True\)"):
        _read(root, flagged, [{"image_id": 1, "caption": "a cat"}])
    with pytest.raises(DataError, match=r"annotations\[0\]: .*known integer or string 'image_id'"):
        _read(root, [{"id": 1, "file_name": "1.png"}], [{"image_id": True, "caption": "a cat"}])


@pytest.mark.parametrize("bad_id", [[1], {"a": 1}, 1.5, None])
def test_list_dict_and_float_ids_are_bad_records(tmp_path, bad_id):
    root = _images(tmp_path)
    with pytest.raises(DataError, match=r"images\[0\]: needs an integer or string 'id'"):
        _read(root, [{"id": bad_id, "file_name": "1.png"}], [])
    data = _read(
        root,
        [{"id": bad_id, "file_name": "1.png"}, {"id": 2, "file_name": "2.png"}],
        [{"image_id": bad_id, "caption": "x"}, {"image_id": 2, "caption": "y"}],
        skip_bad_records=True,
    )
    assert [s.id for s in data.samples] == ["2"] and data.skipped == 2


def test_a_lone_surrogate_caption_is_a_bad_record(tmp_path):
    root = _images(tmp_path)
    path = root / "captions.json"
    path.write_text(
        '{"images": [{"id": 1, "file_name": "1.png"}], "annotations": [{"image_id": 1, "caption": "a \\ud800 cat"}]}'
    )
    with pytest.raises(DataError, match=r"annotations\[0\]: needs a non-empty, valid Unicode 'caption'"):
        read_coco_captions(path, root / "val2014")


def test_the_recipe_field_reaches_the_reader(tmp_path):
    root = _images(tmp_path)
    _coco(root, [{"id": 1, "file_name": "../../secret.png"}], [{"image_id": 1, "caption": "a cat"}])
    paths = {"val": {"annotations": "captions.json", "images": "val2014"}}
    with pytest.raises(DataError, match="leads outside"):
        build_dataset(DataConfig(kind="coco_captions", root=str(root), paths=paths), "val")
    cfg = DataConfig(kind="coco_captions", root=str(root), paths=paths, allow_outside_paths=True)
    assert len(build_dataset(cfg, "val").samples) == 1


def test_list_roles_and_lone_surrogates_in_llava_are_bad_records(tmp_path):
    root = _images(tmp_path)
    path = root / "llava.json"
    listed = {"id": "a", "conversations": [{"from": ["human"], "value": "Q"}, {"from": "gpt", "value": "A"}]}
    path.write_text(json.dumps([listed]))
    with pytest.raises(DataError, match=r"conversations\[0\] needs 'from' in"):
        read_llava(path, root)
    path.write_text(
        '[{"id": "b", "conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "\\udc80"}]}]'
    )
    with pytest.raises(DataError, match=r"conversations\[1\] needs .* valid Unicode string 'value'"):
        read_llava(path, root)
