from __future__ import annotations

import math

import torch
from torch import Tensor

from .._validation import check_scalar
from .base import AbstractLinearSDE


class VESDE(AbstractLinearSDE):
    """Variance-exploding SDE of score matching with Langevin dynamics (SMLD; Song et al. 2021).

    ``dx = g(t) dw`` with ``sigma(t) = sigma_min (sigma_max / sigma_min)^t`` and
    ``g(t) = sigma(t) sqrt(2 log(sigma_max / sigma_min))``, so that ``g^2 = d sigma^2 / dt``.

    Kernel: started from ``x_0`` at ``t = 0`` the SDE gives

        ``x_t | x_0 ~ N(x_0, (sigma(t)^2 - sigma(0)^2) I)``,  ``sigma(0) = sigma_min``,

    which is what simulating :meth:`drift` and :meth:`diffusion` produces and which tends to the
    data law as ``t -> 0``. (Some code uses variance ``sigma(t)^2``, i.e. data already perturbed
    by ``sigma_min``; that kernel does not solve this SDE from ``x_0``.) The variance is computed as
    ``sigma_min^2 expm1(2 t log(sigma_max / sigma_min))`` so it keeps its digits near ``t = 0``.

    Prior: ``N(0, sigma_max^2 I)`` (the usual choice; the exact ``p_T`` is the data law convolved
    with ``N(0, (sigma_max^2 - sigma_min^2) I)``).

    Arguments:
        sigma_min, sigma_max: noise scales, ``0 < sigma_min < sigma_max``.
        t_min, T: time range, ``0 < t_min < T``.

    Raises:
        ValueError: for non-positive or inverted noise scales or time range.
    """

    def __init__(
        self,
        sigma_min: float = 0.01,
        sigma_max: float = 50.0,
        *,
        t_min: float = 1e-5,
        T: float = 1.0,
    ) -> None:
        super().__init__(t_min, T)
        self.sigma_min = check_scalar("sigma_min", sigma_min, positive=True)
        self.sigma_max = check_scalar("sigma_max", sigma_max, positive=True)
        if not self.sigma_min < self.sigma_max:
            raise ValueError(
                f"sigma_min must be smaller than sigma_max; got sigma_min={self.sigma_min}, "
                f"sigma_max={self.sigma_max}"
            )
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)
        self.prior_std = self.sigma_max

    def config(self) -> dict:
        return {
            "class": "VESDE",
            "sigma_min": self.sigma_min,
            "sigma_max": self.sigma_max,
            "t_min": self.t_min,
            "T": self.T,
        }

    def sigma(self, t: Tensor) -> Tensor:
        """``sigma(t) = sigma_min (sigma_max / sigma_min)^t``."""
        return self.sigma_min * torch.exp(t * self._log_ratio)

    def drift_coeff(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        return torch.zeros_like(x)

    def diffusion(self, t: Tensor) -> Tensor:
        return self.sigma(t) * math.sqrt(2 * self._log_ratio)

    def log_mean_coeff(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def marginal_var(self, t: Tensor) -> Tensor:
        return self.sigma_min**2 * torch.expm1(2 * self._log_ratio * t)

    def __repr__(self) -> str:
        return (
            f"VESDE(sigma_min={self.sigma_min}, sigma_max={self.sigma_max}, "
            f"t_min={self.t_min}, T={self.T})"
        )
