"""Synthetic audio clips: tones, chirps and noise bursts in sequence (16 kHz mono wav), several reference captions,
and questions about order, counts and pitch. Deterministic for a seed."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmrwkv.data.generated import counted, join_words, prepare, read_prepared
from mmrwkv.data.sample import Dataset

SAMPLE_RATE = 16000
KINDS = ("tone", "chirp", "noise")
PITCHES = {"low": (220.0, 400.0), "medium": (600.0, 900.0), "high": (1400.0, 2400.0)}
GENERATOR_VERSION = 1


@dataclass(frozen=True)
class Event:
    """One sound: kind, start time and duration (s), start/end frequency (Hz; equal for a tone), label word."""

    kind: str
    start: float
    duration: float
    f0: float
    f1: float
    label: str

    @property
    def noun(self) -> str:
        return "noise burst" if self.kind == "noise" else f"{self.label} {self.kind}"


def _event(rng: random.Random, start: float) -> Event:
    kind = rng.choice(KINDS)
    duration = rng.uniform(0.25, 0.5)
    if kind == "tone":
        label = rng.choice(list(PITCHES))
        freq = rng.uniform(*PITCHES[label])
        return Event(kind, start, duration, freq, freq, label)
    if kind == "chirp":
        label = rng.choice(("rising", "falling"))
        low, high = rng.uniform(250.0, 450.0), rng.uniform(1500.0, 2500.0)
        return Event(kind, start, duration, *((low, high) if label == "rising" else (high, low)), label)
    return Event(kind, start, duration, 0.0, 0.0, "noise")


def random_clip(rng: random.Random, max_events: int = 3) -> list[Event]:
    """1..max_events sounds one after another with short gaps."""
    events, t = [], 0.1
    for _ in range(rng.randint(1, max_events)):
        events.append(_event(rng, t))
        t += events[-1].duration + rng.uniform(0.1, 0.2)
    return events


def render_clip(events: list[Event], seed: int) -> np.ndarray:
    """Mono float32 waveform at 16 kHz, 10 ms fades on every event."""
    noise = np.random.default_rng(seed)
    end = max(e.start + e.duration for e in events) + 0.1
    wave = np.zeros(int(end * SAMPLE_RATE), dtype=np.float32)
    for e in events:
        n = int(e.duration * SAMPLE_RATE)
        t = np.arange(n) / SAMPLE_RATE
        if e.kind == "noise":
            sound = noise.uniform(-1.0, 1.0, n)
        else:
            # instantaneous frequency moves linearly from f0 to f1; phase is its integral
            phase = 2 * np.pi * (e.f0 * t + (e.f1 - e.f0) * t**2 / (2 * e.duration))
            sound = np.sin(phase)
        fade = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.01)
        begin = int(e.start * SAMPLE_RATE)
        wave[begin : begin + n] += (0.5 * sound * fade).astype(np.float32)
    return wave


def clip_captions(events: list[Event]) -> list[str]:
    """Several reference captions for one clip."""
    nouns = [counted(1, e.noun) for e in events]
    kinds = Counter("noise burst" if e.kind == "noise" else e.kind for e in events)
    captions = [
        " followed by ".join(nouns),
        f"{counted(len(events), 'sound')}: {join_words(nouns)}" if len(events) > 1 else f"a single {events[0].noun}",
        ", then ".join(nouns),
        join_words([counted(n, kind) for kind, n in kinds.items()]),
    ]
    return captions


def clip_questions(events: list[Event], rng: random.Random, per_clip: int = 4) -> list[list[str]]:
    """[question, answer, answer_type] triples about one clip."""
    kinds = Counter(e.kind for e in events)
    probe = rng.choice(KINDS)
    qa = [
        ["how many sounds are there?", str(len(events)), "number"],
        [
            f"how many {probe}s are there?" if probe != "noise" else "how many noise bursts are there?",
            str(kinds[probe]),
            "number",
        ],
        ["is there a noise burst?", "yes" if kinds["noise"] else "no", "yes/no"],
        ["what is the first sound?", events[0].kind, "other"],
    ]
    first = {}
    for e in events:
        first.setdefault(e.kind, e)
    if len(first) >= 2:
        a, b = rng.sample(sorted(first), 2)
        earlier = a if first[a].start < first[b].start else b
        qa.append([f"which came first, the {a} or the {b}?", earlier, "other"])
    tones = [e for e in events if e.kind == "tone"]
    if len(tones) >= 2:
        answer = "higher" if tones[1].f0 > tones[0].f0 else "lower"
        qa.append(["is the second tone higher or lower than the first?", answer, "other"])
    chirps = [e for e in events if e.kind == "chirp"]
    if chirps:
        qa.append(["does the chirp go up or down?", "up" if chirps[0].label == "rising" else "down", "other"])
    rng.shuffle(qa)
    return qa[:per_clip]


def _generate(folder: Path, params: dict[str, Any]) -> list[dict[str, Any]]:
    import soundfile

    rng = random.Random(f"tones-{params['seed']}-{params['split']}")
    items = []
    for i in range(params["size"]):
        events = random_clip(rng, params["max_events"])
        name = f"{i:06d}.wav"
        soundfile.write(folder / name, render_clip(events, rng.getrandbits(32)), SAMPLE_RATE, subtype="PCM_16")
        items.append(
            {
                "id": f"tones-{params['split']}-{i}",
                "file": name,
                "captions": clip_captions(events),
                "qa": clip_questions(events, rng, params["questions_per_clip"]),
                "events": [e.__dict__ for e in events],
            }
        )
    return items


def prepare_tones(
    root: str | Path, split: str, size: int, *, seed: int = 0, max_events: int = 3, questions_per_clip: int = 4
) -> Path:
    """Generate `size` clips for `split` under `root` (once; reused while the parameters match)."""
    params = {
        "generator": "tones",
        "version": GENERATOR_VERSION,
        "split": split,
        "size": size,
        "seed": seed,
        "max_events": max_events,
        "questions_per_clip": questions_per_clip,
    }
    return prepare(root, split, params, _generate)


def load_tones(
    root: str | Path,
    split: str,
    size: int,
    *,
    seed: int = 0,
    task: str = "both",
    skip_bad_records: bool = False,
    **options: Any,
) -> Dataset:
    """Prepare (if needed) and read the tones split: captioning and/or VQA samples. `options` go to
    `prepare_tones` (e.g. max_events)."""
    folder = prepare_tones(root, split, size, seed=seed, **options)
    return read_prepared(
        folder, name="tones", split=split, modality="audio", task=task, skip_bad_records=skip_bad_records
    )
