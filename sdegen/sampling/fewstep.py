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

Every multistep method is split into a *plan*, the float64 coefficients of each step computed
once from the grid (:func:`ipndm_plan`, :func:`unipc_plan`, :func:`exponential_plan`), and a loop
that only combines tensors. The plans are written in torch, so they are differentiable in the
grid: ``benchmarks/samplers.py --fit`` fits step schedules through the same code.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
from torch import Tensor

from .._utils import StepNoise
from ..reverse import CountedScore
from ..sde.base import AbstractSDE
from ._hooks import StepHooks
from .grids import F64, MarginalCoefficients

# Below this many steps the last steps of the exponential integrators and UniPC drop to lower
# order (as in DPM-Solver and UniPC), since high-order extrapolation over the last, widest
# log-σ steps is unstable.
LOWER_ORDER_FINAL_BELOW = 15
# UniPC's "auto" order: the order-4 predictor from 20 steps on, where the fitted schedule is
# one fitted for it (benchmark mixture, validation noise, 20 NFE, VE / VP: 0.0070 / 0.0077
# against order 3 on its own fitted schedule 0.0142 / 0.0155). Below, order 3: at 15 steps on
# the interpolated 20-step schedule order 4 measured 0.080 against order 3's 0.027.
UNIPC_ORDER4_FROM = 20

Denoiser = Callable[[Tensor, int], Tensor]


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
        self.coeffs = MarginalCoefficients(sde, what)
        self.score, self.grid, self.noise = score, grid, StepNoise(generator)
        self.m, self.s, self.c = (f(grid).tolist() for f in (self.coeffs.m, self.coeffs.s,
                                                             self.coeffs.c))  # fmt: skip
        self.sigma = [s / m for s, m in zip(self.s, self.m, strict=False)]
        self.sigma_t = torch.tensor(self.sigma, dtype=F64)
        self.steps = grid.numel() - 1
        # (batch, dtype, device) -> the (batch,) time tensors of the grid, made once.
        self._times: dict = {}

    def _t(self, xt: Tensor, i: int) -> Tensor:
        key = (xt.shape[0], xt.dtype, xt.device)
        if key not in self._times:
            self._times[key] = [
                torch.full((xt.shape[0],), t, dtype=xt.dtype, device=xt.device)
                for t in self.grid.tolist()
            ]
        return self._times[key][i]

    def to_edm(self, x: Tensor, i: int) -> Tensor:
        m, c = self.m[i], self.c[i]
        return x if m == 1.0 and c == 0.0 else (x - c) / m

    def from_edm(self, xt: Tensor, i: int) -> Tensor:
        m, c = self.m[i], self.c[i]
        return xt if m == 1.0 and c == 0.0 else m * xt + c

    def denoise(self, xt: Tensor, i: int) -> Tensor:
        score = self.score(self.from_edm(xt, i), self._t(xt, i))
        return torch.add(xt, score, alpha=self.s[i] ** 2 / self.m[i])

    def denoise_at(self, xt: Tensor, t: float) -> Tensor:
        """The denoiser at a time off the grid (``t`` a float in ``[t_min, T]``)."""
        tt = torch.tensor([t], dtype=F64)
        m, s = float(self.coeffs.m(tt)), float(self.coeffs.s(tt))
        c = float(self.coeffs.c(tt))
        x = xt if m == 1.0 and c == 0.0 else m * xt + c
        t_b = torch.full((xt.shape[0],), t, dtype=xt.dtype, device=xt.device)
        return torch.add(xt, self.score(x, t_b), alpha=s**2 / m)

    def after_step(self, hooks: StepHooks, i: int, xt: Tensor) -> Tensor:
        """Hand ``x`` at ``t_{i+1}`` to the hooks (only when there are any)."""
        if not hooks.active:
            return xt
        return self.to_edm(hooks.owned(i, self.from_edm(xt, i + 1)), i + 1)


def lower_order(steps: int, i: int, order: int, lower_final: bool = True) -> int:
    """Multistep order at step ``i``: limited by the history, and at the end of short runs."""
    k = min(order, i + 1)
    if lower_final and steps < LOWER_ORDER_FINAL_BELOW:
        k = min(k, steps - i)
    return k


def _solve(nodes: Tensor, moments: Tensor) -> Tensor:
    """Weights ``w`` with ``Σ_j w_j u_j^n = M_n`` (n = 0 .. k-1): a Vandermonde solve."""
    k = nodes.numel()
    if k == 1:
        return moments
    vander = nodes[None, :] ** torch.arange(k, dtype=nodes.dtype)[:, None]
    return torch.linalg.solve(vander, moments)


