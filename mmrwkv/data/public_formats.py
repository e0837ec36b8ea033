"""Small datasets written in the public file formats (LLaVA JSON, COCO Karpathy split, VQAv2), with generated
images: the recipes' readers run on them exactly as on the real files. For tests and for measuring the training
path at scale (`python -m mmrwkv.data.public_formats llava OUT --images 5000 --size 336`).

Every image is a coloured shape on a coloured background, of varied aspect ratio; the texts say so.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 60),
    "blue": (40, 60, 220),
    "yellow": (235, 210, 40),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
SHAPES = ("circle", "square", "triangle")
# (width, height) ratios: square, landscape, portrait, panorama
ASPECTS = ((1, 1), (4, 3), (3, 4), (2, 1))


def _image(path: Path, rng: random.Random, size: int) -> tuple[str, str, str]:
    """Write one JPEG of a shape; returns (shape, colour, background colour)."""
    shape, colour, back = rng.choice(SHAPES), *rng.sample(sorted(COLOURS), 2)
    aw, ah = rng.choice(ASPECTS)
    width, height = max(8, size * aw // max(aw, ah)), max(8, size * ah // max(aw, ah))
    img = Image.new("RGB", (width, height), COLOURS[back])
    draw = ImageDraw.Draw(img)
    r = min(width, height) // 3
    cx, cy = width // 2, height // 2
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        draw.ellipse(box, fill=COLOURS[colour])
    elif shape == "square":
        draw.rectangle(box, fill=COLOURS[colour])
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=COLOURS[colour])
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="JPEG", quality=85)
    return shape, colour, back


def _caption(shape: str, colour: str, back: str) -> str:
    return f"A {colour} {shape} on a {back} background."


def write_llava(
    root: str | Path, n: int, *, size: int = 64, seed: int = 0, long_records: int = 0, text_only: int = 0
) -> dict[str, Path]:
    """LLaVA-Pretrain-style captions (`blip_laion_cc_sbu_558k.json` + images/00000/...) and a LLaVA-665K-style
    instruction mix (`llava_v1_5_mix665k.json` + images/coco/train2017/..., multi-turn, `text_only` records
    without an image, `long_records` records of ~2,300 tokens as LLaVA-665K has). Returns the paths by role."""
    root, rng = Path(root), random.Random(seed)
    pretrain, mix = [], []
    for i in range(n):
        rel = f"{i // 1000:05d}/{i:09d}.jpg"
        shape, colour, back = _image(root / "LLaVA-Pretrain/images" / rel, rng, size)
        pretrain.append(
            {
                "id": f"{i:09d}",
                "image": rel,
                "conversations": [
                    {
                        "from": "human",
                        "value": rng.choice(
                            [
                                "<image>\nRender a clear and concise summary of the photo.",
                                "Give a brief description of the image.\n<image>",
                            ]
                        ),
                    },
                    {"from": "gpt", "value": _caption(shape, colour, back).lower()},
                ],
            }
        )
        coco = f"coco/train2017/{i:012d}.jpg"
        shape, colour, back = _image(root / "images" / coco, rng, size)
        turns = [
            {"from": "human", "value": "<image>\nWhat shape is in the image?"},
            {"from": "gpt", "value": f"The image shows a {shape}."},
            {"from": "human", "value": "What colour is it?"},
            {"from": "gpt", "value": colour.capitalize()},
        ]
        mix.append({"id": f"mix-{i}", "image": coco, "model": "", "conversations": turns})
    for i in range(text_only):
        mix.append(
            {
                "id": f"text-{i}",
                "conversations": [
                    {"from": "human", "value": "Name a primary colour."},
                    {"from": "gpt", "value": rng.choice(["Red.", "Blue."])},
                ],
            }
        )
    mix += [_long_record(i, rng) for i in range(long_records)]
    rng.shuffle(mix)
    paths = {"pretrain": root / "LLaVA-Pretrain/blip_laion_cc_sbu_558k.json", "mix": root / "llava_v1_5_mix665k.json"}
    paths["pretrain"].write_text(json.dumps(pretrain))
    paths["mix"].write_text(json.dumps(mix))
    return paths


def _long_record(i: int, rng: random.Random) -> dict:
    """A LLaVA-665K-style record of ~2,300 World tokens (longer than LLaVA-1.5's 2,048)."""
    story = " ".join(rng.choice(sorted(COLOURS)) + " " + rng.choice(SHAPES) for _ in range(1100))
    turns = [{"from": "human", "value": "<image>\nList every shape you can imagine."}, {"from": "gpt", "value": story}]
    return {"id": f"long-{i}", "image": "coco/train2017/000000000000.jpg", "conversations": turns}


def write_vqav2(root: str | Path, split: str, n: int, *, size: int = 64, seed: int = 0) -> dict[str, Path]:
    """VQAv2 `v2_OpenEnded_mscoco_<split>2014_questions.json` + `v2_mscoco_<split>2014_annotations.json` (ten
    answers per question) with COCO-named images in `<split>2014/`."""
    root, rng = Path(root), random.Random(seed + 1)
    questions, annotations = [], []
    for i in range(n):
        image_id = 1000 + i
        shape, colour, back = _image(root / f"{split}2014/COCO_{split}2014_{image_id:012d}.jpg", rng, size)
        for j, (text, answer, kind) in enumerate(
            [("What shape is this?", shape, "other"), (f"Is the background {back}?", "yes", "yes/no")]
        ):
            qid = image_id * 10 + j
            questions.append({"image_id": image_id, "question": text, "question_id": qid})
            answers = [answer] * 8 + [rng.choice(SHAPES + ("no",)) for _ in range(2)]
            annotations.append(
                {
                    "question_id": qid,
                    "image_id": image_id,
                    "answer_type": kind,
                    "question_type": "what" if kind == "other" else "is the",
                    "multiple_choice_answer": answer,
                    "answers": [
                        {"answer": a, "answer_confidence": "yes", "answer_id": k + 1} for k, a in enumerate(answers)
                    ],
                }
            )
    info = {"info": {}, "license": {}, "data_subtype": f"{split}2014"}
    paths = {
        "questions": root / f"v2_OpenEnded_mscoco_{split}2014_questions.json",
        "annotations": root / f"v2_mscoco_{split}2014_annotations.json",
        "images": root / f"{split}2014",
    }
    paths["questions"].write_text(json.dumps({**info, "task_type": "Open-Ended", "questions": questions}))
    paths["annotations"].write_text(json.dumps({**info, "annotations": annotations}))
    return paths


def write_karpathy(root: str | Path, n: int, *, size: int = 64, seed: int = 0) -> Path:
    """Karpathy's `dataset_coco.json` (splits train / restval / val / test, five sentences per image) with the
    images in `train2014/` and `val2014/` under `root`; returns the JSON path."""
    root, rng = Path(root), random.Random(seed + 2)
    images = []
    for i in range(n):
        split = ("train", "restval", "val", "test")[i % 4]
        folder = "train2014" if split == "train" else "val2014"
        cocoid = 5000 + i
        name = f"COCO_{folder}_{cocoid:012d}.jpg"
        shape, colour, back = _image(root / folder / name, rng, size)
        raws = [
            _caption(shape, colour, back),
            f"a {shape} coloured {colour}",
            f"{colour} {shape} on {back}",
            f"there is a {colour} {shape}",
            f"a simple picture of a {shape}",
        ]
        sentences = [
            {"raw": r, "tokens": r.lower().strip(".").split(), "imgid": i, "sentid": i * 5 + k}
            for k, r in enumerate(raws)
        ]
        images.append(
            {
                "filepath": folder,
                "filename": name,
                "imgid": i,
                "split": split,
                "cocoid": cocoid,
                "sentids": [s["sentid"] for s in sentences],
                "sentences": sentences,
            }
        )
    path = root / "dataset_coco.json"
    path.write_text(json.dumps({"images": images, "dataset": "coco"}))
    return path


PITCHES = {"low": 220.0, "middle": 440.0, "high": 880.0}


def _clip(path: Path, rng: random.Random, seconds: float = 1.0) -> tuple[str, str]:
    """Write one 16 kHz mono WAV of a tone or a noise burst; returns (pitch word, kind)."""
    import numpy as np
    import soundfile

    rate = 16000
    t = np.arange(int(rate * seconds)) / rate
    pitch, kind = rng.choice(sorted(PITCHES)), rng.choice(["tone", "buzz"])
    wave = np.sin(2 * np.pi * PITCHES[pitch] * t)
    if kind == "buzz":
        wave = np.sign(wave)
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, (0.3 * wave).astype(np.float32), rate)
    return pitch, kind


