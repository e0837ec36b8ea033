"""Tiny benchmark files in each benchmark's official layout (one root, one folder per task, as `--suite`
reads them), the replies whose scores the task tests compute by hand, and a tiny saved checkpoint."""

import base64
import io
import json

import pytest
import torch
from PIL import Image


def _image(path, color=(200, 30, 30), fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), color).save(path, format=fmt)
    return path


def _json(path, data, lines=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(json.dumps(r) for r in data) + "\n" if lines else json.dumps(data)
    path.write_text(text, encoding="utf-8")


def write_gqa(root):
    _image(root / "images" / "n161313.jpg")
    _image(root / "images" / "2354786.jpg", (0, 90, 200))
    types = {
        "verify": {"structural": "verify", "semantic": "obj", "detailed": "existThat"},
        "query": {"structural": "query", "semantic": "rel", "detailed": "relS"},
    }
    _json(
        root / "testdev_balanced_questions.json",
        {
            "20968434": {
                "imageId": "n161313",
                "question": "Is there a dog?",
                "answer": "no",
                "fullAnswer": "No.",
                "types": types["verify"],
                "isBalanced": True,
                "groups": {"global": None, "local": "x"},
                "entailed": [],
                "equivalent": ["20968434"],
                "annotations": {},
                "semantic": [],
                "semanticStr": "",
            },
            "201640614": {
                "imageId": "2354786",
                "question": "Is the sky blue?",
                "answer": "yes",
                "fullAnswer": "Yes.",
                "types": types["verify"],
            },
            "20968435": {
                "imageId": "n161313",
                "question": "Which side is the cup on?",
                "answer": "left",
                "fullAnswer": "The cup is on the left.",
                "types": types["query"],
            },
        },
    )


GQA_REPLIES = {"20968434": "No.", "201640614": "Yes", "20968435": "the left"}

# two hex ids that share their trailing digits: a trailing-number index would map both to image 5
TEXTVQA_IDS = ("0054c91397f2fe05", "1f00ab2c3d4e5f05")


def write_textvqa(root):
    for i, image_id in enumerate(TEXTVQA_IDS):
        _image(root / "train_images" / f"{image_id}.jpg", (i * 100, 50, 50))
    records = [
        {
            "question": "what brand is the drink?",
            "image_id": TEXTVQA_IDS[0],
            "image_classes": ["Bottle"],
            "flickr_original_url": "https://example.org/a.jpg",
            "flickr_300k_url": "https://example.org/a3.jpg",
            "image_width": 16,
            "image_height": 16,
            "answers": ["Coca-Cola"] * 3 + ["coke"] * 7,
            "question_tokens": ["what", "brand", "is", "the", "drink"],
            "question_id": 34602,
            "set_name": "val",
        },
        {
            "question": "what does the sign say?",
            "image_id": TEXTVQA_IDS[1],
            "image_classes": ["Sign"],
            "image_width": 16,
            "image_height": 16,
            "answers": ["Stop"] * 2 + ["stop sign"] * 8,
            "question_tokens": ["what", "does", "the", "sign", "say"],
            "question_id": 34603,
            "set_name": "val",
        },
    ]
    _json(
        root / "TextVQA_0.5.1_val.json",
        {"dataset_type": "val", "dataset_name": "textvqa", "dataset_version": "0.5.1", "data": records},
    )


TEXTVQA_REPLIES = {"34602": "coca cola", "34603": "STOP"}


def write_textvqa_ocr(root):
    """LLaVA's question file (OCR tokens in the prompt, its prompt line last) beside the official files."""
    write_textvqa(root)
    texts = {34602: "what brand is the drink?\nReference OCR token: Coca, Cola", 34603: "what does the sign say?"}
    _json(
        root / "llava_textvqa_val_v051_ocr.jsonl",
        [
            {"question_id": qid, "image": f"{image}.jpg", "text": f"{text}\n{SHORT}", "category": "default"}
            for (qid, text), image in zip(texts.items(), TEXTVQA_IDS, strict=True)
        ],
        lines=True,
    )


SHORT = "Answer the question using a single word or phrase."


def write_pope(root):
    _image(root / "val2014" / "COCO_val2014_000000310196.jpg")
    _image(root / "val2014" / "COCO_val2014_000000210789.jpg", (10, 200, 10))
    images = ["COCO_val2014_000000310196.jpg", "COCO_val2014_000000210789.jpg"]
    rows = [("snowboard", "yes"), ("person", "yes"), ("dog", "no"), ("car", "no")]
    _json(
        root / "coco_pope_random.json",
        [
            {"question_id": i + 1, "image": images[i % 2], "text": f"Is there a {obj} in the image?", "label": label}
            for i, (obj, label) in enumerate(rows)
        ],
        lines=True,
    )
    _json(
        root / "coco_pope_popular.json",
        [
            {"question_id": 1, "image": images[0], "text": "Is there a chair in the image?", "label": "yes"},
            {"question_id": 2, "image": images[1], "text": "Is there a cup in the image?", "label": "no"},
        ],
        lines=True,
    )


POPE_REPLIES = {
    "random-1": "Yes, there is.",
    "random-2": "No.",
    "random-3": "There is not a dog",
    "random-4": "no",
    "popular-1": "I think so",
    "popular-2": "Yes",
}


def write_scienceqa(root):
    base = {
        "lecture": "",
        "solution": "",
        "task": "closed choice",
        "grade": "grade3",
        "category": "c",
        "skill": "s",
        "topic": "t",
    }
    problems = {
        "1": {
            **base,
            "question": "Which animal can fly?",
            "choices": ["dog", "bird", "fish"],
            "answer": 1,
            "hint": "Look at the picture.",
            "image": "image.png",
            "subject": "natural science",
            "split": "test",
        },
        "2": {
            **base,
            "question": "Which word rhymes with cat?",
            "choices": ["hat", "dog"],
            "answer": 0,
            "hint": "",
            "image": None,
            "subject": "language science",
            "split": "test",
        },
        "3": {
            **base,
            "question": "Which is a map of Ohio?",
            "choices": ["this one", "that one"],
            "answer": 0,
            "hint": "",
            "image": "image.png",
            "subject": "social science",
            "split": "test",
        },
        "4": {
            **base,
            "question": "Train question?",
            "choices": ["a", "b"],
            "answer": 0,
            "hint": "",
            "image": "image.png",
            "subject": "natural science",
            "split": "train",
        },
    }
    _json(root / "problems.json", problems)
    _json(root / "pid_splits.json", {"train": ["4"], "val": [], "test": ["1", "2", "3"]})
    for pid in ("1", "3"):
        _image(root / "test" / pid / "image.png", fmt="PNG")


SCIENCEQA_REPLIES = {"1": "B. bird", "3": "A map"}


def _b64_image(color) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buffer, format="JPEG")
    return base64.b64encode(buffer.getvalue()).decode()


