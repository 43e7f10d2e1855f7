"""Few-step samplers for linear SDEs, in the SDE's own marginal coefficients.

Everything runs on ``x̃ = (x - c)/m`` and ``σ = s/m`` (see :mod:`sdegen.sampling.grids`), where the
probability flow reads ``dx̃/dσ = (x̃ - D)/σ`` with the denoiser ``D = x̃ + (s²/m) ∇log p_t(x)``.
In ``λ = -log σ`` its exact solution over a step ``h = λ' - λ`` is

    ``x̃' = e^{-h} x̃ + ∫_0^h e^{-(h-u)} D(λ + u) du``,

and the reverse SDE's (noise ``η = 1``) is ``x̃' = e^{-2h} x̃ + ∫_0^h 2 e^{-2(h-u)} D du +
σ' √(1 - e^{-2h}) z``. Exponential integrators replace ``D`` by the polynomial through the last
``k`` denoiser values and integrate it exactly; :func:`exponential_weights` computes those
weights for any step sizes (DPM-Solver++ kM with exact variable-step coefficients; k = 1 is DDIM,
and its stochastic form is ancestral sampling).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ..reverse import CountedScore
from ..sde.base import AbstractSDE
from ._hooks import StepHooks
from .grids import MarginalCoefficients

# Adams–Bashforth coefficients (equal steps), newest first: iPNDM (Zhang & Chen 2023).
_ADAMS_BASHFORTH = {
    1: [1.0],
    2: [3 / 2, -1 / 2],
    3: [23 / 12, -16 / 12, 5 / 12],
    4: [55 / 24, -59 / 24, 37 / 24, -9 / 24],
}

# Below this many steps the last steps drop to lower order (as in DPM-Solver and UniPC), since
# high-order extrapolation over the last, widest log-σ steps is unstable.
LOWER_ORDER_FINAL_BELOW = 15


class EDMContext:
    """The denoiser on the grid: ``D(x̃, i)`` at ``t_i``, with ``σ_i``, ``λ_i`` as floats."""

    def __init__(
        self,
        sde: AbstractSDE,
        score: CountedScore,
        grid: Tensor,
        generator: torch.Generator | None,
        what: str,
    ) -> None:
        coeffs = MarginalCoefficients(sde, what)
        self.score, self.grid, self.generator = score, grid, generator
        self.m, self.s, self.c = (f(grid).tolist() for f in (coeffs.m, coeffs.s, coeffs.c))
        self.sigma = [s / m for s, m in zip(self.s, self.m, strict=False)]
        self.lam = [-math.log(s) for s in self.sigma]
        self.steps = grid.numel() - 1

    def to_edm(self, x: Tensor, i: int) -> Tensor:
        return (x - self.c[i]) / self.m[i]

    def from_edm(self, xt: Tensor, i: int) -> Tensor:
        return self.m[i] * xt + self.c[i]

    def denoise(self, xt: Tensor, i: int) -> Tensor:
        t = torch.full((xt.shape[0],), float(self.grid[i]), dtype=xt.dtype, device=xt.device)
        return xt + (self.s[i] ** 2 / self.m[i]) * self.score(self.from_edm(xt, i), t)

    def noise(self, x: Tensor) -> Tensor:
        return torch.randn(x.shape, generator=self.generator, dtype=x.dtype, device=x.device)

    def order_at(self, i: int, order: int) -> int:
        """Multistep order at step ``i``: limited by the history, and at the end of short runs."""
        k = min(order, i + 1)
        if self.steps < LOWER_ORDER_FINAL_BELOW:
            k = min(k, self.steps - i)
        return k


def exponential_weights(h: float, nodes: list[float], kappa: float = 1.0) -> list[float]:
    """Weights ``w_j`` with ``∫_0^h κ e^{-κ(h-u)} P(u) du = Σ_j w_j P(u_j)`` for every polynomial
    ``P`` of degree ``< len(nodes)``, ``u_j`` the nodes (``λ_{i-j} - λ_i``, so ``u_0 = 0``).

    The moments ``M_n = ∫_0^h κ e^{-κ(h-u)} u^n du`` obey ``M_0 = 1 - e^{-κh}``,
    ``M_n = h^n - (n/κ) M_{n-1}``; the weights solve the Vandermonde system ``Σ_j w_j u_j^n = M_n``.
    """
    k = len(nodes)
    moments = [-math.expm1(-kappa * h)]
    for n in range(1, k):
        moments.append(h**n - n / kappa * moments[-1])
    if k == 1:
        return moments
    vander = np.vander(np.asarray(nodes), k, increasing=True).T
    return np.linalg.solve(vander, np.asarray(moments)).tolist()


def multistep_exponential(
    E: EDMContext, x: Tensor, hooks: StepHooks, *, order: int, stochastic: bool = False
) -> Tensor:
    """DPM-Solver++ kM (``stochastic=False``; order 1 is DDIM) or its SDE form with ``η = 1``
    (order 1 is ancestral sampling, order 2 SDE-DPM-Solver++ 2M), with exact variable-step
    weights; one denoiser evaluation per step."""
    kappa = 2.0 if stochastic else 1.0
    xt, history = E.to_edm(x, 0), []
    for i in range(E.steps):
        history = [E.denoise(xt, i), *history][:order]
        k = E.order_at(i, order)
        h = E.lam[i + 1] - E.lam[i]
        nodes = [E.lam[i - j] - E.lam[i] for j in range(k)]
        w = exponential_weights(h, nodes, kappa)
        # x̃' = e^{-κh} x̃ + Σ_j w_j D_{i-j}  (+ σ' √(1 - e^{-2h}) z for the SDE)
        xt = math.exp(-kappa * h) * xt
        for wj, dj in zip(w, history, strict=False):
            xt = xt + wj * dj
        if stochastic:
            xt = xt + E.sigma[i + 1] * math.sqrt(-math.expm1(-2 * h)) * E.noise(xt)
        xt = E.to_edm(hooks(i, E.from_edm(xt, i + 1)), i + 1)
    return E.from_edm(xt, E.steps)


def edm_heun(E: EDMContext, x: Tensor, hooks: StepHooks) -> Tensor:
    """Algorithm 1 of Karras et al. (2022): Heun's method on ``dx̃/dσ = (x̃ - D)/σ``; two
    denoiser evaluations per step (every step ends at ``σ > 0``)."""
    xt = E.to_edm(x, 0)
    for i in range(E.steps):
        s, s_next = E.sigma[i], E.sigma[i + 1]
        d = (xt - E.denoise(xt, i)) / s  # Euler slope at σ_i
        x_euler = xt + (s_next - s) * d
        d_next = (x_euler - E.denoise(x_euler, i + 1)) / s_next  # slope at the Euler point
        xt = xt + (s_next - s) * 0.5 * (d + d_next)  # trapezoidal correction
        xt = E.to_edm(hooks(i, E.from_edm(xt, i + 1)), i + 1)
    return E.from_edm(xt, E.steps)


def ipndm(E: EDMContext, x: Tensor, hooks: StepHooks, *, order: int) -> Tensor:
    """Improved PNDM (Zhang & Chen 2023): Adams–Bashforth in ``σ`` on the slope
    ``ε̂ = (x̃ - D)/σ`` with equal-step coefficients, the order growing from 1 to ``order`` as
    slopes accumulate; one denoiser evaluation per step."""
    xt, slopes = E.to_edm(x, 0), []
    for i in range(E.steps):
        slopes = [(xt - E.denoise(xt, i)) / E.sigma[i], *slopes][:order]
        coef = _ADAMS_BASHFORTH[min(order, i + 1)]
        xt = xt + (E.sigma[i + 1] - E.sigma[i]) * sum(
            c * e for c, e in zip(coef, slopes, strict=False)
        )
        xt = E.to_edm(hooks(i, E.from_edm(xt, i + 1)), i + 1)
    return E.from_edm(xt, E.steps)


def _unipc_coefficients(h: float, ratios: list[float], k: int) -> tuple[list, list, float]:
    """UniPC's ``(ρ_predictor, ρ_corrector, B(h))`` for data prediction with ``B(h) =
    1 - e^{-h}`` ("bh2"), ``ratios`` = ``r_m = (λ_{i-m} - λ_i)/h`` (m = 1 .. k-1)."""
    rks = np.asarray([*ratios, 1.0])
    hh = -h
    h_phi_1 = math.expm1(hh)
    b_h = h_phi_1
    h_phi_k = h_phi_1 / hh - 1
    factorial, rows, rhs = 1, [], []
    for n in range(1, k + 1):
        rows.append(rks ** (n - 1))
        rhs.append(h_phi_k * factorial / b_h)
        factorial *= n + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    R, b = np.stack(rows), np.asarray(rhs)
    if k == 1:
        rho_p, rho_c = [], [0.5]
    elif k == 2:
        rho_p, rho_c = [0.5], np.linalg.solve(R, b).tolist()
    else:
        rho_p = np.linalg.solve(R[:-1, :-1], b[:-1]).tolist()
        rho_c = np.linalg.solve(R, b).tolist()
    return rho_p, rho_c, b_h


def unipc(E: EDMContext, x: Tensor, hooks: StepHooks, *, order: int) -> Tensor:
    """UniPC (Zhao et al. 2023) with ``B(h) = e^h - 1`` (bh2): a predictor of order ``order``
    from past denoiser values, then a corrector that reuses the evaluation at the predicted point,
    which is also the next step's history, so one denoiser evaluation per step (none after the
    last step, which is not corrected)."""
    xt = E.to_edm(x, 0)
    history = [E.denoise(xt, 0)]  # newest first
    for i in range(E.steps):
        k = E.order_at(i, order)
        h = E.lam[i + 1] - E.lam[i]
        ratios = [(E.lam[i - m] - E.lam[i]) / h for m in range(1, k)]
        rho_p, rho_c, b_h = _unipc_coefficients(h, ratios, k)
        d0 = history[0]
        diffs = [(history[m] - d0) / r for m, r in zip(range(1, k), ratios, strict=False)]
        # First-order (DDIM) part, then the higher-order predictor terms.
        base = (E.sigma[i + 1] / E.sigma[i]) * xt - math.expm1(-h) * d0
        pred = base - b_h * sum(
            (r * d for r, d in zip(rho_p, diffs, strict=False)), torch.zeros_like(xt)
        )
        if i + 1 < E.steps:
            d_new = E.denoise(pred, i + 1)  # the next step's history, evaluated once
            corr = sum(
                (r * d for r, d in zip(rho_c[:-1], diffs, strict=False)), torch.zeros_like(xt)
            )
            xt = base - b_h * (corr + rho_c[-1] * (d_new - d0))
            history = [d_new, *history][:order]
        else:
            xt = pred
        xt = E.to_edm(hooks(i, E.from_edm(xt, i + 1)), i + 1)
    return E.from_edm(xt, E.steps)
