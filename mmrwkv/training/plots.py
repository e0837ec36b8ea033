"""Loss / metric curves from the CSV log, drawn to a PNG next to the report."""

from __future__ import annotations

import csv
import math
from pathlib import Path

CSV_NAME = "csv/metrics.csv"


def read_metrics(log_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every logged metric of a run as (step, value) pairs, from Lightning's CSV log."""
    path = Path(log_dir) / CSV_NAME
    series: dict[str, list[tuple[int, float]]] = {}
    if not path.is_file():
        return series
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            step = int(row.get("step") or 0)
            for key, value in row.items():
                if key in ("step", "epoch") or value in (None, ""):
                    continue
                series.setdefault(key, []).append((step, float(value)))
    return series


def last_value(log_dir: str | Path, name: str) -> float | None:
    """The last logged value of `name`, or None."""
    values = read_metrics(log_dir).get(name)
    return values[-1][1] if values else None


def plot_curves(log_dirs: str | Path | list, path: str | Path, *, names: tuple[str, ...] = ("train/loss", "val/loss")
                ) -> Path | None:
    """Draw the named metrics of one or more runs (stages, in order) on a shared step axis; None if nothing logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dirs = log_dirs if isinstance(log_dirs, list) else [log_dirs]
    fig, ax = plt.subplots(figsize=(7, 4))
    offset, drawn = 0, False
    for i, log_dir in enumerate(dirs):
        metrics = read_metrics(log_dir)
        last = offset
        for name in names:
            points = [(s, v) for s, v in metrics.get(name, []) if math.isfinite(v)]
            if points:
                label = name if len(dirs) == 1 else f"{name} ({Path(log_dir).parent.name})"
                ax.plot([offset + s for s, _ in points], [v for _, v in points], label=label)
                last, drawn = max(last, offset + points[-1][0]), True
        offset = last if i + 1 < len(dirs) else offset
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