def _as_f64(x) -> Tensor:
    return torch.as_tensor(x, dtype=F64)


def exponential_weights(h, nodes, kappa: float = 1.0) -> Tensor:
    """Weights ``w_j`` with ``∫_0^h κ e^{-κ(h-u)} P(u) du = Σ_j w_j P(u_j)`` for every polynomial
    ``P`` of degree ``< len(nodes)``, ``u_j`` the nodes (``λ_{i-j} - λ_i``, so ``u_0 = 0``).

    The moments ``M_n = ∫_0^h κ e^{-κ(h-u)} u^n du`` obey ``M_0 = 1 - e^{-κh}``,
    ``M_n = h^n - (n/κ) M_{n-1}``; the weights solve the Vandermonde system ``Σ_j w_j u_j^n = M_n``.
    Computed on the nodes scaled by ``h`` (moments ``M_n / h^n``), which keeps the system well
    conditioned for small steps. ``h`` and ``nodes`` may be floats or float64 tensors (then the
    weights are differentiable in them); returns a float64 tensor ``(len(nodes),)``.
    """
    h, nodes = _as_f64(h), _as_f64(nodes)
    moments = [-torch.expm1(-kappa * h)]
    for n in range(1, nodes.numel()):
        # M_n / h^n = 1 - (n / (κ h)) M_{n-1} / h^{n-1}
        moments.append(1 - n / (kappa * h) * moments[-1])
    return _solve(nodes / h, torch.stack(moments))


def adams_bashforth_weights(h, nodes) -> Tensor:
    """Weights ``w_j`` with ``∫_0^h P(u) du = Σ_j w_j P(u_j)`` for every polynomial ``P`` of
    degree ``< len(nodes)`` (``u_0 = 0`` the newest node, the others past times relative to it):
    variable-step Adams–Bashforth, the integral of the Lagrange interpolant over the step.
    On equal steps (``u_j = -j h``) these are the classical ``h (55, -59, 37, -9)/24`` etc."""
    h, nodes = _as_f64(h), _as_f64(nodes)
    k = nodes.numel()
    moments = 1 / torch.arange(1, k + 1, dtype=F64)  # ∫_0^1 v^n dv, on nodes scaled by h
    return h * _solve(nodes / h, moments)


def ipndm_plan(sigma: Tensor, order: int) -> Tensor:
    """``W`` ``(steps, order)``: iPNDM's step ``x̃_{i+1} = x̃_i + Σ_j W_ij ε_{i-j}`` with
    ``ε = (x̃ - D)/σ`` the slope ``dx̃/dσ``, exact variable-step Adams–Bashforth weights in σ
    of order ``min(order, i + 1)``. ``sigma``: the decreasing float64 grid ``(steps + 1,)``."""
    steps = sigma.numel() - 1
    rows = []
    for i in range(steps):
        k = min(order, i + 1)
        nodes = sigma[i - torch.arange(k)] - sigma[i]
        w = adams_bashforth_weights(sigma[i + 1] - sigma[i], nodes)
        rows.append(torch.cat([w, w.new_zeros(order - k)]))
    return torch.stack(rows)


def exponential_plan(
    lam: Tensor, order: int, kappa: float = 1.0, lower_final: bool = True
) -> tuple[Tensor, Tensor]:
    """``(a, W)``: the multistep exponential step ``x̃_{i+1} = a_i x̃_i + Σ_j W_ij D_{i-j}``,
    ``a_i = e^{-κ h_i}``, ``W`` ``(steps, order)``. ``lam``: ``λ = -log σ`` on the grid."""
    steps = lam.numel() - 1
    h = lam.diff()
    rows = []
    for i in range(steps):
        k = lower_order(steps, i, order, lower_final)
        nodes = lam[i - torch.arange(k)] - lam[i]
        w = exponential_weights(h[i], nodes, kappa)
        rows.append(torch.cat([w, w.new_zeros(order - k)]))
    return torch.exp(-kappa * h), torch.stack(rows)


