"""Goodness-of-fit of samples against a closed-form Gaussian mixture, with a family-wise
false-alarm rate."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from scipy import special, stats
from torch import Tensor

from .._validation import check_tensor
from ..analytic import GaussianMixture


@dataclasses.dataclass
class SampleCheck:
    """Result of :func:`check_samples`.

    Attributes:
        names: one name per test (e.g. ``"ks[3]"``, ``"mean[0]"``, ``"cov[0,1]"``).
        statistics: the KS distance or the z-score of each test.
        p_values: two-sided p-values.
        alpha: family-wise level; each test is run at ``alpha / len(names)`` (Bonferroni).
        passed: whether no test rejected.
    """

    names: list[str]
    statistics: np.ndarray
    p_values: np.ndarray
    alpha: float
    passed: bool

    def worst(self) -> tuple[str, float, float]:
        i = int(np.argmin(self.p_values))
        return self.names[i], float(self.statistics[i]), float(self.p_values[i])

    def __str__(self) -> str:
        name, stat, p = self.worst()
        verdict = "pass" if self.passed else "FAIL"
        return (
            f"{verdict}: {len(self.names)} tests at family level {self.alpha:g}; worst {name} "
            f"statistic {stat:.4g}, p = {p:.3g} (threshold {self.alpha / len(self.names):.3g})"
        )


def _z_test(h: np.ndarray, expected: float) -> tuple[float, float]:
    n = h.shape[0]
    se = h.std(ddof=1) / np.sqrt(n)
    z = (h.mean() - expected) / max(se, 1e-300)
    return float(z), float(2 * stats.norm.sf(abs(z)))


def check_samples(
    samples: Tensor,
    mixture: GaussianMixture,
    *,
    alpha: float = 1e-3,
    covariances: bool = True,
) -> SampleCheck:
    """Test whether ``samples`` ``(n, *event)`` are draws from ``mixture``.

    Runs, per coordinate, a Kolmogorov–Smirnov test against the exact 1-D marginal CDF and a
    z-test of the mean; and for every pair ``i <= j`` a z-test of ``E[(x_i - mu_i)(x_j - mu_j)]``
    against the exact covariance (per-coordinate tests alone miss wrong correlations). z-tests use
    the samples' own standard error. All tests are combined by Bonferroni at family level ``alpha``.
    """
    samples = check_tensor("samples", samples, min_dim=2)
    x = samples.detach().reshape(samples.shape[0], -1).double().cpu().numpy()
    d = x.shape[1]
    if d != mixture.dim:
        raise ValueError(f"samples have {d} coordinates per sample; the mixture has {mixture.dim}")
    w = mixture.weights.numpy()
    mu_k = mixture.means.reshape(-1, d).numpy()
    var_k = torch.diagonal(mixture.covs, dim1=-2, dim2=-1).numpy()
    mu = mixture.mean().reshape(-1).numpy()
    cov = mixture.covariance().numpy()
    names, statistics, p_values = [], [], []
    for i in range(d):
        sd = np.sqrt(var_k[:, i])

        def cdf(v, i=i, sd=sd):
            z = (np.asarray(v)[..., None] - mu_k[:, i]) / sd
            return (w * 0.5 * special.erfc(-z / np.sqrt(2))).sum(-1)

        ks = stats.kstest(x[:, i], cdf)
        names.append(f"ks[{i}]")
        statistics.append(ks.statistic)
        p_values.append(ks.pvalue)
        z, p = _z_test(x[:, i], mu[i])
        names.append(f"mean[{i}]")
        statistics.append(z)
        p_values.append(p)
    centred = x - mu
    pairs = [(i, j) for i in range(d) for j in range(i, d)] if covariances else []
    for i, j in pairs:
        z, p = _z_test(centred[:, i] * centred[:, j], cov[i, j])
        names.append(f"cov[{i},{j}]")
        statistics.append(z)
        p_values.append(p)
    p_arr = np.asarray(p_values)
    passed = bool((p_arr >= alpha / len(names)).all())
    return SampleCheck(names, np.asarray(statistics), p_arr, alpha, passed)


def assert_samples(
    samples: Tensor, mixture: GaussianMixture, *, alpha: float = 1e-3
) -> SampleCheck:
    """:func:`check_samples`, raising ``AssertionError`` with the worst test when it fails."""
    report = check_samples(samples, mixture, alpha=alpha)
    if not report.passed:
        raise AssertionError(str(report))
    return report
