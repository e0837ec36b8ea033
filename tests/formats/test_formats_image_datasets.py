"""Real-format fixtures for the image dataset readers: COCO captions, VQAv2, LLaVA, easy-VQA.

Each fixture reproduces the published files' layout and quirks (extra top-level sections, annotation ids beside
image ids, captions with trailing whitespace, `<image>` at either end of a LLaVA turn, sub-folder image paths).
"""

import json

import pytest
from PIL import Image

from mmrwkv.data.readers import read_coco_captions, read_easy_vqa, read_llava, read_vqav2
from mmrwkv.data.template import ChatTemplate
from mmrwkv.errors import DataError
from mmrwkv.tokenizer import load_tokenizer
from mmrwkv.training.build import to_turns


def _jpeg(path, color=(200, 30, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 6), color).save(path, format="JPEG")
    return path


_INFO = {"description": "COCO 2014 Dataset", "url": "http://cocodataset.org", "version": "1.0", "year": 2014}
_LICENSES = [{"url": "http://creativecommons.org/licenses/by-nc-sa/2.0/", "id": 1, "name": "Attribution"}]


def _coco_image(image_id: int, split: str = "val2014") -> dict:
    return {"license": 1, "file_name": f"COCO_{split}_{image_id:012d}.jpg", "coco_url": "http://x", "height": 6,
            "width": 8, "date_captured": "2013-11-14 16:28:13", "flickr_url": "http://y", "id": image_id}


@pytest.fixture
def coco(tmp_path):
    folder = tmp_path / "val2014"
    for image_id in (391895, 522418, 184613):
        _jpeg(folder / f"COCO_val2014_{image_id:012d}.jpg")
    doc = {
        "info": _INFO,
        "licenses": _LICENSES,
        "images": [_coco_image(i) for i in (391895, 522418, 184613)],
        "annotations": [
            # annotation `id`s are unrelated to image ids; one even equals another image's id
            {"image_id": 391895, "id": 770337, "caption": "A man with a red helmet on a small moped on a dirt road. "},
            {"image_id": 522418, "id": 184613, "caption": "A woman wearing a net on her head cutting a cake. \n"},
            {"image_id": 391895, "id": 771687, "caption": "Man riding a motor bike on a dirt road on the countryside."},
            {"image_id": 522418, "id": 772154, "caption": "\nA woman cutting a large white sheet cake."},
        ],
    }
    (tmp_path / "captions_val2014.json").write_text(json.dumps(doc))
    return tmp_path


def test_coco_captions_keyed_by_image_id_stripped_and_uncaptioned_images_left_out(coco):
    data = read_coco_captions(coco / "captions_val2014.json", coco / "val2014")
    # 184613 has no caption in this file: not a bad record (and not confused with annotation id 184613)
    assert [s.id for s in data] == ["391895", "522418"] and data.skipped == 0
    assert data[0].captions == [
        "A man with a red helmet on a small moped on a dirt road.",
        "Man riding a motor bike on a dirt road on the countryside.",
    ]
    assert data[1].captions == [
        "A woman wearing a net on her head cutting a cake.",
        "A woman cutting a large white sheet cake.",
    ]
    assert data[0].images == [coco / "val2014" / "COCO_val2014_000000391895.jpg"]
    assert data[0].task == "caption"


def test_coco_image_info_file_without_annotations_gives_images_to_caption(coco):
    # image_info_test2014.json has images but no "annotations" section
    doc = {"info": _INFO, "licenses": _LICENSES, "images": [_coco_image(391895)], "categories": []}
    (coco / "image_info_test2014.json").write_text(json.dumps(doc))
    data = read_coco_captions(coco / "image_info_test2014.json", coco / "val2014", split="test")
    assert [(s.id, s.captions) for s in data] == [("391895", [])]


def test_coco_2017_names_and_string_ids(tmp_path):
    _jpeg(tmp_path / "val2017" / "000000000139.jpg")
    doc = {"images": [{"id": "139", "file_name": "000000000139.jpg"}],
           "annotations": [{"image_id": "139", "id": 1, "caption": "A living room. "}]}
    (tmp_path / "captions_val2017.json").write_text(json.dumps(doc))
    (sample,) = read_coco_captions(tmp_path / "captions_val2017.json", tmp_path / "val2017")
    assert sample.id == "139" and sample.captions == ["A living room."]