def write_mmbench(root):
    header = "index|question|hint|A|B|C|D|answer|category|image|source|l2-category|comment|split".split("|")
    rows = [
        f"0|What color is the square?|nan|blue|green|red|white|C|attribute_recognition|{_b64_image((200, 30, 30))}"
        "|synthetic|finegrained_perception|nan|dev".split("|"),
        # MMBench stores an image once: a short number in `image` names the row that holds it
        "1|Is the square red?|The picture shows one shape.|yes|no|nan|nan|A|logical_reasoning|0|synthetic|reasoning"
        "|nan|dev".split("|"),
    ]
    root.mkdir(parents=True, exist_ok=True)
    (root / "mmbench_dev_20230712.tsv").write_text(
        "\n".join("\t".join(r) for r in [header, *rows]) + "\n", encoding="utf-8"
    )


# question 0 right in all four rounds (its answer moves C, B, A, D), question 1 right only in round 0
MMBENCH_REPLIES = {"0": "C", "1000000": "B.", "2000000": "(A)", "3000000": "D) red", "1": "A", "1000001": "A"}


def write_mme(root):
    mme = root / "MME_Benchmark_release_version"
    _image(mme / "existence" / "000000006040.jpg")
    (mme / "existence" / "000000006040.txt").write_text(
        "Is there a train in this image? Please answer yes or no.\tYes\n"
        "Is there a bed in this image? Please answer yes or no.\tNo\n",
        encoding="utf-8",
    )
    _image(mme / "artwork" / "images" / "10002.jpg")
    (mme / "artwork" / "questions_answers_YN").mkdir(parents=True)
    (mme / "artwork" / "questions_answers_YN" / "10002.txt").write_text(
        "Does this artwork exist in the form of painting? Please answer yes or no.\tYes\n"
        "Does this artwork exist in the form of glassware? Please answer yes or no.\tNo\n",
        encoding="utf-8",
    )
    _image(mme / "code_reasoning" / "0020.png", fmt="PNG")
    (mme / "code_reasoning" / "0020.txt").write_text(
        "Is a c++ code shown in the picture? Please answer yes or no.\tYes\n"
        "Is a python code shown in the picture? Please answer yes or no.\tNo\n",
        encoding="utf-8",
    )


