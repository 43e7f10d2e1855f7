"""Empirical convergence order of a solver."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy import stats
from torch import Tensor


@dataclasses.dataclass
class OrderReport:
    """Result of :func:`convergence_order`.

    Attributes:
        order: fitted slope ``p`` of ``log error = a - p log steps`` (error ∝ dt^p).
        ci: ``(low, high)`` confidence interval of ``p`` at the requested level (t-distribution
            of the least-squares slope; needs at least 3 step counts).
        steps, errors: the data.
    """

    order: float
    ci: tuple[float, float]
    steps: list[int]
    errors: list[float]

    def __str__(self) -> str:
        return f"order {self.order:.3f}, CI [{self.ci[0]:.3f}, {self.ci[1]:.3f}]"


def convergence_order(
    solve: Callable[[int], Tensor],
    steps_list: Sequence[int],
    reference: Tensor | Callable[[], Tensor],
    *,
    level: float = 0.95,
) -> OrderReport:
    """Fit the order ``p`` of ``error ≈ C dt^p`` from solves at several step counts.

    Arguments:
        solve: ``steps -> solution`` (any shape); for a strong order, use the same Brownian path
            at every step count (e.g. a ``torchsde.BrownianInterval`` with fixed entropy).
        steps_list: at least three step counts, e.g. ``[16, 32, 64, 128]``.
        reference: the exact (or a much finer) solution, or a callable returning it.
        level: confidence level of the interval.

    The error is the root-mean-square difference over all entries.

    Example:
        >>> report = convergence_order(lambda n: euler(n), [20, 40, 80, 160], exact)
        >>> report.order   # ≈ 1.0
    """
    steps_list = [int(s) for s in steps_list]
    if len(steps_list) < 3 or any(s < 1 for s in steps_list):
        raise ValueError(f"steps_list needs at least 3 positive step counts; got {steps_list}")
    ref = reference() if callable(reference) else reference
    errors = []
    for steps in steps_list:
        diff = (solve(steps) - ref).double()
        errors.append(float(torch.sqrt((diff**2).mean())))
    if min(errors) <= 0:
        raise ValueError(f"an error is zero at steps {steps_list[int(np.argmin(errors))]}")
    fit = stats.linregress(np.log(steps_list), np.log(errors))
    q = stats.t.ppf(0.5 + level / 2, len(steps_list) - 2)
    order = -fit.slope
    return OrderReport(order, (order - q * fit.stderr, order + q * fit.stderr), steps_list, errors)
