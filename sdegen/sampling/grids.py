"""Time grids and the SDE's marginal coefficients in the "EDM" form.

A linear SDE has the kernel ``x_t | x_0 ~ N(m(t) x_0 + c(t), s(t)^2 I)``. With

    ``x̃ = (x - c(t)) / m(t)``,   ``σ(t) = s(t) / m(t)``,   ``λ(t) = -log σ(t)``

every such SDE (VE, VP, sub-VP, OU, user schedules) becomes ``x̃_σ = x_0 + σ ε``: the
probability flow is ``dx̃/dσ = (x̃ - D(x̃, σ)) / σ`` with the denoiser (Tweedie)
``D = E[x_0 | x_t] = x̃ + (s^2 / m) ∇log p_t(x)``, and only the map ``t ↦ σ(t)`` tells the SDEs
apart (Karras et al. 2022). Few-step samplers therefore work on ``(x̃, σ)`` and never ask which
SDE they solve; ``t`` is recovered from ``σ`` by bisection, since ``σ(t)`` increases.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ..sde.base import AbstractSDE
from ._schedules import DEFAULT_SCHEDULE, FIT_SIGMA_RANGE, OPTIMISED_SCHEDULES

F64 = torch.float64
GRIDS = ("uniform", "logsnr", "rho", "optimised")


def needs_marginal(sde: AbstractSDE, what: str) -> None:
    """Raise a clear error when ``what`` needs a closed-form kernel the SDE lacks."""
    if not getattr(sde, "has_marginal", False):
        raise ValueError(
            f"{what} needs an SDE with a closed-form Gaussian kernel (has_marginal = True and "
            f"marginal_mean_coeff / marginal_std, e.g. VPSDE, VESDE, LinearSDE); "
            f"{type(sde).__name__} has none. Use a method that needs only drift and diffusion "
            "('euler', 'pc_euler_maruyama', 'ode_dopri5', ...) or a 'uniform' time grid"
        )


class MarginalCoefficients:
    """``m(t)``, ``c(t)``, ``s(t)``, ``σ(t) = s/m`` of a linear SDE, in float64 on the CPU.

    Arguments:
        sde: an SDE with ``has_marginal = True``.
        what: the method or grid asking (for the error message).
    """

    def __init__(self, sde: AbstractSDE, what: str = "this method") -> None:
        needs_marginal(sde, what)
        self.sde = sde
        t = torch.linspace(sde.t_min, sde.T, 1025, dtype=F64)
        log_sigma = torch.log(self.sigma(t))
        if not bool(torch.isfinite(log_sigma).all()) or bool((log_sigma.diff() <= 0).any()):
            raise ValueError(
                f"{what} needs σ(t) = marginal_std / marginal_mean_coeff to be finite and strictly "
                f"increasing on [t_min, T]; it is not for {sde!r}"
            )
        self.sigma_min, self.sigma_max = float(log_sigma[0].exp()), float(log_sigma[-1].exp())

    def m(self, t: Tensor) -> Tensor:
        return self.sde.marginal_mean_coeff(t)

    def s(self, t: Tensor) -> Tensor:
        return self.sde.marginal_std(t)

    def c(self, t: Tensor) -> Tensor:
        c = self.sde.mean_offset(t)
        return torch.zeros_like(t) if c is None else c

    def sigma(self, t: Tensor) -> Tensor:
        return self.s(t) / self.m(t)

    def time_of_sigma(self, sigma: Tensor) -> Tensor:
        """Invert ``σ(t)`` by bisection in float64 (60 halvings of ``[t_min, T]``)."""
        sigma = torch.as_tensor(sigma, dtype=F64)
        target = torch.log(sigma.clamp(self.sigma_min, self.sigma_max))
        lo = torch.full_like(target, self.sde.t_min)
        hi = torch.full_like(target, self.sde.T)
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            above = torch.log(self.sigma(mid)) > target
            hi = torch.where(above, mid, hi)
            lo = torch.where(above, lo, mid)
        t = 0.5 * (lo + hi)
        # The ends are exact so that a grid starts at T and stops at t_min.
        t = torch.where(sigma >= self.sigma_max, torch.full_like(t, self.sde.T), t)
        return torch.where(sigma <= self.sigma_min, torch.full_like(t, self.sde.t_min), t)


def sigma_grid(
    name: str,
    steps: int,
    sigma_min: float,
    sigma_max: float,
    rho: float = 7.0,
    method: str | None = None,
) -> Tensor:
    """Decreasing ``σ_0 = σ_max > ... > σ_steps = σ_min`` (float64).

    - ``"logsnr"``: uniform in ``λ = -log σ`` (half the log signal-to-noise ratio).
    - ``"rho"``: ``σ_i = (σ_max^{1/ρ} + i/N (σ_min^{1/ρ} - σ_max^{1/ρ}))^ρ`` (Karras et al.
      2022; ``ρ = 7`` by default, ``ρ → ∞`` tends to log-SNR-uniform).
    - ``"optimised"``: a schedule fitted offline for ``method`` (see
      :data:`OPTIMISED_SCHEDULES` and :func:`optimised_sigmas`; methods without one use
      ``DEFAULT_SCHEDULE``'s).
    """
    i = torch.arange(steps + 1, dtype=F64) / steps
    lo, hi = math.log(sigma_min), math.log(sigma_max)
    if name == "logsnr":
        return torch.exp(hi + i * (lo - hi))
    if name == "rho":
        a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
        out = (a + i * (b - a)) ** rho
        out[0], out[-1] = sigma_max, sigma_min
        return out
    if name == "optimised":
        return optimised_sigmas(steps, sigma_min, sigma_max, method)
    raise ValueError(f"time_grid must be one of {GRIDS} or a sequence of times; got {name!r}")


def optimised_sigmas(
    steps: int, sigma_min: float, sigma_max: float, method: str | None = None
) -> Tensor:
    """The fitted schedule of ``method`` placed in absolute σ on ``[σ_min, σ_max]``.

    The schedules were fitted on ``FIT_SIGMA_RANGE`` = [0.002, 80] as ``u ↦ log σ(u)``
    (``u = i / N``). Where a step falls matters in absolute σ (the data's length scales sit at
    fixed σ), so another range keeps the fitted placement: the ``steps + 1`` points are uniform
    in ``u`` between the ``u`` of the range's ends (clamped to the fitted range), and the end
    points are then moved to ``σ_max`` and ``σ_min``. A VP SDE (σ_max ≈ 152) thus takes its
    first step from 152 straight to the fitted second point; stretching the warp over the
    longer range instead moved every point and measured 1.5-2x the path error (d = 64 mixture,
    unipc, 10 / 20 / 50 NFE: 0.077 / 0.035 / 0.0030 against 0.042 / 0.026 / 0.0017).
    Ranges that overlap less than half the fitted one stretch the warp over their own range.
    """
    return place_warp(optimised_warp(steps, method), sigma_min, sigma_max)


def place_warp(v: Tensor, sigma_min: float, sigma_max: float) -> Tensor:
    """A warp ``v`` ``(steps + 1,)`` fitted on ``FIT_SIGMA_RANGE``, placed in absolute σ on
    ``[σ_min, σ_max]`` as :func:`optimised_sigmas` describes; decreasing float64 σ."""
    steps = v.numel() - 1
    grid = torch.linspace(0, 1, steps + 1, dtype=F64)
    fit_lo, fit_hi = (math.log(s) for s in FIT_SIGMA_RANGE)
    lo, hi = math.log(sigma_min), math.log(sigma_max)

    def u_of(log_sigma: float) -> float:  # the inverse of the warp, clamped to the fit range
        w = (min(max(log_sigma, fit_lo), fit_hi) - fit_hi) / (fit_lo - fit_hi)
        return float(_interp(torch.tensor([w], dtype=F64), v.detach(), grid))

    u_hi, u_lo = u_of(hi), u_of(lo)
    if u_lo - u_hi < 0.5:
        return torch.exp(hi + v * (lo - hi))
    u = u_hi + (u_lo - u_hi) * grid
    inner = torch.exp(fit_hi + _interp(u[1:-1], grid, v) * (fit_lo - fit_hi))
    # torch.cat rather than assigning the ends in place keeps the result differentiable in v
    # (the schedule fit in benchmarks/samplers.py differentiates through this placement).
    return torch.cat([inner.new_tensor([sigma_max]), inner, inner.new_tensor([sigma_min])])


def _interp(x: Tensor, xp: Tensor, fp: Tensor) -> Tensor:
    """Piecewise-linear interpolation of ``(xp, fp)`` at ``x`` (``xp`` increasing)."""
    idx = torch.searchsorted(xp, x, right=True).clamp(1, xp.numel() - 1)
    w = (x - xp[idx - 1]) / (xp[idx] - xp[idx - 1])
    return fp[idx - 1] + w * (fp[idx] - fp[idx - 1])


def optimised_warp(steps: int, method: str | None = None) -> Tensor:
    """The warp ``v_0 = 0 < v_1 < ... < v_steps = 1`` of log σ fitted for ``method`` (default:
    ``DEFAULT_SCHEDULE``'s) and ``steps`` steps."""
    fitted = OPTIMISED_SCHEDULES.get(method, OPTIMISED_SCHEDULES[DEFAULT_SCHEDULE])
    if steps in fitted:
        return torch.tensor(fitted[steps], dtype=F64)
    nearest = min(fitted, key=lambda n: (abs(math.log(n / steps)), n))
    return resample_warp(fitted[nearest], steps)


def resample_warp(warp: Sequence[float] | Tensor, steps: int) -> Tensor:
    """A warp of ``len(warp) - 1`` steps read as a quantile function of ``u = i / N`` and
    resampled at ``steps + 1`` uniform points (how step counts without a fitted schedule get one).
    """
    ref = torch.as_tensor(warp, dtype=F64)
    u_ref = torch.linspace(0, 1, ref.numel(), dtype=F64)
    return _interp(torch.linspace(0, 1, steps + 1, dtype=F64), u_ref, ref)


def time_grid(
    sde: AbstractSDE,
    grid: str | Sequence[float] | Tensor,
    steps: int | None,
    *,
    rho: float = 7.0,
    method: str | None = None,
) -> Tensor:
    """A decreasing float64 grid of forward times ``t_0 > t_1 > ... > t_steps``.

    Arguments:
        sde: the forward SDE.
        grid: ``"uniform"`` in ``t`` (any SDE), ``"logsnr"``, ``"rho"`` or ``"optimised"`` in
            ``σ = s/m`` (linear SDEs; see :func:`sigma_grid`), or a strictly decreasing sequence
            of times in ``[t_min, T]`` (then ``steps`` must be ``None`` or ``len(grid) - 1``).
        steps: number of intervals for a named grid.
        rho: the exponent of the ``"rho"`` grid.
        method: the sampling method, whose own fitted schedule ``"optimised"`` uses.
    """
    if isinstance(grid, str):
        if grid not in GRIDS:
            raise ValueError(
                f"time_grid must be one of {GRIDS} or a sequence of times; got {grid!r}"
            )
        if grid == "uniform":
            return torch.linspace(sde.T, sde.t_min, steps + 1, dtype=F64)
        coeffs = MarginalCoefficients(sde, f"time_grid={grid!r}")
        sig = sigma_grid(grid, steps, coeffs.sigma_min, coeffs.sigma_max, rho, method)
        ts = coeffs.time_of_sigma(sig)
        if bool((ts.diff() >= 0).any()):
            raise ValueError(
                f"time_grid={grid!r} with {steps} steps has coinciding times after inverting σ(t); "
                "use fewer steps or another grid"
            )
        return ts
    try:
        ts = torch.as_tensor(grid, dtype=F64).detach().cpu()
    except (TypeError, ValueError):
        raise TypeError(
            f"time_grid must be a grid name {GRIDS} or a sequence of times; got "
            f"{type(grid).__name__}"
        ) from None
    if ts.dim() != 1 or ts.numel() < 2:
        raise ValueError(
            f"time_grid must be a 1-D sequence of at least two times; got shape {tuple(ts.shape)}"
        )
    if not bool(torch.isfinite(ts).all()) or bool((ts.diff() >= 0).any()):
        raise ValueError("time_grid must be finite and strictly decreasing (from T to t_min)")
    if float(ts.max()) > sde.T or float(ts.min()) < sde.t_min:
        raise ValueError(
            f"time_grid must lie in [t_min, T] = [{sde.t_min}, {sde.T}]; got "
            f"[{float(ts.min())}, {float(ts.max())}]"
        )
    if steps is not None and steps != ts.numel() - 1:
        raise ValueError(
            f"steps={steps} disagrees with time_grid of {ts.numel()} times ({ts.numel() - 1} "
            "steps); give one or the other"
        )
    return ts
