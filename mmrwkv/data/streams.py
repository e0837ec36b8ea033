"""Generated live streams: long audio streams (tones, chirps, noise bursts, spoken digits) and frame sequences
(shapes appearing, moving, changing colour), cut into fixed windows, with questions asked at random moments about
the stream so far (counts, first/last event, order, durations). Deterministic for a seed.

A stream is `n_windows` windows of `WINDOW_S` seconds: one audio window or one video frame each, the unit a
`mmrwkv.inference.stream.StreamSession` feeds. Events are aligned to windows and last 1-2 windows; every stream holds
1..max_events events at every length, so a stream 16 times longer has the same answers and longer silences
between its events (a test of what the state keeps over time, not of counting further).

A sample is one question at window t: its user turn is the stream's first t items as inline media slots, then
"\\n" and the question (`template.placement: inline`), the exact token layout `StreamSession.ask` produces.

Notation: W windows in a stream, S samples per window (SAMPLE_RATE * WINDOW_S).
"""

from __future__ import annotations

import io
import random
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmrwkv.data.generated import prepare
from mmrwkv.data.sample import BadRecords, Dataset, Sample
from mmrwkv.errors import DataError

SAMPLE_RATE = 8000
WINDOW_S = 1.0
FRAME_SIZE = 32
GENERATOR_VERSION = 2  # 2: a spoken digit lasts one window
SOUNDS = ("low tone", "high tone", "rising chirp", "falling chirp", "noise")
DIGITS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
VOICES = (("en", 130), ("en+f3", 170), ("en-us+m3", 210))
SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 80, 230), "yellow": (230, 220, 40)}


@dataclass(frozen=True)
class Event:
    """One event: label (what a question answers), first window, windows it lasts; frames: colour change."""

    label: str
    start: int
    length: int
    change: int = -1  # window (relative) where a shape takes `colour2`; -1: never
    colour2: str = ""

    @property
    def end(self) -> int:
        return self.start + self.length


def place_events(rng: random.Random, n_windows: int, max_events: int) -> list[tuple[int, int]]:
    """(start, length) of 1..max_events events of 1-2 windows, in order, with at least one silent window between
    them; the leftover silence is spread at random (so longer streams have longer gaps)."""
    for _ in range(100):
        lengths = [rng.randint(1, 2) for _ in range(rng.randint(1, max_events))]
        free = n_windows - sum(lengths) - (len(lengths) - 1)
        if free >= 0:
            break
    else:
        raise DataError(f"streams: {n_windows} windows cannot hold one event")
    cuts = sorted(rng.randint(0, free) for _ in range(len(lengths)))
    out, t, used = [], 0, 0
    for i, (cut, length) in enumerate(zip(cuts, lengths, strict=True)):
        t += cut - used + (1 if i else 0)
        used = cut
        out.append((t, length))
        t += length
    return out


def audio_events(rng: random.Random, n_windows: int, max_events: int, words: bool) -> list[Event]:
    """A spoken digit (when there is speech) 40% of the time, else one of the five sounds. A digit lasts one window
    (espeak-ng says one in 0.2-0.6 s): a second window would be silent, its duration unknowable from the audio."""
    out = []
    for s, n in place_events(rng, n_windows, max_events):
        label = rng.choice(DIGITS if words and rng.random() < 0.4 else SOUNDS)
        out.append(Event(label, s, 1 if label in DIGITS else n))
    return out


def frame_events(rng: random.Random, n_windows: int, max_events: int) -> list[Event]:
    out = []
    for s, n in place_events(rng, n_windows, max_events):
        colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
        change = rng.randint(1, n - 1) if n > 1 and rng.random() < 0.5 else -1
        colour2 = rng.choice([c for c in COLOURS if c != colour]) if change > 0 else ""
        out.append(Event(f"{colour} {shape}", s, n, change, colour2))
    return out


def render_audio(events: list[Event], n_windows: int, rng: np.random.Generator, speech: dict) -> np.ndarray:
    """(W * S,) float32 waveform: each event fills its windows (10 ms fades), faint noise everywhere."""
    per = int(SAMPLE_RATE * WINDOW_S)
    wave = rng.normal(0.0, 0.003, n_windows * per).astype(np.float32)
    for e in events:
        n = e.length * per
        t = np.arange(n) / SAMPLE_RATE
        if e.label in DIGITS:
            clip = speech[e.label][rng.integers(len(speech[e.label]))][:n]
            sound = np.zeros(n, dtype=np.float32)
            sound[: len(clip)] = clip / max(1e-3, float(np.abs(clip).max()))
        elif e.label == "noise":
            sound = rng.uniform(-1.0, 1.0, n)
        else:
            f0, f1 = _frequencies(e.label, rng)
            # instantaneous frequency moves linearly from f0 to f1; the phase is its integral
            sound = np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * t[-1])))
        fade = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.01)
        wave[e.start * per : e.start * per + n] += (0.5 * sound * fade).astype(np.float32)
    return wave