def test_coco_2014_file_names_find_the_renamed_2017_images(coco, tmp_path):
    _jpeg(tmp_path / "val2017" / "000000391895.jpg")
    _jpeg(tmp_path / "val2017" / "000000522418.jpg")
    data = read_coco_captions(coco / "captions_val2014.json", tmp_path / "val2017")
    assert [s.images[0].name for s in data] == ["000000391895.jpg", "000000522418.jpg"]


def test_coco_caption_of_an_unknown_image_is_a_bad_record(coco):
    path = coco / "captions_val2014.json"
    doc = json.loads(path.read_text())
    doc["annotations"].append({"image_id": 999, "id": 5, "caption": "orphan"})
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"captions_val2014\.json: record annotations\[4\]: .*image_id"):
        read_coco_captions(path, coco / "val2014")
    assert read_coco_captions(path, coco / "val2014", skip_bad_records=True).skipped == 1


@pytest.fixture
def vqav2(tmp_path):
    folder = tmp_path / "val2014"
    _jpeg(folder / "COCO_val2014_000000262148.jpg")
    _jpeg(folder / "COCO_val2014_000000393225.jpg")
    header = {"info": {"description": "This is v2.0 of the VQA dataset."}, "license": {"name": "CC"},
              "data_subtype": "val2014"}
    questions = {**header, "task_type": "Open-Ended", "data_type": "mscoco", "questions": [
        {"image_id": 262148, "question": "Where is he looking?", "question_id": 262148000},
        {"image_id": 393225, "question": "How many bikes are there?", "question_id": 393225001},
    ]}
    raw = ["down", "down", "at table", "skateboard", "down", "table", "down", "down", "down", "down"]
    confidence = ["yes", "yes", "yes", "maybe", "yes", "yes", "yes", "yes", "no", "yes"]
    annotations = {**header, "annotations": [
        {"question_type": "none of the above", "multiple_choice_answer": "down", "image_id": 262148,
         "answer_type": "other", "question_id": 262148000,
         "answers": [{"answer": a, "answer_confidence": c, "answer_id": i + 1}
                     for i, (a, c) in enumerate(zip(raw, confidence, strict=True))]},
        {"question_type": "how many", "multiple_choice_answer": "2", "image_id": 393225, "answer_type": "number",
         "question_id": 393225001,
         "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
                     for i, a in enumerate(["2", "2", "two", "2", "3", "2", "2", "2", "1", "2"])]},
    ]}
    (tmp_path / "v2_OpenEnded_mscoco_val2014_questions.json").write_text(json.dumps(questions))
    (tmp_path / "v2_mscoco_val2014_annotations.json").write_text(json.dumps(annotations))
    return tmp_path


def test_vqav2_questions_and_annotations(vqav2):
    data = read_vqav2(vqav2 / "v2_OpenEnded_mscoco_val2014_questions.json", vqav2 / "val2014",
                      vqav2 / "v2_mscoco_val2014_annotations.json")
    first, second = data.samples
    assert first.id == "262148000" and first.question == "Where is he looking?" and len(first.answers) == 10
    assert first.answer_type == "other" and first.answer == "down"
    assert first.images == [vqav2 / "val2014" / "COCO_val2014_000000262148.jpg"]
    assert first.meta["question_type"] == "none of the above" and first.meta["image_id"] == 262148
    # the training target is the annotators' multiple_choice_answer
    assert second.answer_type == "number" and second.answer == "2"
    assert second.conversation() == [("user", "<image>How many bikes are there?"), ("assistant", "2")]


def test_vqav2_training_target_is_the_multiple_choice_answer(vqav2):
    path = vqav2 / "v2_mscoco_val2014_annotations.json"
    doc = json.loads(path.read_text())
    # the raw counts tie here; the official target breaks the tie
    doc["annotations"][0]["answers"] = [{"answer": a, "answer_confidence": "yes", "answer_id": i}
                                        for i, a in enumerate(["left"] * 5 + ["down"] * 5)]
    path.write_text(json.dumps(doc))
    data = read_vqav2(vqav2 / "v2_OpenEnded_mscoco_val2014_questions.json", vqav2 / "val2014", path)
    assert data[0].answer == "down"


