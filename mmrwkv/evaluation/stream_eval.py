"""Length generalisation of a stream model: held-out generated streams 1x, 4x, 16x the training length, fed through
`StreamSession` one window at a time, questions asked at their random moments from a copy of the state.

Each stream is fed once; its questions (sorted by the moment they are asked) are answered as the stream reaches
them, so a question at window t sees exactly the first t windows, as its training sample did. Exact match after the
VQA answer normalisation (`mmrwkv.evaluation.vqa.exact_match`), overall and per question template.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np


def template_of(question: str) -> str:
    """The question's template: the probe word of "how many low tones so far?" replaced by X."""
    return re.sub(
        r"how many (.+?)s so far",
        lambda m: "how many X so far" if m.group(1) not in ("sound", "shape", "colour change") else m.group(0),
        question,
    )


def evaluate_stream(session, folder: Path, item: dict) -> list[dict]:
    """Feed one prepared stream through `session` (reset first), answering its questions on the way."""
    from mmrwkv.data.streams import SAMPLE_RATE, stream_items
    from mmrwkv.evaluation.vqa import exact_match

    session.reset()
    items = stream_items(folder, item)
    questions = sorted(enumerate(item["qa"]), key=lambda jq: jq[1][3])
    out, fed = [], 0
    for j, (question, answer, _, at) in questions:
        while fed < at:
            if item["kind"] == "audio":
                session.feed(audio=np.asarray(items[fed][0]), sample_rate=SAMPLE_RATE)
            else:
                session.feed(frame=bytes(items[fed]), at=float(fed))
            fed += 1
        prediction = session.answer(question)
        out.append(
            {
                "id": f"{item['id']}-q{j}",
                "at": at,
                "windows": item["windows"],
                "question": question,
                "answer": answer,
                "prediction": prediction,
                "correct": exact_match(prediction, answer),
            }
        )
    return out


def length_curve(
    model,
    *,
    root: str | Path,
    base_windows: int,
    multipliers: list[int],
    streams: int,
    seed: int = 1,
    max_events: int = 4,
    questions_per_stream: int = 3,
    progress: bool = False,
) -> dict:
    """Exact match per length multiplier on held-out streams (split `heldout-<m>x`, seeded apart from training)."""
    from mmrwkv.data.streams import prepare_streams
    from mmrwkv.inference.stream import StreamSession

    session = StreamSession(model, window_s=1.0, frame_interval_s=1.0)
    curve = {}
    for m in multipliers:
        folder = prepare_streams(
            root,
            f"heldout-{m}x",
            streams,
            seed=seed,
            windows=base_windows * m,
            max_events=max_events,
            questions_per_stream=questions_per_stream,
        )
        items = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))["items"]
        records = [r for item in items for r in evaluate_stream(session, folder, item)]
        by_template: dict[str, list[float]] = {}
        for r in records:
            by_template.setdefault(template_of(r["question"]), []).append(r["correct"])
        curve[m] = {
            "windows": base_windows * m,
            "questions": len(records),
            "exact_match": float(np.mean([r["correct"] for r in records])),
            "by_template": {k: float(np.mean(v)) for k, v in sorted(by_template.items())},
            "records": records,
        }
        if progress:
            print(
                f"{m:>3}x ({base_windows * m} windows): exact match {curve[m]['exact_match']:.3f} over "
                f"{len(records)} questions",
                flush=True,
            )
    return curve


def plot_curve(curve: dict, path: Path, title: str) -> None:
    """Exact match vs length multiplier (log x), overall and per template."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = sorted(curve)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(xs, [curve[m]["exact_match"] for m in xs], marker="o", linewidth=2.5, label="all questions")
    templates = sorted({t for m in xs for t in curve[m]["by_template"]})
    for t in templates:
        ax.plot(xs, [curve[m]["by_template"].get(t, float("nan")) for m in xs], marker=".", alpha=0.6, label=t)
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [f"{m}x" for m in xs])
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("stream length (x training length)")
    ax.set_ylabel("exact match")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
