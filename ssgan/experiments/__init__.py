"""Experiments: comparisons of methods over label budgets and seeds (ssgan.experiments.compare), their
report (ssgan.experiments.report), ablations of the tricks (ssgan.experiments.ablate) and scikit-learn's
semi-supervised baselines (ssgan.experiments.baselines); `python -m ssgan.experiments.gain` prints the demo's
side-by-side line (not imported here, so that it runs as a module without a second copy)."""
from ssgan.experiments.ablate import run_ablation
from ssgan.experiments.baselines import run_baseline
from ssgan.experiments.compare import run_comparison
from ssgan.experiments.origin import ConfigOrigin
from ssgan.experiments.plan import Plan
from ssgan.experiments.report import report_from_store, write_report

__all__ = ["run_comparison", "Plan", "write_report", "report_from_store", "run_ablation", "run_baseline", "ConfigOrigin"]
