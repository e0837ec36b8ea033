"""Dataset readers: standard formats parse into Samples; bad records raise naming file + record, or are skipped."""

import json
import logging

import numpy as np
import pytest
import soundfile
from PIL import Image

from mmrwkv.config import DataConfig
from mmrwkv.data import build_dataset
from mmrwkv.data.audio_readers import read_audiocaps, read_clotho
from mmrwkv.data.readers import read_coco_captions, read_easy_vqa, read_llava, read_vqav2
from mmrwkv.errors import DataError, MediaError


def _png(path):
    Image.new("RGB", (4, 4), (255, 0, 0)).save(path)
    return path


def _wav(path):
    soundfile.write(path, np.zeros(1600, dtype=np.float32), 16000)
    return path


@pytest.fixture
def coco(tmp_path):
    images = tmp_path / "val2014"
    images.mkdir()
    for i in (1, 2):
        _png(images / f"COCO_val2014_{i:012d}.jpg".replace(".jpg", ".png"))
    doc = {
        "images": [{"id": 1, "file_name": "COCO_val2014_000000000001.png"}, {"id": 2, "file_name": "missing.png"}],
        "annotations": [
            {"image_id": 1, "caption": "A red square. "},
            {"image_id": 1, "caption": "a red box"},
            {"image_id": 2, "caption": "gone"},
        ],
    }
    (tmp_path / "captions.json").write_text(json.dumps(doc))
    return tmp_path


def test_coco_groups_captions_per_image_and_names_missing_image(coco):
    with pytest.raises(DataError, match=r"captions\.json: record image id 2: image file .*missing\.png not found"):
        read_coco_captions(coco / "captions.json", coco / "val2014")
    data = read_coco_captions(coco / "captions.json", coco / "val2014", skip_bad_records=True)
    assert len(data) == 1 and data.skipped == 1
    assert data[0].captions == ["A red square.", "a red box"] and data[0].task == "caption"
    assert data[0].images[0].name == "COCO_val2014_000000000001.png"


def test_skipping_logs_one_warning_with_the_count(coco, caplog):
    with caplog.at_level(logging.WARNING, logger="mmrwkv.data"):
        read_coco_captions(coco / "captions.json", coco / "val2014", skip_bad_records=True)
    assert any("skipped 1 bad records" in r.getMessage() for r in caplog.records)


def test_missing_and_malformed_files_name_the_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.json: file not found"):
        read_coco_captions(tmp_path / "nope.json", tmp_path)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match=r"bad\.json: not valid JSON"):
        read_coco_captions(tmp_path / "bad.json", tmp_path)
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(DataError, match=r"list\.json: expected a JSON object with a list 'images'"):
        read_coco_captions(tmp_path / "list.json", tmp_path)


@pytest.fixture
def vqa(tmp_path):
    images = tmp_path / "img"
    images.mkdir()
    _png(images / "COCO_val2014_000000000007.png")
    questions = {
        "questions": [
            {"question_id": 70, "image_id": 7, "question": "What color?"},
            {"question_id": 71, "image_id": 8, "question": "Where?"},
            {"question_id": 72, "image_id": 7},
        ]
    }
    answers = ["red"] * 7 + ["dark red"] * 3
    annotations = {
        "annotations": [
            {"question_id": 70, "answer_type": "other", "answers": [{"answer": a} for a in answers]},
        ]
    }
    (tmp_path / "q.json").write_text(json.dumps(questions))
    (tmp_path / "a.json").write_text(json.dumps(annotations))
    return tmp_path


def test_vqav2_reads_ten_answers_and_reports_each_bad_record(vqa):
    with pytest.raises(DataError, match=r"q\.json: record question_id 71: no image file for image_id 8"):
        read_vqav2(vqa / "q.json", vqa / "img", vqa / "a.json")
    data = read_vqav2(vqa / "q.json", vqa / "img", vqa / "a.json", skip_bad_records=True)
    assert data.skipped == 2 and "questions[2]" in data.problems[1]
    (sample,) = data.samples
    assert sample.id == "70" and sample.question == "What color?" and len(sample.answers) == 10
    assert sample.answer == "red" and sample.answer_type == "other"
    assert sample.conversation() == [("user", "<image>What color?"), ("assistant", "red")]


def test_vqav2_without_annotations_has_no_answers(vqa):
    data = read_vqav2(vqa / "q.json", vqa / "img", skip_bad_records=True)
    assert [s.answers for s in data] == [[]]


def test_llava_turns_roles_and_image_marker_count(tmp_path):
    _png(tmp_path / "a.png")
    records = [
        {
            "id": "ok",
            "image": "a.png",
            "conversations": [
                {"from": "human", "value": "<image>\nWhat is it?"},
                {"from": "gpt", "value": "A square."},
            ],
        },
        {"id": "text", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]},
        {
            "id": "nomark",
            "image": "a.png",
            "conversations": [{"from": "human", "value": "What?"}, {"from": "gpt", "value": "x"}],
        },
        {"id": "badrole", "conversations": [{"from": "bot", "value": "x"}]},
        {
            "id": "noimg",
            "image": "b.png",
            "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "x"}],
        },
    ]
    (tmp_path / "chat.json").write_text(json.dumps(records))
    with pytest.raises(DataError, match=r"chat\.json: record 2 \(id nomark\): has 0 <image> markers for 1 images"):
        read_llava(tmp_path / "chat.json")
    data = read_llava(tmp_path / "chat.json", skip_bad_records=True)
    assert [s.id for s in data] == ["ok", "text"] and data.skipped == 3
    assert data[0].turns == [("user", "<image>\nWhat is it?"), ("assistant", "A square.")]
    assert data[0].task == "chat" and data[1].images == []
    assert "b.png not found" in data.problems[-1] and "'from'" in data.problems[1]