def write_clotho(root: str | Path, split: str, n: int, *, seed: int = 0) -> dict[str, Path]:
    """Clotho's `clotho_captions_<split>.csv` (`file_name, caption_1..caption_5`) with the clips in `<split>/`;
    row i has 1 + i % 5 captions (the others empty), as subsets and user data often have fewer than five."""
    import csv

    root, rng = Path(root), random.Random(seed + 3)
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"clotho_captions_{split}.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name"] + [f"caption_{k}" for k in range(1, 6)])
        for i in range(n):
            name = f"clip {i:03d}.wav"
            pitch, kind = _clip(root / split / name, rng)
            captions = [
                f"a {pitch} {kind} plays",
                f"a steady {pitch} {kind}",
                f"one {kind} at a {pitch} pitch",
                f"a {kind} sounds",
                f"someone plays a {pitch} {kind}",
            ][: 1 + i % 5]
            writer.writerow([name] + captions + [""] * (5 - len(captions)))
    return {"csv": path, "audio": root / split}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmrwkv.data.public_formats", description=__doc__)
    parser.add_argument("format", choices=["llava", "vqav2", "karpathy"])
    parser.add_argument("out")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--size", type=int, default=336, help="long side of the images in pixels")
    args = parser.parse_args(argv)
    if args.format == "llava":
        print(write_llava(args.out, args.images, size=args.size))
    elif args.format == "vqav2":
        print(write_vqav2(args.out, "train", args.images, size=args.size))
    else:
        print(write_karpathy(args.out, args.images, size=args.size))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
