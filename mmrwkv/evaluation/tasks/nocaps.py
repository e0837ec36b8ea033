"""NoCaps val: `nocaps_val_4500_captions.json` is COCO-style: `images` [{id, file_name, open_images_id, domain:
in-domain | near-domain | out-domain}] and `annotations` [{image_id, caption}] (10 per image); images are
`val/<file_name>` (Open Images validation images).

Metric: the COCO caption metrics (PTB tokenizer, BLEU, METEOR, ROUGE-L, CIDEr-D; SPICE unavailable offline)
overall, and CIDEr-D per domain computed as the NoCaps evaluation does, on each domain's images alone (CIDEr-D's
document frequencies come from the evaluated references, so a domain's value is not a slice of the overall
one). x100. Prompt: lmms-eval's caption prompt.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from mmrwkv.data.sample import Sample, require_dir
from mmrwkv.errors import DataError
from mmrwkv.evaluation.captions import caption_metrics
from mmrwkv.evaluation.tasks.base import Task, check_predictions, field_of, read_json, turns, user_text

DOMAINS = ("in-domain", "near-domain", "out-domain")
CAPTION_PROMPT = "Provide a one-sentence caption for the provided image."
CAPTION_METRICS = ("bleu", "meteor", "rouge_l", "cider", "spice")


def read_nocaps(paths: dict[str, Path], prompt: str) -> list[Sample]:
    """One sample per image with its reference captions and domain."""
    source = paths["captions"]
    doc = read_json(source, "NoCaps captions file")
    images = field_of(doc, "images", list, str(source), "(top level)")
    annotations = field_of(doc, "annotations", list, str(source), "(top level)")
    folder = require_dir(paths["images"], "NoCaps image folder")
    refs: dict = {}
    for i, ann in enumerate(annotations):
        caption = field_of(ann, "caption", str, str(source), f"annotations[{i}]")
        refs.setdefault(ann.get("image_id"), []).append(" ".join(caption.split()))
    samples = []
    for i, image in enumerate(images):
        image_id = field_of(image, "id", (int, str), str(source), f"images[{i}]")
        name = field_of(image, "file_name", str, str(source), f"images[{i}]")
        domain = field_of(image, "domain", str, str(source), f"images[{i}]")
        if domain not in DOMAINS:
            raise DataError(f"{source}: record images[{i}]: domain {domain!r} is not one of {', '.join(DOMAINS)}")
        if not (folder / name).is_file():
            raise DataError(f"{source}: record images[{i}]: image file {folder / name} not found")
        samples.append(
            Sample(
                id=str(image_id),
                images=[folder / name],
                captions=refs.get(image_id, []),
                answer_type=domain,
                turns=turns(user_text("", prompt)),
                meta={"open_images_id": image.get("open_images_id")},
            )
        )
    return samples


def score_nocaps(samples: list[Sample], predictions: Mapping[str, str], *, tokenizer: str = "auto") -> dict:
    """Caption metrics overall and CIDEr-D per domain ("CIDEr-D/in-domain", ...)."""
    check_predictions(samples, predictions)
    scored = [s for s in samples if s.captions]
    overall = caption_metrics(
        {s.id: predictions[s.id] for s in scored},
        {s.id: s.captions for s in scored},
        metrics=CAPTION_METRICS,
        tokenizer=tokenizer,
    )
    metrics = dict(overall["metrics"])
    for domain in DOMAINS:
        part = [s for s in scored if s.answer_type == domain]
        if part:
            cider = caption_metrics(
                {s.id: predictions[s.id] for s in part},
                {s.id: s.captions for s in part},
                metrics=("cider",),
                tokenizer=tokenizer,
            )
            metrics[f"CIDEr-D/{domain}"] = cider["metrics"]["CIDEr-D"]
    return {
        "metrics": metrics,
        "per_sample": overall["per_sample"],
        "tokenizer": overall["tokenizer"],
        "scale": overall["scale"],
        "unavailable": overall["unavailable"],
    }


TASK = Task(
    name="nocaps",
    description="NoCaps val, CIDEr-D overall and per domain (in / near / out), COCO caption metrics",
    split="val",
    files={"captions": "nocaps_val_4500_captions.json", "images": "val"},
    source="https://nocaps.org/download (nocaps_val_4500_captions.json; images from Open Images V4 validation "
    "by open_images_id)",
    prompt=CAPTION_PROMPT,
    read=read_nocaps,
    score=score_nocaps,
    primary="CIDEr-D",
    max_tokens=48,
    captions=True,
)