def test_audiocaps_groups_rows_by_clip(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    _wav(audio / "abc_30.wav")
    (tmp_path / "val.csv").write_text(
        "audiocap_id,youtube_id,start_time,caption\n"
        "1,abc,30,A dog barks\n2,abc,30,Barking dog\n3,zzz,0,Rain falls\n4,abc,30,\n"
    )
    with pytest.raises(DataError, match=r"val\.csv: record row 4 \(audiocap_id 3\): no audio file"):
        read_audiocaps(tmp_path / "val.csv", audio)
    data = read_audiocaps(tmp_path / "val.csv", audio, skip_bad_records=True)
    assert data.skipped == 2
    (clip,) = data.samples
    assert clip.captions == ["A dog barks", "Barking dog"] and clip.audio == [audio / "abc_30.wav"]
    (tmp_path / "cols.csv").write_text("youtube_id,caption\nabc,x\n")
    with pytest.raises(DataError, match=r"cols\.csv: missing column\(s\) audiocap_id, start_time"):
        read_audiocaps(tmp_path / "cols.csv", audio)


def test_clotho_keeps_one_to_five_captions_and_skips_rows_without_any(tmp_path):
    _wav(tmp_path / "rain.wav")
    header = "file_name,caption_1,caption_2,caption_3,caption_4,caption_5\n"
    rows = "rain.wav,a,b,c,d,e\nrain.wav,a,b,,d,e\nrain.wav,,,,,\nnone.wav,a,b,c,d,e\n"
    (tmp_path / "c.csv").write_text(header + rows)
    data = read_clotho(tmp_path / "c.csv", tmp_path, skip_bad_records=True)
    assert [s.captions for s in data] == [["a", "b", "c", "d", "e"], ["a", "b", "d", "e"]] and data.skipped == 2
    with pytest.raises(DataError, match=r"c\.csv: record row 4 \(rain\.wav\): needs a file_name and at least one"):
        read_clotho(tmp_path / "c.csv", tmp_path)


@pytest.mark.parametrize("columns", [1, 3])
def test_clotho_subsets_with_fewer_caption_columns_read(tmp_path, columns):
    _wav(tmp_path / "rain.wav")
    header = ",".join(["file_name"] + [f"caption_{i}" for i in range(1, columns + 1)])
    row = ",".join(["rain.wav"] + [f"rain {i}" for i in range(1, columns + 1)])
    (tmp_path / "c.csv").write_text(f"{header}\n{row}\n")
    (sample,) = read_clotho(tmp_path / "c.csv", tmp_path)
    assert sample.captions == [f"rain {i}" for i in range(1, columns + 1)]


def test_easy_vqa_bundled_splits_read_offline():
    test = read_easy_vqa("test")
    assert len({s.images[0] for s in test}) == 1000
    assert all(len(s.answers) == 1 and s.question.endswith("?") for s in test.samples[:50])
    assert {s.answer_type for s in test} == {"yes/no", "other"}
    assert all((s.answer_type == "yes/no") == (s.answers[0] in ("yes", "no")) for s in test)
    assert test[0].images[0].is_file()
    with pytest.raises(DataError, match="no split 'dev'"):
        read_easy_vqa("dev")


def test_sample_media_loading_goes_through_the_encoders_checks(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not an image")
    _png(tmp_path / "ok.png")
    from mmrwkv.data.sample import Sample

    assert Sample(id="1", images=[tmp_path / "ok.png"]).load_images()[0].size == (4, 4)
    with pytest.raises(MediaError, match="broken.png"):
        Sample(id="2", images=[tmp_path / "broken.png"]).load_images()


def test_build_dataset_checks_path_roles_and_caps_size(vqa):
    paths = {"val": {"questions": "q.json", "images": "img"}}
    cfg = DataConfig(kind="vqav2", root=str(vqa), paths=paths, skip_bad_records=True)
    assert [s.id for s in build_dataset(cfg, "val")] == ["70"]
    with pytest.raises(DataError, match=r"data\.paths\.train: vqav2 needs roles .*missing \['questions'"):
        build_dataset(cfg, "train")
    cfg.paths["val"]["answers"] = "a.json"
    with pytest.raises(DataError, match=r"unknown \['answers'\]"):
        build_dataset(cfg, "val")
    easy = build_dataset(DataConfig(kind="easy_vqa", sizes={"val": 30}, seed=1), "val")
    again = build_dataset(DataConfig(kind="easy_vqa", sizes={"val": 30}, seed=1), "val")
    assert len(easy) == 30 and [s.id for s in easy] == [s.id for s in again]
