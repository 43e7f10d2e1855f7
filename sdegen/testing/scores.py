"""Scores against autograd and finite differences of a log-density."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import Tensor

from .._validation import as_time, check_tensor


@dataclasses.dataclass
class ScoreCheck:
    """Result of :func:`check_score`.

    Attributes:
        autograd_error: max over points of ``|s - ∇ log p| / (|∇ log p| + 1)``, ``∇`` by
            autograd.
        finite_difference_error: the same against central differences of ``log p``.
        step: the finite-difference step used (relative to ``max(1, |x_i|)``).
        tol_autograd, tol_finite_difference: the tolerances applied.
        passed: both within tolerance.
    """

    autograd_error: float
    finite_difference_error: float
    step: float
    tol_autograd: float
    tol_finite_difference: float
    passed: bool

    def __str__(self) -> str:
        verdict = "pass" if self.passed else "FAIL"
        return (
            f"{verdict}: score vs autograd {self.autograd_error:.2e} "
            f"(tol {self.tol_autograd:.0e}), "
            f"vs finite differences {self.finite_difference_error:.2e} "
            f"(tol {self.tol_finite_difference:.0e}, step {self.step:.1e})"
        )


def _relative(a: Tensor, b: Tensor) -> float:
    err = (a - b).flatten(1).norm(dim=1) / (b.flatten(1).norm(dim=1) + 1)
    return float(err.max())


def check_score(
    score_fn: Callable[[Tensor, Tensor], Tensor],
    log_density: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    t: float | Tensor,
    *,
    tol_autograd: float | None = None,
    tol_finite_difference: float | None = None,
) -> ScoreCheck:
    """Compare ``score_fn(x, t)`` with ``∇_x log_density(x, t)``, by autograd and by central
    finite differences.

    The finite-difference step is ``eps^(1/3) max(1, |x_i|)`` (``eps`` the dtype's machine
    epsilon), which balances the O(h^2) truncation error against the O(eps / h) rounding error;
    the default tolerances follow (1e-5 in float64, 5e-2 in float32). Autograd is held to
    1e-10 (float64) / 1e-4 (float32) relative error.

    Arguments:
        x: ``(batch, *event)`` points; ``t``: ``(batch,)`` or a float.
    """
    x = check_tensor("x", x, min_dim=2)
    t = as_time("t", t, x.shape[0], x)
    f64 = x.dtype == torch.float64
    tol_autograd = tol_autograd if tol_autograd is not None else (1e-10 if f64 else 1e-4)
    tol_fd = tol_finite_difference if tol_finite_difference is not None else (1e-5 if f64 else 5e-2)
    with torch.no_grad():
        score = score_fn(x, t)
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        (auto,) = torch.autograd.grad(log_density(xg, t).sum(), xg)
    step = torch.finfo(x.dtype).eps ** (1 / 3)
    flat = x.reshape(x.shape[0], -1)
    fd = torch.empty_like(flat)
    with torch.no_grad():
        for i in range(flat.shape[1]):
            h = step * flat[:, i].abs().clamp_min(1.0)
            e = torch.zeros_like(flat)
            e[:, i] = h
            up = log_density((flat + e).reshape(x.shape), t)
            down = log_density((flat - e).reshape(x.shape), t)
            fd[:, i] = (up - down) / (2 * h)
    err_auto = _relative(score, auto)
    err_fd = _relative(score, fd.reshape(x.shape))
    passed = err_auto <= tol_autograd and err_fd <= tol_fd
    return ScoreCheck(err_auto, err_fd, step, tol_autograd, tol_fd, passed)


def assert_score(*args, **kwargs) -> ScoreCheck:
    """:func:`check_score`, raising ``AssertionError`` when it fails."""
    report = check_score(*args, **kwargs)
    if not report.passed:
        raise AssertionError(str(report))
    return report
