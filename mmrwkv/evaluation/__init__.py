"""Evaluation metrics and reports: VQA accuracy, caption metrics, score_samples, write_report."""

from mmrwkv.evaluation.captions import caption_metrics
from mmrwkv.evaluation.report import plot_curves, write_report
from mmrwkv.evaluation.score import report_for_recipe, score_for_recipe, score_samples
from mmrwkv.evaluation.vqa import exact_match, normalize_answer, score_vqa, vqa_accuracy

__all__ = [
    "caption_metrics",
    "exact_match",
    "normalize_answer",
    "plot_curves",
    "report_for_recipe",
    "score_for_recipe",
    "score_samples",
    "score_vqa",
    "vqa_accuracy",
    "write_report",
]
