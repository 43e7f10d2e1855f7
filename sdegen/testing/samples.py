"""Goodness-of-fit of samples against a closed-form Gaussian mixture, with a family-wise
false-alarm rate."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import torch
from scipy import special, stats
from torch import Tensor

from .._validation import check_tensor
from ..analytic import GaussianMixture

# Below this the measured size of the second-moment z-tests exceeds alpha (benchmarks/
# bench_testing_power.py): the studentised mean of y_i y_j is skewed and heavy-tailed there.
_MIN_RELIABLE_N = 1000


class SmallSampleWarning(UserWarning):
    """A Monte-Carlo check was run with too few samples for its stated false-alarm rate."""


@dataclasses.dataclass
class SampleCheck:
    """Result of a Bonferroni-combined family of tests.

    Attributes:
        names: one name per test (e.g. ``"ks[3]"``, ``"mean[0]"``, ``"white[0,1]"``).
        statistics: the KS distance, Cramér–von Mises statistic or z-score of each test.
        p_values: p-values.
        alpha: family-wise level; each test is run at ``alpha / len(names)`` (Bonferroni), so the
            chance that a correct law fails is at most ``alpha``.
        passed: whether no test rejected.
        notes: what else the verdict depends on (e.g. a solver's step bias).
    """

    names: list[str]
    statistics: np.ndarray
    p_values: np.ndarray
    alpha: float
    passed: bool
    notes: str = ""

    def worst(self) -> tuple[str, float, float]:
        """``(name, statistic, p-value)`` of the test with the smallest p-value."""
        i = int(np.argmin(self.p_values))
        return self.names[i], float(self.statistics[i]), float(self.p_values[i])

    def __str__(self) -> str:
        name, stat, p = self.worst()
        verdict = "pass" if self.passed else "FAIL"
        text = (
            f"{verdict}: {len(self.names)} tests at family level {self.alpha:g}; worst {name} "
            f"statistic {stat:.4g}, p = {p:.3g} (threshold {self.alpha / len(self.names):.3g})"
        )
        return f"{text}; {self.notes}" if self.notes else text


def _z_test(h: np.ndarray, expected: float) -> tuple[float, float]:
    n = h.shape[0]
    se = h.std(ddof=1) / np.sqrt(n)
    z = (h.mean() - expected) / max(se, 1e-300)
    return float(z), float(2 * stats.norm.sf(abs(z)))


def _combine(names, statistics, p_values, alpha, notes="") -> SampleCheck:
    p_arr = np.asarray(p_values, dtype=float)
    passed = bool((p_arr >= alpha / len(names)).all())
    stats_arr = np.asarray(statistics, dtype=float)
    return SampleCheck(list(names), stats_arr, p_arr, alpha, passed, notes)


def check_samples(
    samples: Tensor,
    law: GaussianMixture,
    *,
    alpha: float = 1e-3,
    cramer_von_mises: bool = True,
    notes: str = "",
) -> SampleCheck:
    """Test whether ``samples`` ``(n, *event)`` are independent draws from ``law``.

    Per coordinate: Kolmogorov–Smirnov and (optionally) Cramér–von Mises tests against the exact
    1-D marginal CDF, and a z-test of the mean. Then the samples are whitened with the law's
    covariance ``Σ = L L^T`` (``y = L^{-1}(x - mu)``, so ``E[y y^T] = I``) and every entry
    ``E[y_i y_j]``, ``i <= j``, is z-tested: the diagonal tests the variances, the off-diagonal
    entries the correlations that per-coordinate tests cannot see. z-tests use the samples' own
    standard error (valid for any law with finite fourth moments, as n grows). All tests are
    combined by Bonferroni at family level ``alpha``. Measured size (benchmarks/
    bench_testing_power.py): within ``alpha`` for n >= 4000; above it at small n (1.6% at
    ``alpha = 1e-3`` with n = 50), so n < 1000 warns with :class:`SmallSampleWarning`.
    """
    samples = check_tensor("samples", samples, min_dim=2)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1); got {alpha}")
    x = samples.detach().reshape(samples.shape[0], -1).double().cpu().numpy()
    n, d = x.shape
    if d != law.dim:
        raise ValueError(f"samples have {d} coordinates per sample; the law has {law.dim}")
    if n < 20:
        raise ValueError(f"need at least 20 samples for these tests; got {n}")
    if n < _MIN_RELIABLE_N:
        warnings.warn(
            f"check_samples with n = {n} < {_MIN_RELIABLE_N}: its z-tests rely on the central "
            "limit theorem, and at small n the false-failure rate exceeds alpha (measured at "
            "alpha = 1e-3: 1.6% at n = 50, 0.4% at n = 200, within alpha at n >= 4000)",
            SmallSampleWarning,
            stacklevel=2,
        )
    w = law.weights.numpy()
    mu_k = law.means.reshape(-1, d).numpy()
    var_k = torch.diagonal(law.covs, dim1=-2, dim2=-1).numpy()
    mu = law.mean().reshape(-1).numpy()
    cov = law.covariance().numpy()
    names, statistics, p_values = [], [], []
    for i in range(d):
        sd = np.sqrt(var_k[:, i])

        def cdf(v, i=i, sd=sd):
            z = (np.asarray(v, dtype=float)[..., None] - mu_k[:, i]) / sd
            return (w * 0.5 * special.erfc(-z / np.sqrt(2))).sum(-1)

        ks = stats.kstest(x[:, i], cdf)
        names.append(f"ks[{i}]")
        statistics.append(ks.statistic)
        p_values.append(ks.pvalue)
        if cramer_von_mises:
            cvm = stats.cramervonmises(x[:, i], cdf)
            names.append(f"cvm[{i}]")
            statistics.append(cvm.statistic)
            p_values.append(min(max(cvm.pvalue, 0.0), 1.0))
        z, p = _z_test(x[:, i], mu[i])
        names.append(f"mean[{i}]")
        statistics.append(z)
        p_values.append(p)
    chol = np.linalg.cholesky(cov)
    white = np.linalg.solve(chol, (x - mu).T).T
    for i in range(d):
        for j in range(i, d):
            z, p = _z_test(white[:, i] * white[:, j], 1.0 if i == j else 0.0)
            names.append(f"white[{i},{j}]")
            statistics.append(z)
            p_values.append(p)
    return _combine(names, statistics, p_values, alpha, notes)


def assert_samples(samples: Tensor, law: GaussianMixture, *, alpha: float = 1e-3) -> SampleCheck:
    """:func:`check_samples`, raising ``AssertionError`` with the worst test when it fails."""
    report = check_samples(samples, law, alpha=alpha)
    if not report.passed:
        raise AssertionError(str(report))
    return report
