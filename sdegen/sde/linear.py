from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from .._validation import check_scalar
from .base import AbstractLinearSDE

Schedule = Callable[[Tensor], Tensor]

_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(8)


def _as_schedule(name: str, fn: Schedule | float | None) -> Schedule | None:
    if fn is None or callable(fn):
        return fn
    value = check_scalar(name, fn)
    return lambda t: torch.full_like(t, value)


def _eval(name: str, fn: Schedule, t: Tensor) -> Tensor:
    out = fn(t)
    if not isinstance(out, Tensor) or out.shape != t.shape:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise TypeError(
            f"{name} must map a tensor of times to a tensor of the same shape; "
            f"for input shape {tuple(t.shape)} it returned {shape}"
        )
    return out


class _HermiteTable:
    """Cumulative integral ``F(t) = ∫_0^t f`` tabulated on a uniform grid and evaluated by cubic
    Hermite interpolation with the exact derivative ``f`` at the nodes.

    Values are composite 8-point Gauss–Legendre sums (exact to rounding for smooth ``f``); the
    interpolation error is below ``h^4 / 384 max|F''''|`` (``h = T / cells``). The derivative
    returned to autograd is ``f(t)`` itself, not the interpolant's, so ``∂_t`` is exact.
    """

    def __init__(self, integrand: Callable[[Tensor], Tensor], T: float, cells: int) -> None:
        self.h = T / cells
        self.cells = cells
        self.integrand = integrand
        grid = torch.linspace(0.0, T, cells + 1, dtype=torch.float64)
        nodes = grid[:-1, None] + 0.5 * self.h * (torch.from_numpy(_GL_NODES)[None] + 1)
        w = torch.from_numpy(_GL_WEIGHTS) * 0.5 * self.h
        cell_integrals = (integrand(nodes) * w).sum(-1)
        self.values = torch.cat([cell_integrals.new_zeros(1), torch.cumsum(cell_integrals, 0)])
        self.slopes = integrand(grid)
        if not (torch.isfinite(self.values).all() and torch.isfinite(self.slopes).all()):
            raise ValueError("the schedule gives NaN or inf on [0, T]; check its formula and T")

    def __call__(self, t: Tensor) -> Tensor:
        return _HermiteEval.apply(t, self)


class _HermiteEval(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t: Tensor, table: _HermiteTable) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(t)
        ctx.table = table
        t64 = t.detach().to(torch.float64, copy=False).cpu()
        idx = torch.clamp(torch.floor(t64 / table.h).long(), 0, table.cells - 1)
        u = t64 / table.h - idx
        y0, y1 = table.values[idx], table.values[idx + 1]
        d0, d1 = table.slopes[idx] * table.h, table.slopes[idx + 1] * table.h
        u2, u3 = u * u, u * u * u
        out = (
            (2 * u3 - 3 * u2 + 1) * y0
            + (u3 - 2 * u2 + u) * d0
            + (-2 * u3 + 3 * u2) * y1
            + (u3 - u2) * d1
        )
        return out.to(dtype=t.dtype, device=t.device)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (t,) = ctx.saved_tensors
        return grad * ctx.table.integrand(t), None


