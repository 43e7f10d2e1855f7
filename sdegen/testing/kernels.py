"""Transition kernels and marginals against simulation, composition and their limits."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from .._utils import append_dims
from .._validation import check_tensor
from ..analytic import GaussianMixture
from .samples import SampleCheck, check_samples
from .simulate import simulate_forward

# kernel(x, s, t) -> (mean shaped like x, std (batch,)): the law of x_t given x_s = x.
GaussianKernel = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]

_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(16)


def linear_kernel(sde) -> GaussianKernel:
    """The Gaussian kernel of a linear SDE between any two times ``s < t``, from its closed forms:

    ``x_t | x_s ~ N(r x_s + c(t) - r c(s), (s(t)^2 - r^2 s(s)^2) I)`` with ``r = m(t) / m(s)``.

    (At ``s = 0`` this is the SDE's kernel from the data.)"""
    _require_marginal(sde)

    def kernel(x: Tensor, s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        ratio = torch.exp(sde.log_mean_coeff(t) - sde.log_mean_coeff(s))
        mean = append_dims(ratio, x.dim()) * x
        c_t, c_s = sde.mean_offset(t), sde.mean_offset(s)
        if c_t is not None:
            mean = mean + append_dims(c_t - ratio * c_s, x.dim())
        var = sde.marginal_var(t) - ratio**2 * sde.marginal_var(s)
        return mean, torch.sqrt(var)

    return kernel


def _require_marginal(sde) -> None:
    if not getattr(sde, "has_marginal", False):
        raise TypeError(
            f"this check needs a closed-form kernel (has_marginal = True); {type(sde).__name__} "
            "has none: pass the claimed law explicitly"
        )


def _as_law(claimed, x0: Tensor, t: float) -> GaussianMixture:
    if isinstance(claimed, GaussianMixture):
        return claimed
    if getattr(claimed, "has_marginal", False):
        # The claim's own kernel from x_0 at time 0, as it states it: going through
        # linear_kernel would subtract marginal_var(0) and so hide a kernel that starts at the
        # wrong variance.
        t_ = torch.tensor([t], dtype=torch.float64)
        mean = claimed.marginal_mean(x0.double(), t_)
        return GaussianMixture(mean, float(claimed.marginal_var(t_)))
    if callable(claimed):
        law = claimed(x0, t)
        if isinstance(law, GaussianMixture):
            return law
        mean, cov = law
        mean = torch.as_tensor(mean, dtype=torch.float64).reshape(1, -1)
        cov = torch.as_tensor(cov, dtype=torch.float64)
        return GaussianMixture(mean, cov.reshape(1, *cov.shape) if cov.dim() == 2 else cov)
    raise TypeError(
        "kernel must be a linear SDE (its own kernel), a GaussianMixture, or a callable "
        f"(x0, t) -> GaussianMixture | (mean, cov); got {type(claimed).__name__}"
    )


def check_transition_kernel(
    sde,
    kernel,
    x0: Tensor | GaussianMixture,
    t: float,
    *,
    n: int = 10_000,
    alpha: float = 1e-3,
    method: str = "euler",
    steps: int = 1000,
    generator: torch.Generator | None = None,
) -> SampleCheck:
    """Simulate ``sde`` with torchsde from ``x0`` at time 0 to ``t`` and test the claimed law of
    ``x_t`` against the ``n`` simulated points.

    Arguments:
        sde: any SDE (``drift``, ``diffusion``); it is simulated, not trusted.
        kernel: the claim: a linear SDE (its own closed-form kernel, e.g. ``kernel=sde``), a
            :class:`~sdegen.GaussianMixture` (the law of ``x_t``), or a callable
            ``(x0, t) -> GaussianMixture`` or ``-> (mean (d,), cov (d, d))``.
        x0: a start point of shape ``event`` or ``(1, *event)`` (a kernel check), or a
            ``GaussianMixture`` data law to draw ``n`` starts from (a marginal check; then
            ``kernel`` should be the claimed marginal, e.g. ``data.marginal(sde, t)``).
        t: the end time, in ``(0, T]``.
        n, alpha: sample size and family-wise level of the Bonferroni-combined tests of
            :func:`check_samples` (KS, Cramér–von Mises, means, whitened second moments).
        method, steps: the torchsde fixed-step solver. Euler–Maruyama has weak order 1: the
            simulated law is off by O(dt), which the tests detect once ``n`` is large enough;
            the report's ``notes`` states ``dt`` so a failure can be re-run with more steps.

    Returns:
        A :class:`SampleCheck` (names, statistics, p-values, verdict).
    """
    if not (isinstance(t, (int, float)) and 0 < t <= sde.T):
        raise ValueError(f"t must be a float in (0, T] = (0, {sde.T}]; got {t!r}")
    if not isinstance(n, int) or n < 20:
        raise ValueError(f"n must be an int >= 20; got {n!r}")
    if isinstance(x0, GaussianMixture):
        starts = x0.sample(n, generator, dtype=torch.float64)
        point = None
    else:
        x0 = check_tensor("x0", torch.as_tensor(x0, dtype=torch.float64), min_dim=1)
        point = x0.reshape(1, *x0.shape[-1:]) if x0.dim() == 1 else x0
        if point.shape[0] != 1:
            raise ValueError(f"x0 must be one point, event or (1, *event); got {tuple(x0.shape)}")
        starts = point.expand(n, *point.shape[1:]).contiguous()
    law = _as_law(kernel, point if point is not None else starts[:1], float(t))
    x_t = simulate_forward(
        sde, starts, 0.0, float(t), steps=steps, method=method, generator=generator
    )
    note = (
        f"simulated with torchsde {method}, {steps} steps (dt = {t / steps:.2g}); the "
        "scheme's O(dt) weak bias is not in the p-values"
    )
    return check_samples(x_t, law, alpha=alpha, notes=note)


def assert_transition_kernel(*args, **kwargs) -> SampleCheck:
    """:func:`check_transition_kernel`, raising ``AssertionError`` when it fails."""
    report = check_transition_kernel(*args, **kwargs)
    if not report.passed:
        raise AssertionError(str(report))
    return report


def check_chapman_kolmogorov(
    kernel: GaussianKernel,
    s: float,
    u: float,
    t: float,
    *,
    x: Tensor,
    n: int = 20_000,
    alpha: float = 1e-3,
    generator: torch.Generator | None = None,
) -> SampleCheck:
    """Monte-Carlo test of ``p(x_t | x_s) = ∫ p(x_t | x_u) p(x_u | x_s) dx_u`` for ``s < u < t``.

    Draws ``x_u`` from the kernel on ``[s, u]``, then ``x_t`` on ``[u, t]``, and tests the
    composed draws against the kernel on ``[s, t]`` with :func:`check_samples`.

    Arguments:
        kernel: ``(x, s, t) -> (mean, std)``, e.g. :func:`linear_kernel`.
        x: the start point, shape ``event`` or ``(1, *event)``.
    """
    if not s < u < t:
        raise ValueError(f"need s < u < t; got s={s}, u={u}, t={t}")
    x = torch.as_tensor(x, dtype=torch.float64)
    x = x.reshape(1, *x.shape[-1:]) if x.dim() == 1 else x
    xs = x.expand(n, *x.shape[1:])

    def times(v: float) -> Tensor:
        return torch.full((n,), v, dtype=torch.float64)

    def draw(start: Tensor, a: float, b: float) -> Tensor:
        mean, std = kernel(start, times(a), times(b))
        z = torch.randn(start.shape, generator=generator, dtype=torch.float64)
        return mean + append_dims(std, start.dim()) * z

    composed = draw(draw(xs, s, u), u, t)
    mean, std = kernel(x, times(s)[:1], times(t)[:1])
    law = GaussianMixture(mean.reshape(1, -1), float(std) ** 2)
    return check_samples(composed, law, alpha=alpha)


@dataclasses.dataclass
class LimitsReport:
    """Result of :func:`check_marginal_limits`.

    Attributes:
        start_variance_error: at each probed ``t <= t_min``, ``|s(t)^2 / V(t) - 1|`` where
            ``V(t) = ∫_0^t (m(t)/m(u))^2 g(u)^2 du`` is the variance the SDE itself accumulates
            from ``x_0`` (by Gauss–Legendre quadrature of the SDE's own ``g`` and ``m``).
        start_mean_error: ``|m(t) - 1| + |c(t)|`` at the same times.
        start_kl: KL(moment-matched ``p_{t_min}`` || moment-matched data), nats.
        end_kl: KL(moment-matched ``p_T`` || prior), nats.
        passed: all within tolerance.
    """

    probe_times: list[float]
    start_variance_error: list[float]
    start_mean_error: list[float]
    start_kl: float
    end_kl: float
    tol: float
    end_kl_tol: float
    passed: bool

    def __str__(self) -> str:
        verdict = "pass" if self.passed else "FAIL"
        return (
            f"{verdict}: start variance error {max(self.start_variance_error):.2e}, "
            f"mean error {max(self.start_mean_error):.2e} (tol {self.tol:g}); "
            f"KL(p_t_min || data) = {self.start_kl:.2e}; KL(p_T || prior) = {self.end_kl:.2e} "
            f"(tol {self.end_kl_tol:g})"
        )


def _gaussian_kl(mu1: Tensor, cov1: Tensor, mu0: Tensor, cov0: Tensor) -> float:
    d = mu1.numel()
    cov0_inv = torch.linalg.inv(cov0)
    diff = (mu0 - mu1).reshape(-1)
    kl = 0.5 * (
        torch.trace(cov0_inv @ cov1)
        + diff @ cov0_inv @ diff
        - d
        + torch.logdet(cov0)
        - torch.logdet(cov1)
    )
    return float(kl)


def _accumulated_variance(sde, t: float) -> float:
    nodes = torch.from_numpy(0.5 * t * (_GL_NODES + 1))
    w = torch.from_numpy(0.5 * t * _GL_WEIGHTS)
    t_ = torch.full_like(nodes, t)
    growth = torch.exp(2 * (sde.log_mean_coeff(t_) - sde.log_mean_coeff(nodes)))
    return float((w * growth * sde.diffusion(nodes) ** 2).sum())


def check_marginal_limits(
    sde,
    data: GaussianMixture,
    *,
    tol: float = 1e-3,
    end_kl_tol: float = 1e-2,
) -> LimitsReport:
    """Check both ends of a linear SDE's marginals against what they must be.

    - ``t -> 0``: at ``t_min`` and below (``t_min / 10, t_min / 100``) the kernel variance must
      equal the variance the SDE's own ``g`` accumulates from ``x_0`` (relative error ≤ ``tol``),
      the mean coefficient must tend to 1, and ``p_{t_min}`` must be close to the data law. This
      catches a kernel that starts at the wrong variance (e.g. VE with ``sigma(t)^2`` instead of
      ``sigma(t)^2 - sigma_min^2``), which the Fokker–Planck residual cannot see.
    - ``t -> T``: the KL divergence between moment-matched Gaussians of ``p_T`` and the declared
      prior must be ≤ ``end_kl_tol`` nats.
    """
    _require_marginal(sde)
    probes = [sde.t_min, sde.t_min / 10, sde.t_min / 100]
    var_err, mean_err = [], []
    for t in probes:
        t_ = torch.tensor([t], dtype=torch.float64)
        expected = _accumulated_variance(sde, t)
        var_err.append(abs(float(sde.marginal_var(t_)) / expected - 1))
        c = sde.mean_offset(t_)
        mean_err.append(
            abs(float(sde.marginal_mean_coeff(t_)) - 1) + (0.0 if c is None else abs(float(c)))
        )
    start = data.marginal(sde, sde.t_min)
    start_kl = _gaussian_kl(
        start.mean().reshape(-1), start.covariance(), data.mean().reshape(-1), data.covariance()
    )
    end = data.marginal(sde, sde.T)
    d = data.dim
    prior_mean = torch.full((d,), float(sde.prior_mean), dtype=torch.float64)
    prior_cov = sde.prior_std**2 * torch.eye(d, dtype=torch.float64)
    end_kl = _gaussian_kl(end.mean().reshape(-1), end.covariance(), prior_mean, prior_cov)
    # A mean coefficient may move by O(|a| t_min) legitimately; allow it.
    a = abs(float(sde.drift_coeff(torch.tensor([sde.t_min], dtype=torch.float64))))
    mean_tol = max(tol, 10 * a * sde.t_min)
    passed = (
        max(var_err) <= tol
        and max(mean_err) <= mean_tol
        and start_kl <= tol
        and end_kl <= end_kl_tol
        and math.isfinite(end_kl)
    )
    return LimitsReport(probes, var_err, mean_err, start_kl, end_kl, tol, end_kl_tol, passed)
