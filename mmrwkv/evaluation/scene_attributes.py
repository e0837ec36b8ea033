"""Per-attribute accuracy of generated scene captions against the scene generator's truth (`mmrwkv.data.shapes`).

Caption metrics cannot tell which words a model gets wrong: a model that names every shape "triangle" still scores
CIDEr-D 268 on the scenes, because places and colours carry most n-grams. Every caption form the generator writes
names the objects in reading order (rows top to bottom, each left to right), so the i-th "COLOUR SHAPE" phrase of a
prediction is scored against the i-th true object in reading order, colour and shape separately; an object the
caption does not reach counts wrong for both. Places are scored where the caption gives one ("in/at the PLACE").

    python -m mmrwkv.evaluation.scene_attributes runs/x/eval-test/predictions.json data/shapes/test/manifest.json
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

from mmrwkv.data.shapes import COLORS, SHAPES, Obj, reading_order
from mmrwkv.errors import DataError

_PLACE = r"center|(?:top|middle|bottom)\s+(?:left|center|right)"
_NOUN = re.compile(
    rf"\b({'|'.join(COLORS)})\s+({'|'.join(SHAPES)})s?\b(?:\s+(?:in|at)\s+the\s+({_PLACE}))?"
)


def scene_attribute_accuracy(predictions: Mapping[str, str], objects: Mapping[str, Sequence[Obj]]) -> dict:
    """Colour / shape / place accuracy of `predictions` (id -> caption) against `objects` (id -> scene objects).

    Returns fractions over all true objects (`colour`, `shape`), over the objects given a place (`place`; None
    when no caption gives a place), the fraction of scenes whose colour-shape phrases are exactly right and in order
    (`scenes_exact`), the counts behind them and `shape_confusion[truth][predicted]`.
    """
    missing = sorted(set(predictions) - set(objects))
    if missing:
        raise DataError(f"scene attributes: no truth for prediction ids {missing[:5]} ({len(missing)} in all)")
    n, confusion = Counter(), {s: Counter() for s in SHAPES}
    for sid, text in predictions.items():
        said = _NOUN.findall(text.lower())
        truth = reading_order(list(objects[sid]))
        n["scenes"] += 1
        n["scenes_exact"] += [(c, s) for c, s, _ in said] == [(o.color, o.shape) for o in truth]
        for obj, phrase in zip(truth, said + [None] * (len(truth) - len(said)), strict=False):
            n["objects"] += 1
            if phrase is None:
                continue
            color, shape, where = phrase
            n["named"] += 1
            n["colour_ok"] += color == obj.color
            n["shape_ok"] += shape == obj.shape
            confusion[obj.shape][shape] += 1
            if where:
                n["placed"] += 1
                n["place_ok"] += re.sub(r"\s+", " ", where) == obj.place
    total = max(n["objects"], 1)
    return {
        "scenes": n["scenes"],
        "objects": n["objects"],
        "named": n["named"],
        "colour": n["colour_ok"] / total,
        "shape": n["shape_ok"] / total,
        "place": n["place_ok"] / n["placed"] if n["placed"] else None,
        "placed": n["placed"],
        "scenes_exact": n["scenes_exact"] / max(n["scenes"], 1),
        "shape_confusion": {s: dict(confusion[s]) for s in SHAPES},
    }


def load_truth(manifest: str | Path) -> dict[str, list[Obj]]:
    """id -> objects of a prepared shapes split (its `manifest.json`)."""
    path = Path(manifest)
    try:
        items = json.loads(path.read_text(encoding="utf-8"))["items"]
        return {str(it["id"]): [Obj(**o) for o in it["objects"]] for it in items}
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise DataError(f"{path}: not a shapes manifest with objects ({err})") from None


def load_predictions(path: str | Path) -> dict[str, str]:
    """id -> prediction of an evaluation's `predictions.json`."""
    try:
        return {str(p["id"]): str(p["prediction"]) for p in json.loads(Path(path).read_text(encoding="utf-8"))}
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise DataError(f"{path}: not a predictions.json list with id and prediction ({err})") from None


def format_report(result: dict) -> str:
    """A few lines of text for `result`."""
    lines = [
        f"scenes {result['scenes']}, true objects {result['objects']}, named by the captions {result['named']}",
        f"colour {result['colour']:.3f} (chance {1 / len(COLORS):.3f}), shape {result['shape']:.3f} "
        f"(chance {1 / len(SHAPES):.3f}), place {result['place'] or 0:.3f} of {result['placed']} placed, "
        f"scenes exactly right {result['scenes_exact']:.3f}",
        "shape confusion (truth: predicted):",
    ]
    for shape, row in result["shape_confusion"].items():
        lines.append(f"  {shape:9s} " + "  ".join(f"{s}:{row.get(s, 0)}" for s in SHAPES))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m mmrwkv.evaluation.scene_attributes PREDICTIONS.json MANIFEST.json", file=sys.stderr)
        return 2
    print(format_report(scene_attribute_accuracy(load_predictions(args[0]), load_truth(args[1]))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
