"""What a benchmark task is: its files under a data root, the prompt the field uses for it, a reader that turns
the official files into `Sample`s (each with its full prompt as one user turn) and a metric over predictions.

A task's prompt is data of its definition (`Task.prompt`, overridable per run), never part of the reader's code:
VQA tasks append it to the question, multiple-choice tasks append it after the lettered options, caption tasks
use it as the whole user text.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmrwkv.data.sample import Sample, require_dir, require_file
from mmrwkv.errors import DataError

# the prompts LLaVA-1.5 and lmms-eval use
SHORT_ANSWER = "Answer the question using a single word or phrase."
OPTION_LETTER = "Answer with the option's letter from the given choices directly."
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


@dataclass(frozen=True)
class Task:
    """One benchmark: `files` maps file roles to default paths under the data root (a role ending in "?" is
    optional); `read(paths, prompt) -> [Sample]`; `score(samples, predictions) -> {"metrics", "per_sample",
    "normalization"}`; `primary` names the metric of the suite table; `choices` marks multiple choice."""

    name: str
    description: str
    split: str
    files: dict[str, str]
    source: str
    prompt: str
    read: Callable[[dict[str, Path], str], list[Sample]]
    score: Callable[[list[Sample], Mapping[str, str]], dict]
    primary: str
    max_tokens: int = 16
    choices: bool = False
    # caption tasks: `score` takes tokenizer= ("auto" | "java" | "python", see mmrwkv.evaluation.captions)
    captions: bool = False
    # files written beside the report (e.g. a server submission): (samples, predictions, paths, out dir) -> names
    extra_files: Callable[..., list[str]] | None = None
    extra_names: tuple[str, ...] = field(default_factory=tuple)

    def paths(self, data_root: str | Path | None, overrides: Mapping[str, str] | None = None) -> dict[str, Path]:
        """The task's files: `overrides` (role -> path) win, others are the defaults under `data_root`. A missing
        required file raises DataError naming the role, the path and where the official data comes from."""
        overrides = dict(overrides or {})
        roles = {r.rstrip("?"): r.endswith("?") for r in self.files}
        unknown = sorted(set(overrides) - set(roles))
        if unknown:
            raise DataError(f"task {self.name}: unknown file role(s) {unknown}; valid: {', '.join(roles)}")
        root = Path(data_root) if data_root is not None else Path()
        out = {}
        for spec, default in self.files.items():
            role = spec.rstrip("?")
            path = Path(overrides[role]) if role in overrides else root / default
            if path.exists():
                out[role] = path
            elif not roles[role]:
                raise DataError(
                    f"task {self.name}: {role} {path} not found (--data-root {str(root)!r}; expected the official "
                    f"file layout: {self.layout()}; get it: {self.source})"
                )
        return out

    def layout(self) -> str:
        """The default file layout under the data root, for messages and the README."""
        return ", ".join(f"{v}{' (optional)' if k.endswith('?') else ''}" for k, v in self.files.items())


def user_text(body: str, prompt: str, *, image: bool = True) -> str:
    """The user turn of one question: LLaVA's `<image>\\n` first, then the body and the task's prompt on its own
    line. Literal media markers inside dataset text are removed, so they never become media slots."""
    body = body.replace("<image>", "").replace("<audio>", "").strip()
    text = "\n".join(part for part in (body, prompt) if part)
    return f"<image>\n{text}" if image else text


def turns(text: str) -> list[tuple[str, str]]:
    """One user turn holding the whole prompt; evaluation generates the assistant reply."""
    return [("user", text)]


def read_json(path: Path, what: str) -> Any:
    """A JSON file; DataError names the file when it is missing or not JSON."""
    path = require_file(path, what)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{what} {path}: not valid JSON ({err})") from None


def read_json_lines(path: Path, what: str) -> list[Any]:
    """A JSON-lines file (one JSON value per non-empty line); DataError names the file and line."""
    path = require_file(path, what)
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise DataError(f"{what} {path}: line {number}: not valid JSON ({err})") from None
    return records


def index_images(folder: Path) -> dict[str, Path]:
    """Image files of a folder by their exact stem ("n161313", hex "0054c91397f2fe05", "2354786"): ids are
    strings, so hex and letter-prefixed ids never collide the way trailing-digit parsing makes them."""
    folder = require_dir(folder, "image folder")
    return {p.stem: p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}


def field_of(record: Any, key: str, kind: type | tuple, source: str, where: str) -> Any:
    """`record[key]` when it is of `kind`, else DataError naming the file, the record and the field."""
    value = record.get(key) if isinstance(record, Mapping) else None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DataError(f"{source}: record {where}: field {key!r} must be {_kind_name(kind)}, got {value!r:.80}")
    return value


def _kind_name(kind: type | tuple) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def mean_x100(values: Iterable[float]) -> float:
    """The mean of per-sample scores in [0, 1], x100 (0.0 for none)."""
    values = list(values)
    return 100.0 * sum(values) / len(values) if values else 0.0


def check_predictions(samples: Iterable[Sample], predictions: Mapping[str, str]) -> None:
    """Every sample needs a prediction: a missing one is a KeyError naming a few ids."""
    missing = [s.id for s in samples if s.id not in predictions]
    if missing:
        raise KeyError(f"no prediction for {len(missing)} sample(s), e.g. {missing[:3]}")


def option_letters(n: int) -> list[str]:
    """ "A", "B", ... for n options."""
    return [chr(ord("A") + i) for i in range(n)]


def options_text(options: list[str]) -> str:
    """LLaVA's option lines: "A. first\\nB. second"."""
    return "\n".join(f"{letter}. {text}" for letter, text in zip(option_letters(len(options)), options, strict=True))