def _frequencies(label: str, rng: np.random.Generator) -> tuple[float, float]:
    if label == "low tone":
        f = rng.uniform(250.0, 450.0)
        return f, f
    if label == "high tone":
        f = rng.uniform(1100.0, 1700.0)
        return f, f
    low, high = rng.uniform(250.0, 400.0), rng.uniform(1300.0, 1800.0)
    return (low, high) if label == "rising chirp" else (high, low)


def render_frames(events: list[Event], n_windows: int, rng: random.Random) -> np.ndarray:
    """(W, FRAME_SIZE, FRAME_SIZE, 3) uint8 frames: a shape while its event lasts, moving a step per frame."""
    from PIL import Image, ImageDraw

    frames = np.zeros((n_windows, FRAME_SIZE, FRAME_SIZE, 3), dtype=np.uint8)
    for e in events:
        colour, shape = e.label.split()
        x, y = rng.uniform(9, FRAME_SIZE - 9), rng.uniform(9, FRAME_SIZE - 9)
        dx, dy = rng.choice((-4, 4)), rng.choice((-4, 4))
        for k in range(e.length):
            img = Image.new("RGB", (FRAME_SIZE, FRAME_SIZE))
            fill = COLOURS[e.colour2 if 0 < e.change <= k else colour]
            px, py = min(max(x + dx * k, 8), FRAME_SIZE - 8), min(max(y + dy * k, 8), FRAME_SIZE - 8)
            _draw(ImageDraw.Draw(img), shape, px, py, 7, fill)
            frames[e.start + k] = np.asarray(img)
    return frames


def _draw(pen, shape: str, x: float, y: float, s: float, fill) -> None:
    if shape == "circle":
        pen.ellipse((x - s, y - s, x + s, y + s), fill=fill)
    elif shape == "square":
        pen.rectangle((x - s, y - s, x + s, y + s), fill=fill)
    else:
        pen.polygon([(x, y - s), (x + s, y + s), (x - s, y + s)], fill=fill)


def stream_questions(events: list[Event], t: int, video: bool, rng: random.Random) -> list[list[str]]:
    """[question, answer, answer_type] about the stream after its first t windows (events that began before t)."""
    seen = [e for e in events if e.start < t]
    thing = "shape" if video else "sound"
    last = seen[-1]
    qa = [
        [f"how many {thing}s so far?", str(len(seen)), "number"],
        [f"what was the first {thing}?", seen[0].label, "other"],
        [f"what was the last {thing}?", last.label, "other"],
        [f"how many seconds did the last {thing} last?", str(min(last.end, t) - last.start), "number"],
    ]
    if len(seen) >= 2:
        qa.append([f"what came before the last {thing}?", seen[-2].label, "other"])
    if video:
        changes = sum(1 for e in seen if 0 < e.change and e.start + e.change < t)
        qa.append(["how many colour changes so far?", str(changes), "number"])
    else:
        probe = rng.choice(SOUNDS)
        qa.append([f"how many {probe}s so far?", str(sum(e.label == probe for e in seen)), "number"])
    return qa


