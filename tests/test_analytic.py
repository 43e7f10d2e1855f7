"""GaussianMixture: density, score, sampling and exact marginals."""

import math

import numpy as np
import pytest
import torch
from conftest import make_mixture
from scipy import stats

import sdegen
from sdegen.testing import check_samples

F64 = torch.float64


def _scipy_log_prob(gm, x):
    comps = [
        stats.multivariate_normal(gm.means[k].reshape(-1).numpy(), gm.covs[k].numpy()).logpdf(x)
        for k in range(gm.n_components)
    ]
    return np.logaddexp.reduce(np.stack(comps, -1) + np.log(gm.weights.numpy()), axis=-1)


@pytest.mark.parametrize("full", [True, False])
def test_log_prob_matches_scipy(full):
    gm = make_mixture(4, k=3, full=full)
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(0), dtype=F64) * 2
    np.testing.assert_allclose(gm.log_prob(x).numpy(), _scipy_log_prob(gm, x.numpy()), rtol=1e-12)


def test_scalar_diagonal_and_full_covariances_agree():
    means = torch.tensor([[0.0, 1.0], [2.0, -1.0]], dtype=F64)
    x = torch.randn(20, 2, dtype=F64)
    a = sdegen.GaussianMixture(means, torch.tensor([0.5, 2.0]))
    b = sdegen.GaussianMixture(means, torch.tensor([[0.5, 0.5], [2.0, 2.0]]))
    c = sdegen.GaussianMixture(means, torch.diag_embed(torch.tensor([[0.5, 0.5], [2.0, 2.0]])))
    torch.testing.assert_close(a.log_prob(x), b.log_prob(x), rtol=1e-14, atol=0)
    torch.testing.assert_close(a.log_prob(x), c.log_prob(x), rtol=1e-14, atol=1e-14)


def test_image_shaped_events():
    means = torch.zeros(2, 1, 2, 2, dtype=F64)
    means[1] += 1
    gm = sdegen.GaussianMixture(means, 0.3)
    x = gm.sample(5, torch.Generator().manual_seed(0), dtype=F64)
    assert x.shape == (5, 1, 2, 2)
    assert gm.score(x).shape == x.shape
    flat = sdegen.GaussianMixture(means.reshape(2, 4), 0.3)
    torch.testing.assert_close(gm.log_prob(x), flat.log_prob(x.reshape(5, 4)))


def test_score_matches_autograd(linear_sde):
    gm = make_mixture(3, k=4)
    x = gm.sample(64, torch.Generator().manual_seed(0), dtype=F64).requires_grad_(True)
    g = torch.Generator().manual_seed(1)
    t = linear_sde.t_min + (linear_sde.T - linear_sde.t_min) * torch.rand(
        64, generator=g, dtype=F64
    )
    logp = gm.log_prob_fn(linear_sde)(x, t)
    (auto,) = torch.autograd.grad(logp.sum(), x)
    torch.testing.assert_close(gm.score_fn(linear_sde)(x.detach(), t), auto, rtol=1e-10, atol=1e-12)


def test_per_sample_time_equals_one_time_at_a_time():
    sde = sdegen.VPSDE()
    gm = make_mixture(2)
    x = torch.randn(4, 2, dtype=F64)
    ts = [1e-4, 0.2, 0.6, 1.0]
    batched = gm.marginal_log_prob(sde, x, torch.tensor(ts, dtype=F64))
    single = torch.stack([gm.marginal(sde, t).log_prob(x[i : i + 1])[0] for i, t in enumerate(ts)])
    torch.testing.assert_close(batched, single, rtol=1e-13, atol=0)
    score = gm.score_fn(sde)(x, torch.tensor(ts, dtype=F64))
    single_score = torch.cat([gm.marginal(sde, t).score(x[i : i + 1]) for i, t in enumerate(ts)])
    torch.testing.assert_close(score, single_score, rtol=1e-12, atol=1e-14)


def test_marginal_with_mean_offset_matches_kernel_convolution():
    """OU with mu != 0: a point mass mixture (tiny covariance) reproduces the kernel itself."""
    sde = sdegen.OUSDE(theta=1.5, sigma=0.9, mu=2.0)
    x0 = torch.tensor([[0.5, -1.0]], dtype=F64)
    gm = sdegen.GaussianMixture(x0, 1e-12)
    x = torch.randn(8, 2, dtype=F64)
    t = torch.full((8,), 0.7, dtype=F64)
    torch.testing.assert_close(
        gm.marginal_log_prob(sde, x, t),
        sde.kernel_log_prob(x, x0.expand(8, 2), t),
        rtol=1e-9,
        atol=0,
    )


def test_sample_moments_and_reproducibility():
    gm = make_mixture(3)
    a = gm.sample(5000, torch.Generator().manual_seed(0), dtype=F64)
    b = gm.sample(5000, torch.Generator().manual_seed(0), dtype=F64)
    assert torch.equal(a, b)
    assert check_samples(a, gm).passed


def test_sample_check_rejects_wrong_correlation():
    """Whitened covariance tests catch a sampler that drops correlations (KS per coordinate
    would not)."""
    cov = torch.tensor([[1.0, 0.3], [0.3, 1.0]], dtype=F64)
    gm = sdegen.GaussianMixture(torch.zeros(1, 2, dtype=F64), cov[None])
    indep = sdegen.GaussianMixture(torch.zeros(1, 2, dtype=F64), torch.ones(1, 2, dtype=F64))
    x = indep.sample(4000, torch.Generator().manual_seed(0), dtype=F64)
    report = check_samples(x, gm)
    assert not report.passed
    assert report.worst()[0] == "white[0,1]"


def test_marginal_at_large_t_approaches_vp_prior():
    sde = sdegen.VPSDE()
    gm = make_mixture(2)
    pT = gm.marginal(sde, 1.0)
    m = math.exp(-0.5 * (0.1 + 0.5 * 19.9))
    assert float(pT.mean().abs().max()) <= m * float(gm.means.abs().max()) + 1e-12
    torch.testing.assert_close(pT.covariance(), torch.eye(2, dtype=F64), rtol=0, atol=m**2 * 5)
