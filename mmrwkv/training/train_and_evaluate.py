"""`mmrwkv run`: train every stage of a recipe (resuming finished work), evaluate the final model, report."""

from __future__ import annotations

import os
import time

from mmrwkv.config import RecipeConfig
from mmrwkv.evaluation.predict import EvalReport, evaluate_recipe
from mmrwkv.evaluation.report import check_report_dir
from mmrwkv.evaluation.score import report_dir
from mmrwkv.training.plots import CSV_NAME, read_metrics
from mmrwkv.training.train import train_recipe


def run_recipe(cfg: RecipeConfig, *, fresh: bool = False, progress: bool = True) -> EvalReport:
    """Train all stages, then evaluate the last stage's final model on `eval.split`; the report gets the
    timings of both phases."""
    start = time.perf_counter()
    # a report directory that may not be written to is refused before any training
    check_report_dir(report_dir(_last_stage(cfg)))
    results = train_recipe(cfg, resume=True, fresh=fresh, progress=progress)
    trained = time.perf_counter()
    last = results[-1]
    stage_cfg = _last_stage(cfg)
    # a run shorter than train.log_every logged no row (Lightning writes no CSV): a report without curves
    metrics_csv = last.log_dir / CSV_NAME if read_metrics(last.log_dir) else None
    report = evaluate_recipe(stage_cfg, last.final, metrics_csv=metrics_csv, progress=progress)
    total = time.perf_counter() - start
    timing = (
        f"\nTiming: training {trained - start:.0f} s ({len(results)} stage(s)), evaluation "
        f"{report.seconds:.0f} s, total {total:.0f} s.\n"
    )
    report.markdown += timing
    tmp = report.paths["report"].with_name(".report.md.tmp")
    tmp.write_text(report.markdown, encoding="utf-8")
    os.replace(tmp, report.paths["report"])
    return report


def _last_stage(cfg: RecipeConfig) -> RecipeConfig:
    from mmrwkv.config import expand_stages

    return expand_stages(cfg)[-1]
