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


# DequantizedCategorical: independent levels, uniformly dequantized, diffused in closed form.


def _random_categorical(gen, event=(3,), levels=5):
    probs = torch.distributions.Dirichlet(torch.ones(levels, dtype=torch.float64)).sample(event)
    return sdegen.analytic.DequantizedCategorical(probs)


@pytest.mark.parametrize("sde", [sdegen.VPSDE(), sdegen.VESDE(), sdegen.SubVPSDE()], ids=repr)
@pytest.mark.parametrize("t", [1e-3, 0.05, 0.5, 0.95])
def test_dequantized_categorical_score_is_the_gradient_of_its_log_density(sde, t):
    torch.manual_seed(0)
    dc = _random_categorical(None)
    x = (dc.sample(16, torch.Generator().manual_seed(1)) * 1.1).requires_grad_(True)
    tt = torch.full((16,), t, dtype=torch.float64)
    (grad,) = torch.autograd.grad(dc.marginal_log_prob(sde, x, tt).sum(), x)
    score = dc.marginal_score(sde, x, tt)
    assert torch.allclose(score, grad, rtol=1e-9, atol=1e-9 * float(grad.abs().max()))


def test_dequantized_categorical_obeys_fokker_planck_and_its_limits():
    from sdegen.testing import fokker_planck_residual

    torch.manual_seed(0)
    dc = _random_categorical(None, event=(2,), levels=4)
    sde = sdegen.VPSDE()
    x = dc.sample(64, torch.Generator().manual_seed(2))
    for t in (0.01, 0.3, 0.9):
        xt = sdegen.VPSDE().perturb(
            x, torch.full((64,), t, dtype=torch.float64), torch.randn(64, 2, dtype=torch.float64)
        )
        res = fokker_planck_residual(sde, lambda y, s: dc.marginal_log_prob(sde, y, s), xt, t)
        assert float(res.abs().max()) < 1e-6
    # t -> 0: the exact piecewise-constant density inside the bins (away from edges).
    inner = x[((x * 2).frac().abs() - 0.5).abs().amax(1) < 0.45]
    near0 = dc.marginal_log_prob(sde, inner, 1e-7)
    assert torch.allclose(near0, dc.log_prob(inner), atol=1e-6)
    # t = T: close to the N(0, I) prior; the data's mean is still there, scaled by m(T) = 6.6e-3,
    # so |log p_T - log N(0, I)| <= m(T) |x| sqrt(d) + O(m^2) (|z| <= 1 per coordinate).
    xT = torch.randn(64, 2, dtype=torch.float64)
    prior = -0.5 * (xT**2).sum(1) - math.log(2 * math.pi)
    m_T = float(sde.marginal_mean_coeff(torch.tensor([1.0], dtype=torch.float64)))
    bound = m_T * (xT.norm(dim=1) * math.sqrt(2) + 2 * m_T) + 1e-4
    assert (dc.marginal_log_prob(sde, xT, 1.0) - prior).abs().le(bound).all()


def test_dequantized_categorical_bits_per_dim_through_the_flow_equals_the_categorical_one():
    """The exact score of the dequantized categorical model, integrated by the probability flow,
    gives the discrete model's bits/dim: a closed-form check of the whole likelihood pipeline
    on a density with sharp edges."""
    gen = torch.Generator().manual_seed(0)
    levels, d = 5, 4
    probs = torch.distributions.Dirichlet(torch.ones(levels, dtype=torch.float64)).sample((d,))
    dc = sdegen.analytic.DequantizedCategorical(probs)
    x = torch.stack([torch.multinomial(p, 48, replacement=True, generator=gen) for p in probs], 1)
    exact = -torch.log2(torch.gather(probs.T, 0, x)).mean(1)  # bits/dim per point
    sde = sdegen.VPSDE()
    res = sdegen.bits_per_dim(
        sde, dc.score_fn(sde), x, levels=levels, generator=gen, dtype=torch.float64,
        rtol=1e-7, atol=1e-7,
    )  # fmt: skip
    # The flow starts at t_min = 1e-5 (sigma = 3e-3 bin widths), where the bin edges are
    # blurred: the mean excess is O(sigma / bin width) bits/dim.
    assert abs(float((res.per_sample - exact).mean())) < 5e-3
    # Per point, the flow's log-likelihood equals the exact log p_{t_min} of the same points.
    z = 2 * sdegen.dequantize(x, levels, torch.Generator().manual_seed(5), torch.float64) - 1
    # (With the exact p_T as the prior: N(0, I) alone is off by ~5e-3 nats here.)
    ll = sdegen.log_likelihood(
        sde, dc.score_fn(sde), z, rtol=1e-7, atol=1e-7,
        prior_log_prob=lambda y: dc.marginal_log_prob(sde, y, sde.T),
    )  # fmt: skip
    exact_ll = dc.marginal_log_prob(sde, z, sde.t_min)
    assert float((ll.log_prob - exact_ll).abs().max()) < 1e-4 * d


