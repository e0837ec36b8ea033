"""The one sample type every reader and generator yields, a dataset container, and bad-record handling."""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmrwkv.errors import DataError

log = logging.getLogger("mmrwkv.data")

CAPTION_PROMPTS = {"image": "Describe the image.", "audio": "Describe the sound."}


@dataclass
class Sample:
    """One example. A VQA sample has `question` + `answers` (10 human answers for VQAv2, one for easy-VQA);
    a captioning sample has `captions` (the reference captions); a conversation sample has `turns`
    ((role, text) pairs with `<image>` / `<audio>` markers where the media go). Media are file paths."""

    id: str
    images: list[Path] = field(default_factory=list)
    audio: list[Path] = field(default_factory=list)
    question: str | None = None
    answers: list[str] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)
    turns: list[tuple[str, str]] = field(default_factory=list)
    answer_type: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def task(self) -> str:
        """The kind of sample: "vqa", "caption" or "chat"."""
        if self.turns:
            return "chat"
        return "vqa" if self.question is not None else "caption"

    @property
    def answer(self) -> str | None:
        """The training target of a VQA sample: VQAv2's `multiple_choice_answer` when the annotation has one,
        else the most common human answer (first on ties)."""
        if not self.answers:
            return None
        official = self.meta.get("multiple_choice_answer")
        if isinstance(official, str) and official.strip():
            return official.strip()
        return Counter(self.answers).most_common(1)[0][0]

    def conversation(self, rng: random.Random | None = None) -> list[tuple[str, str]]:
        """(role, text) turns for training or prompting; media markers lead the first user turn.

        Captioning samples pick one reference caption (at random when `rng` is given, else the first).
        """
        if self.turns:
            return list(self.turns)
        markers = "".join("<image>" for _ in self.images) + "".join("<audio>" for _ in self.audio)
        if self.task == "vqa":
            return [("user", f"{markers}{self.question}"), ("assistant", self.answer or "")]
        modality = "audio" if self.audio and not self.images else "image"
        caption = rng.choice(self.captions) if rng is not None and self.captions else (self.captions or [""])[0]
        return [("user", f"{markers}{CAPTION_PROMPTS[modality]}"), ("assistant", caption)]

    def load_images(self, *, max_pixels: int | None = None) -> list:
        """Load the images as RGB PIL images through the encoders' checked loader (MediaError on bad files)."""
        from mmrwkv.encoders.media import load_image

        kwargs = {} if max_pixels is None else {"max_pixels": max_pixels}
        return [load_image(path, **kwargs) for path in self.images]

    def load_audio(self, *, sample_rate: int = 16000, max_seconds: float | None = None) -> list:
        """Load the audio clips through the encoders' checked loader (MediaError on bad files)."""
        from mmrwkv.encoders.media import load_audio

        kwargs = {} if max_seconds is None else {"max_seconds": max_seconds}
        return [load_audio(path, sample_rate=sample_rate, **kwargs) for path in self.audio]


@dataclass
class Dataset:
    """The samples of one split, and how many bad records were skipped reading it."""

    name: str
    split: str
    samples: list[Sample]
    skipped: int = 0
    problems: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample:
        return self.samples[index]

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def subset(self, size: int | None, seed: int = 0) -> Dataset:
        """A seeded random subset of `size` samples in their original order (all of them when size is None)."""
        if size is None or size >= len(self.samples):
            return self
        keep = sorted(random.Random(seed).sample(range(len(self.samples)), size))
        return Dataset(self.name, self.split, [self.samples[i] for i in keep], self.skipped, self.problems)


class BadRecords:
    """Collects malformed records of one source: raises at once, or (skip=True) counts and logs them."""

    def __init__(self, source: str | Path, *, skip: bool = False):
        self.source = str(source)
        self.skip = skip
        self.problems: list[str] = []

    @property
    def count(self) -> int:
        return len(self.problems)

    def bad(self, record: str | int, problem: str) -> None:
        """Report record `record` (an index or id) as bad; raise DataError unless skipping."""
        message = f"{self.source}: record {record}: {problem}"
        if not self.skip:
            raise DataError(message)
        self.problems.append(message)

    def finish(self, name: str, split: str, samples: list[Sample]) -> Dataset:
        """Build the Dataset; log one warning line when records were skipped."""
        if self.problems:
            log.warning("skipped %d bad records in %s (first: %s)", self.count, self.source, self.problems[0])
        return Dataset(name, split, samples, self.count, list(self.problems))


def require_file(path: str | Path, what: str) -> Path:
    """Return `path` when it is an existing file; raise DataError naming it otherwise."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} {path}: file not found")
    return path


def require_dir(path: str | Path, what: str) -> Path:
    """Return `path` when it is an existing folder; raise DataError naming it otherwise."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{what} {path}: folder not found")
    return path
