"""Closed-form ground truth: Gaussian mixtures and their exact marginals under linear SDEs."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ._utils import sample_normal
from ._validation import as_time, check_tensor
from .sde.base import AbstractLinearSDE

_LOG_2PI = math.log(2 * math.pi)

# (x, t) -> Tensor: a score or a log-density as a function of the state and per-sample time.
TimeFn = Callable[[Tensor, Tensor], Tensor]


class GaussianMixture:
    """A mixture ``p(x) = Σ_k w_k N(x; mu_k, Sigma_k)`` with exact density, score and sampling,
    and its exact marginal ``p_t`` under any linear SDE.

    Under ``x_t | x_0 ~ N(m(t) x_0 + c(t), s(t)^2 I)`` a mixture stays a mixture: means become
    ``m mu_k + c`` and covariances ``m^2 Sigma_k + s^2 I``. Each
    ``Sigma_k = U_k diag(lambda_k) U_k^T``
    is diagonalised once, so ``p_t`` at any (per-sample) time costs one rotation per component and
    its log-density is differentiable in ``x`` and ``t``.

    Arguments:
        means: ``(K, *event)`` component means.
        covs: ``(K, d, d)`` full covariances (``d = prod(event)``), ``(K, *event)`` diagonal ones,
            ``(K,)`` or a float for scalar ones (``Sigma_k = covs[k] I``). Default: identity.
        weights: ``(K,)`` positive weights summing to 1. Default: uniform.

    Example:
        >>> gm = GaussianMixture(torch.tensor([[-2.0, 0.0], [2.0, 0.0]]), 0.25)
        >>> score = gm.score_fn(VPSDE())            # (x, t) -> ∇ log p_t(x)
        >>> p_half = gm.marginal(VPSDE(), 0.5)       # a GaussianMixture
    """

    def __init__(
        self,
        means: Tensor,
        covs: Tensor | float | None = None,
        weights: Tensor | None = None,
    ) -> None:
        means = check_tensor("means", torch.as_tensor(means, dtype=torch.float64))
        if means.dim() < 2:
            raise ValueError(
                f"means must have shape (K, *event), e.g. (K, d); got {tuple(means.shape)}"
            )
        K = means.shape[0]
        self.event_shape = tuple(means.shape[1:])
        d = means[0].numel()
        mu = means.reshape(K, d)
        if covs is None:
            covs = 1.0
        covs = check_tensor("covs", torch.as_tensor(covs, dtype=torch.float64), min_dim=0)
        eigvecs: Tensor | None = None
        if covs.dim() == 0 or covs.shape == (K,):
            eigvals = covs.reshape(-1, 1).expand(K, d).clone()
        elif covs.shape == (K, *self.event_shape):
            eigvals = covs.reshape(K, d).clone()
        elif covs.shape == (K, d, d):
            if not torch.allclose(covs, covs.transpose(-1, -2), rtol=1e-10, atol=1e-12):
                raise ValueError("covs must be symmetric; got a non-symmetric (K, d, d) tensor")
            eigvals, eigvecs = torch.linalg.eigh(covs)
        else:
            raise ValueError(
                f"covs must be a float, (K,) = ({K},), (K, *event) = {(K, *self.event_shape)} or "
                f"(K, d, d) = {(K, d, d)}; got {tuple(covs.shape)}"
            )
        if bool((eigvals <= 0).any()):
            raise ValueError(
                f"covs must be positive definite; smallest eigenvalue {float(eigvals.min()):.3g}"
            )
        if weights is None:
            w = torch.full((K,), 1.0 / K, dtype=torch.float64)
        else:
            w = check_tensor("weights", torch.as_tensor(weights, dtype=torch.float64))
            if w.shape != (K,):
                raise ValueError(f"weights must have shape (K,) = ({K},); got {tuple(w.shape)}")
            if bool((w <= 0).any()) or abs(float(w.sum()) - 1) > 1e-6:
                raise ValueError(
                    f"weights must be positive and sum to 1; got sum {float(w.sum())}, "
                    f"min {float(w.min())}"
                )
            w = w / w.sum()
        self._set(mu, eigvals, eigvecs, w)

    def _set(self, mu: Tensor, eigvals: Tensor, eigvecs: Tensor | None, w: Tensor) -> None:
        self._mu, self._lam, self._U, self._w = mu, eigvals, eigvecs, w
        self._cache: dict[tuple[torch.dtype, torch.device], tuple] = {}

    @classmethod
    def _from_parts(cls, event_shape, mu, eigvals, eigvecs, w) -> GaussianMixture:
        gm = cls.__new__(cls)
        gm.event_shape = event_shape
        gm._set(mu, eigvals, eigvecs, w)
        return gm

    @property
    def n_components(self) -> int:
        return self._mu.shape[0]

    @property
    def dim(self) -> int:
        return self._mu.shape[1]

    @property
    def weights(self) -> Tensor:
        return self._w

    @property
    def means(self) -> Tensor:
        """``(K, *event)``, float64."""
        return self._mu.reshape(-1, *self.event_shape)

    @property
    def covs(self) -> Tensor:
        """``(K, d, d)`` full covariances, float64."""
        U = self._U if self._U is not None else torch.eye(self.dim, dtype=torch.float64)
        return (U * self._lam[:, None, :]) @ U.transpose(-1, -2)

    def mean(self) -> Tensor:
        """Mixture mean, ``(*event,)``."""
        return (self._w[:, None] * self._mu).sum(0).reshape(self.event_shape)

    def covariance(self) -> Tensor:
        """Mixture covariance, ``(d, d)``."""
        mu_bar = (self._w[:, None] * self._mu).sum(0)
        dev = self._mu - mu_bar
        within = (self._w[:, None, None] * self.covs).sum(0)
        return within + (self._w[:, None, None] * dev[:, :, None] * dev[:, None, :]).sum(0)

    def _params(self, like: Tensor) -> tuple:
        key = (like.dtype, like.device)
        if key not in self._cache:
            cast = {"dtype": like.dtype, "device": like.device}
            U = None if self._U is None else self._U.to(**cast)
            self._cache[key] = (
                self._mu.to(**cast),
                self._lam.to(**cast),
                U,
                torch.log(self._w).to(**cast),
            )
        return self._cache[key]

    def _component_terms(
        self, x: Tensor, m: Tensor, c: Tensor | None, s2: Tensor
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Per-component log-joint ``log w_k + log N_k(x)``, shape ``(B, K)``, and the whitened
        residual ``z_k / v_k`` (in the eigenbasis), shape ``(B, K, d)``."""
        mu, lam, U, log_w = self._params(x)
        xf = x.reshape(x.shape[0], 1, -1)
        diff = xf - m[:, None, None] * mu[None]
        if c is not None:
            diff = diff - c[:, None, None]
        z = diff if U is None else torch.einsum("bkd,kde->bke", diff, U)
        v = (m * m)[:, None, None] * lam[None] + s2[:, None, None]
        log_joint = log_w - 0.5 * ((z * z / v).sum(-1) + torch.log(v).sum(-1) + self.dim * _LOG_2PI)
        return log_joint, z / v, U

    def _log_prob(self, x: Tensor, m: Tensor, c: Tensor | None, s2: Tensor) -> Tensor:
        log_joint, _, _ = self._component_terms(x, m, c, s2)
        return torch.logsumexp(log_joint, dim=-1)

    def _score(self, x: Tensor, m: Tensor, c: Tensor | None, s2: Tensor) -> Tensor:
        log_joint, zv, U = self._component_terms(x, m, c, s2)
        resp = torch.softmax(log_joint, dim=-1)
        grad = zv if U is None else torch.einsum("bke,kde->bkd", zv, U)
        return -(resp[:, :, None] * grad).sum(1).reshape(x.shape)

    def _identity(self, x: Tensor) -> tuple[Tensor, None, Tensor]:
        ones = x.new_ones(x.shape[0])
        return ones, None, torch.zeros_like(ones)

    def _check_x(self, x: Tensor) -> Tensor:
        x = check_tensor("x", x, min_dim=2)
        if tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(
                f"x must have shape (batch, *event) with event {self.event_shape}; "
                f"got {tuple(x.shape)}"
            )
        return x

    def log_prob(self, x: Tensor) -> Tensor:
        """``log p(x)``; ``x``: ``(batch, *event)`` → ``(batch,)``."""
        x = self._check_x(x)
        return self._log_prob(x, *self._identity(x))

    def score(self, x: Tensor) -> Tensor:
        """``∇ log p(x)``, shaped like ``x``."""
        x = self._check_x(x)
        return self._score(x, *self._identity(x))

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Draw ``n`` samples, ``(n, *event)``; reproducible with a ``torch.Generator``."""
        if not isinstance(n, int) or n <= 0:
            raise ValueError(f"n must be a positive int; got {n!r}")
        z = sample_normal((n, self.dim), generator=generator, dtype=torch.float64, device=device)
        idx = torch.multinomial(self._w.to(z.device), n, replacement=True, generator=generator)
        mu, lam = self._mu.to(z.device), self._lam.to(z.device)
        z = z * torch.sqrt(lam[idx])
        if self._U is not None:
            z = torch.einsum("kde,ke->kd", self._U.to(z.device)[idx], z)
        x = mu[idx] + z
        return x.to(dtype or torch.get_default_dtype()).reshape(n, *self.event_shape)

    # Marginals under a linear SDE -------------------------------------------------------------

    @staticmethod
    def _check_sde(sde: AbstractLinearSDE) -> None:
        if not getattr(sde, "has_marginal", False):
            raise TypeError(
                f"sde must have a closed-form Gaussian kernel (has_marginal = True, e.g. VPSDE, "
                f"VESDE, LinearSDE); got {type(sde).__name__}"
            )

    @staticmethod
    def _coefficients(sde: AbstractLinearSDE, t: Tensor) -> tuple[Tensor, Tensor | None, Tensor]:
        return sde.marginal_mean_coeff(t), sde.mean_offset(t), sde.marginal_var(t)

    def marginal(self, sde: AbstractLinearSDE, t: float) -> GaussianMixture:
        """The exact ``p_t`` at one time ``t`` in ``[t_min, T]``, as a :class:`GaussianMixture`.

        For a batch of different times use :meth:`log_prob_fn` / :meth:`score_fn`."""
        self._check_sde(sde)
        t_ = sde.time(t, self._mu[:1])
        m, c, s2 = (v if v is None else v[0] for v in self._coefficients(sde, t_))
        mu = m * self._mu + (0.0 if c is None else c)
        return GaussianMixture._from_parts(
            self.event_shape, mu, m * m * self._lam + s2, self._U, self._w
        )

    def marginal_log_prob(self, sde: AbstractLinearSDE, x: Tensor, t: float | Tensor) -> Tensor:
        """``log p_t(x)`` with per-sample ``t``: ``x`` ``(batch, *event)``, ``t`` ``(batch,)``."""
        self._check_sde(sde)
        x = self._check_x(x)
        t = sde.time(t, x)
        return self._log_prob(x, *self._coefficients(sde, t))

    def log_prob_fn(self, sde: AbstractLinearSDE) -> TimeFn:
        """``(x, t) -> log p_t(x)`` for per-sample ``t``; differentiable in ``x`` and ``t``."""
        self._check_sde(sde)

        def log_prob(x: Tensor, t: Tensor | float) -> Tensor:
            t = as_time("t", t, x.shape[0], x)
            return self._log_prob(x, *self._coefficients(sde, t))

        return log_prob

    def score_fn(self, sde: AbstractLinearSDE) -> TimeFn:
        """The exact score ``(x, t) -> ∇_x log p_t(x)``, in closed form (no autograd).

        ``x``: ``(batch, *event)``; ``t``: ``(batch,)`` or a float. Meant to be called inside
        solvers, so it does not range-check ``t``."""
        self._check_sde(sde)

        def score(x: Tensor, t: Tensor | float) -> Tensor:
            t = as_time("t", t, x.shape[0], x)
            return self._score(x, *self._coefficients(sde, t))

        return score

    def __repr__(self) -> str:
        return (
            f"GaussianMixture(n_components={self.n_components}, event_shape={self.event_shape}, "
            f"covariance={'full' if self._U is not None else 'diagonal'})"
        )