MME_REPLIES = {
    "existence/000000006040/0": "Yes",
    "existence/000000006040/1": "No, there is not.",
    "artwork/10002/0": "yes",
    "artwork/10002/1": "Yes",
    "code_reasoning/0020/0": "n",
    "code_reasoning/0020/1": "Not sure",
}

# every word is unique to its image, so an exact caption scores CIDEr-D 10 * (1 + 1 + 0 + 0) / 4 = 5 (x100: 500)
NOCAPS_REFS = {0: "red car", 1: "blue boat", 2: "green tree", 3: "small house", 4: "old dog", 5: "tall man"}
NOCAPS_DOMAINS = {0: "in-domain", 1: "in-domain", 2: "near-domain", 3: "near-domain", 4: "out-domain", 5: "out-domain"}


def write_nocaps(root):
    images, annotations = [], []
    for i, ref in NOCAPS_REFS.items():
        name = f"{i:04x}ea2087020901.jpg"
        _image(root / "val" / name, (i * 40, 80, 80))
        images.append(
            {
                "id": i,
                "file_name": name,
                "open_images_id": name[:-4],
                "height": 16,
                "width": 16,
                "coco_url": f"https://example.org/{name}",
                "domain": NOCAPS_DOMAINS[i],
                "license": 0,
            }
        )
        annotations += [{"image_id": i, "id": 10 * i + k, "caption": ref.capitalize() + "."} for k in range(2)]
    _json(
        root / "nocaps_val_4500_captions.json",
        {"info": {}, "licenses": [], "images": images, "annotations": annotations},
    )


NOCAPS_REPLIES = {"0": "red car", "1": "blue boat", "2": "xx yy", "3": "qq zz", "4": "old dog", "5": "ww vv"}


def write_flickr30k(root):
    images = []
    for imgid, (name, split, ref) in enumerate(
        [
            ("1000092795.jpg", "test", "dog running"),
            ("10002456.jpg", "test", "man sitting"),
            ("1000268201.jpg", "train", "child playing"),
        ]
    ):
        _image(root / "flickr30k-images" / name, (imgid * 60, 20, 20))
        sentences = [
            {"tokens": ref.split(), "raw": ref.capitalize() + ".", "imgid": imgid, "sentid": 5 * imgid + k}
            for k in range(5)
        ]
        images.append(
            {
                "sentids": [s["sentid"] for s in sentences],
                "imgid": imgid,
                "sentences": sentences,
                "split": split,
                "filename": name,
            }
        )
    _json(root / "dataset_flickr30k.json", {"images": images, "dataset": "flickr30k"})


FLICKR30K_REPLIES = {"0": "dog running", "1": "woman standing"}


def write_vqav2(root):
    _image(root / "val2014" / "COCO_val2014_000000000042.jpg")
    _json(
        root / "v2_OpenEnded_mscoco_val2014_questions.json",
        {
            "info": {},
            "task_type": "Open-Ended",
            "data_type": "mscoco",
            "license": {},
            "data_subtype": "val2014",
            "questions": [
                {"image_id": 42, "question": "Is it red?", "question_id": 420},
                {"image_id": 42, "question": "How many squares?", "question_id": 421},
            ],
        },
    )
    _json(
        root / "v2_mscoco_val2014_annotations.json",
        {
            "annotations": [
                {
                    "question_id": 420,
                    "image_id": 42,
                    "answer_type": "yes/no",
                    "question_type": "is it",
                    "multiple_choice_answer": "yes",
                    "answers": [{"answer": "yes", "answer_confidence": "yes", "answer_id": k + 1} for k in range(10)],
                },
                {
                    "question_id": 421,
                    "image_id": 42,
                    "answer_type": "number",
                    "question_type": "how many",
                    "multiple_choice_answer": "3",
                    "answers": [
                        {"answer": a, "answer_confidence": "yes", "answer_id": k + 1}
                        for k, a in enumerate(["2"] * 3 + ["3"] * 7)
                    ],
                },
            ]
        },
    )


