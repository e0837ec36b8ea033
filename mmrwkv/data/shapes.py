"""Synthetic scenes of coloured shapes on a 3x3 grid: PNG images, several reference captions, and questions
about colours, counts, positions and relative placement. Deterministic for a seed."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from mmrwkv.data.generated import NUMBER_WORDS, counted, join_words, prepare, read_prepared
from mmrwkv.data.sample import Dataset

SHAPES = ("circle", "square", "triangle", "diamond")
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 90, 230),
    "yellow": (235, 215, 40),
    "purple": (150, 60, 190),
    "white": (245, 245, 245),
}
ROWS = ("top", "middle", "bottom")
COLS = ("left", "center", "right")
BACKGROUND = (30, 30, 30)
GENERATOR_VERSION = 4


@dataclass(frozen=True)
class Obj:
    """One shape in a scene: kind, colour name, grid cell (row, col) and radius in pixels."""

    shape: str
    color: str
    row: int
    col: int
    radius: int

    @property
    def noun(self) -> str:
        return f"{self.color} {self.shape}"

    @property
    def place(self) -> str:
        return "center" if (self.row, self.col) == (1, 1) else f"{ROWS[self.row]} {COLS[self.col]}"


def random_scene(rng: random.Random, image_size: int, max_shapes: int = 4) -> list[Obj]:
    """1..max_shapes shapes in distinct grid cells."""
    cells = rng.sample([(r, c) for r in range(3) for c in range(3)], rng.randint(1, max_shapes))
    cell = image_size // 3
    return [
        Obj(rng.choice(SHAPES), rng.choice(list(COLORS)), r, c, rng.randint(cell * 3 // 10, cell * 9 // 20))
        for r, c in cells
    ]


def draw_scene(objects: list[Obj], image_size: int) -> Image.Image:
    """Render the scene as an RGB image."""
    img = Image.new("RGB", (image_size, image_size), BACKGROUND)
    pen = ImageDraw.Draw(img)
    cell = image_size / 3
    for obj in objects:
        x, y, s = (obj.col + 0.5) * cell, (obj.row + 0.5) * cell, obj.radius
        fill = COLORS[obj.color]
        if obj.shape == "circle":
            pen.ellipse((x - s, y - s, x + s, y + s), fill=fill)
        elif obj.shape == "square":
            pen.rectangle((x - s, y - s, x + s, y + s), fill=fill)
        elif obj.shape == "triangle":
            pen.polygon([(x, y - s), (x + s, y + s), (x - s, y + s)], fill=fill)
        else:
            pen.polygon([(x, y - s), (x + s, y), (x, y + s), (x - s, y)], fill=fill)
    return img


def reading_order(objects: list[Obj]) -> list[Obj]:
    """The objects as one reads the grid: rows top to bottom, each row left to right (the captions' order)."""
    return sorted(objects, key=lambda o: (o.row, o.col))


def _inventory(objects: list[Obj]) -> str:
    counts = Counter(obj.noun for obj in objects)
    return join_words([counted(n, noun) for noun, n in counts.items()])


def _relation(a: Obj, b: Obj) -> str:
    if a.col != b.col:
        return "to the left of" if a.col < b.col else "to the right of"
    return "above" if a.row < b.row else "below"


def scene_captions(objects: list[Obj]) -> list[str]:
    """Several reference captions for one scene, as COCO has five per image. Every one names the objects in
    reading order, so a caption is a function of the image: three place every object (in slightly different words),
    one counts them, and scenes of two or more shapes add one relation between the first two."""
    objects = reading_order(objects)
    n = len(objects)
    placed = join_words([f"{counted(1, o.noun)} in the {o.place}" for o in objects])
    captions = [
        placed,
        f"{counted(n, 'shape')}: {placed}" if n > 1 else f"a single {objects[0].noun} in the {objects[0].place}",
        join_words([f"{counted(1, o.noun)} at the {o.place}" for o in objects]),
        f"{NUMBER_WORDS[n]} {'shape' if n == 1 else 'shapes'} on a dark background: {_inventory(objects)}",
    ]
    if n >= 2:
        a, b = objects[0], objects[1]
        captions.append(f"{counted(1, a.noun)} {_relation(a, b)} {counted(1, b.noun)}")
    return captions


def _unique(objects: list[Obj]) -> list[Obj]:
    counts = Counter(o.noun for o in objects)
    return [o for o in objects if counts[o.noun] == 1]


def scene_questions(objects: list[Obj], rng: random.Random, per_scene: int = 4) -> list[list[str]]:
    """[question, answer, answer_type] triples about one scene, drawn from several templates."""
    shapes = Counter(o.shape for o in objects)
    probe_shape, probe_color = rng.choice(SHAPES), rng.choice(list(COLORS))
    present = rng.choice(objects)
    qa = [
        ["how many shapes are there?", str(len(objects)), "number"],
        [f"how many {probe_shape}s are there?", str(shapes[probe_shape]), "number"],
        [f"is there a {present.noun}?", "yes", "yes/no"],
        [f"what shape is in the {present.place}?", present.shape, "other"],
    ]
    absent = f"{probe_color} {probe_shape}"
    qa.append([f"is there a {absent}?", "yes" if absent in {o.noun for o in objects} else "no", "yes/no"])
    lone = [o for o in objects if shapes[o.shape] == 1]
    if lone:
        obj = rng.choice(lone)
        qa.append([f"what color is the {obj.shape}?", obj.color, "other"])
    unique = _unique(objects)
    if len(unique) >= 2:
        a, b = rng.sample(unique, 2)
        left = a.col < b.col
        if a.col != b.col:
            qa.append([f"is the {a.noun} left of the {b.noun}?", "yes" if left else "no", "yes/no"])
    rng.shuffle(qa)
    return qa[:per_scene]


def _generate(folder: Path, params: dict[str, Any]) -> list[dict[str, Any]]:
    rng = random.Random(f"shapes-{params['seed']}-{params['split']}")
    size = params["image_size"]
    items = []
    for i in range(params["size"]):
        objects = random_scene(rng, size, params["max_shapes"])
        name = f"{i:06d}.png"
        draw_scene(objects, size).save(folder / name, format="PNG")
        items.append(
            {
                "id": f"shapes-{params['split']}-{i}",
                "file": name,
                "captions": scene_captions(objects),
                "qa": scene_questions(objects, rng, params["questions_per_scene"]),
                "objects": [o.__dict__ for o in objects],
            }
        )
    return items


def prepare_shapes(
    root: str | Path,
    split: str,
    size: int,
    *,
    seed: int = 0,
    image_size: int = 96,
    max_shapes: int = 4,
    questions_per_scene: int = 4,
) -> Path:
    """Generate `size` scenes for `split` under `root` (once; reused while the parameters match)."""
    params = {
        "generator": "shapes",
        "version": GENERATOR_VERSION,
        "split": split,
        "size": size,
        "seed": seed,
        "image_size": image_size,
        "max_shapes": max_shapes,
        "questions_per_scene": questions_per_scene,
    }
    return prepare(root, split, params, _generate)


def load_shapes(
    root: str | Path,
    split: str,
    size: int,
    *,
    seed: int = 0,
    task: str = "both",
    skip_bad_records: bool = False,
    **options: Any,
) -> Dataset:
    """Prepare (if needed) and read the shapes split: captioning and/or VQA samples. `options` go to
    `prepare_shapes` (e.g. image_size)."""
    folder = prepare_shapes(root, split, size, seed=seed, **options)
    return read_prepared(
        folder, name="shapes", split=split, modality="image", task=task, skip_bad_records=skip_bad_records
    )
