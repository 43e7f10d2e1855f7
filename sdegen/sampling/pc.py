"""Predictor–corrector samplers (Song et al. 2021) and annealed Langevin dynamics (Song & Ermon
2019).

A step from grid time ``t_i`` to ``t_{i+1} < t_i`` runs a *predictor* (one step of a reverse-time
solver) and then ``corrector_steps`` *corrector* steps (Langevin MCMC targeting ``p_{t_{i+1}}``).
Predictors: ``euler_maruyama``, ``reverse_diffusion``, ``ancestral`` or ``none``; correctors:
``langevin`` (step size from a signal-to-noise ratio), ``ald`` (annealed Langevin, step size from
the marginal std) or ``none``. Predictors and correctors read only the SDE's capabilities: its
drift and diffusion, and where it has one its closed-form kernel ``N(m x_0 + c, s^2 I)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._utils import StepNoise, add_scaled_, append_dims
from ..reverse import CountedScore
from ..sde.base import AbstractSDE
from ._hooks import StepHooks
from .grids import MarginalCoefficients

PREDICTORS = ("euler_maruyama", "reverse_diffusion", "ancestral", "none")
CORRECTORS = ("langevin", "ald", "none")


class PCContext:
    """What the steps share: the SDE, the counted score, the grid, the noise source and, for a
    linear SDE, its kernel coefficients at the grid times (float64, computed once).

    The steps update the state ``x`` in place (:func:`pc_sample` hands them a copy it owns): on
    CPU a fresh ``(batch, *event)`` tensor per operation can cost as much as the operation. So
    every step asks for the score (and the drift) before it writes to ``x``."""

    def __init__(
        self,
        sde: AbstractSDE,
        score: CountedScore,
        grid: Tensor,
        generator: torch.Generator | None,
    ) -> None:
        self.sde, self._score, self.grid = sde, score, grid
        self.noise = StepNoise(generator)
        self.coeffs = None
        if getattr(sde, "has_marginal", False):
            c = MarginalCoefficients(sde, "the kernel-based predictors")
            self.m, self.s, self.c = (v(grid).tolist() for v in (c.m, c.s, c.c))
            self.coeffs = c

    def time(self, i: int, x: Tensor) -> Tensor:
        return torch.full((x.shape[0],), float(self.grid[i]), dtype=x.dtype, device=x.device)

    def score(self, x: Tensor, t: Tensor) -> Tensor:
        out = self._score(x, t)
        # A score that hands back its input (or a view of it) would change under the in-place
        # update of x.
        if out.untyped_storage().data_ptr() == x.untyped_storage().data_ptr():
            out = out.clone()
        return out


def _affine_(x: Tensor, a: float, b: float) -> Tensor:
    """``x ← a x + b`` in place, skipping the identity parts (VE has ``a = 1``, ``b = 0``)."""
    if a != 1.0:
        x.mul_(a)
    if b != 0.0:
        x.add_(b)
    return x


# Predictors: x at t_i -> x at t_{i+1}, in place. -----------------------------------------------


def euler_maruyama(P: PCContext, x: Tensor, i: int) -> Tensor:
    """``x ← x - [f - g² ∇log p] h + g √h z`` with ``h = t_i - t_{i+1}``."""
    t, h = P.time(i, x), float(P.grid[i] - P.grid[i + 1])
    g = append_dims(P.sde.diffusion(t), x.dim())
    drift = P.sde.drift(x, t) - g * g * P.score(x, t)
    return P.noise.add_(x.sub_(drift, alpha=h), g * math.sqrt(h))


def reverse_diffusion(P: PCContext, x: Tensor, i: int) -> Tensor:
    """Song et al.'s reverse diffusion: ``x ← x - F + G² ∇log p + G z``, where the forward step
    ``t_{i+1} → t_i`` is discretised as ``x_i = x_{i+1} + F + G z``.

    With a closed-form kernel the discretisation is the exact transition (``x_i = r x_{i+1} +
    (c_i - r c_{i+1}) + G z``, ``r = m_i / m_{i+1}``, ``G² = s_i² - r² s_{i+1}²``: for VE this is
    ``G² = σ_i² - σ_{i+1}²``, for VP ``r ≈ √(1 - β_i)``, ``G² ≈ β_i``, as in the paper); without
    one it is Euler's, ``F = f h``, ``G = g √h``.
    """
    t = P.time(i, x)
    score = P.score(x, t)
    if P.coeffs is not None:
        j = i + 1
        r = P.m[i] / P.m[j]
        G2 = max(P.s[i] ** 2 - (r * P.s[j]) ** 2, 0.0)
        _affine_(x, 2 - r, -(P.c[i] - r * P.c[j]))  # x - F, F = (r - 1) x + (c_i - r c_{i+1})
    else:
        h = float(P.grid[i] - P.grid[i + 1])
        G2 = append_dims(P.sde.diffusion(t) ** 2 * h, x.dim())
        x.sub_(P.sde.drift(x, t) * h)
    G = G2**0.5 if isinstance(G2, float) else G2.sqrt()
    return P.noise.add_(add_scaled_(x, score, G2), G)


def ancestral(P: PCContext, x: Tensor, i: int) -> Tensor:
    """Ancestral sampling from the exact Gaussian posterior ``p(x_{t_{i+1}} | x_{t_i}, x_0)``
    with ``x_0`` replaced by its estimate ``D = E[x_0 | x_t]``, derived from the marginal
    coefficients alone. In ``x̃ = (x - c)/m``, ``σ = s/m``:

        ``x̃' = D + (σ'²/σ²)(x̃ - D) + σ' √(1 - σ'²/σ²) z``,  ``D = x̃ + σ² m ∇log p_t(x)``,

    which is DDPM's ancestral step for VP and Song et al.'s ancestral VE step for VE.
    """
    j = i + 1
    sig, sig_next = P.s[i] / P.m[i], P.s[j] / P.m[j]
    ratio = (sig_next / sig) ** 2
    score = P.score(x, P.time(i, x))
    xt = _affine_(x, 1 / P.m[i], -P.c[i] / P.m[i])
    # D + ratio (x̃ - D) = x̃ + (1 - ratio) σ² m ∇log p
    xt.add_(score, alpha=(1 - ratio) * sig * sig * P.m[i])
    P.noise.add_(xt, sig_next * math.sqrt(1 - ratio))
    return _affine_(xt, P.m[j], P.c[j])


# Correctors: Langevin MCMC steps targeting p_t at t = t_j, in place. ---------------------------


def _langevin_step(P: PCContext, x: Tensor, j: int, step) -> Tensor:
    """``x ← x + ε ∇log p_t(x) + √(2ε) z`` with a per-sample step ``ε = step(score, z)``."""
    score = P.score(x, P.time(j, x))
    z = P.noise.draw(x)
    eps = append_dims(step(score, z), x.dim())
    return x.addcmul_(eps, score).addcmul_(z, (2 * eps).sqrt())


def _snr_step(snr: float):
    def step(score: Tensor, z: Tensor) -> Tensor:
        # Song et al. average the norms over the batch: per-sample ratios blow up in low
        # dimensions, where a sample near a mode has a score norm near zero.
        score_norm = score.flatten(1).norm(dim=1).mean()
        z_norm = torch.linalg.vector_norm(z.flatten(1), dim=1, dtype=score.dtype).mean()
        eps = 2 * (snr * z_norm / score_norm) ** 2
        # An untrained, zero-initialised network returns exactly zero: skip the step.
        eps = torch.where(score_norm > 0, eps, torch.zeros_like(eps))
        return eps.expand(score.shape[0])

    return step


def langevin(P: PCContext, x: Tensor, j: int, steps: int, snr: float) -> Tensor:
    """Song et al.'s Langevin corrector: ``ε = 2 (snr ‖z‖ / ‖∇log p‖)²`` with the norms
    averaged over the batch, so the noise-to-gradient ratio of an update is ``snr``. Where the
    score is exactly zero (an untrained, zero-initialised network) the step is skipped instead of
    dividing by zero."""
    step = _snr_step(snr)
    for _ in range(steps):
        x = _langevin_step(P, x, j, step)
    return x


def ald(P: PCContext, x: Tensor, j: int, steps: int, snr: float) -> Tensor:
    """Annealed Langevin dynamics (Song & Ermon 2019) at noise level ``s(t_j)``: step
    ``ε = 2 (snr s(t_j))²``, i.e. ``ε_j ∝ σ_j²`` across levels. Needs a closed-form kernel."""
    eps = torch.full((x.shape[0],), 2 * (snr * P.s[j]) ** 2, dtype=x.dtype, device=x.device)
    for _ in range(steps):
        x = _langevin_step(P, x, j, lambda score, z: eps)
    return x


def hold(P: PCContext, x: Tensor, i: int) -> Tensor:
    """No dynamics between noise levels, as in annealed Langevin dynamics: ``x̃ = (x - c)/m``
    is kept (so ``x`` is only rescaled, for a linear SDE; kept as is otherwise). No score."""
    if P.coeffs is None:
        return x
    j = i + 1
    a = P.m[j] / P.m[i]
    return _affine_(x, a, P.c[j] - a * P.c[i])


_PREDICTOR_FNS = {
    "none": hold,
    "euler_maruyama": euler_maruyama,
    "reverse_diffusion": reverse_diffusion,
    "ancestral": ancestral,
}
_CORRECTOR_FNS = {"langevin": langevin, "ald": ald}


def pc_sample(
    P: PCContext,
    x: Tensor,
    hooks: StepHooks,
    *,
    predictor: str,
    corrector: str,
    corrector_steps: int,
    snr: float,
) -> Tensor:
    """Algorithm 2 of Song et al. (2021): for each step, predict ``t_i → t_{i+1}``, then correct
    at ``t_{i+1}``; the hooks run after both. ``x`` is not modified: the steps update a copy."""
    predict = _PREDICTOR_FNS[predictor]
    correct = _CORRECTOR_FNS.get(corrector)
    x = x.clone()
    for i in range(P.grid.numel() - 1):
        x = predict(P, x, i)
        if correct is not None and corrector_steps:
            x = correct(P, x, i + 1, corrector_steps, snr)
        x = hooks.owned(i, x)
    return x
