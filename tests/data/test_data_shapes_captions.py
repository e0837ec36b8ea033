"""Scene captions are a function of the image: objects in reading order, every reference names every object,
and the held-out split is a different draw from the training split."""

import json
import random

from mmrwkv.data.shapes import Obj, prepare_shapes, random_scene, reading_order, scene_captions


def _scene() -> list[Obj]:
    # listed out of reading order on purpose
    return [Obj("square", "blue", 2, 2, 8), Obj("circle", "red", 0, 1, 8), Obj("triangle", "green", 0, 0, 8)]


def test_captions_name_the_objects_in_reading_order_whatever_the_list_order():
    captions = scene_captions(_scene())
    assert captions[0] == "a green triangle in the top left, a red circle in the top center and a blue square in the " \
                          "bottom right"
    assert captions[1] == f"three shapes: {captions[0]}"
    assert captions[2] == "a green triangle at the top left, a red circle at the top center and a blue square at " \
                          "the bottom right"
    assert captions[3] == "three shapes on a dark background: a green triangle, a red circle and a blue square"
    assert captions[4] == "a green triangle to the left of a red circle"
    assert scene_captions(list(reversed(_scene()))) == captions


def test_placed_references_name_every_object_in_reading_order():
    rng = random.Random(4)
    for _ in range(200):
        objects = random_scene(rng, 64, 3)
        nouns = [o.noun for o in reading_order(objects)]
        captions = scene_captions(objects)
        assert len(captions) == (5 if len(objects) > 1 else 4)
        for caption in captions[:3]:
            # each noun is found after the previous one (a noun may appear twice)
            at = 0
            for noun in nouns:
                at = caption.index(noun, at) + len(noun)


def test_a_single_shape_has_its_place_in_the_captions():
    captions = scene_captions([Obj("diamond", "white", 1, 1, 8)])
    assert captions == ["a white diamond in the center", "a single white diamond in the center",
                        "a white diamond at the center", "one shape on a dark background: a white diamond"]


def test_held_out_split_is_another_draw(tmp_path):
    train = json.loads((prepare_shapes(tmp_path, "train", 40, seed=0) / "manifest.json").read_text())["items"]
    test = json.loads((prepare_shapes(tmp_path, "test", 40, seed=0) / "manifest.json").read_text())["items"]
    assert [i["captions"] for i in train] != [i["captions"] for i in test]
    again = json.loads((prepare_shapes(tmp_path / "b", "test", 40, seed=0) / "manifest.json").read_text())["items"]
    assert again == test
