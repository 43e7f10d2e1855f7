from __future__ import annotations

import math

import torch
from torch import Tensor

from .._validation import check_scalar
from .base import AbstractLinearSDE


class OUSDE(AbstractLinearSDE):
    """Ornstein–Uhlenbeck SDE ``dx = theta (mu - x) dt + sigma dw``.

    Kernel: ``x_t | x_0 ~ N(mu + exp(-theta t) (x_0 - mu), v(t) I)`` with
    ``v(t) = sigma^2 / (2 theta) (1 - exp(-2 theta t))``.
    Prior: the stationary law ``N(mu, sigma^2 / (2 theta) I)``, which ``p_T`` approaches when
    ``theta T`` is a few units or more (``exp(-theta T)`` is the remaining memory of the data).

    Arguments:
        theta: mean-reversion rate, > 0.
        sigma: diffusion, > 0.
        mu: long-run mean (a number, shared by all coordinates).
        t_min, T: time range, ``0 < t_min < T``.
    """

    def __init__(
        self,
        theta: float = 1.0,
        sigma: float = math.sqrt(2.0),
        mu: float = 0.0,
        *,
        t_min: float = 1e-5,
        T: float = 5.0,
    ) -> None:
        super().__init__(t_min, T)
        self.theta = check_scalar("theta", theta, positive=True)
        self.sigma = check_scalar("sigma", sigma, positive=True)
        self.mu = check_scalar("mu", mu)
        self.prior_mean = self.mu
        self.prior_std = self.sigma / math.sqrt(2 * self.theta)

    def config(self) -> dict:
        return {
            "class": "OUSDE",
            "theta": self.theta,
            "sigma": self.sigma,
            "mu": self.mu,
            "t_min": self.t_min,
            "T": self.T,
        }

    def drift_coeff(self, t: Tensor) -> Tensor:
        return torch.full_like(t, -self.theta)

    def drift_offset(self, t: Tensor) -> Tensor | None:
        return None if self.mu == 0 else torch.full_like(t, self.theta * self.mu)

    def diffusion(self, t: Tensor) -> Tensor:
        return torch.full_like(t, self.sigma)

    def log_mean_coeff(self, t: Tensor) -> Tensor:
        return -self.theta * t

    def marginal_var(self, t: Tensor) -> Tensor:
        return -(self.sigma**2 / (2 * self.theta)) * torch.expm1(-2 * self.theta * t)

    def mean_offset(self, t: Tensor) -> Tensor | None:
        return None if self.mu == 0 else -self.mu * torch.expm1(-self.theta * t)

    def __repr__(self) -> str:
        return (
            f"OUSDE(theta={self.theta}, sigma={self.sigma}, mu={self.mu}, "
            f"t_min={self.t_min}, T={self.T})"
        )