def _unipc_rhos(h: Tensor, ratios: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """UniPC's ``(ρ_predictor, ρ_corrector, B(h))`` for data prediction with ``B(h) =
    1 - e^{-h}`` ("bh2", sign as in the reference implementation: ``B = e^{-h} - 1``),
    ``ratios`` = ``r_m = (λ_{i-m} - λ_i)/h`` (m = 1 .. k-1)."""
    rks = torch.cat([ratios, ratios.new_ones(1)])
    hh = -h
    b_h = torch.expm1(hh)
    h_phi_k = b_h / hh - 1
    factorial, rows, rhs = 1, [], []
    for n in range(1, k + 1):
        rows.append(rks ** (n - 1))
        rhs.append(h_phi_k * factorial / b_h)
        factorial *= n + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    R, b = torch.stack(rows), torch.stack(rhs)
    if k == 1:
        return h.new_zeros(0), h.new_full((1,), 0.5), b_h
    rho_c = torch.linalg.solve(R, b)
    if k == 2:
        return h.new_full((1,), 0.5), rho_c, b_h
    return torch.linalg.solve(R[:-1, :-1], b[:-1]), rho_c, b_h


def unipc_plan(lam: Tensor, order: int, lower_final: bool = True) -> tuple[Tensor, ...]:
    """``(a, P, C, c)``: UniPC-bh2 as linear combinations of the denoiser history
    ``D_i, D_{i-1}, ...`` (newest first): predictor ``x̂_{i+1} = a_i x̃_i + Σ_j P_ij D_{i-j}``,
    corrector ``x̃_{i+1} = a_i x̃_i + Σ_j C_ij D_{i-j} + c_i D(x̂_{i+1})``, with
    ``a_i = σ_{i+1}/σ_i``; ``P``, ``C`` ``(steps, order)``."""
    steps = lam.numel() - 1
    h = lam.diff()
    P, C, c_new = [], [], []
    for i in range(steps):
        k = lower_order(steps, i, order, lower_final)
        ratios = (lam[i - torch.arange(1, k)] - lam[i]) / h[i]
        rho_p, rho_c, b_h = _unipc_rhos(h[i], ratios, k)
        # D-terms of x̂ = a x̃ - expm1(-h) D_0 - B Σ_m ρ_m (D_{i-m} - D_i)/r_m
        first = -torch.expm1(-h[i])
        inv_r = 1 / ratios
        p_rest = -b_h * rho_p * inv_r
        c_rest = -b_h * rho_c[:-1] * inv_r
        pad = h.new_zeros(order - k)
        P.append(torch.cat([(first - p_rest.sum()).reshape(1), p_rest, pad]))
        c_last = -b_h * rho_c[-1]
        C.append(torch.cat([(first - c_rest.sum() - c_last).reshape(1), c_rest, pad]))
        c_new.append(c_last)
    return torch.exp(-h), torch.stack(P), torch.stack(C), torch.stack(c_new)


def _combine(x: Tensor, coefs, terms) -> Tensor:
    """``x + Σ_j coefs_j terms_j``, skipping zero coefficients. Float coefficients (sampling)
    add in place into ``x``, which the caller owns: no new tensor per term. Tensor coefficients
    (fitting a grid through the solver) keep the autograd graph."""
    for a, t in zip(coefs, terms, strict=False):
        if isinstance(a, float):
            if a != 0.0:
                x.add_(t, alpha=a)
        else:
            x = x + a * t
    return x


def _rows(plan: Tensor | list):
    """Plan rows as Python floats for the sampling loop (a plan given as lists, by
    :func:`_sampling_plan`, already is), or tensors when the plan has a graph."""
    if isinstance(plan, list):
        return plan
    return list(plan.unbind(0)) if plan.requires_grad else plan.tolist()


def _has_graph(plan: Tensor | list) -> bool:
    return isinstance(plan, Tensor) and plan.requires_grad


def _slope(xt: Tensor, denoised: Tensor, sigma) -> Tensor:
    """``(x̃ - D)/σ``, in place in the denoiser's output (a fresh tensor) when sampling."""
    if isinstance(sigma, float):
        return denoised.sub_(xt).mul_(-1.0 / sigma)
    return (xt - denoised) / sigma


def ipndm_loop(
    xt: Tensor,
    denoise: Denoiser,
    sigma: Tensor,
    W: Tensor | list,
    after: Callable | None = None,
) -> Tensor:
    """Run iPNDM from ``x̃_0`` with the plan ``W`` of :func:`ipndm_plan`; ``denoise(x̃, i)``
    is the denoiser at grid index ``i`` (returning a new tensor); ``after(i, x̃)`` runs after
    each step and returns the state to continue from."""
    sig, rows, slopes = _rows(sigma), _rows(W), []
    xt = xt if _has_graph(W) else xt.clone()  # updated in place from here on
    for i in range(len(rows)):
        slopes = [_slope(xt, denoise(xt, i), sig[i]), *slopes][: len(rows[i])]
        xt = _combine(xt, rows[i], slopes)
        if after is not None:
            xt = after(i, xt)
    return xt


def unipc_loop(
    xt: Tensor, denoise: Denoiser, plan: tuple[Tensor | list, ...], after: Callable | None = None
) -> Tensor:
    """Run UniPC from ``x̃_0`` with the plan of :func:`unipc_plan`. The corrector reuses the
    evaluation at the predicted point, which is also the next step's history: one denoiser
    evaluation per step (none after the last step, which is not corrected)."""
    grad = _has_graph(plan[0])
    a, P, C, c_new = (_rows(p) for p in plan)
    steps, order = len(a), len(P[0])
    xt = xt if grad else xt.clone()  # updated in place from here on
    history = [denoise(xt, 0)]  # newest first
    for i in range(steps):
        pred = _combine(xt * a[i], P[i], history)
        if i + 1 < steps:
            d_new = denoise(pred, i + 1)
            xt = xt * a[i] if grad else xt.mul_(a[i])
            xt = _combine(_combine(xt, C[i], history), [c_new[i]], [d_new])
            history = [d_new, *history][:order]
        else:
            xt = pred
        if after is not None:
            xt = after(i, xt)
    return xt


# --- Samplers on an EDMContext, as sample() calls them -------------------------------------


def _sampling_plan(make: Callable, grid: Tensor, *args):
    """``make(grid, *args)`` with its tensors as Python lists, remembered across calls: a plan
    costs about a millisecond per step to build (small solves), as much as the steps' own
    arithmetic at batch 2000, and a sampling loop over many batches uses the same grid."""
    return _remembered_plan(make, tuple(grid.tolist()), *args)


@functools.lru_cache(maxsize=64)
def _remembered_plan(make: Callable, grid: tuple[float, ...], *args):
    plan = make(torch.tensor(grid, dtype=F64), *args)
    return plan.tolist() if isinstance(plan, Tensor) else tuple(p.tolist() for p in plan)


def multistep_exponential(
    E: EDMContext, x: Tensor, hooks: StepHooks, *, order: int, eta: float = 0.0
) -> Tensor:
    """DPM-Solver++ kM (``eta=0``; order 1 is DDIM) or its SDE form (order 1 with ``η = 1`` is
    ancestral sampling, order 2 SDE-DPM-Solver++ 2M), with exact variable-step weights; one
    denoiser evaluation per step.

    With ``h = λ_{i+1} - λ_i`` the step is ``x̃' = e^{-(1+η)h} x̃ + ∫ (1+η) e^{-(1+η)(h-u)} D du
    + σ' √(1 - e^{-2ηh}) z``: ``η`` interpolates between the probability flow (0) and the
    reverse SDE (1), each exact for a constant denoiser."""
    kappa = 1.0 + eta
    lam = -torch.log(E.sigma_t)
    a, W = _sampling_plan(exponential_plan, lam, order, kappa)
    # σ' √(1 - e^{-2ηh}): the fresh noise over each step
    noise_scale = (E.sigma_t[1:] * torch.sqrt(-torch.expm1(-2 * eta * lam.diff()))).tolist()
    stochastic = eta > 0
    xt, history = E.to_edm(x, 0).clone(), []  # updated in place from here on
    for i in range(E.steps):
        history = [E.denoise(xt, i), *history][:order]
        xt = _combine(xt.mul_(a[i]), W[i], history)
        if stochastic:
            E.noise.add_(xt, noise_scale[i])
        xt = E.after_step(hooks, i, xt)
    return E.from_edm(xt, E.steps)


def edm_heun(E: EDMContext, x: Tensor, hooks: StepHooks) -> Tensor:
    """Algorithm 1 of Karras et al. (2022): Heun's method on ``dx̃/dσ = (x̃ - D)/σ``; two
    denoiser evaluations per step (every step ends at ``σ > 0``)."""
    xt = E.to_edm(x, 0).clone()  # updated in place from here on
    for i in range(E.steps):
        s, s_next = E.sigma[i], E.sigma[i + 1]
        d = _slope(xt, E.denoise(xt, i), s)  # Euler slope at σ_i
        x_euler = torch.add(xt, d, alpha=s_next - s)
        d_next = _slope(x_euler, E.denoise(x_euler, i + 1), s_next)  # at the Euler point
        xt.add_(d.add_(d_next), alpha=0.5 * (s_next - s))  # trapezoidal correction
        xt = E.after_step(hooks, i, xt)
    return E.from_edm(xt, E.steps)


# Karras et al. (2022), Algorithm 2: churn only inside [S_tmin, S_tmax] of σ.
CHURN_DEFAULTS = {"churn": 10.0, "s_tmin": 0.05, "s_tmax": 50.0, "s_noise": 1.0}


def edm_churn(
    E: EDMContext,
    x: Tensor,
    hooks: StepHooks,
    *,
    churn: float = CHURN_DEFAULTS["churn"],
    s_tmin: float = CHURN_DEFAULTS["s_tmin"],
    s_tmax: float = CHURN_DEFAULTS["s_tmax"],
    s_noise: float = CHURN_DEFAULTS["s_noise"],
) -> Tensor:
    """Algorithm 2 of Karras et al. (2022), the stochastic EDM sampler: at each step with
    ``σ_i ∈ [s_tmin, s_tmax]`` raise the noise to ``σ̂ = σ_i (1 + γ)``,
    ``γ = min(churn / N, √2 - 1)`` (capped at ``σ_max``), by adding
    ``√(σ̂² - σ_i²) s_noise z``, then take a Heun step from ``σ̂`` to ``σ_{i+1}``; two denoiser
    evaluations per step, ``z`` drawn from the context's generator."""
    gamma = min(churn / E.steps, math.sqrt(2) - 1)
    sig_max = E.coeffs.sigma_max
    hat = [min(s * (1 + gamma), sig_max) if s_tmin <= s <= s_tmax else s for s in E.sigma[:-1]]
    # The times of the raised noise levels, inverted once for the whole grid.
    t_hat = E.coeffs.time_of_sigma(torch.tensor(hat, dtype=F64)).tolist()
    xt = E.to_edm(x, 0).clone()  # updated in place from here on
    for i in range(E.steps):
        s, s_hat, s_next = E.sigma[i], hat[i], E.sigma[i + 1]
        if s_hat > s:
            E.noise.add_(xt, math.sqrt(s_hat**2 - s**2) * s_noise)
            d = _slope(xt, E.denoise_at(xt, t_hat[i]), s_hat)
        else:
            d = _slope(xt, E.denoise(xt, i), s)
        x_euler = torch.add(xt, d, alpha=s_next - s_hat)
        d_next = _slope(x_euler, E.denoise(x_euler, i + 1), s_next)
        xt.add_(d.add_(d_next), alpha=0.5 * (s_next - s_hat))
        xt = E.after_step(hooks, i, xt)
    return E.from_edm(xt, E.steps)


def ipndm(E: EDMContext, x: Tensor, hooks: StepHooks, *, order: int) -> Tensor:
    """Improved PNDM (Zhang & Chen 2023): Adams–Bashforth in ``σ`` on the slope
    ``ε̂ = (x̃ - D)/σ``, with exact variable-step weights (:func:`ipndm_plan`), the order
    growing from 1 to ``order`` as slopes accumulate; one denoiser evaluation per step."""
    W = _sampling_plan(ipndm_plan, E.sigma_t, order)
    after = (lambda i, xt: E.after_step(hooks, i, xt)) if hooks.active else None
    xt = ipndm_loop(E.to_edm(x, 0), E.denoise, E.sigma_t, W, after)
    return E.from_edm(xt, E.steps)


def unipc_order(steps: int, order: int | str) -> int:
    """``order="auto"``: 3 below ``UNIPC_ORDER4_FROM`` (20) steps, 4 from there on."""
    if order == "auto":
        return 3 if steps < UNIPC_ORDER4_FROM else 4
    return order


def unipc(E: EDMContext, x: Tensor, hooks: StepHooks, *, order: int | str) -> Tensor:
    """UniPC (Zhao et al. 2023) with ``B(h) = e^h - 1`` (bh2): a predictor of order ``order``
    (see :func:`unipc_order`) from past denoiser values, then a corrector that reuses the
    evaluation at the predicted point (:func:`unipc_loop`); one denoiser evaluation per step."""
    order = unipc_order(E.steps, order)
    plan = _sampling_plan(unipc_plan, -torch.log(E.sigma_t), order)
    after = (lambda i, xt: E.after_step(hooks, i, xt)) if hooks.active else None
    xt = unipc_loop(E.to_edm(x, 0), E.denoise, plan, after)
    return E.from_edm(xt, E.steps)
