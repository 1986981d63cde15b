"""Statistics for comparing pipelines on per-sample outcomes (pure Python, no I/O).

- ``wilson``: the 95 % Wilson score interval of a proportion. Right at small n and near 0 %
  or 100 %, where the normal approximation (score ± 1.96·stderr) gives intervals below 0 or
  of zero width.
- ``paired_sign_test``: the change from base on the *same* samples, tested with the exact
  two-sided sign test on the per-sample differences. For 0/1 outcomes this is the exact
  McNemar test (only samples that one model solves and the other does not count); for
  outcomes averaged over seeds it is the sign test on the per-sample mean differences.
  Exact binomial tails, so it is right for the few discordant samples a small evaluation has.
- ``holm``: Holm–Bonferroni adjusted p-values, for the several pipelines tested against one
  base (controls the chance of any false "significant" at 5 %).
- ``spread``: mean, sample standard deviation and range of one pipeline's scores across
  training seeds; a range above a stated threshold flags the pipeline as unstable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Z95 = 1.959963984540054


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval for ``successes`` out of ``n`` (fractional counts allowed)."""
    if n <= 0:
        return (math.nan, math.nan)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def binomial_two_sided(k: int, n: int) -> float:
    """Exact two-sided p-value of ``k`` successes in ``n`` fair coin flips."""
    if n == 0:
        return 1.0
    low = min(k, n - k)
    tail: float = sum(math.comb(n, i) for i in range(low + 1)) / 2**n
    return min(1.0, 2 * tail)


@dataclass
class PairedTest:
    """A pipeline against base on the same samples."""

    n: int  # samples in both
    better: int  # samples where the pipeline scored higher than base
    worse: int  # ... lower
    delta: float  # mean per-sample difference (pipeline - base)
    p: float  # exact two-sided sign test (McNemar for 0/1 outcomes)


def paired_sign_test(outcomes: dict[object, float], base: dict[object, float]) -> PairedTest:
    """Compare per-sample outcomes with base's on the samples both have (by sample id)."""
    shared = [doc for doc in outcomes if doc in base]
    diffs = [outcomes[doc] - base[doc] for doc in shared]
    better = sum(d > 0 for d in diffs)
    worse = sum(d < 0 for d in diffs)
    delta = sum(diffs) / len(diffs) if diffs else math.nan
    return PairedTest(len(shared), better, worse, delta, binomial_two_sided(better, better + worse))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the input's order."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    adjusted = [1.0] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


@dataclass
class Spread:
    """One pipeline's score across training seeds."""

    mean: float
    sd: float | None  # sample standard deviation; None with one seed
    low: float
    high: float

    @property
    def range(self) -> float:
        return self.high - self.low


def spread(values: Sequence[float]) -> Spread:
    mean = sum(values) / len(values)
    sd = None
    if len(values) > 1:
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return Spread(mean, sd, min(values), max(values))


def mean_outcomes(per_seed: Sequence[dict[object, float]]) -> dict[object, float]:
    """Per-sample outcome averaged over seeds, on the samples every seed has."""
    shared = set(per_seed[0]).intersection(*per_seed[1:])
    return {
        doc: sum(o[doc] for o in per_seed) / len(per_seed) for doc in per_seed[0] if doc in shared
    }
