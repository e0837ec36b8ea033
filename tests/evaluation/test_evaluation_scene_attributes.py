"""Per-attribute scoring of scene captions: reading-order alignment, every caption form, missing objects."""

import json

import pytest

from mmrwkv.data.shapes import Obj, scene_captions
from mmrwkv.errors import DataError
from mmrwkv.evaluation.scene_attributes import load_predictions, load_truth, main, scene_attribute_accuracy

SCENE = [Obj("diamond", "white", 2, 2, 8), Obj("circle", "red", 0, 0, 8), Obj("square", "blue", 1, 1, 8)]


def test_every_reference_caption_scores_perfectly():
    for caption in scene_captions(SCENE)[:4]:  # the relation caption names only two of the three
        result = scene_attribute_accuracy({"a": caption}, {"a": SCENE})
        assert result["colour"] == result["shape"] == result["scenes_exact"] == 1.0, caption
        assert result["place"] == (1.0 if result["placed"] else None)


def test_wrong_shapes_missing_objects_and_places():
    pred = "a red triangle in the top left and a blue square at the middle right"
    result = scene_attribute_accuracy({"a": pred}, {"a": SCENE})
    assert result["objects"] == 3 and result["named"] == 2
    assert result["colour"] == pytest.approx(2 / 3) and result["shape"] == pytest.approx(1 / 3)
    assert result["place"] == 0.5 and result["placed"] == 2 and result["scenes_exact"] == 0.0
    confusion = result["shape_confusion"]
    assert confusion["circle"] == {"triangle": 1} and confusion["square"] == {"square": 1}
    relation = scene_attribute_accuracy({"a": "a red circle to the left of a blue square"}, {"a": SCENE})
    assert relation["shape"] == relation["colour"] == pytest.approx(2 / 3) and relation["place"] is None


def test_files_and_errors(tmp_path, capsys):
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"items": [{"id": "s-0", "objects": [o.__dict__ for o in SCENE]}]}))
    preds = tmp_path / "predictions.json"
    preds.write_text(json.dumps([{"id": "s-0", "prediction": scene_captions(SCENE)[0]}]))
    assert load_truth(manifest)["s-0"] == SCENE and load_predictions(preds) == {"s-0": scene_captions(SCENE)[0]}
    assert main([str(preds), str(manifest)]) == 0 and "shape 1.000" in capsys.readouterr().out
    with pytest.raises(DataError, match="no truth for prediction ids"):
        scene_attribute_accuracy({"other": "a red circle"}, {"a": SCENE})
    with pytest.raises(DataError, match="not a shapes manifest"):
        load_truth(preds)
