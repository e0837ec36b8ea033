"""Evaluation reports: predictions JSON, metrics JSON, a Markdown report with a few examples (image thumbnails
for image tasks), and a PNG of loss/metric curves from a training metrics CSV."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from mmrwkv.checkpoint_files import replace_dir
from mmrwkv.data.sample import Sample
from mmrwkv.errors import CheckpointError, DataError

THUMB_SIZE = 128
_INFO_KEYS = ("task", "split", "prompt", "decoding", "normalization", "tokenizer", "scale", "num_samples", "checkpoint")


def prediction_records(samples: Sequence[Sample], predictions: Mapping[str, str]) -> list[dict]:
    """One JSON-ready record per sample that has a prediction: id, media, prompt, prediction, references."""
    records = []
    for s in samples:
        if s.id not in predictions:
            continue
        record = {"id": s.id, "prediction": predictions[s.id]}
        record["images"] = [str(p) for p in s.images]
        record["audio"] = [str(p) for p in s.audio]
        if s.question is not None:
            record.update(question=s.question, answers=s.answers, answer_type=s.answer_type)
        if s.captions:
            record["captions"] = s.captions
        records.append(record)
    return records


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")


def _fmt(value: float) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def _on_white(img):
    """RGB of `img`; transparency (RGBA, LA, a palette's transparent colour) is composited onto white, as a viewer
    shows it, instead of dropped (which turns transparent backgrounds black)."""
    from PIL import Image

    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def _thumbnail(image: str, out: Path) -> str | None:
    from PIL import Image

    try:
        with Image.open(image) as img:
            img = _on_white(img)
            img.thumbnail((THUMB_SIZE, THUMB_SIZE))
            img.save(out, format="PNG")
    except OSError:
        return None
    return out.name


def _example_md(record: dict, thumbs: Path | None, index: int) -> list[str]:
    lines = [f"### {record['id']}", ""]
    if thumbs is not None and record["images"]:
        name = _thumbnail(record["images"][0], thumbs / f"{index:03d}.png")
        if name:
            lines += [f"![{record['id']}]({thumbs.name}/{name})", ""]
    if record["audio"]:
        lines += [f"Audio: `{record['audio'][0]}`", ""]
    if "question" in record:
        lines += [f"- Question: {record['question']}", f"- Answers: {', '.join(record['answers'])}"]
    if "captions" in record:
        lines += [f"- Reference: {c}" for c in record["captions"][:5]]
    lines += [f"- **Prediction:** {record['prediction']}"]
    if record.get("scores"):
        lines += ["- Scores: " + ", ".join(f"{k} {_fmt(float(v))}" for k, v in record["scores"].items())]
    return lines + [""]


def _score_key(records: list[dict]) -> str | None:
    """The per-sample score the examples are ranked by: CIDEr-D for captions, else the first one recorded."""
    keys = [k for r in records for k in r.get("scores", {})]
    return "CIDEr-D" if "CIDEr-D" in keys else (keys[0] if keys else None)


def _best_and_worst(records: list[dict], num_examples: int) -> list[dict]:
    """With per-sample scores: the best half of `num_examples` (highest score first), then the worst half (lowest
    last), each tagged with "rank" ("best" / "worst"); without scores for more than `num_examples` records (nothing
    to choose between): the records as they are."""
    key = _score_key(records)
    scored = [r for r in records if key in r.get("scores", {})]
    if key is None or len(scored) <= num_examples or num_examples < 2:
        return records
    ranked = sorted(scored, key=lambda r: -float(r["scores"][key]))
    n_best = min(len(ranked) // 2, (num_examples + 1) // 2)
    n_worst = min(len(ranked) - n_best, num_examples - n_best)
    best = [{**r, "rank": "best", "rank_key": key} for r in ranked[:n_best]]
    worst = [{**r, "rank": "worst", "rank_key": key} for r in ranked[len(ranked) - n_worst :]]
    return best + worst


def _markdown(title: str, result: dict, records: list[dict], thumbs: Path | None, num_examples: int) -> str:
    lines = [f"# {title}", "", "| setting | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(result[k])} |" for k in _INFO_KEYS if k in result]
    lines += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in result.get("metrics", {}).items()]
    if result.get("unavailable"):
        lines += ["", "Unavailable:", ""] + [f"- {k}: {v}" for k, v in result["unavailable"].items()]
    if records[:num_examples]:
        lines += ["", "## Examples", ""]
    section = None
    for i, record in enumerate(records[:num_examples]):
        if record.get("rank") and record["rank"] != section:
            section = record["rank"]
            lines += [f"## {section.capitalize()} examples (by {record['rank_key']})", ""]
        lines += _example_md(record, thumbs, i)
    return "\n".join(lines) + "\n"


def write_report(
    out_dir: str | Path,
    samples: Sequence[Sample],
    predictions: Mapping[str, str],
    result: dict,
    *,
    title: str = "Evaluation report",
    num_examples: int = 8,
    thumbnails: bool = True,
    metrics_csv: str | Path | None = None,
) -> dict[str, Path]:
    """Write predictions.json, metrics.json, report.md (+ thumbs/) and, given a metrics CSV, curves.png.
    `result` is a `score_samples` result. Returns the written paths by kind.

    `out_dir` must be absent, empty or an earlier report (CheckpointError naming it otherwise): nothing else is
    overwritten. Each file is written aside and renamed into place, report.md last."""
    out = Path(out_dir)
    check_report_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".report.tmp-", dir=out))
    try:
        names = _write_report_files(tmp, samples, predictions, result, title, num_examples, thumbnails, metrics_csv)
        for kind, name in names.items():
            if kind == "thumbs":
                replace_dir(tmp / name, out / name)
            else:
                os.replace(tmp / name, out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {kind: out / name for kind, name in names.items() if kind != "thumbs"}


# what a report directory holds; metrics.json is written first, so a report directory always has it
REPORT_NAMES = ("metrics.json", "predictions.json", "thumbs", "curves.png", "report.md", "server_results.json")


def check_report_dir(out: Path) -> None:
    """Raise CheckpointError unless `out` is absent, empty or an earlier report (only report files, metrics.json
    among them), so that writing a report never overwrites anything else."""
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"{out}: is a file; an evaluation report is written to a directory")
    names = {p.name for p in out.iterdir() if not p.name.startswith(".report")} if out.is_dir() else set()
    if names and (not names <= set(REPORT_NAMES) or "metrics.json" not in names):
        others = sorted(names - set(REPORT_NAMES)) or sorted(names)
        raise CheckpointError(
            f"{out}: exists and is not an evaluation report directory (it holds {', '.join(others[:5])}); "
            "writing the report would overwrite files in it: choose a new directory (eval --out / eval.report.dir)"
        )


def _write_report_files(out, samples, predictions, result, title, num_examples, thumbnails, metrics_csv) -> dict:
    """The report's files in `out` -> {kind: file name}, in the order they should be moved into place."""
    records = prediction_records(samples, predictions)
    per_sample = result.get("per_sample") or {}
    for record in records:
        if record["id"] in per_sample:
            record["scores"] = per_sample[record["id"]]
    names = {"metrics": "metrics.json", "predictions": "predictions.json"}
    _write_json(out / names["metrics"], {k: v for k, v in result.items() if k != "per_sample"})
    _write_json(out / names["predictions"], records)
    thumbs = None
    records = _best_and_worst(records, num_examples)
    if thumbnails and any(r["images"] for r in records[:num_examples]):
        thumbs = out / "thumbs"
        thumbs.mkdir()
        names["thumbs"] = thumbs.name
    markdown = _markdown(title, result, records, thumbs, num_examples)
    if metrics_csv is not None:
        names["curves"] = plot_curves(metrics_csv, out / "curves.png").name
        markdown += "\n## Curves\n\n![curves](curves.png)\n"
    (out / "report.md").write_text(markdown, encoding="utf-8")
    names["report"] = "report.md"
    return names


def read_metrics_csv(path: str | Path) -> dict[str, tuple[list[float], list[float]]]:
    """Series {column: (steps, values)} from a CSV with a `step` column (Lightning CSVLogger style: empty cells
    where a metric was not logged)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"metrics CSV {path}: file not found")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if "step" not in (reader.fieldnames or []):
            raise DataError(f"metrics CSV {path}: needs a 'step' column; has {reader.fieldnames}")
        series: dict[str, tuple[list[float], list[float]]] = {}
        for line, row in enumerate(reader, start=2):
            _add_row(series, row, path, line)
    return series


def _add_row(series: dict, row: dict, path: Path, line: int) -> None:
    try:
        step = float(row["step"])
    except (TypeError, ValueError):
        raise DataError(f"metrics CSV {path}: line {line}: step {row['step']!r} is not a number") from None
    for key, text in row.items():
        if key in ("step", "epoch") or text in ("", None):
            continue
        try:
            value = float(text)
        except ValueError:
            continue
        if math.isfinite(value):
            steps, values = series.setdefault(key, ([], []))
            steps.append(step)
            values.append(value)


def plot_curves(metrics_csv: str | Path, out: str | Path) -> Path:
    """Plot every numeric column of the CSV against step: losses on one panel, other metrics on another."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = read_metrics_csv(metrics_csv)
    if not series:
        raise DataError(f"metrics CSV {metrics_csv}: no numeric columns to plot")
    losses = {k: v for k, v in series.items() if "loss" in k}
    others = {k: v for k, v in series.items() if "loss" not in k}
    panels = [p for p in (losses, others) if p]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        for name, (steps, values) in sorted(panel.items()):
            ax.plot(steps, values, label=name, marker="." if len(steps) < 30 else None)
        ax.set_xlabel("step")
        ax.set_ylabel("loss" if panel is losses else "metric")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