def test_vqav2_test_dev_questions_without_annotations(vqav2):
    data = read_vqav2(vqav2 / "v2_OpenEnded_mscoco_val2014_questions.json", vqav2 / "val2014", split="test-dev")
    assert [s.answers for s in data] == [[], []] and data[0].task == "vqa" and data[0].answer is None


def _llava_records() -> list[dict]:
    return [
        {"id": "000000033471", "image": "coco/train2017/000000033471.jpg", "conversations": [
            {"from": "human", "value": "<image>\nWhat are the colors of the bus in the image?"},
            {"from": "gpt", "value": "The bus in the image is white and red."},
            {"from": "human", "value": "What feature can be seen on the back of the bus?"},
            {"from": "gpt", "value": "The back of the bus features an advertisement."},
        ]},
        {"id": "004539375", "image": "00453/004539375.jpg", "conversations": [
            {"from": "human", "value": "Render a clear and concise summary of the photo.\n<image>"},
            {"from": "gpt", "value": "select luxury furniture 3 - inch gel memory foam mattress topper"},
        ]},
        {"id": "i6IyJda_0", "model": "", "conversations": [
            {"from": "human", "value": "How to tell if a customer segment is well segmented? In 3 bullet points."},
            {"from": "gpt", "value": "1. Homogeneity\n2. Distinctiveness\n3. Stability"},
        ]},
    ]


def test_llava_sub_folder_images_marker_at_either_end_and_text_only_records(tmp_path):
    _jpeg(tmp_path / "images" / "coco" / "train2017" / "000000033471.jpg")
    _jpeg(tmp_path / "images" / "00453" / "004539375.jpg")
    (tmp_path / "llava_v1_5_mix.json").write_text(json.dumps(_llava_records()))
    data = read_llava(tmp_path / "llava_v1_5_mix.json", tmp_path / "images")
    bus, summary, text = data.samples
    assert bus.images == [tmp_path / "images" / "coco" / "train2017" / "000000033471.jpg"]
    assert bus.turns[0] == ("user", "<image>\nWhat are the colors of the bus in the image?")
    assert [r for r, _ in bus.turns] == ["user", "assistant", "user", "assistant"]
    # LLaVA's own preprocessing moves the marker to the front: both layouts train alike
    assert summary.turns[0] == ("user", "<image>\nRender a clear and concise summary of the photo.")
    assert text.images == [] and text.task == "chat" and "<image>" not in text.turns[0][1]
    turns = to_turns(summary)
    assert turns[0].images == summary.images and turns[1].role == "assistant"
    assert to_turns(text)[0].images == []
    # a text-only record trains without any media: labels cover the replies only
    template = ChatTemplate(load_tokenizer("world"))
    encoded = template.encode_turns(to_turns(text), train=True)
    labelled = [t for t, label in zip(encoded.ids, encoded.labels, strict=True) if label != -100]
    assert template.tokenizer.decode(labelled) == " 1. Homogeneity\n2. Distinctiveness\n3. Stability\n\n"


def test_llava_image_count_must_match_markers(tmp_path):
    records = _llava_records()[1:2]
    records[0]["conversations"][0]["value"] = "Describe the photo."
    _jpeg(tmp_path / "00453" / "004539375.jpg")
    (tmp_path / "chat.json").write_text(json.dumps(records))
    with pytest.raises(DataError, match=r"chat\.json: record 0 \(id 004539375\): has 0 <image> markers for 1"):
        read_llava(tmp_path / "chat.json")


def test_easy_vqa_bundled_format():
    data = read_easy_vqa("train")
    assert len(data) > 30000 and data.skipped == 0
    sample = data[0]
    assert sample.images[0].suffix == ".png" and sample.images[0].is_file()
    assert sample.question.endswith("?") and sample.answers[0] in {"yes", "no", "circle", "rectangle", "triangle",
                                                                    "red", "green", "blue", "black", "gray",
                                                                    "teal", "brown", "yellow"}