def speech_bank(folder: Path, words: tuple[str, ...] = DIGITS) -> dict[str, list[np.ndarray]] | None:
    """`words` spoken by espeak-ng in each of VOICES (voice, words per minute) at SAMPLE_RATE, also written to
    `folder`/speech.wav to listen to; None (one line printed) without espeak-ng."""
    import soundfile

    from mmrwkv.encoders.media import load_audio

    exe = shutil.which("espeak-ng")
    if exe is None:
        print("streams: espeak-ng not found (apt-get install espeak-ng): streams without spoken digits")
        return None
    bank: dict[str, list[np.ndarray]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for word in words:
            for voice, speed in VOICES:
                out = Path(tmp) / f"{word}.wav"
                subprocess.run(
                    [exe, "-v", voice, "-s", str(speed), "-w", str(out), word], check=True, capture_output=True
                )
                wave = load_audio(out.read_bytes(), sample_rate=SAMPLE_RATE, max_seconds=5.0).numpy()
                bank.setdefault(word, []).append(wave[: int(SAMPLE_RATE * 2 * WINDOW_S)])
    soundfile.write(folder / "speech.wav", np.concatenate([w for ws in bank.values() for w in ws]), SAMPLE_RATE)
    return bank


def _generate(folder: Path, params: dict[str, Any]) -> list[dict[str, Any]]:
    rng = random.Random(f"streams-{params['seed']}-{params['split']}")
    bank = speech_bank(folder) if params["speech"] else None
    items = []
    for i in range(params["size"]):
        video = rng.random() < params["video_fraction"]
        n = params["windows"]
        if video:
            events = frame_events(rng, n, params["max_events"])
            data = render_frames(events, n, rng)
        else:
            events = audio_events(rng, n, params["max_events"], bank is not None)
            data = render_audio(events, n, np.random.default_rng(rng.getrandbits(32)), bank or {}) * 32767
            data = data.clip(-32767, 32767).astype(np.int16)
        name = f"{i:06d}.npy"
        np.save(folder / name, data)
        qa = []
        for _ in range(params["questions_per_stream"]):
            t = rng.randint(events[0].start + 1, n)  # a random moment after the first event began
            qa.append([*rng.choice(stream_questions(events, t, video, rng)), t])
        items.append(
            {
                "id": f"streams-{params['split']}-{i}",
                "file": name,
                "kind": "video" if video else "audio",
                "windows": n,
                "events": [e.__dict__ for e in events],
                "qa": qa,
            }
        )
    return items


def prepare_streams(
    root: str | Path,
    split: str,
    size: int,
    *,
    seed: int = 0,
    windows: int = 12,
    max_events: int = 4,
    questions_per_stream: int = 3,
    video_fraction: float = 0.5,
    speech: bool = True,
) -> Path:
    """Generate `size` streams of `windows` windows for `split` under `root` (once; reused while the parameters
    match). `speech`: spoken digits among the sounds (skipped with one line when espeak-ng is missing)."""
    params = {
        "generator": "streams",
        "version": GENERATOR_VERSION,
        "split": split,
        "size": size,
        "seed": seed,
        "windows": windows,
        "max_events": max_events,
        "questions_per_stream": questions_per_stream,
        "video_fraction": video_fraction,
        "speech": speech and shutil.which("espeak-ng") is not None,
    }
    return prepare(root, split, params, _generate)


class Clip(tuple):
    """One audio window as `(waveform, sample_rate)` (what `load_audio` takes), printed as its stream and window."""

    name: str = ""

    def __str__(self) -> str:
        return self.name


class Frame(bytes):
    """One video frame as PNG bytes (what `load_image` takes), printed as its stream and frame."""

    name: str = ""

    def __str__(self) -> str:
        return self.name


def stream_items(folder: Path, item: dict) -> list:
    """The stream's windows as media items in order: `Clip`s (audio) or `Frame`s (video)."""
    data = np.load(Path(folder) / item["file"])
    out = []
    if item["kind"] == "audio":
        per = int(SAMPLE_RATE * WINDOW_S)
        wave = data.astype(np.float32) / 32767
        for w in range(item["windows"]):
            clip = Clip((wave[w * per : (w + 1) * per], SAMPLE_RATE))
            clip.name = f"{item['file']}@{w}"
            out.append(clip)
        return out
    from PIL import Image

    for w, frame in enumerate(data):
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="PNG")
        png = Frame(buf.getvalue())
        png.name = f"{item['file']}#{w}"
        out.append(png)
    return out


def window_labels(item: dict) -> list[str]:
    """What each window of a stream (a manifest item) holds: the label of the event under way in it (a shape in
    the colour it has in that frame), "nothing" where none is. The per-window target of the bag-of-words loss
    (`Sample.meta["item_labels"]`)."""
    labels = ["nothing"] * item["windows"]
    for e in item["events"]:
        for k in range(e["length"]):
            label = e["label"]
            if 0 < e.get("change", -1) <= k:
                label = f"{e['colour2']} {label.split()[-1]}"
            labels[e["start"] + k] = label
    return labels


def stream_turn(n_items: int, modality: str, question: str) -> str:
    """The user turn of a question after `n_items` stream items: inline media markers, then the question."""
    return f"<{modality}>" * n_items + "\n" + question


def load_streams(
    root: str | Path,
    split: str,
    size: int,
    *,
    seed: int = 0,
    task: str = "both",
    skip_bad_records: bool = False,
    **options: Any,
) -> Dataset:
    """Prepare (if needed) and read the streams split: one VQA sample per question, its media the stream's items
    up to the moment asked. `options` go to `prepare_streams`."""
    folder = prepare_streams(root, split, size, seed=seed, **options)
    import json

    items = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))["items"]
    bad = BadRecords(folder / "manifest.json", skip=skip_bad_records)
    samples = []
    for i, item in enumerate(items):
        if not (folder / str(item.get("file", ""))).is_file():
            bad.bad(f"{i} (id {item.get('id')})", f"stream file {folder / str(item.get('file'))} not found")
            continue
        media, labels = stream_items(folder, item), window_labels(item)
        modality = "audio" if item["kind"] == "audio" else "image"
        for j, (question, answer, answer_type, t) in enumerate(item["qa"]):
            key = "audio" if modality == "audio" else "images"
            samples.append(
                Sample(
                    id=f"{item['id']}-q{j}",
                    question=question,
                    answers=[answer],
                    answer_type=answer_type,
                    turns=[("user", stream_turn(t, modality, question)), ("assistant", answer)],
                    meta={"item": item["id"], "at": t, "item_labels": labels[:t]},
                    **{key: media[:t]},
                )
            )
    return bad.finish("streams", split, samples)
