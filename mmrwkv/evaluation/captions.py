"""Captioning metrics as the COCO caption evaluation computes them: PTB tokenization, then BLEU-1..4, METEOR,
ROUGE-L and CIDEr-D (pycocoevalcap 1.2), SPICE reported as unavailable offline, SPIDEr when SPICE exists.

The Java path (PTB jar + METEOR jar) is the reference; without Java a labelled Python path tokenizes in Python
and reports METEOR as unavailable. A metric that fails is reported as unavailable with the reason; it never
stops the other metrics.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Mapping, Sequence

from mmrwkv.evaluation.ptb import _package_dir, java_available, tokenize_captions

CAPTION_METRICS = ("bleu", "meteor", "rouge_l", "cider", "spice", "spider")
SPICE_UNAVAILABLE = (
    "SPICE unavailable offline: it downloads Stanford CoreNLP 3.6.0 on first run (no network here) and "
    "fails on Java 16+"
)
# an empty hypothesis would divide by zero in ROUGE-L; this token matches no reference
EMPTY = "<empty>"


def _bleu(gts: dict, res: dict) -> tuple[dict, dict]:
    from pycocoevalcap.bleu.bleu import Bleu

    score, scores = Bleu(4).compute_score(gts, res, verbose=0)
    keys = list(gts)
    totals = {f"BLEU-{n + 1}": score[n] for n in range(4)}
    per = {k: {f"BLEU-{n + 1}": scores[n][i] for n in range(4)} for i, k in enumerate(keys)}
    return totals, per


def _rouge(gts: dict, res: dict) -> tuple[dict, dict]:
    from pycocoevalcap.rouge.rouge import Rouge

    score, scores = Rouge().compute_score(gts, res)
    return {"ROUGE-L": float(score)}, {k: {"ROUGE-L": float(s)} for k, s in zip(gts, scores, strict=True)}


def _cider(gts: dict, res: dict) -> tuple[dict, dict]:
    from pycocoevalcap.cider.cider import Cider

    score, scores = Cider().compute_score(gts, res)
    return {"CIDEr-D": float(score)}, {k: {"CIDEr-D": float(s)} for k, s in zip(gts, scores, strict=True)}


class _MeteorProcess:
    """The METEOR 1.5 jar in `-stdio` mode: one SCORE line per sample gives its statistics, then one EVAL line
    gives per-sample scores and the corpus score. Writing happens on a thread so full pipes cannot deadlock."""

    def __init__(self, timeout: float):
        folder = _package_dir() / "meteor"
        cmd = ["java", "-jar", "-Xmx2G", str(folder / "meteor-1.5.jar"), "-", "-", "-stdio", "-l", "en", "-norm"]
        self.proc = subprocess.Popen(
            cmd, cwd=folder, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        self.timer = threading.Timer(timeout, self.proc.kill)
        self.timer.start()

    def _send(self, lines: list[str]) -> None:
        def write():
            try:
                self.proc.stdin.write("".join(line + "\n" for line in lines).encode("utf-8"))
                self.proc.stdin.flush()
            except (BrokenPipeError, ValueError):
                pass

        threading.Thread(target=write, daemon=True).start()

    def _read(self, n: int) -> list[str]:
        lines = [self.proc.stdout.readline().decode("utf-8").strip() for _ in range(n)]
        if any(not line for line in lines):
            raise RuntimeError("METEOR jar stopped answering (crashed, out of memory or timed out)")
        return lines

    def score(self, gts: dict, res: dict) -> tuple[float, list[float]]:
        try:
            self._send([" ||| ".join(["SCORE", *gts[k], res[k][0].replace("|||", "")]) for k in gts])
            stats = self._read(len(gts))
            self._send(["EVAL ||| " + " ||| ".join(stats)])
            scores = [float(x) for x in self._read(len(gts) + 1)]
            return scores[-1], scores[:-1]
        finally:
            self.timer.cancel()
            self.proc.kill()
            self.proc.wait()


def _meteor(gts: dict, res: dict, timeout: float = 600.0) -> tuple[dict, dict]:
    score, scores = _MeteorProcess(timeout).score(gts, res)
    return {"METEOR": score}, {k: {"METEOR": s} for k, s in zip(gts, scores, strict=True)}


def _run(name: str, fn, gts, res, totals: dict, per: dict, unavailable: dict) -> None:
    try:
        got, got_per = fn(gts, res)
    except Exception as err:  # noqa: BLE001 - one failing metric must not stop the evaluation
        unavailable[name] = f"{name} failed: {type(err).__name__}: {err}"
        return
    totals.update(got)
    for key, values in got_per.items():
        per[key].update(values)


def _check_inputs(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> None:
    missing = [k for k in references if k not in predictions]
    if missing:
        raise KeyError(f"no prediction for {len(missing)} sample(s), e.g. {missing[:3]}")
    empty = [k for k, refs in references.items() if not refs]
    if empty:
        raise ValueError(f"{len(empty)} sample(s) have no reference captions, e.g. {empty[:3]}")


def caption_metrics(
    predictions: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    *,
    metrics: Sequence[str] = ("bleu", "meteor", "rouge_l", "cider", "spice"),
    tokenizer: str = "auto",
    scale: float = 100.0,
) -> dict:
    """Score {id: caption} against {id: [reference captions]} on the ids of `references`.

    `tokenizer`: "java" (PTB jar), "python", or "auto" (Java when available). METEOR needs Java; on the Python
    path it is listed under `unavailable`. `scale`: 100 for image captioning papers, 1 for audio captioning.
    Returns {"metrics": {name: value x scale}, "unavailable": {name: reason}, "tokenizer": label, "per_sample"}.
    """
    unknown = [m for m in metrics if m not in CAPTION_METRICS]
    if unknown:
        raise ValueError(f"unknown caption metric(s) {unknown}; valid: {', '.join(CAPTION_METRICS)}")
    _check_inputs(predictions, references)
    keys = list(references)
    both = {**{f"ref:{k}": list(references[k]) for k in keys}, **{f"hyp:{k}": [predictions[k]] for k in keys}}
    tokens, label = tokenize_captions(both, tokenizer)
    gts = {k: tokens[f"ref:{k}"] for k in keys}
    res = {k: [tokens[f"hyp:{k}"][0] or EMPTY] for k in keys}
    totals: dict[str, float] = {}
    per: dict[str, dict[str, float]] = {k: {} for k in keys}
    unavailable: dict[str, str] = {}
    java_path = label.startswith("java")
    steps = {"bleu": ("BLEU", _bleu), "rouge_l": ("ROUGE-L", _rouge), "cider": ("CIDEr-D", _cider)}
    for metric in metrics:
        if metric in steps:
            _run(*steps[metric], gts, res, totals, per, unavailable)
    if "meteor" in metrics:
        if java_path and java_available():
            _run("METEOR", _meteor, gts, res, totals, per, unavailable)
        else:
            unavailable["METEOR"] = "METEOR needs Java (meteor-1.5.jar); not computed on the Python path"
    if "spice" in metrics or "spider" in metrics:
        unavailable["SPICE"] = SPICE_UNAVAILABLE
    if "spider" in metrics:
        unavailable["SPIDEr"] = "SPIDEr = (CIDEr-D + SPICE) / 2 needs SPICE"
    return {
        "task": "captioning",
        "num_samples": len(keys),
        "tokenizer": label,
        "scale": "x100" if scale == 100.0 else f"x{scale:g}",
        "metrics": {name: value * scale for name, value in totals.items()},
        "unavailable": unavailable,
        "per_sample": {k: {n: v * scale for n, v in values.items()} for k, values in per.items()},
    }
