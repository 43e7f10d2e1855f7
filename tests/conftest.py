import os

import pytest
import torch
from hypothesis import HealthCheck, settings

import sdegen

# The tests work on small tensors, where intra-op threads cost more than they give; with a second
# busy process on this 2-core machine, 2 OpenMP threads made a 400-step simulation 70x slower.
torch.set_num_threads(1)

settings.register_profile(
    "ci", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", deadline=None, max_examples=20)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def make_mixture(d: int, k: int = 3, seed: int = 0, full: bool = True) -> sdegen.GaussianMixture:
    """A well-conditioned mixture with separated means, reproducible from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    means = 1.5 * torch.randn(k, d, generator=g, dtype=torch.float64)
    weights = torch.rand(k, generator=g, dtype=torch.float64) + 0.5
    weights = weights / weights.sum()
    if full:
        a = torch.randn(k, d, d, generator=g, dtype=torch.float64)
        covs = 0.3 * a @ a.transpose(-1, -2) / d + 0.05 * torch.eye(d, dtype=torch.float64)
    else:
        covs = 0.1 + 0.4 * torch.rand(k, d, generator=g, dtype=torch.float64)
    return sdegen.GaussianMixture(means, covs, weights)


def all_linear_sdes() -> list[sdegen.AbstractLinearSDE]:
    """Every linear SDE the library ships, in representative settings; a new SDE is tested by
    adding it here."""
    return [
        sdegen.VPSDE(),
        sdegen.VPSDE(schedule="cosine"),
        sdegen.SubVPSDE(),
        sdegen.VESDE(),
        sdegen.OUSDE(theta=0.7, sigma=1.3, mu=0.4, T=6.0),
        sdegen.LinearSDE(beta=lambda t: 0.1 + 19.9 * t),
        sdegen.LinearSDE(
            drift_coeff=lambda t: -torch.sin(3 * t) - 0.5, diffusion=lambda t: 1 + t**2, T=2.0
        ),
    ]


@pytest.fixture(params=all_linear_sdes(), ids=repr)
def linear_sde(request):
    return request.param


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


# Planted errors, shared by the kit's tests and benchmarks/bench_testing_power.py.


class PerturbedVE(sdegen.AbstractLinearSDE):
    """VE whose kernel variance is sigma(t)^2 (a start at sigma_min^2), not the SDE's
    sigma(t)^2 - sigma_min^2."""

    def __init__(self):
        self.ve = sdegen.VESDE()
        super().__init__(self.ve.t_min, self.ve.T)
        self.prior_std = self.ve.prior_std

    def drift_coeff(self, t):
        return self.ve.drift_coeff(t)

    def diffusion(self, t):
        return self.ve.diffusion(t)

    def log_mean_coeff(self, t):
        return self.ve.log_mean_coeff(t)

    def marginal_var(self, t):
        return self.ve.sigma(t) ** 2


class CorrelatedOU(sdegen.AbstractSDE):
    """``dx = A x dt + dw`` with a symmetric ``A`` that couples the coordinates: its kernel
    has correlations."""

    A = torch.tensor([[-1.0, 0.9], [0.9, -1.0]], dtype=torch.float64)

    def __init__(self):
        super().__init__(1e-5, 1.0)

    def drift(self, x, t):
        return x @ self.A.T

    def diffusion(self, t):
        return torch.ones_like(t)

    def prior_sample(self, shape, generator=None, *, dtype=None, device=None):
        return torch.randn(shape, generator=generator, dtype=dtype, device=device)

    def prior_log_prob(self, x):
        return -0.5 * (x**2).sum(-1)

    @classmethod
    def covariance(cls, t: float) -> torch.Tensor:
        """Exact covariance at ``t`` from ``x0 = 0``: ``Q diag(expm1(2 lam t) / (2 lam)) Q^T``."""
        lam, q = torch.linalg.eigh(cls.A)
        return (q * (torch.expm1(2 * lam * t) / (2 * lam))) @ q.T
