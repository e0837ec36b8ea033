"""Caption tasks on Karpathy's splits (`caption_datasets.zip`): Flickr30k test (1,000 images,
`dataset_flickr30k.json` + `flickr30k-images/`) and COCO test (5,000 images, `dataset_coco.json` + the COCO
root holding val2014/). Images of a split file are `<images>/<filepath>/<filename>` (`filepath` absent for
Flickr30k); references are the `raw` sentences.

Metric: the COCO caption metrics (PTB tokenizer, BLEU-1..4, METEOR, ROUGE-L, CIDEr-D; SPICE unavailable
offline), x100. Prompt: lmms-eval's caption prompt.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from mmrwkv.data.sample import Sample
from mmrwkv.evaluation.captions import caption_metrics
from mmrwkv.evaluation.tasks.base import Task, check_predictions, turns, user_text
from mmrwkv.evaluation.tasks.nocaps import CAPTION_METRICS, CAPTION_PROMPT


def read_karpathy_test(paths: dict[str, Path], prompt: str) -> list[Sample]:
    """The test images of a Karpathy split file, with the task's caption prompt."""
    from mmrwkv.data.readers import read_coco_karpathy

    dataset = read_coco_karpathy(paths["karpathy"], paths["images"], split="test")
    for s in dataset.samples:
        s.turns = turns(user_text("", prompt))
    return dataset.samples


def score_captions(samples: list[Sample], predictions: Mapping[str, str], *, tokenizer: str = "auto") -> dict:
    """The COCO caption metrics of the predictions."""
    check_predictions(samples, predictions)
    result = caption_metrics(
        {s.id: predictions[s.id] for s in samples},
        {s.id: s.captions for s in samples},
        metrics=CAPTION_METRICS,
        tokenizer=tokenizer,
    )
    return {k: result[k] for k in ("metrics", "per_sample", "tokenizer", "scale", "unavailable")}


FLICKR30K = Task(
    name="flickr30k",
    description="Flickr30k Karpathy test (1,000 images), COCO caption metrics",
    split="test",
    files={"karpathy": "dataset_flickr30k.json", "images": "flickr30k-images"},
    source="dataset_flickr30k.json from https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip"
    "; images: https://shannon.cs.illinois.edu/DenotationGraph/ (flickr30k-images)",
    prompt=CAPTION_PROMPT,
    read=read_karpathy_test,
    score=score_captions,
    primary="CIDEr-D",
    max_tokens=48,
    captions=True,
)

COCO_KARPATHY = Task(
    name="coco_karpathy",
    description="COCO captions Karpathy test (5,000 images), COCO caption metrics",
    split="test",
    files={"karpathy": "dataset_coco.json", "images": "."},
    source="dataset_coco.json from https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip "
    "beside COCO's val2014/ (https://cocodataset.org/#download)",
    prompt=CAPTION_PROMPT,
    read=read_karpathy_test,
    score=score_captions,
    primary="CIDEr-D",
    max_tokens=48,
    captions=True,
)