VQAV2_REPLIES = {"420": "Yes", "421": "two"}


def write_vqav2_testdev(root):
    _image(root / "test2015" / "COCO_test2015_000000000001.jpg")
    questions = [
        {"image_id": 1, "question": "What is it?", "question_id": 10},
        {"image_id": 1, "question": "How many?", "question_id": 11},
    ]
    _json(root / "v2_OpenEnded_mscoco_test-dev2015_questions.json", {"questions": questions})
    _json(
        root / "v2_OpenEnded_mscoco_test2015_questions.json",
        {"questions": questions + [{"image_id": 1, "question": "Why?", "question_id": 12}]},
    )


VQAV2_TESTDEV_REPLIES = {"10": "A Square.", "11": "Two"}

WRITERS = {
    "gqa": write_gqa,
    "textvqa": write_textvqa,
    "textvqa_ocr": write_textvqa_ocr,
    "pope": write_pope,
    "scienceqa_img": write_scienceqa,
    "mmbench_dev": write_mmbench,
    "mme": write_mme,
    "nocaps": write_nocaps,
    "flickr30k": write_flickr30k,
    "vqav2_val": write_vqav2,
    "vqav2_testdev": write_vqav2_testdev,
}
REPLIES = {
    "gqa": GQA_REPLIES,
    "textvqa": TEXTVQA_REPLIES,
    "textvqa_ocr": TEXTVQA_REPLIES,
    "pope": POPE_REPLIES,
    "scienceqa_img": SCIENCEQA_REPLIES,
    "mmbench_dev": MMBENCH_REPLIES,
    "mme": MME_REPLIES,
    "nocaps": NOCAPS_REPLIES,
    "flickr30k": FLICKR30K_REPLIES,
    "vqav2_val": VQAV2_REPLIES,
    "vqav2_testdev": VQAV2_TESTDEV_REPLIES,
}


@pytest.fixture(scope="session")
def bench_root(tmp_path_factory):
    """One data root holding every benchmark in its official layout, one folder per task."""
    root = tmp_path_factory.mktemp("benchmarks")
    for name, write in WRITERS.items():
        write(root / name)
    return root


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    # decoded MMBench images go to the test's own folder, never the user's cache (XDG_CACHE_HOME itself stays:
    # the native decode step's build cache lives there)
    from mmrwkv.evaluation.tasks import mmbench

    monkeypatch.setattr(mmbench, "cache_root", lambda: tmp_path / "mmbench-cache")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A saved 1-layer C=32 v7 with a 16 px tiny CNN and a 300-token BPE: real generation in a second."""
    from mmrwkv.multimodal import MultimodalRWKV
    from mmrwkv.tokenizer import train_bpe

    folder = tmp_path_factory.mktemp("tiny")
    tokenizer = folder / "tokenizer.json"
    texts = ["User: Is there a dog in the image?\n\nAssistant: yes\n\n", "A red car. B. no. C) two"] * 20
    train_bpe(texts, 300, tokenizer)
    torch.manual_seed(0)
    model = MultimodalRWKV.from_config(
        {
            "backbone": {"size": "v7-tiny", "n_layer": 1, "n_embd": 32, "head_size": 16, "vocab_size": 300},
            "tokenizer": str(tokenizer),
            "encoders": {"image": {"name": "tiny_cnn", "kwargs": {"image_size": 16, "width": 8, "grid": 2}}},
            "projectors": {"image": {"kind": "linear"}},
        }
    )
    return model.save(folder / "model")


@pytest.fixture(scope="session")
def replies():
    """{task: {sample id: reply}}: the scripted replies of the hand-computed task tests."""
    return REPLIES
