"""Small statistics over seeds: mean, standard deviation and paired confidence intervals."""
from __future__ import annotations

import math
import statistics
from typing import Sequence


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def paired_ci(diffs: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean of paired differences and its two-sided Student-t confidence interval (NaN bounds for n < 2)."""
    from scipy.stats import t

    n = len(diffs)
    mean = statistics.fmean(diffs)
    if n < 2:
        return mean, math.nan, math.nan
    half = t.ppf(0.5 + level / 2, n - 1) * statistics.stdev(diffs) / math.sqrt(n)
    return mean, mean - half, mean + half


def paired_tests(diffs: Sequence[float]) -> tuple[float, float]:
    """Two-sided p-values of paired differences against 0: Student's paired t-test (the same as
    `scipy.stats.ttest_rel` on the pairs) and the Wilcoxon signed-rank test (exact for small n without
    ties). NaN when there is nothing to test: n < 2, or every difference equal."""
    from scipy.stats import ttest_1samp, wilcoxon

    if len(diffs) < 2 or max(diffs) == min(diffs):
        return math.nan, math.nan
    return float(ttest_1samp(diffs, 0.0).pvalue), float(wilcoxon(diffs).pvalue)
