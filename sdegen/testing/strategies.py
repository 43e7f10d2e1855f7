"""hypothesis strategies for SDEs, Gaussian mixtures, times and seeds.

hypothesis does not seed torch: every strategy that needs randomness draws an integer seed from
hypothesis and builds a local ``torch.Generator`` from it, so examples shrink and replay exactly.

Example:
    >>> from hypothesis import given
    >>> from sdegen.testing import strategies as sst
    >>> @given(sst.linear_sdes(), sst.gaussian_mixtures())
    ... def test_fokker_planck(sde, mixture): ...
"""

from __future__ import annotations

import math

import torch
from hypothesis import strategies as st

from ..analytic import GaussianMixture
from ..sde import OUSDE, VESDE, VPSDE, LinearSDE, SubVPSDE

_COVARIANCES = ("full", "diagonal", "scalar")
SDE_KINDS = ("vp", "vp_cosine", "subvp", "ve", "ou", "linear_beta", "linear_general")


def torch_seeds() -> st.SearchStrategy[int]:
    """Seeds for ``torch.Generator().manual_seed``."""
    return st.integers(min_value=0, max_value=2**31 - 1)


def generators() -> st.SearchStrategy[torch.Generator]:
    """Freshly seeded CPU ``torch.Generator`` objects."""
    return torch_seeds().map(lambda seed: torch.Generator().manual_seed(seed))


@st.composite
def linear_sdes(draw, kinds: tuple[str, ...] = SDE_KINDS):
    """Linear SDEs with valid, moderately conditioned parameters."""
    kind = draw(st.sampled_from(kinds))
    t_min = draw(st.sampled_from([1e-5, 1e-4, 1e-3]))
    if kind in ("vp", "subvp"):
        beta_min = draw(st.floats(0.01, 1.0))
        beta_max = draw(st.floats(beta_min + 1.0, 30.0))
        cls = VPSDE if kind == "vp" else SubVPSDE
        return cls(beta_min, beta_max, t_min=t_min)
    if kind == "vp_cosine":
        return VPSDE(schedule="cosine", cosine_s=draw(st.floats(1e-3, 0.05)), t_min=t_min)
    if kind == "ve":
        sigma_min = draw(st.floats(1e-3, 0.1))
        return VESDE(sigma_min, draw(st.floats(1.0, 100.0)), t_min=t_min)
    if kind == "ou":
        theta = draw(st.floats(0.1, 5.0))
        return OUSDE(theta, draw(st.floats(0.1, 3.0)), draw(st.floats(-2.0, 2.0)), T=3.0 / theta)
    if kind == "linear_beta":
        b0, b1 = draw(st.floats(0.05, 1.0)), draw(st.floats(1.0, 20.0))
        return LinearSDE(beta=lambda t: b0 + (b1 - b0) * t**2, t_min=t_min, cells=1024)
    a0, freq = draw(st.floats(0.1, 2.0)), draw(st.floats(0.5, 4.0))
    g0 = draw(st.floats(0.2, 2.0))
    return LinearSDE(
        drift_coeff=lambda t: -a0 * (1 + 0.5 * torch.sin(freq * t)),
        diffusion=lambda t: g0 * (1 + t),
        t_min=t_min,
        cells=1024,
    )


@st.composite
def gaussian_mixtures(
    draw,
    dims: st.SearchStrategy[int] | None = None,
    components: st.SearchStrategy[int] | None = None,
    covariance: st.SearchStrategy[str] | None = None,
    max_condition: float = 40.0,
) -> GaussianMixture:
    """Mixtures with means ~ N(0, 2^2 I), weights bounded away from 0 and covariances with
    eigenvalues in ``[0.05, 0.05 * max_condition]``. Defaults: 1–4 dimensions, 1–4 components,
    full, diagonal or scalar covariances."""
    d = draw(dims if dims is not None else st.integers(1, 4))
    k = draw(components if components is not None else st.integers(1, 4))
    kind = draw(covariance if covariance is not None else st.sampled_from(_COVARIANCES))
    g = torch.Generator().manual_seed(draw(torch_seeds()))
    f64 = torch.float64
    means = 2.0 * torch.randn(k, d, generator=g, dtype=f64)
    weights = 0.2 + torch.rand(k, generator=g, dtype=f64)
    weights = weights / weights.sum()
    lo, hi = math.log(0.05), math.log(0.05 * max_condition)
    eig = torch.exp(lo + (hi - lo) * torch.rand(k, d, generator=g, dtype=f64))
    if kind == "scalar":
        covs = eig[:, 0]
    elif kind == "diagonal":
        covs = eig
    else:
        q, _ = torch.linalg.qr(torch.randn(k, d, d, generator=g, dtype=f64))
        covs = (q * eig[:, None, :]) @ q.transpose(-1, -2)
        covs = 0.5 * (covs + covs.transpose(-1, -2))
    return GaussianMixture(means, covs, weights)


def times(sde, batch: int) -> st.SearchStrategy[torch.Tensor]:
    """A ``(batch,)`` float64 tensor of times in ``[t_min, T]``."""
    return st.lists(st.floats(sde.t_min, sde.T), min_size=batch, max_size=batch).map(
        lambda ts: torch.tensor(ts, dtype=torch.float64)
    )


def batches(max_size: int = 32) -> st.SearchStrategy[int]:
    return st.integers(min_value=1, max_value=max_size)
