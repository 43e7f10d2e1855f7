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
        v = self._variances(m, s2, lam)
        log_joint = log_w - 0.5 * ((z * z / v).sum(-1) + torch.log(v).sum(-1) + self.dim * _LOG_2PI)
        return log_joint, z / v, U

    @staticmethod
    def _variances(m: Tensor, s2: Tensor, lam: Tensor) -> Tensor:
        """``m² λ_k + s²``: ``(1, K, d)`` when the whole batch shares one time (the usual case:
        its logarithm is then taken once, not once per sample), else ``(B, K, d)``."""
        if m.numel() > 1 and bool((m == m[0]).all()) and bool((s2 == s2[0]).all()):
            m, s2 = m[:1], s2[:1]
        return (m * m)[:, None, None] * lam[None] + s2[:, None, None]

    def _log_prob(self, x: Tensor, m: Tensor, c: Tensor | None, s2: Tensor) -> Tensor:
        log_joint, _, _ = self._component_terms(x, m, c, s2)
        return torch.logsumexp(log_joint, dim=-1)

    def _score(self, x: Tensor, m: Tensor, c: Tensor | None, s2: Tensor) -> Tensor:
        log_joint, zv, U = self._component_terms(x, m, c, s2)
        resp = torch.softmax(log_joint, dim=-1)
        grad = zv if U is None else torch.einsum("bke,kde->bkd", zv, U)
        return -(resp[:, :, None] * grad).sum(1).reshape(x.shape)

    def _score_and_divergence(
        self, x: Tensor, m: Tensor, c: Tensor | None, s2: Tensor
    ) -> tuple[Tensor, Tensor]:
        """The score and its divergence ``∇·s = Σ_k r_k (|a_k|^2 - tr C_k^{-1}) - |s|^2``
        (``a_k = C_k^{-1}(x - μ_k)``, ``r_k`` the responsibilities), from one pass."""
        log_joint, zv, U = self._component_terms(x, m, c, s2)
        resp = torch.softmax(log_joint, dim=-1)
        grad = zv if U is None else torch.einsum("bke,kde->bkd", zv, U)
        score = -(resp[:, :, None] * grad).sum(1)
        _, lam, _, _ = self._params(x)
        inv_trace = (1.0 / self._variances(m, s2, lam)).sum(-1)
        div = (resp * ((zv * zv).sum(-1) - inv_trace)).sum(1) - (score * score).sum(1)
        return score.reshape(x.shape), div

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
        solvers, so it does not range-check ``t``. The function also carries
        ``score_and_divergence(x, t) -> (score, ∇·score)`` in closed form, which
        :func:`sdegen.log_likelihood` uses for an exact divergence without autograd."""
        self._check_sde(sde)

        def score(x: Tensor, t: Tensor | float) -> Tensor:
            t = as_time("t", t, x.shape[0], x)
            return self._score(x, *self._coefficients(sde, t))

        def score_and_divergence(x: Tensor, t: Tensor | float) -> tuple[Tensor, Tensor]:
            t = as_time("t", t, x.shape[0], x)
            return self._score_and_divergence(x, *self._coefficients(sde, t))

        # A capability that log_likelihood uses for an exact divergence without autograd.
        score.score_and_divergence = score_and_divergence
        return score

    def __repr__(self) -> str:
        return (
            f"GaussianMixture(n_components={self.n_components}, event_shape={self.event_shape}, "
            f"covariance={'full' if self._U is not None else 'diagonal'})"
        )


def _log1mexp(a: Tensor) -> Tensor:
    """``log(1 - exp(a))`` for ``a <= 0``, accurate on both sides of ``-ln 2``."""
    return torch.where(a > -math.log(2.0), torch.log(-torch.expm1(a)), torch.log1p(-torch.exp(a)))


def _log_ndtr_diff(upper: Tensor, lower: Tensor) -> Tensor:
    """``log(Φ(upper) - Φ(lower))`` for ``upper > lower``, using whichever tail keeps digits."""
    right = lower > 0  # both in the right tail: use Φ(-lower) - Φ(-upper)
    a = torch.where(right, -lower, upper)
    b = torch.where(right, -upper, lower)
    la, lb = torch.special.log_ndtr(a), torch.special.log_ndtr(b)
    return la + _log1mexp(torch.clamp(lb - la, max=0.0))


_RANGES = {"[-1,1]": (-1.0, 1.0), "[0,1]": (0.0, 1.0)}


class DequantizedCategorical(torch.nn.Module):
    """Independent categorical distributions over ``K`` levels per coordinate, uniformly
    dequantized and scaled to model space, with exact marginals under every linear SDE.

    With ``y = (x + u) / K`` (``u ~ U[0, 1)``) and ``z = lo + (hi - lo) y``, coordinate ``i`` of
    ``z`` has the piecewise-constant density ``p_i(z) = π_ik / w`` on bin ``k`` of width
    ``w = (hi - lo) / K``. Under a linear SDE, ``z_t = m z + c + σ ε``, so with ``u = (z_t - c)/m``
    and ``s = σ / m``

        ``p_t(z_t) = m^{-D} Π_i Σ_k (π_ik / w) [Φ((u_i - a_k)/s) - Φ((u_i - b_k)/s)]``

    for bin edges ``a_k < b_k``; the score follows in closed form from the bin edges. Its
    bits/dim on integer data equals that of the categorical model itself (the dequantized
    density integrates to ``π_ik`` over each bin), so it is both a baseline and an exact test of
    a likelihood pipeline on a density with sharp edges. As a ``base`` of a
    :class:`~sdegen.models.ScoreModel` it gives a network the per-coordinate level structure
    for free, leaving it to learn the dependence between coordinates.

    Arguments:
        probs: ``(*event, K)`` probabilities (each row sums to 1).
        data_range: ``"[-1,1]"`` or ``"[0,1]"``, as in :func:`sdegen.likelihood.data_transform`.

    Example:
        >>> base = DequantizedCategorical.fit(train_images, levels=17)
        >>> base.marginal_score(VPSDE(), z, t)   # (batch, *event)
    """

    def __init__(self, probs: Tensor, data_range: str = "[-1,1]") -> None:
        super().__init__()
        probs = check_tensor("probs", probs, min_dim=2)
        if (probs < 0).any() or not torch.allclose(
            probs.sum(-1), torch.ones((), dtype=probs.dtype), atol=1e-6
        ):
            raise ValueError("probs must be non-negative and sum to 1 over the last dimension")
        if data_range not in _RANGES:
            raise ValueError(f"data_range must be one of {list(_RANGES)}; got {data_range!r}")
        self.data_range = data_range
        self.register_buffer("probs", probs.to(torch.float64))

    @classmethod
    def fit(
        cls, images: Tensor, levels: int, *, alpha: float = 1.0, data_range: str = "[-1,1]"
    ) -> DequantizedCategorical:
        """Add-``alpha`` smoothed level frequencies of integer data ``(N, *event)``."""
        if not isinstance(images, Tensor) or images.is_floating_point():
            raise TypeError("images must be an integer tensor of levels 0..levels-1")
        if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
            raise ValueError(f"levels must be an int >= 2; got {levels!r}")
        if int(images.min()) < 0 or int(images.max()) >= levels:
            raise ValueError(f"images must lie in 0..{levels - 1}")
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0 (zero-probability bins give -inf); got {alpha}")
        counts = torch.nn.functional.one_hot(images.long(), levels).sum(0).to(torch.float64)
        return cls((counts + alpha) / (counts.sum(-1, keepdim=True) + alpha * levels), data_range)

    @property
    def levels(self) -> int:
        return self.probs.shape[-1]

    @property
    def event_shape(self) -> tuple[int, ...]:
        return tuple(self.probs.shape[:-1])

    def _bins(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """The ``K + 1`` bin edges and the ``(*event, K)`` densities ``π_ik / w`` on the bins."""
        lo, hi = _RANGES[self.data_range]
        k = self.levels
        edges = torch.linspace(lo, hi, k + 1, dtype=like.dtype, device=like.device)
        return edges, self.probs.to(device=like.device) * (k / (hi - lo))

    def _log_space_terms(self, u: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        """:func:`_log_space_terms` for every coordinate (the fast path's reference)."""
        edges, c = self._bins(u)
        return _log_space_terms(u, s, c, edges)

    def _check_x(self, x: Tensor) -> Tensor:
        x = check_tensor("x", x, min_dim=2)
        if tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(
                f"x must have shape (batch, *event) with event {self.event_shape}; got "
                f"{tuple(x.shape)}"
            )
        return x

    def log_prob(self, z: Tensor) -> Tensor:
        """The exact piecewise-constant log-density at ``t = 0``, ``(batch, *event) -> (batch,)``;
        ``-inf`` outside ``data_range``."""
        z = self._check_x(z)
        lo, hi = _RANGES[self.data_range]
        edges, c = self._bins(z)
        index = torch.bucketize(z.double().contiguous(), edges.double()[1:-1])
        inside = (z >= lo) & (z <= hi)
        logp = torch.log(torch.gather(c.expand(*z.shape, -1), -1, index.unsqueeze(-1)))
        logp = logp.squeeze(-1)
        logp = torch.where(inside, logp, torch.full_like(logp, float("-inf")))
        return logp.flatten(1).sum(1).to(z.dtype)

    def _coefficients(self, sde: AbstractLinearSDE, t: Tensor, x: Tensor):
        GaussianMixture._check_sde(sde)
        t = as_time("t", t, x.shape[0], x).to(torch.float64)
        m, c, s2 = GaussianMixture._coefficients(sde, t)
        shape = (-1,) + (1,) * (x.dim() - 1)
        m = m.reshape(shape)
        u = x.to(torch.float64) - (0.0 if c is None else c.reshape(shape))
        return u / m, (s2.sqrt().reshape(shape) / m), m

    def _terms(self, u: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        """Per-coordinate ``log p(u)`` and ``d/du log p(u)``.

        Fast path: ``p = Σ_j d_j Φ(γ_j)`` and ``p' = Σ_j d_j φ(γ_j) / s`` over the bin edges
        ``e_j`` (``γ_j = (u - e_j) / s``, ``d_j`` the density's jump at ``e_j``); the signed sums
        lose digits only where ``p`` is tiny against the bin densities, and those few
        coordinates are recomputed in log space."""
        edges, c = self._bins(u)
        jumps = _jumps(c)
        gamma = (u.unsqueeze(-1) - edges) / s.unsqueeze(-1)
        p = (jumps * torch.special.ndtr(gamma)).sum(-1)
        dp = (jumps * torch.exp(-0.5 * gamma**2)).sum(-1) / (math.sqrt(2 * math.pi) * s)
        reliable = p > 1e-6 * c.amax(-1)
        log_p = torch.log(p.clamp_min(1e-300))
        score = dp / p.clamp_min(1e-300)
        if not bool(reliable.all()):
            bad = ~reliable
            rows = c.expand(*u.shape, c.shape[-1])[bad]  # (n, K): each entry's own bins
            log_p[bad], score[bad] = _log_space_terms(u[bad], s[bad], rows, edges)
        return log_p, score

    def marginal_log_prob(self, sde: AbstractLinearSDE, x: Tensor, t: float | Tensor) -> Tensor:
        """``log p_t(x)`` with per-sample ``t``: ``(batch, *event) -> (batch,)``."""
        x = self._check_x(x)
        u, s, m = self._coefficients(sde, t, x)
        d = math.prod(self.event_shape)
        log_p, _ = self._terms(u, s.expand_as(u))
        return (log_p.flatten(1).sum(1) - d * torch.log(m.flatten())).to(x.dtype)

    def marginal_score(self, sde: AbstractLinearSDE, x: Tensor, t: float | Tensor) -> Tensor:
        """The exact score ``∇_x log p_t(x)``, ``(batch, *event)``, computed in float64 and
        returned in ``x``'s dtype. Meant for solvers: ``t`` is not range-checked."""
        u, s, m = self._coefficients(sde, t, x)
        _, score = self._terms(u, s.expand_as(u))
        return (score / m).to(x.dtype)

    def score_fn(self, sde: AbstractLinearSDE) -> TimeFn:
        """``(x, t) -> ∇_x log p_t(x)`` for :func:`sdegen.sample` and
        :func:`sdegen.log_likelihood`."""
        GaussianMixture._check_sde(sde)
        return lambda x, t: self.marginal_score(sde, x, t)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` dequantized draws in model space, ``(n, *event)`` float64."""
        flat = self.probs.reshape(-1, self.levels)
        levels = torch.multinomial(flat, n, replacement=True, generator=generator).T
        u = torch.rand(levels.shape, generator=generator, dtype=torch.float64)
        lo, hi = _RANGES[self.data_range]
        return (lo + (hi - lo) * (levels + u) / self.levels).reshape(n, *self.event_shape)

    def config(self) -> dict:
        """Shape and range; the probabilities travel in the state dict."""
        return {
            "class": "DequantizedCategorical",
            "event_shape": list(self.event_shape),
            "levels": self.levels,
            "data_range": self.data_range,
        }

    @classmethod
    def from_config(cls, config: dict) -> DequantizedCategorical:
        shape = (*config["event_shape"], config["levels"])
        probs = torch.full(shape, 1.0 / config["levels"], dtype=torch.float64)
        return cls(probs, config.get("data_range", "[-1,1]"))


def _jumps(c: Tensor) -> Tensor:
    """The density's jumps ``c_j - c_{j-1}`` at the ``K + 1`` bin edges (zero outside)."""
    zero = torch.zeros_like(c[..., :1])
    return torch.cat([c, zero], -1) - torch.cat([zero, c], -1)


def _log_space_terms(u: Tensor, s: Tensor, c: Tensor, edges: Tensor) -> tuple[Tensor, Tensor]:
    """``log p(u)`` and ``d/du log p(u)`` per coordinate for bin densities ``c`` (``(..., K)``,
    broadcastable against ``u``) smoothed by ``N(0, s^2)``, entirely in log space: slower than
    the signed sums, but keeps every digit far in the tails."""
    lower = (u.unsqueeze(-1) - edges[1:]) / s.unsqueeze(-1)
    upper = (u.unsqueeze(-1) - edges[:-1]) / s.unsqueeze(-1)
    log_p = torch.logsumexp(torch.log(c) + _log_ndtr_diff(upper, lower), dim=-1)
    jumps = _jumps(c)
    gamma = (u.unsqueeze(-1) - edges) / s.unsqueeze(-1)
    log_phi = -0.5 * gamma**2 - 0.5 * _LOG_2PI - log_p.unsqueeze(-1)
    neg_inf = torch.tensor(float("-inf"), dtype=u.dtype, device=u.device)
    pos = torch.logsumexp(
        torch.where(jumps > 0, torch.log(jumps.clamp_min(1e-300)) + log_phi, neg_inf), -1
    )
    neg = torch.logsumexp(
        torch.where(jumps < 0, torch.log((-jumps).clamp_min(1e-300)) + log_phi, neg_inf), -1
    )
    return log_p, (torch.exp(pos) - torch.exp(neg)) / s
