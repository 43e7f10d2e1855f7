"""The Fokker–Planck equation as a pointwise, autograd-exact property test."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .._utils import batch_sum
from .._validation import as_time, check_tensor

LogDensity = Callable[[Tensor, Tensor], Tensor]


def _divergence(y: Tensor, x: Tensor, probes: Tensor | None) -> Tensor:
    """``Σ_i ∂y_i/∂x_i`` per sample: exact (one autograd pass per coordinate) when ``probes`` is
    None, else the Hutchinson estimate ``mean_k v_k^T (∂y/∂x) v_k`` with the given probes."""
    if probes is not None:
        total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for v in probes:
            (jv,) = torch.autograd.grad((y * v).sum(), x, retain_graph=True)
            total = total + batch_sum(jv * v)
        return total / probes.shape[0]
    y_flat = y.flatten(1)
    div = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for i in range(y_flat.shape[1]):
        (gi,) = torch.autograd.grad(y_flat[:, i].sum(), x, retain_graph=True)
        div = div + gi.flatten(1)[:, i]
    return div


def fokker_planck_residual(
    sde,
    log_density: LogDensity,
    x: Tensor,
    t: float | Tensor,
    *,
    divergence: str = "exact",
    num_probes: int = 16,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Relative residual of the log-form Fokker–Planck equation at each point.

    For ``dx = f dt + g(t) dw`` the density obeys ``∂_t p = -∇·(f p) + ½ g^2 Δp``; divided by ``p``,

        ``r = ∂_t log p + ∇·f + f·∇log p - ½ g^2 (Δ log p + ||∇ log p||^2) = 0``.

    Returned: ``|r|`` divided by the sum of the absolute values of its five terms, per point, so
    ~1e-16 (float64) or ~1e-7 (float32) means the equation holds to rounding. All derivatives
    are by autograd (the exact Laplacian by one pass per coordinate, for small ``d``).

    Arguments:
        sde: any SDE with ``drift(x, t)`` and ``diffusion(t)`` (linear or not).
        log_density: ``(x, t) -> log p_t(x)``, ``(batch,)``, differentiable in ``x`` and ``t``.
        x: ``(batch, *event)`` points.
        t: ``(batch,)`` times (one per point: a shared scalar ``t`` would make ``∂_t`` sum over
            the batch) or a float.
        divergence: ``"exact"`` (one autograd pass per coordinate: small ``d``) or
            ``"hutchinson"`` (``num_probes`` Rademacher probes from ``generator``, for large
            ``d``; the residual is then a stochastic estimate, with error ~ 1/sqrt(num_probes)
            of the Laplacian and divergence terms, so use a tolerance to match).

    Returns:
        ``(batch,)`` relative residuals.
    """
    x = check_tensor("x", x, min_dim=2)
    t = as_time("t", t, x.shape[0], x)
    if divergence not in ("exact", "hutchinson"):
        raise ValueError(f"divergence must be 'exact' or 'hutchinson'; got {divergence!r}")
    probes = None
    if divergence == "hutchinson":
        if not isinstance(num_probes, int) or num_probes < 1:
            raise ValueError(f"num_probes must be a positive int; got {num_probes!r}")
        bits = torch.randint(
            0, 2, (num_probes, *x.shape), generator=generator, device=x.device, dtype=torch.int8
        )
        probes = bits.to(x.dtype) * 2 - 1
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        t = t.detach().requires_grad_(True)
        logp = log_density(x, t)
        dlogp_dt, score = torch.autograd.grad(
            logp.sum(), (t, x), create_graph=True, allow_unused=True
        )
        if dlogp_dt is None:  # a stationary density
            dlogp_dt = torch.zeros_like(t)
        if score is None:
            raise ValueError("log_density(x, t) does not depend on x")
        lap = _divergence(score, x, probes)
        f = sde.drift(x, t)
        div_f = _divergence(f, x, probes) if f.requires_grad else torch.zeros_like(t)
        g2 = sde.diffusion(t.detach()) ** 2
        terms = [
            dlogp_dt,
            div_f,
            batch_sum(f * score),
            -0.5 * g2 * lap,
            -0.5 * g2 * batch_sum(score**2),
        ]
    terms = [term.detach() for term in terms]
    total = sum(terms)
    scale = sum(term.abs() for term in terms)
    return total.abs() / scale.clamp_min(torch.finfo(x.dtype).tiny)


def assert_fokker_planck(
    sde,
    log_density: LogDensity,
    x: Tensor,
    t: float | Tensor,
    tol: float | None = None,
    **kwargs,
) -> Tensor:
    """Raise ``AssertionError`` if any relative residual exceeds ``tol`` (default 1e-10 in
    float64, 1e-5 in float32, for the exact divergence). ``kwargs`` go to
    :func:`fokker_planck_residual`. Returns the residuals."""
    if tol is None:
        tol = 1e-10 if x.dtype == torch.float64 else 1e-5
    res = fokker_planck_residual(sde, log_density, x, t, **kwargs)
    worst = float(res.max())
    if not worst <= tol:
        raise AssertionError(
            f"Fokker–Planck residual {worst:.3e} exceeds tol {tol:.1e} "
            f"(at point {int(res.argmax())})"
        )
    return res


class _FlowAsSDE:
    """A deterministic flow ``dx = v(x, t) dt`` seen as an SDE with zero diffusion."""

    def __init__(self, sde, score_fn) -> None:
        self.sde, self.score_fn = sde, score_fn

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        g2 = self.sde.diffusion(t) ** 2
        return self.sde.drift(x, t) - 0.5 * g2.reshape(-1, *[1] * (x.dim() - 1)) * self.score_fn(
            x, t
        )

    def diffusion(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)


def probability_flow_residual(
    sde, score_fn, log_density: LogDensity, x: Tensor, t: float | Tensor, **kwargs
) -> Tensor:
    """Relative residual of the continuity equation of the probability-flow ODE.

    If ``score_fn`` is the score of ``p_t``, the flow ``dx/dt = f - ½ g^2 score`` carries ``p_t``
    along, so ``∂_t log p + ∇·ṽ + ṽ·∇ log p = 0`` with ``ṽ`` the flow's velocity. A wrong flow
    (a flipped sign, ``g^2`` in place of ``½ g^2``) or a wrong score shows up here at once,
    without sampling. ``kwargs`` go to :func:`fokker_planck_residual`.
    """
    return fokker_planck_residual(_FlowAsSDE(sde, score_fn), log_density, x, t, **kwargs)
