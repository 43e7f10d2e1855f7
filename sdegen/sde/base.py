"""Abstract forward SDEs.

A forward SDE is ``dx = f(x, t) dt + g(t) dw`` on ``[t_min, T]`` with a scalar (per-sample)
diffusion ``g(t)`` that is applied to every coordinate. Data live at ``t = 0``; ``t_min > 0`` is the
smallest time solvers and losses visit, because scores blow up as ``t -> 0``.
"""

from __future__ import annotations

import abc
import math

import torch
from torch import Tensor

from .._utils import append_dims, batch_sum, sample_normal
from .._validation import (
    as_time,
    check_same_shape,
    check_shape,
    check_tensor,
    check_time_in_range,
    check_time_range,
)

_LOG_2PI = math.log(2 * math.pi)


class AbstractSDE(abc.ABC):
    """A forward SDE ``dx = f(x, t) dt + g(t) dw`` on ``[t_min, T]``.

    A user SDE subclasses this and implements ``drift``, ``diffusion``, ``prior_sample`` and
    ``prior_log_prob``; sampling, likelihoods, sliced score matching and the Fokker–Planck tests
    need nothing more.

    Capabilities are attributes, read by samplers and tests instead of checking classes:

    - ``noise_type = "diagonal"``: ``g(t)`` multiplies an independent Brownian motion per
      coordinate.
    - ``has_marginal``: whether the closed-form kernel ``p(x_t | x_0)`` is available
      (the methods of :class:`AbstractLinearSDE`).

    Example:
        >>> class DoubleWell(AbstractSDE):
        ...     def drift(self, x, t):
        ...         return x - x**3
        ...     def diffusion(self, t):
        ...         return torch.ones_like(t)
        ...     ...
    """

    noise_type: str = "diagonal"
    has_marginal: bool = False

    def __init__(self, t_min: float, T: float) -> None:
        self.t_min, self.T = check_time_range(t_min, T)

    @abc.abstractmethod
    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        """``f(x, t)``. ``x``: ``(batch, *event)``, ``t``: ``(batch,)``; returns ``x``'s shape."""

    @abc.abstractmethod
    def diffusion(self, t: Tensor) -> Tensor:
        """``g(t)``. ``t``: ``(batch,)``; returns ``(batch,)``."""

    @abc.abstractmethod
    def prior_sample(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator | None = None,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Draw ``shape = (batch, *event)`` samples of the prior ``p_T``."""

    @abc.abstractmethod
    def prior_log_prob(self, x: Tensor) -> Tensor:
        """Log-density of the prior. ``x``: ``(batch, *event)``; returns ``(batch,)``."""

    def time(self, t: float | Tensor, x: Tensor, name: str = "t") -> Tensor:
        """Check ``t`` lies in ``[t_min, T]``; return it as a ``(batch,)`` tensor like ``x``."""
        t = as_time(name, t, x.shape[0], x)
        check_time_in_range(name, t, self.t_min, self.T)
        return t

    def config(self) -> dict:
        """A JSON-able dict that :func:`sde_from_config` turns back into an equal SDE:
        ``{"class": name, **constructor arguments}``.

        SDEs whose definition holds Python code (a user SDE, a :class:`LinearSDE` built from
        callables) cannot be written down and raise ``TypeError``; rebuild them in code.
        """
        raise TypeError(
            f"{type(self).__name__} cannot be serialised to a config (it is defined by Python "
            "code); rebuild it in code and pass it where a config was expected"
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(t_min={self.t_min}, T={self.T})"


class AbstractLinearSDE(AbstractSDE):
    """An SDE with affine drift, ``dx = [a(t) x + b(t)] dt + g(t) dw``.

    Started from ``x_0`` at ``t = 0`` its transition kernel is Gaussian,

        ``x_t | x_0 ~ N(m(t) x_0 + c(t), s(t)^2 I)``,

    with ``m(t) = exp(∫_0^t a)``, ``s(t)^2 = m(t)^2 ∫_0^t g(u)^2 / m(u)^2 du`` and
    ``c(t) = m(t) ∫_0^t b(u) / m(u) du``. Subclasses give ``drift_coeff`` (``a``), ``diffusion``
    (``g``), ``log_mean_coeff`` (``log m``) and ``marginal_var`` (``s^2``), and ``drift_offset``
    (``b``) with ``mean_offset`` (``c``) when the drift has a constant part. The prior is
    ``N(prior_mean, prior_std^2 I)``.
    """

    has_marginal: bool = True
    prior_mean: float = 0.0
    prior_std: float

    @abc.abstractmethod
    def drift_coeff(self, t: Tensor) -> Tensor:
        """``a(t)``, shape ``(batch,)``."""

    @abc.abstractmethod
    def log_mean_coeff(self, t: Tensor) -> Tensor:
        """``log m(t) = ∫_0^t a``, shape ``(batch,)``."""

    @abc.abstractmethod
    def marginal_var(self, t: Tensor) -> Tensor:
        """``s(t)^2``, the kernel variance per coordinate, shape ``(batch,)``."""

    def drift_offset(self, t: Tensor) -> Tensor | None:
        """``b(t)`` of the affine drift, or ``None`` when it is zero."""
        return None

    def mean_offset(self, t: Tensor) -> Tensor | None:
        """``c(t)`` of the kernel mean, or ``None`` when it is zero."""
        return None

    # Derived quantities -----------------------------------------------------------------------

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        f = append_dims(self.drift_coeff(t), x.dim()) * x
        b = self.drift_offset(t)
        return f if b is None else f + append_dims(b, x.dim())

    def marginal_mean_coeff(self, t: Tensor) -> Tensor:
        """``m(t)``, shape ``(batch,)``."""
        return torch.exp(self.log_mean_coeff(t))

    def marginal_std(self, t: Tensor) -> Tensor:
        """``s(t)``, shape ``(batch,)``."""
        return torch.sqrt(self.marginal_var(t))

    def marginal_mean(self, x0: Tensor, t: Tensor) -> Tensor:
        """``E[x_t | x_0] = m(t) x_0 + c(t)``; ``x0``: ``(batch, *event)``, ``t``: ``(batch,)``."""
        mean = append_dims(self.marginal_mean_coeff(t), x0.dim()) * x0
        c = self.mean_offset(t)
        return mean if c is None else mean + append_dims(c, x0.dim())

    def perturb(self, x0: Tensor, t: float | Tensor, noise: Tensor) -> Tensor:
        """Sample the kernel: ``x_t = m(t) x_0 + c(t) + s(t) noise`` with ``noise ~ N(0, I)``.

        Arguments:
            x0: ``(batch, *event)`` data.
            t: ``(batch,)`` times in ``[t_min, T]`` or a float.
            noise: standard normal noise shaped like ``x0``.
        """
        x0 = check_tensor("x0", x0)
        check_tensor("noise", noise)
        check_same_shape("noise", noise, "x0", x0)
        t = self.time(t, x0)
        return self.marginal_mean(x0, t) + append_dims(self.marginal_std(t), x0.dim()) * noise

    def _kernel_inputs(self, x_t: Tensor, x0: Tensor, t: float | Tensor) -> tuple[Tensor, Tensor]:
        x_t = check_tensor("x_t", x_t)
        x0 = check_tensor("x0", x0)
        check_same_shape("x_t", x_t, "x0", x0)
        return x_t, self.time(t, x_t)

    def kernel_log_prob(self, x_t: Tensor, x0: Tensor, t: float | Tensor) -> Tensor:
        """``log p(x_t | x_0)``, shape ``(batch,)``. ``x_t``, ``x0``: ``(batch, *event)``."""
        x_t, t = self._kernel_inputs(x_t, x0, t)
        var = self.marginal_var(t)
        d = x_t[0].numel()
        sq = batch_sum((x_t - self.marginal_mean(x0, t)) ** 2)
        return -0.5 * (sq / var + d * (torch.log(var) + _LOG_2PI))

    def kernel_score(self, x_t: Tensor, x0: Tensor, t: float | Tensor) -> Tensor:
        """``∇_{x_t} log p(x_t | x_0) = -(x_t - m x_0 - c) / s^2``, shaped like ``x_t``."""
        x_t, t = self._kernel_inputs(x_t, x0, t)
        return -(x_t - self.marginal_mean(x0, t)) / append_dims(self.marginal_var(t), x_t.dim())

    # Gaussian prior ---------------------------------------------------------------------------

    def prior_sample(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator | None = None,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        shape = check_shape("shape", shape)
        z = sample_normal(shape, generator=generator, dtype=dtype, device=device)
        return self.prior_mean + self.prior_std * z

    def prior_log_prob(self, x: Tensor) -> Tensor:
        x = check_tensor("x", x, min_dim=2)
        d = x[0].numel()
        z2 = batch_sum(((x - self.prior_mean) / self.prior_std) ** 2)
        return -0.5 * z2 - d * (math.log(self.prior_std) + 0.5 * _LOG_2PI)
