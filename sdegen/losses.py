"""Score-matching losses: denoising score matching for SDEs with a Gaussian kernel, sliced score
matching for any SDE; a time weighting ``lambda(t)``; uniform or importance-sampled times.

Both losses estimate the time-weighted objective

    ``J(s) = 1 / (T - t_min) ∫_{t_min}^T lambda(t) E_{x_t} ℓ(s, x_t, t) dt``

one draw of ``(t, x_t)`` per data point, and return the per-sample estimates ``(batch,)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._utils import append_dims, batch_sum
from ._validation import check_same_shape, check_scalar, check_tensor
from .reverse import _check_sde

Weighting = str | Callable[[Tensor], Tensor]

_WEIGHTINGS = ("sigma2", "g2", "none")
_T_SAMPLINGS = ("uniform", "importance")
_REDUCTIONS = ("mean", "sum")
_PROJECTIONS = ("rademacher", "gaussian")
# The importance table has nodes geometric and uniform in t (this many of each): lambda/sigma^2
# varies like 1/t near t_min and smoothly elsewhere, so either family alone leaves coarse cells.
_TABLE_NODES = 2048
# ... then cells are bisected until lambda / sigma^2 changes by at most this much across each,
# so that w lambda / sigma^2 stays within about 0.1% of its constant.
_TABLE_RTOL = 2e-3
_TABLE_MAX_ROUNDS = 30
_TABLE_MAX_NODES = 1 << 18
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(8)
_F64 = torch.float64


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}")
    return value


def _reduce(x: Tensor, reduction: str) -> Tensor:
    """Sum or mean over the event dimensions, ``(batch, *event) -> (batch,)``."""
    return batch_sum(x) if reduction == "sum" else x.flatten(1).mean(1)


class _TimeTable:
    """Importance sampling of ``t`` on ``[t_min, T]`` with density ``q ∝ r(t) = lambda / sigma^2``.

    The cumulative ``R(t) = ∫_{t_min}^t r`` is tabulated once in float64 at nodes ``t_k`` (from
    a closed form when given, otherwise by 8-point Gauss–Legendre quadrature per cell) and
    inverted by linear interpolation. Sampling is then exact for the piecewise-constant density
    ``q~(t) = (R_{k+1} - R_k) / ((t_{k+1} - t_k) R(T))`` of that interpolant, and the weight
    ``1 / ((T - t_min) q~(t))`` uses ``q~`` itself, so the estimator is unbiased whatever the
    table's accuracy; the accuracy only decides how close ``w r`` comes to the constant
    ``R(T) / (T - t_min)``.
    """

    def __init__(
        self,
        t_min: float,
        T: float,
        rate: Callable[[Tensor], Tensor],
        cumulative: Callable[[Tensor], Tensor] | None,
    ) -> None:
        nodes = self._refined_nodes(t_min, T, rate)
        if cumulative is not None:
            values = cumulative(nodes)
            values = values - values[0]
        else:
            h = nodes[1:] - nodes[:-1]
            gl = torch.from_numpy(_GL_NODES)
            points = nodes[:-1, None] + 0.5 * h[:, None] * (gl[None] + 1)
            rates = rate(points.reshape(-1)).reshape(points.shape)
            cells = (rates * torch.from_numpy(_GL_WEIGHTS)[None]).sum(1) * 0.5 * h
            values = torch.cat([cells.new_zeros(1), torch.cumsum(cells, 0)])
        increments = values[1:] - values[:-1]
        if not bool(torch.isfinite(values).all()) or bool((increments < 0).any()):
            raise ValueError(
                "weighting: lambda(t) / sigma(t)^2 must be finite and >= 0 on [t_min, T] for "
                "t_sampling='importance'; its integral is not finite and non-decreasing"
            )
        total = float(values[-1])
        if not total > 0:
            raise ValueError("weighting: lambda(t) is zero on all of [t_min, T]")
        self.t_min, self.T, self.total = t_min, T, total
        self.nodes, self.values = nodes, values
        self._on: dict[torch.device, tuple[Tensor, Tensor]] = {}

    @staticmethod
    def _refined_nodes(t_min: float, T: float, rate: Callable[[Tensor], Tensor]) -> Tensor:
        """Nodes geometric and uniform in ``t``, then cells bisected until ``r`` changes by at
        most ``_TABLE_RTOL`` (relative) across each: ``r`` may blow up at either end (like
        ``1 / t`` near ``t_min``, or where a cosine schedule's ``beta`` diverges near ``T``)."""
        nodes = torch.cat(
            [
                torch.logspace(math.log10(t_min), math.log10(T), _TABLE_NODES, dtype=_F64),
                torch.linspace(t_min, T, _TABLE_NODES, dtype=_F64),
            ]
        )
        nodes = torch.unique(nodes.clamp(t_min, T))
        nodes[0], nodes[-1] = t_min, T
        values = rate(nodes)
        for _ in range(_TABLE_MAX_ROUNDS):
            lo, hi = values[:-1], values[1:]
            change = (hi - lo).abs() / torch.maximum(lo.abs(), hi.abs()).clamp_min(1e-300)
            coarse = (change > _TABLE_RTOL) & (nodes[1:] - nodes[:-1] > 1e-12 * T)
            if not bool(coarse.any()) or len(nodes) > _TABLE_MAX_NODES:
                break
            mid = 0.5 * (nodes[:-1] + nodes[1:])[coarse]
            nodes, order = torch.sort(torch.cat([nodes, mid]))
            values = torch.cat([values, rate(mid)])[order]
        return nodes

    def sample(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """Map uniforms ``u`` in ``[0, 1)`` (float64) to times and importance weights."""
        if u.device not in self._on:
            self._on[u.device] = (self.nodes.to(u.device), self.values.to(u.device))
        nodes, values = self._on[u.device]
        target = u * self.total
        k = (torch.searchsorted(values, target, right=True) - 1).clamp(0, len(nodes) - 2)
        mass = (values[k + 1] - values[k]).clamp_min(torch.finfo(_F64).tiny)
        width = nodes[k + 1] - nodes[k]
        frac = ((target - values[k]) / mass).clamp(0.0, 1.0)
        t = (nodes[k] + frac * width).clamp(self.t_min, self.T)
        weight = width * self.total / (mass * (self.T - self.t_min))
        return t, weight


class _AbstractScoreMatching:
    """What both losses share: time weighting, time sampling, reduction, label dropout, config."""

    def __init__(
        self,
        sde: Any,
        *,
        weighting: Weighting,
        t_sampling: str,
        reduction: str,
        t_min: float | None,
        label_dropout: float,
        num_classes: int | None,
    ) -> None:
        _check_sde(sde)
        self.sde = sde
        self.has_kernel = bool(getattr(sde, "has_marginal", False))
        if callable(weighting):
            self._check_weighting_fn(weighting)
        elif not isinstance(weighting, str) or weighting not in _WEIGHTINGS:
            raise ValueError(
                f"weighting must be one of {_WEIGHTINGS} or a callable lambda(t); got {weighting!r}"
            )
        self.weighting = weighting
        if t_sampling not in _T_SAMPLINGS:
            raise ValueError(f"t_sampling must be one of {_T_SAMPLINGS}; got {t_sampling!r}")
        self.t_sampling = t_sampling
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}; got {reduction!r}")
        self.reduction = reduction
        if not self.has_kernel:
            if weighting == "sigma2":
                raise ValueError(
                    "weighting='sigma2' needs the kernel std sigma(t), which this SDE does not "
                    "have (has_marginal = False); use weighting='g2', 'none' or a callable"
                )
            if t_sampling == "importance":
                raise ValueError(
                    "t_sampling='importance' samples t with density ∝ lambda(t) / sigma(t)^2 and "
                    "needs the kernel std sigma(t), which this SDE does not have; use "
                    "t_sampling='uniform'"
                )
        start = sde.t_min if t_min is None else check_scalar("t_min", t_min, positive=True)
        if not sde.t_min <= start < sde.T:
            raise ValueError(
                f"t_min must lie in [sde.t_min, sde.T) = [{sde.t_min}, {sde.T}); got {start}"
            )
        self.t_min, self.T = float(start), float(sde.T)
        label_dropout = check_scalar("label_dropout", label_dropout, nonnegative=True)
        if not label_dropout < 1:
            raise ValueError(f"label_dropout must lie in [0, 1); got {label_dropout}")
        if num_classes is not None:
            num_classes = _positive_int("num_classes", num_classes)
        if label_dropout > 0 and num_classes is None:
            raise ValueError(
                "label_dropout > 0 needs num_classes (dropped labels become the null label "
                "index num_classes); pass num_classes"
            )
        self.label_dropout, self.num_classes = label_dropout, num_classes
        self._table: _TimeTable | None = None
        # sigma2 weighting makes lambda / sigma^2 = 1: importance sampling is uniform sampling.
        if t_sampling == "importance" and weighting != "sigma2":
            closed = self._log_inverse_snr if weighting == "g2" else None
            self._table = _TimeTable(self.t_min, self.T, self._rate, closed)

    # Weighting ------------------------------------------------------------------------------

    def _check_weighting_fn(self, fn: Callable[[Tensor], Tensor]) -> None:
        t = torch.linspace(self.sde.t_min, self.sde.T, 65, dtype=_F64)
        try:
            out = fn(t)
        except Exception as error:
            raise TypeError(
                "weighting must map a (batch,) float64 tensor of times to a (batch,) tensor; "
                f"calling it raised {type(error).__name__}: {error}"
            ) from error
        if not isinstance(out, Tensor) or out.shape != t.shape:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise TypeError(
                f"weighting must return a tensor shaped like t {tuple(t.shape)}; got {got}"
            )
        if not bool(torch.isfinite(out).all()) or bool((out < 0).any()):
            raise ValueError("weighting must return finite values >= 0 on [t_min, T]")

    def _lambda(self, t: Tensor) -> Tensor:
        """``lambda(t)``."""
        if self.weighting == "sigma2":
            return self.sde.marginal_var(t)
        if self.weighting == "g2":
            return self.sde.diffusion(t) ** 2
        if self.weighting == "none":
            return torch.ones_like(t)
        return self.weighting(t)  # type: ignore[operator]

    def _rate(self, t: Tensor) -> Tensor:
        """``lambda(t) / sigma(t)^2``, the weight of the noise-prediction residual."""
        if self.weighting == "sigma2":
            return torch.ones_like(t)
        if self.weighting == "g2":
            return self.sde.diffusion(t) ** 2 / self.sde.marginal_var(t)
        return self._lambda(t) / self.sde.marginal_var(t)

    def _log_inverse_snr(self, t: Tensor) -> Tensor:
        # For s^2 = m^2 ∫_0^t g^2 / m^2, d/dt log(s^2 / m^2) = g^2 / s^2: the g2 importance
        # density has the closed-form cumulative log(s^2 / m^2) for every linear SDE.
        return torch.log(self.sde.marginal_var(t)) - 2 * self.sde.log_mean_coeff(t)

    # Times ----------------------------------------------------------------------------------

    def sample_time(
        self,
        batch: int,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = _F64,
        device: torch.device | str | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Draw ``batch`` times and their importance weights ``w``, so that
        ``E[w(t) h(t)] = 1 / (T - t_min) ∫_{t_min}^T h(t) dt`` for any ``h``.

        ``uniform``: ``t ~ U[t_min, T]``, ``w = 1``. ``importance``: ``t ~ q ∝ lambda / sigma^2``,
        ``w = 1 / ((T - t_min) q(t))``. Uses one uniform draw per sample (float64).

        Returns:
            ``(t, w)``, both ``(batch,)`` in ``dtype``.
        """
        batch = _positive_int("batch", batch)
        if device is None and generator is not None:
            device = generator.device
        u = torch.rand(batch, generator=generator, dtype=_F64, device=device)
        t, w = self._times_from_uniform(u)
        return t.to(dtype), w.to(dtype)

    def _times_from_uniform(self, u: Tensor) -> tuple[Tensor, Tensor]:
        if self._table is None:
            return self.t_min + (self.T - self.t_min) * u, torch.ones_like(u)
        return self._table.sample(u)

    def _draw_time(
        self, x0: Tensor, t: float | Tensor | None, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Times in ``x0``'s dtype, the same times in float64 for the coefficients, and the
        importance weight (``None`` for a given ``t``: the integrand at that time)."""
        if t is not None:
            t = self.sde.time(t, x0)
            return t, t.to(_F64), None
        u = torch.rand(x0.shape[0], generator=generator, dtype=_F64, device=x0.device)
        t64, weight = self._times_from_uniform(u)
        t = t64.to(x0.dtype)
        # Round first so that the score sees exactly the time the coefficients are taken at.
        return t, t.to(_F64), weight

    # Inputs ---------------------------------------------------------------------------------

    def _check_inputs(
        self,
        score: Callable[..., Tensor],
        x0: Tensor,
        labels: Tensor | None,
        generator: torch.Generator | None,
    ) -> Tensor:
        if not callable(score):
            raise TypeError(f"score must be callable as score(x, t); got {type(score).__name__}")
        x0 = check_tensor("x0", x0, min_dim=2)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator; got {type(generator).__name__}")
        if labels is not None:
            if not isinstance(labels, Tensor) or labels.dtype != torch.int64:
                got = labels.dtype if isinstance(labels, Tensor) else type(labels).__name__
                raise TypeError(f"labels must be an int64 tensor of shape (batch,); got {got}")
            if labels.shape != (x0.shape[0],):
                raise ValueError(
                    f"labels must have shape (batch,) = ({x0.shape[0]},); got {tuple(labels.shape)}"
                )
            if self.num_classes is not None and labels.numel():
                lo, hi = int(labels.min()), int(labels.max())
                if lo < 0 or hi > self.num_classes:
                    raise ValueError(
                        f"labels must lie in [0, num_classes] = [0, {self.num_classes}] "
                        f"(num_classes is the null label); got min {lo}, max {hi}"
                    )
        return x0

    def _drop_labels(
        self, labels: Tensor | None, generator: torch.Generator | None
    ) -> Tensor | None:
        if labels is None or self.label_dropout == 0:
            return labels
        drop = torch.rand(labels.shape, generator=generator, device=labels.device)
        return torch.where(drop < self.label_dropout, self.num_classes, labels)

    @staticmethod
    def _call_score(
        score: Callable[..., Tensor], x: Tensor, t: Tensor, labels: Tensor | None
    ) -> Tensor:
        out = score(x, t) if labels is None else score(x, t, labels)
        if not isinstance(out, Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            call = "score(x, t)" if labels is None else "score(x, t, labels)"
            raise ValueError(
                f"{call} must return a tensor shaped like x {tuple(x.shape)}; got {got}"
            )
        return out

    # Config ---------------------------------------------------------------------------------

    def _config(self, **extra: Any) -> dict[str, Any]:
        if callable(self.weighting):
            raise TypeError(
                "this loss has a Python callable as weighting, which cannot be serialised; use "
                "weighting='sigma2', 'g2' or 'none' to save it in a config"
            )
        sde_config = getattr(self.sde, "config", None)
        if not callable(sde_config):
            raise TypeError(f"sde must provide config() to serialise the loss; got {self.sde!r}")
        return {
            "class": type(self).__name__,
            "sde": sde_config(),
            "weighting": self.weighting,
            "t_sampling": self.t_sampling,
            "reduction": self.reduction,
            "t_min": self.t_min,
            "label_dropout": self.label_dropout,
            "num_classes": self.num_classes,
            **extra,
        }

    def __repr__(self) -> str:
        weighting = "callable" if callable(self.weighting) else repr(self.weighting)
        return (
            f"{type(self).__name__}({self.sde!r}, weighting={weighting}, "
            f"t_sampling={self.t_sampling!r}, reduction={self.reduction!r}, t_min={self.t_min})"
        )


class DenoisingScoreMatching(_AbstractScoreMatching):
    """Continuous-time denoising score matching (Vincent 2011; Song et al. 2021) for an SDE with
    a Gaussian kernel ``x_t | x_0 ~ N(m(t) x_0 + c(t), sigma(t)^2 I)``:

        ``J(s) = E_t lambda(t) E_{x_0, z} ||s(x_t, t) - ∇log p(x_t | x_0)||^2``,
        ``x_t = m x_0 + c + sigma z``, ``∇log p(x_t | x_0) = -z / sigma``,

    which differs from ``E_t lambda E||s - ∇log p_t||^2`` by a constant, so it is minimised by
    the true score. It is evaluated as ``lambda / sigma^2 · ||sigma s + z||^2``: for
    ``weighting="sigma2"`` that factor is exactly 1 (the noise-prediction loss), and no
    ``1 / sigma`` appears for small ``sigma``.

    Weightings ``lambda(t)``: ``"sigma2"`` (``sigma(t)^2``), ``"g2"`` (``g(t)^2``, the likelihood
    weighting of Song et al. 2021, for which ``J`` bounds the negative log-likelihood), ``"none"``
    (1) or a callable ``t -> lambda(t)`` on float64 ``(batch,)`` times.

    Times: ``"uniform"`` on ``[t_min, T]``, or ``"importance"``: ``t ~ q ∝ lambda / sigma^2``
    with weight ``1 / ((T - t_min) q)``, which leaves the expectation unchanged and makes the
    per-sample factor ``lambda / (sigma^2 (T - t_min) q)`` (nearly) constant. For ``"g2"`` the
    cumulative of ``q`` is ``log(sigma^2 / m^2)`` in closed form; for a callable it is tabulated
    by quadrature. Both are tabulated once, in float64 (see :meth:`sample_time`).

    Arguments:
        sde: an SDE with the kernel methods (``has_marginal = True``: ``marginal_mean``,
            ``marginal_std``, ``marginal_var``); otherwise use :class:`SlicedScoreMatching`.
        weighting, t_sampling: as above.
        reduction: ``"mean"`` or ``"sum"`` of the squared residual over event dimensions.
        t_min: smallest time drawn, ``>= sde.t_min``; default ``sde.t_min``.
        label_dropout: probability of replacing a label by the null label ``num_classes``
            (classifier-free guidance training); needs ``num_classes``.
        num_classes: number of classes ``K``; labels lie in ``[0, K]``, ``K`` being null.

    Call ``loss(score, x0, *, labels=None, generator=None, t=None, noise=None)``:
    ``score(x, t)`` (or ``score(x, t, labels)``) returns the score; ``x0`` is ``(batch, *event)``.
    Random draws, in order: ``t`` (one float64 uniform per sample), the label-dropout mask,
    the noise ``z``, all from ``generator``. A given ``t`` (float or ``(batch,)``) returns the
    integrand ``lambda(t) ||s - ∇log p(x_t|x_0)||^2`` at that time, a given ``noise`` is used as
    ``z``. Returns the per-sample losses ``(batch,)``, differentiable in the score's parameters.

    Raises:
        TypeError: for an SDE without a kernel, a bad score, generator or labels.
        ValueError: for unknown names, bad ``t_min`` / ``label_dropout``, non-finite ``x0`` or
            mismatched shapes.

    Example:
        >>> loss = DenoisingScoreMatching(VPSDE(), weighting="g2", t_sampling="importance")
        >>> loss(model, x0, generator=torch.Generator().manual_seed(0)).mean().backward()
    """

    def __init__(
        self,
        sde: Any,
        *,
        weighting: Weighting = "sigma2",
        t_sampling: str = "uniform",
        reduction: str = "mean",
        t_min: float | None = None,
        label_dropout: float = 0.0,
        num_classes: int | None = None,
    ) -> None:
        _check_sde(sde)
        if not getattr(sde, "has_marginal", False):
            raise TypeError(
                "DenoisingScoreMatching needs the SDE's Gaussian kernel p(x_t | x_0) "
                f"(has_marginal = True), which {type(sde).__name__} does not have; use "
                "SlicedScoreMatching(sde), which needs only the drift and diffusion"
            )
        super().__init__(
            sde,
            weighting=weighting,
            t_sampling=t_sampling,
            reduction=reduction,
            t_min=t_min,
            label_dropout=label_dropout,
            num_classes=num_classes,
        )

    def __call__(
        self,
        score: Callable[..., Tensor],
        x0: Tensor,
        *,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
        t: float | Tensor | None = None,
        noise: Tensor | None = None,
    ) -> Tensor:
        x0 = self._check_inputs(score, x0, labels, generator)
        t, t64, weight = self._draw_time(x0, t, generator)
        labels = self._drop_labels(labels, generator)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
        else:
            check_tensor("noise", noise)
            check_same_shape("noise", noise, "x0", x0)
        std = append_dims(self.sde.marginal_std(t64).to(x0.dtype), x0.dim())
        x_t = self.sde.marginal_mean(x0, t) + std * noise
        s = self._call_score(score, x_t, t, labels)
        # lambda ||s + z / sigma||^2 = (lambda / sigma^2) ||sigma s + z||^2
        per_sample = _reduce((std * s + noise) ** 2, self.reduction)
        factor = self._rate(t64) if weight is None else weight * self._rate(t64)
        return factor.to(per_sample.dtype) * per_sample

    def config(self) -> dict[str, Any]:
        """JSON-able constructor arguments with ``"class"`` and ``"sde"`` (the SDE's config)."""
        return self._config()


class SlicedScoreMatching(_AbstractScoreMatching):
    """Sliced score matching (Song et al. 2019), in its variance-reduced form, for any SDE:

        ``J(s) = E_t lambda(t) E_{x_t} [½ ||s(x_t, t)||^2 + v^T ∇_x s(x_t, t) v]``,

    ``v`` a projection with ``E[v v^T] = I`` (Rademacher or standard normal). Since
    ``E_v[v^T A v] = tr A`` and ``E[tr ∇s] = -E[s · ∇log p_t]`` (integration by parts), ``J``
    equals ``½ E||s - ∇log p_t||^2`` minus a constant, so it needs no kernel ``p(x_t | x_0)``;
    at the true score ``E[½||s||^2 + tr ∇s] = -½ E||∇log p_t||^2``. The ``||s||^2`` term is
    exact, only the trace is estimated, with one vector-Jacobian product per projection
    (``torch.autograd.grad`` with ``create_graph``, so the loss trains the score).

    ``x_t`` is drawn from the exact kernel when the SDE has one (``has_marginal``); otherwise
    by Euler–Maruyama from ``x_0`` at ``t = 0`` to each sample's own ``t`` in
    ``simulation_steps`` equal steps ``t / N`` (vectorised over per-sample times; weak order 1,
    so the law of ``x_t`` is off by ``O(t / N)``).

    Arguments:
        sde: any SDE with ``drift``, ``diffusion``, ``t_min``, ``T``.
        num_projections: projections ``v`` per sample (their terms are averaged).
        projection: ``"rademacher"`` (lower variance) or ``"gaussian"``.
        weighting: ``"g2"`` (default; every SDE has it), ``"none"``, ``"sigma2"`` (needs a
            kernel) or a callable ``lambda(t)``.
        t_sampling: ``"uniform"``, or ``"importance"`` (needs a kernel; as in
            :class:`DenoisingScoreMatching`).
        simulation_steps: Euler–Maruyama steps for an SDE without a kernel.
        reduction, t_min, label_dropout, num_classes: as in :class:`DenoisingScoreMatching`.

    Call ``loss(score, x0, *, labels=None, generator=None, t=None)``; random draws, in order:
    ``t``, the label-dropout mask, the noise of ``x_t`` (one draw, or one per Euler–Maruyama
    step), the projections. Returns the per-sample losses ``(batch,)``, differentiable in the
    score's parameters when grad mode is on (detached otherwise).

    Raises:
        ValueError: for unknown names, kernel-only options on an SDE without a kernel,
            non-finite ``x0`` or mismatched shapes.
    """

    def __init__(
        self,
        sde: Any,
        *,
        num_projections: int = 1,
        projection: str = "rademacher",
        weighting: Weighting = "g2",
        t_sampling: str = "uniform",
        reduction: str = "mean",
        t_min: float | None = None,
        simulation_steps: int = 100,
        label_dropout: float = 0.0,
        num_classes: int | None = None,
    ) -> None:
        super().__init__(
            sde,
            weighting=weighting,
            t_sampling=t_sampling,
            reduction=reduction,
            t_min=t_min,
            label_dropout=label_dropout,
            num_classes=num_classes,
        )
        self.num_projections = _positive_int("num_projections", num_projections)
        if projection not in _PROJECTIONS:
            raise ValueError(f"projection must be one of {_PROJECTIONS}; got {projection!r}")
        self.projection = projection
        self.simulation_steps = _positive_int("simulation_steps", simulation_steps)

    def sample_x_t(
        self, x0: Tensor, t: float | Tensor, *, generator: torch.Generator | None = None
    ) -> Tensor:
        """Draw ``x_t`` given ``x_0`` at per-sample times ``t``: from the kernel, or by
        Euler–Maruyama for an SDE without one. ``x0``: ``(batch, *event)``."""
        x0 = check_tensor("x0", x0, min_dim=2)
        t = self.sde.time(t, x0)
        return self._sample_x_t(x0, t, generator)

    def _sample_x_t(self, x0: Tensor, t: Tensor, generator: torch.Generator | None) -> Tensor:
        def normal() -> Tensor:
            return torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)

        with torch.no_grad():
            if self.has_kernel:
                std = self.sde.marginal_std(t.to(_F64)).to(x0.dtype)
                return self.sde.marginal_mean(x0, t) + append_dims(std, x0.dim()) * normal()
            h = t / self.simulation_steps
            sqrt_h = append_dims(torch.sqrt(h), x0.dim())
            h = append_dims(h, x0.dim())
            x = x0
            for k in range(self.simulation_steps):
                t_k = k * t / self.simulation_steps
                g = append_dims(self.sde.diffusion(t_k), x0.dim())
                x = x + self.sde.drift(x, t_k) * h + g * sqrt_h * normal()
            return x

    def _projections(self, x0: Tensor, generator: torch.Generator | None) -> Tensor:
        shape = (self.num_projections, *x0.shape)
        if self.projection == "gaussian":
            return torch.randn(shape, generator=generator, dtype=x0.dtype, device=x0.device)
        bits = torch.randint(0, 2, shape, generator=generator, device=x0.device)
        return (2 * bits - 1).to(x0.dtype)

    def __call__(
        self,
        score: Callable[..., Tensor],
        x0: Tensor,
        *,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
        t: float | Tensor | None = None,
    ) -> Tensor:
        x0 = self._check_inputs(score, x0, labels, generator)
        t, t64, weight = self._draw_time(x0, t, generator)
        labels = self._drop_labels(labels, generator)
        x_t = self._sample_x_t(x0, t, generator)
        probes = self._projections(x0, generator)
        train = torch.is_grad_enabled()
        with torch.enable_grad():
            x = x_t.detach().requires_grad_(True)
            s = self._call_score(score, x, t, labels)
            value = 0.5 * _reduce(s**2, self.reduction)
            # A score that ignores x (a constant) has no graph to x and a zero Jacobian.
            for v in probes if s.requires_grad else ():
                # v^T (∇_x s) v from one vector-Jacobian product; create_graph keeps it a
                # function of the score's parameters.
                (vjp,) = torch.autograd.grad(
                    s, x, v, create_graph=train, retain_graph=True, allow_unused=True
                )
                if vjp is not None:
                    value = value + _reduce(vjp * v, self.reduction) / self.num_projections
        factor = self._lambda(t64) if weight is None else weight * self._lambda(t64)
        out = factor.to(value.dtype) * value
        return out if train else out.detach()

    def config(self) -> dict[str, Any]:
        """JSON-able constructor arguments with ``"class"`` and ``"sde"`` (the SDE's config)."""
        return self._config(
            num_projections=self.num_projections,
            projection=self.projection,
            simulation_steps=self.simulation_steps,
        )


_LOSSES = {
    "DenoisingScoreMatching": DenoisingScoreMatching,
    "SlicedScoreMatching": SlicedScoreMatching,
}


def loss_from_config(cfg: dict[str, Any], *, sde: Any = None) -> _AbstractScoreMatching:
    """Rebuild a loss from :meth:`DenoisingScoreMatching.config` /
    :meth:`SlicedScoreMatching.config`. The SDE is rebuilt from ``cfg["sde"]`` with
    :func:`sdegen.sde.sde_from_config` unless ``sde`` is given (e.g. the model's own SDE)."""
    if not isinstance(cfg, dict) or cfg.get("class") not in _LOSSES:
        got = cfg.get("class") if isinstance(cfg, dict) else type(cfg).__name__
        raise ValueError(f"cfg must be a loss config with 'class' in {tuple(_LOSSES)}; got {got!r}")
    kwargs = {k: v for k, v in cfg.items() if k not in ("class", "sde")}
    if sde is None:
        if "sde" not in cfg:
            raise ValueError("cfg has no 'sde' entry; pass sde= to loss_from_config")
        from .sde import sde_from_config  # type: ignore[attr-defined]

        sde = sde_from_config(cfg["sde"])
    return _LOSSES[cfg["class"]](sde, **kwargs)


__all__ = ["DenoisingScoreMatching", "SlicedScoreMatching", "loss_from_config"]