def test_dequantized_categorical_fit_and_errors():
    images = torch.tensor([[0, 2], [1, 2], [0, 2]])
    dc = sdegen.analytic.DequantizedCategorical.fit(images, 3, alpha=1.0)
    assert torch.allclose(dc.probs, torch.tensor([[3, 2, 1], [1, 1, 4]], dtype=torch.float64) / 6)
    with pytest.raises(ValueError, match="alpha"):
        sdegen.analytic.DequantizedCategorical.fit(images, 3, alpha=0.0)
    with pytest.raises(ValueError, match="levels"):
        sdegen.analytic.DequantizedCategorical.fit(images, 1)
    with pytest.raises(ValueError, match="sum to 1"):
        sdegen.analytic.DequantizedCategorical(torch.ones(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="event"):
        dc.log_prob(torch.zeros(4, 3, dtype=torch.float64))
    z = dc.sample(1000, torch.Generator().manual_seed(0))
    assert torch.isfinite(dc.log_prob(z)).all() and z.abs().max() <= 1
    assert torch.isinf(dc.log_prob(torch.full((1, 2), 1.5, dtype=torch.float64))).all()


@pytest.mark.parametrize("s", [1e-3, 3e-2, 1.0, 100.0])
def test_dequantized_categorical_fast_path_matches_the_log_space_formulas(s):
    """The signed-sum fast path and its log-space fallback agree with the all-log-space
    formulas everywhere, far tails included."""
    gen = torch.Generator().manual_seed(3)
    images = torch.randint(0, 17, (300, 6), generator=gen)
    images[:, 0] = 0  # a coordinate that never leaves level 0
    dc = sdegen.analytic.DequantizedCategorical.fit(images, 17)
    u = torch.cat([torch.linspace(-3, 3, 1001), torch.tensor([-50.0, 50.0, 1e3])])
    u = u.double()[:, None].expand(-1, 6).contiguous()
    scale = torch.full_like(u, s)
    log_p, score = dc._terms(u, scale)
    ref_log_p, ref_score = dc._log_space_terms(u, scale)
    assert float((log_p - ref_log_p).abs().max()) < 1e-8
    assert float(((score - ref_score).abs() / (1 + ref_score.abs())).max()) < 1e-8


@pytest.mark.parametrize("full", [False, True])
def test_mixture_divergence_in_closed_form_equals_the_autograd_trace(full):
    gen = torch.Generator().manual_seed(4)
    d = 5
    means = torch.randn(3, d, generator=gen, dtype=torch.float64)
    if full:
        a = torch.randn(3, d, d, generator=gen, dtype=torch.float64)
        covs = a @ a.transpose(1, 2) / d + 0.2 * torch.eye(d, dtype=torch.float64)
    else:
        covs = torch.rand(3, d, generator=gen, dtype=torch.float64) + 0.1
    gm = sdegen.GaussianMixture(means, covs, torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64))
    for sde in (sdegen.VPSDE(), sdegen.VESDE(), sdegen.OUSDE(mu=0.3)):
        fn = gm.score_fn(sde)
        x = torch.randn(7, d, generator=gen, dtype=torch.float64).requires_grad_(True)
        t = torch.rand(7, generator=gen, dtype=torch.float64) * 0.9 + 0.05
        s, div = fn.score_and_divergence(x, t)
        assert torch.allclose(s, fn(x, t), atol=1e-12)
        trace = sum(
            torch.autograd.grad(fn(x, t)[:, i].sum(), x, retain_graph=True)[0][:, i]
            for i in range(d)
        )
        assert torch.allclose(div, trace, rtol=1e-10, atol=1e-10)


def test_log_likelihood_uses_the_closed_form_divergence_and_stays_exact():
    gm = make_mixture(8, 3, seed=2)
    sde = sdegen.VPSDE()
    x = gm.sample(64, torch.Generator().manual_seed(0))
    res = sdegen.log_likelihood(
        sde, gm.score_fn(sde), x, prior_log_prob=gm.marginal(sde, sde.T).log_prob
    )
    exact = gm.marginal_log_prob(sde, x, sde.t_min)
    assert res.divergence == "exact"
    assert float((res.log_prob - exact).abs().mean()) / 8 < 2e-5