class LinearSDE(AbstractLinearSDE):
    """A linear SDE from user schedules: ``dx = a(t) x dt + g(t) dw``.

    Kernel ``x_t | x_0 ~ N(m(t) x_0, s(t)^2 I)`` with ``m(t) = exp(∫_0^t a)`` and
    ``s(t)^2 = m(t)^2 V(t)``, ``V(t) = ∫_0^t g(u)^2 / m(u)^2 du``. Give either

    - ``beta``: a VP-type schedule (``a = -beta/2``, ``g = sqrt(beta)``); then
      ``s^2 = 1 - m^2`` in closed form, and ``integrated_beta`` may give ``∫_0^t beta``; or
    - ``drift_coeff`` (``a``) and ``diffusion`` (``g``), optionally with closed forms
      ``log_mean_coeff`` (``log m``) and ``marginal_var`` (``s^2``).

    Every schedule is a callable from a tensor of times to a tensor of the same shape (or a
    number for a constant). Integrals without a closed form are tabulated once, in float64, by
    composite 8-point Gauss–Legendre quadrature on ``cells`` uniform cells of ``[0, T]`` and
    evaluated by cubic Hermite interpolation (the time derivative given to autograd is the exact
    integrand). Measured relative error of ``s(t)^2`` at the default 4096 cells: ~1e-15 for a
    ``beta`` schedule (closed-form ``s^2 = 1 - m^2``), ~5e-11 for OU-like and ~5e-10 for VE-like
    exponential ``g`` with the nested quadrature, worst in the first cells near ``t = 0``.

    Prior: ``N(0, prior_std^2 I)``; by default ``prior_std^2 = m(T)^2 + s(T)^2``, the variance of
    ``x_T`` for data of unit variance.

    Example:
        >>> sde = LinearSDE(beta=lambda t: 0.1 + 19.9 * t)          # the linear VP SDE
        >>> sde = LinearSDE(drift_coeff=-1.0, diffusion=lambda t: 1 + t, T=3.0)
    """

    def __init__(
        self,
        beta: Schedule | float | None = None,
        *,
        drift_coeff: Schedule | float | None = None,
        diffusion: Schedule | float | None = None,
        integrated_beta: Schedule | None = None,
        log_mean_coeff: Schedule | None = None,
        marginal_var: Schedule | None = None,
        prior_std: float | None = None,
        t_min: float = 1e-5,
        T: float = 1.0,
        cells: int = 4096,
    ) -> None:
        super().__init__(t_min, T)
        if not isinstance(cells, int) or cells < 16:
            raise ValueError(f"cells must be an int >= 16; got {cells!r}")
        beta = _as_schedule("beta", beta)
        drift_coeff = _as_schedule("drift_coeff", drift_coeff)
        diffusion = _as_schedule("diffusion", diffusion)
        if beta is not None:
            if drift_coeff is not None or diffusion is not None:
                raise ValueError(
                    "give either beta, or drift_coeff and diffusion; got beta together with "
                    "drift_coeff/diffusion"
                )
            self._a: Schedule = lambda t: -0.5 * _eval("beta", beta, t)
            self._g: Schedule = lambda t: torch.sqrt(_eval("beta", beta, t))
            if integrated_beta is not None:
                self._log_m: Schedule = lambda t: (
                    -0.5 * _eval("integrated_beta", integrated_beta, t)
                )
            else:
                self._log_m = _HermiteTable(self._a, self.T, cells)
            self._var: Schedule = lambda t: -torch.expm1(2 * self._log_m(t))
        else:
            if drift_coeff is None or diffusion is None:
                raise ValueError(
                    "LinearSDE needs beta, or both drift_coeff and diffusion; "
                    f"got drift_coeff={drift_coeff!r}, diffusion={diffusion!r}"
                )
            self._a = lambda t: _eval("drift_coeff", drift_coeff, t)
            self._g = lambda t: _eval("diffusion", diffusion, t)
            if log_mean_coeff is not None:
                self._log_m = lambda t: _eval("log_mean_coeff", log_mean_coeff, t)
            else:
                self._log_m = _HermiteTable(self._a, self.T, cells)
            if marginal_var is not None:
                self._var = lambda t: _eval("marginal_var", marginal_var, t)
            else:
                scaled = _HermiteTable(
                    lambda t: self._g(t) ** 2 * torch.exp(-2 * self._log_m(t)), self.T, cells
                )
                self._var = lambda t: torch.exp(2 * self._log_m(t)) * scaled(t)
        self._check_schedules()
        if prior_std is None:
            t_end = torch.tensor([self.T], dtype=torch.float64)
            prior_var = float(torch.exp(2 * self._log_m(t_end)) + self._var(t_end))
            prior_std = math.sqrt(prior_var)
        self.prior_std = check_scalar("prior_std", prior_std, positive=True)

    def _check_schedules(self) -> None:
        t = torch.linspace(self.t_min, self.T, 257, dtype=torch.float64)
        g = self._g(t)
        var = self._var(t)
        if not torch.isfinite(g).all() or bool((g < 0).any()):
            raise ValueError("diffusion (or sqrt(beta)) must be finite and >= 0 on [t_min, T]")
        if not torch.isfinite(var).all() or bool((var <= 0).any()):
            raise ValueError(
                "the kernel variance s(t)^2 must be finite and > 0 on [t_min, T]; check the "
                "diffusion / beta / marginal_var schedule"
            )

    def drift_coeff(self, t: Tensor) -> Tensor:
        return self._a(t)

    def diffusion(self, t: Tensor) -> Tensor:
        return self._g(t)

    def log_mean_coeff(self, t: Tensor) -> Tensor:
        return self._log_m(t)

    def marginal_var(self, t: Tensor) -> Tensor:
        return self._var(t)
