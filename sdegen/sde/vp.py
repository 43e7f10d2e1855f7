from __future__ import annotations

import math

import torch
from torch import Tensor

from .._validation import check_scalar
from .base import AbstractLinearSDE

_SCHEDULES = ("linear", "cosine")


class _BetaSchedule:
    """``beta(t)`` and ``B(t) = ∫_0^t beta`` in closed form.

    - ``linear``: ``beta(t) = beta_min + t (beta_max - beta_min)`` (the continuous DDPM limit).
    - ``cosine`` (Nichol & Dhariwal 2021): ``alpha_bar(t) = cos^2(phi(t)) / cos^2(phi(0))`` with
      ``phi(t) = (t + s) / (1 + s) * pi / 2``, so ``B(t) = -log alpha_bar(t)`` and
      ``beta(t) = pi tan(phi(t)) / (1 + s)``, which diverges at ``t = 1``.
    """

    def __init__(self, schedule: str, beta_min: float, beta_max: float, cosine_s: float, T: float):
        if schedule not in _SCHEDULES:
            raise ValueError(f"schedule must be one of {_SCHEDULES}; got {schedule!r}")
        self.schedule = schedule
        if schedule == "linear":
            self.beta_min = check_scalar("beta_min", beta_min, nonnegative=True)
            self.beta_max = check_scalar("beta_max", beta_max, positive=True)
            if self.beta_max < self.beta_min:
                raise ValueError(
                    f"beta_max must be >= beta_min; got beta_min={self.beta_min}, "
                    f"beta_max={self.beta_max}"
                )
        else:
            self.cosine_s = check_scalar("cosine_s", cosine_s, positive=True)
            if not T < 1.0:
                raise ValueError(
                    f"T must be < 1 for the cosine schedule (beta(t) diverges at t = 1); got T={T}"
                )
            self._phi0 = 0.5 * math.pi * self.cosine_s / (1 + self.cosine_s)

    def _log_cos_phi0(self, like: Tensor) -> Tensor:
        # In torch, like log cos(phi(t)), so that B(0) is exactly 0 rather than -3e-20.
        return torch.log(torch.cos(like.new_tensor(self._phi0)))

    def _phi(self, t: Tensor) -> Tensor:
        return 0.5 * math.pi * (t + self.cosine_s) / (1 + self.cosine_s)

    def beta(self, t: Tensor) -> Tensor:
        if self.schedule == "linear":
            return self.beta_min + t * (self.beta_max - self.beta_min)
        return math.pi * torch.tan(self._phi(t)) / (1 + self.cosine_s)

    def integrated_beta(self, t: Tensor) -> Tensor:
        if self.schedule == "linear":
            return t * (self.beta_min + 0.5 * t * (self.beta_max - self.beta_min))
        return 2 * (self._log_cos_phi0(t) - torch.log(torch.cos(self._phi(t))))

    def describe(self) -> str:
        if self.schedule == "linear":
            return f"beta_min={self.beta_min}, beta_max={self.beta_max}"
        return f"schedule='cosine', cosine_s={self.cosine_s}"


def _default_T(schedule: str, T: float | None) -> float:
    if T is not None:
        return T
    return 0.999 if schedule == "cosine" else 1.0


class AbstractBetaSDE(AbstractLinearSDE):
    """Linear SDEs driven by a noise schedule ``beta(t)`` with drift ``-beta(t)/2 x``, so
    ``m(t) = exp(-B(t)/2)`` with ``B(t) = ∫_0^t beta``. Subclasses give ``diffusion`` and
    ``marginal_var``; the prior is ``N(0, I)``."""

    def __init__(
        self,
        beta_min: float = 0.1,
        beta_max: float = 20.0,
        *,
        schedule: str = "linear",
        cosine_s: float = 0.008,
        t_min: float = 1e-5,
        T: float | None = None,
    ) -> None:
        super().__init__(t_min, _default_T(schedule, T))
        self._schedule = _BetaSchedule(schedule, beta_min, beta_max, cosine_s, self.T)
        self._config = {
            "beta_min": float(beta_min),
            "beta_max": float(beta_max),
            "schedule": schedule,
            "cosine_s": float(cosine_s),
            "t_min": self.t_min,
            "T": self.T,
        }
        self.prior_std = 1.0

    def config(self) -> dict:
        return {"class": type(self).__name__, **self._config}

    def beta(self, t: Tensor) -> Tensor:
        """``beta(t)``, shape ``(batch,)``."""
        return self._schedule.beta(t)

    def integrated_beta(self, t: Tensor) -> Tensor:
        """``B(t) = ∫_0^t beta(u) du``."""
        return self._schedule.integrated_beta(t)

    def drift_coeff(self, t: Tensor) -> Tensor:
        return -0.5 * self.beta(t)

    def log_mean_coeff(self, t: Tensor) -> Tensor:
        return -0.5 * self.integrated_beta(t)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._schedule.describe()}, t_min={self.t_min}, T={self.T})"


class VPSDE(AbstractBetaSDE):
    """Variance-preserving SDE, the continuous limit of DDPM (Song et al. 2021).

    ``dx = -beta(t)/2 x dt + sqrt(beta(t)) dw``. With ``B(t) = ∫_0^t beta``:

        ``x_t | x_0 ~ N(exp(-B/2) x_0, (1 - exp(-B)) I)``,

    hence ``Var(x_t) = I + exp(-B) (Var(x_0) - I)``. ``1 - exp(-B)`` is computed as
    ``-expm1(-B)``, which keeps its digits near ``t = 0``. Prior: ``N(0, I)``, the stationary law.

    Arguments:
        beta_min, beta_max: linear schedule ``beta(t) = beta_min + t (beta_max - beta_min)``,
            ``0 <= beta_min <= beta_max``, ``beta_max > 0``.
        schedule: ``"linear"`` or ``"cosine"`` (Nichol & Dhariwal 2021, offset ``cosine_s``; its
            ``beta`` diverges at ``t = 1``, so ``T`` must be < 1 and defaults to 0.999).
        t_min, T: time range; ``T`` defaults to 1 (linear) or 0.999 (cosine).
    """

    def diffusion(self, t: Tensor) -> Tensor:
        return torch.sqrt(self.beta(t))

    def marginal_var(self, t: Tensor) -> Tensor:
        return -torch.expm1(-self.integrated_beta(t))


class SubVPSDE(AbstractBetaSDE):
    """Sub-VP SDE (Song et al. 2021), whose kernel variance is below the VP one at every t.

    ``dx = -beta(t)/2 x dt + sqrt(beta(t) (1 - exp(-2 B(t)))) dw``, ``B(t) = ∫_0^t beta``:

        ``x_t | x_0 ~ N(exp(-B/2) x_0, (1 - exp(-B))^2 I)``,

    with ``1 - exp(-B) = -expm1(-B)`` for accuracy near ``t = 0``. Prior: ``N(0, I)``.
    Arguments as for :class:`VPSDE`.
    """

    def diffusion(self, t: Tensor) -> Tensor:
        return torch.sqrt(-self.beta(t) * torch.expm1(-2 * self.integrated_beta(t)))

    def marginal_var(self, t: Tensor) -> Tensor:
        return torch.expm1(-self.integrated_beta(t)) ** 2

    def marginal_std(self, t: Tensor) -> Tensor:
        return -torch.expm1(-self.integrated_beta(t))
