"""Metrics, membership inference, figures and the comparison table."""

from ps_lightning.evaluation.evaluator import UnlearningEvaluator

__all__ = ["UnlearningEvaluator"]
