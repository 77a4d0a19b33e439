"""Evaluation: scikit-learn test metrics (ssgan.evaluation.metrics), the figures a person looks at
(ssgan.evaluation.figures) and the paired statistics of comparisons (ssgan.evaluation.stats)."""
from ssgan.evaluation.figures import confused_examples_figure, confusion_figure, image_grid, sample_grid
from ssgan.evaluation.metrics import Evaluation, evaluate, evaluate_ensemble, score
from ssgan.evaluation.stats import mean_std, paired_ci, paired_tests

__all__ = ["Evaluation", "evaluate", "evaluate_ensemble", "score", "confusion_figure", "confused_examples_figure",
           "image_grid", "sample_grid", "mean_std", "paired_ci", "paired_tests"]
