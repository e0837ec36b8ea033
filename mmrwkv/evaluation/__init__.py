"""Evaluation metrics and reports: VQA accuracy, caption metrics."""
