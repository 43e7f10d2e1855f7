"""Controllable generation against closed forms on Gaussian mixtures and Gaussians.

Every conditional of a Gaussian mixture is closed form: the component posterior
``p_t(k | x) ∝ w_k N_k,t(x)`` is an exact time-dependent classifier, ``p(x | k)`` is a component,
and ``p(x_u | x_o)`` is again a mixture (Gaussian conditioning per component, weights
``∝ w_k N(x_o; mu_k,o, Sigma_k,oo)``). Monte-Carlo checks use fixed seeds and
:func:`sdegen.testing.check_samples` at family level 1e-3.
"""

from __future__ import annotations

import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import make_mixture
from scipy import integrate

import sdegen
from sdegen import guidance
from sdegen.testing import check_samples

F64 = torch.float64
SDE = sdegen.VPSDE()
ROOT = pathlib.Path(__file__).resolve().parents[1]


def mixture_2d() -> sdegen.GaussianMixture:
    means = torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.5]], dtype=F64)
    covs = torch.tensor(
        [[[0.3, 0.1], [0.1, 0.4]], [[0.5, -0.2], [-0.2, 0.3]], [[0.2, 0.0], [0.0, 0.6]]],
        dtype=F64,
    )
    return sdegen.GaussianMixture(means, covs, torch.tensor([0.3, 0.5, 0.2], dtype=F64))


def components(gm: sdegen.GaussianMixture) -> list[sdegen.GaussianMixture]:
    return [
        sdegen.GaussianMixture(gm.means[k : k + 1], gm.covs[k : k + 1])
        for k in range(gm.n_components)
    ]


def posterior_classifier(gm: sdegen.GaussianMixture, sde=SDE):
    """The exact ``p_t(k | x)`` as logits ``log w_k + log N_k,t(x)`` (differentiable in x)."""
    log_probs = [c.log_prob_fn(sde) for c in components(gm)]
    log_w = torch.log(gm.weights)

    def classifier(x, t):
        return torch.stack([log_w[k].to(x) + lp(x, t) for k, lp in enumerate(log_probs)], 1)

    return classifier


def conditional_mixture(gm: sdegen.GaussianMixture, observed: list[int], y: torch.Tensor):
    """``p(x_u | x_o = y)`` as a GaussianMixture over the unobserved coordinates."""
    d = gm.dim
    obs = torch.tensor(observed)
    free = torch.tensor([i for i in range(d) if i not in observed])
    mu, S = gm.means.reshape(-1, d), gm.covs
    S_oo, S_fo, S_ff = S[:, obs][:, :, obs], S[:, free][:, :, obs], S[:, free][:, :, free]
    diff = y - mu[:, obs]
    sol = torch.linalg.solve(S_oo, diff[..., None])[..., 0]
    log_w = torch.log(gm.weights) - 0.5 * (diff * sol).sum(-1) - 0.5 * torch.logdet(S_oo)
    cov = S_ff - S_fo @ torch.linalg.solve(S_oo, S_fo.transpose(-1, -2))
    law = sdegen.GaussianMixture(
        mu[:, free] + (S_fo @ sol[..., None])[..., 0],
        0.5 * (cov + cov.transpose(-1, -2)),
        torch.softmax(log_w, 0),
    )
    return law, free


def component_weights(samples: torch.Tensor, law: sdegen.GaussianMixture) -> torch.Tensor:
    """Mean responsibilities of the law's components over the samples (estimates the weights)."""
    lp = torch.stack(
        [torch.log(law.weights[k]) + c.log_prob(samples) for k, c in enumerate(components(law))],
        1,
    )
    return torch.softmax(lp, 1).mean(0)


def times(n: int = 16) -> torch.Tensor:
    return torch.linspace(SDE.t_min, SDE.T, n, dtype=F64)


# Bayes' rule and classifier guidance -------------------------------------------------------------


@pytest.mark.parametrize("k", [0, 1, 2])
def test_classifier_guidance_with_the_exact_posterior_is_the_component_score(k):
    gm = mixture_2d()
    guided = guidance.classifier_guidance(gm.score_fn(SDE), posterior_classifier(gm), k, 1.0)
    x = 2 * torch.randn(16, 2, generator=torch.Generator().manual_seed(k), dtype=F64)
    exact = components(gm)[k].score_fn(SDE)(x, times())
    torch.testing.assert_close(guided(x, times()), exact, rtol=1e-10, atol=1e-10)


def test_conditional_score_is_bayes_rule():
    gm = mixture_2d()
    classifier = posterior_classifier(gm)
    grad = guidance.classifier_log_prob_grad(classifier, torch.tensor([2] * 16))
    cond = guidance.conditional_score(gm.score_fn(SDE), grad)
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    torch.testing.assert_close(cond(x, times()), components(gm)[2].score_fn(SDE)(x, times()))
    # scale multiplies the likelihood term only, and may depend on t.
    half = guidance.conditional_score(gm.score_fn(SDE), grad, scale=lambda t: 0.5 * t)
    expected = gm.score_fn(SDE)(x, times()) + 0.5 * times()[:, None] * grad(x, times())
    torch.testing.assert_close(half(x, times()), expected)


def test_classifier_gradient_inside_no_grad_and_inference_mode_is_detached():
    gm = mixture_2d()
    net = torch.nn.Linear(3, 3).double()
    classifier = posterior_classifier(gm)

    def with_params(x, t):
        return classifier(x, t) + 0 * net(torch.cat([x, t[:, None]], 1))

    guided = guidance.classifier_guidance(gm.score_fn(SDE), with_params, 1)
    x = torch.randn(8, 2, dtype=F64)
    expected = components(gm)[1].score_fn(SDE)(x, times(8))
    for context in (torch.no_grad, torch.inference_mode):
        with context():
            out = guided(x, times(8))
        assert not out.requires_grad
        torch.testing.assert_close(out, expected)
    assert all(p.grad is None for p in net.parameters())  # no gradients leak into the classifier


def test_classifier_gradient_is_differentiable_when_the_caller_differentiates():
    """The likelihood takes the divergence of the score by autograd: the classifier term must
    then carry its own Jacobian (second derivatives of log p_t(y|x))."""
    gm = mixture_2d()
    guided = guidance.classifier_guidance(gm.score_fn(SDE), posterior_classifier(gm), 0)
    exact = components(gm)[0].score_fn(SDE)
    x, t = torch.randn(1, 2, dtype=F64), torch.tensor([0.3], dtype=F64)
    jac = torch.autograd.functional.jacobian(lambda v: guided(v, t), x)
    torch.testing.assert_close(jac, torch.autograd.functional.jacobian(lambda v: exact(v, t), x))


def test_classifier_guidance_samples_the_chosen_component():
    """Scale 1 with the exact p_t(k|x): the reverse SDE samples p(x | k) (n = 4000, Euler with
    400 steps; its step bias is far below what 4000 samples resolve)."""
    gm = mixture_2d()
    guided = guidance.classifier_guidance(gm.score_fn(SDE), posterior_classifier(gm), 1, 1.0)
    with torch.no_grad():
        res = sdegen.sample(
            SDE, guided, (4000, 2), steps=400, generator=torch.Generator().manual_seed(0),
            dtype=F64,
        )  # fmt: skip
    report = check_samples(res.samples, components(gm)[1])
    assert report.passed, report
    assert not check_samples(res.samples, gm).passed  # and not the mixture


def test_classifier_guidance_log_likelihood_is_the_conditional_log_density():
    """log p(x | k) through log_likelihood with the guided score equals the component's
    closed-form log-density (exact trace, dopri5 at 1e-6; the divergence differentiates
    through the classifier's gradient)."""
    gm = mixture_2d()
    k = 2
    comp = components(gm)[k]
    guided = guidance.classifier_guidance(gm.score_fn(SDE), posterior_classifier(gm), k)
    x = comp.sample(32, torch.Generator().manual_seed(1), dtype=F64)
    prior = comp.marginal(SDE, SDE.T).log_prob
    res = sdegen.log_likelihood(SDE, guided, x, rtol=1e-6, atol=1e-6, prior_log_prob=prior)
    err = (res.log_prob - comp.log_prob(x)).abs().max()
    assert err < 1e-3, f"max |log p(x|k) error| = {err:.2e} nats"
    # The unconditional likelihood of the same points differs by log p(k | x) (a sanity check
    # that the test can fail): log p(x) = log p(x | k) + log w_k - log p(k | x).
    assert (comp.log_prob(x) - gm.log_prob(x)).abs().min() > 0.1


# Classifier-free guidance ------------------------------------------------------------------------


def test_classifier_free_guidance_at_zero_is_the_conditional_score():
    gm = mixture_2d()
    cond = components(gm)[0].score_fn(SDE)

    def uncond(x, t):
        raise AssertionError("w = 0 must not evaluate the unconditional score")

    x = torch.randn(16, 2, dtype=F64)
    out = guidance.classifier_free_guidance(cond, uncond, 0.0)(x, times())
    assert torch.equal(out, cond(x, times()))


def gaussian(mean, cov) -> sdegen.GaussianMixture:
    return sdegen.GaussianMixture(
        torch.as_tensor(mean, dtype=F64)[None], torch.as_tensor(cov)[None]
    )


@pytest.mark.parametrize("w", [0.5, 3.0])
def test_classifier_free_guidance_is_the_score_of_the_tilted_marginal(w):
    """Both p(x|y) and p(x) Gaussian: the tilted p_t(x|y)^{1+w} p_t(x)^{-w} is Gaussian with
    precision (1+w)Λ_y,t - wΛ_t and mean P^{-1}((1+w)Λ_y,t μ_y,t - wΛ_t μ_t); the guided score is
    its score at every t (here with unequal covariances, where P stays positive definite)."""
    cond_law = gaussian([1.0, -0.5], torch.tensor([[0.3, 0.1], [0.1, 0.2]], dtype=F64))
    law = gaussian([0.0, 0.0], torch.tensor([[1.0, 0.3], [0.3, 1.5]], dtype=F64))
    guided = guidance.classifier_free_guidance(cond_law.score_fn(SDE), law.score_fn(SDE), w)
    for t in (SDE.t_min, 0.1, 0.5, 1.0):
        cy, c = cond_law.marginal(SDE, t), law.marginal(SDE, t)
        prec_y, prec = torch.linalg.inv(cy.covs[0]), torch.linalg.inv(c.covs[0])
        P = (1 + w) * prec_y - w * prec
        assert torch.linalg.eigvalsh(P).min() > 0
        mean = torch.linalg.solve(P, (1 + w) * prec_y @ cy.means[0] - w * prec @ c.means[0])
        tilted = gaussian(mean, torch.linalg.inv(P))
        x = torch.randn(32, 2, generator=torch.Generator().manual_seed(2), dtype=F64)
        torch.testing.assert_close(guided(x, t), tilted.score(x), rtol=1e-9, atol=1e-9)


def test_classifier_free_guidance_scale_may_depend_on_t():
    cond, uncond = components(mixture_2d())[0].score_fn(SDE), mixture_2d().score_fn(SDE)
    guided = guidance.classifier_free_guidance(cond, uncond, lambda t: 2 * t)
    x = torch.randn(16, 2, dtype=F64)
    w = 2 * times()[:, None]
    expected = (1 + w) * cond(x, times()) - w * uncond(x, times())
    torch.testing.assert_close(guided(x, times()), expected)


def _flow_law_of_linear_score(score, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance at t_min of the probability flow of a score that is linear and diagonal,
    ``s(x, t) = b(t) - a(t) x``, from x_T ~ N(0, I): integrate ``dμ/dt = (f + g²a/2) μ - g²b/2``
    and ``dV/dt = 2 (f + g²a/2) V`` from T down to t_min (scipy, rtol 1e-10)."""
    zero, one = torch.zeros(1, d, dtype=F64), torch.ones(1, d, dtype=F64)

    def rhs(t, state):
        tt = torch.tensor([t], dtype=F64)
        b = score(zero, tt)[0].numpy()
        a = b - score(one, tt)[0].numpy()
        f = float(SDE.drift_coeff(tt)[0])
        g2 = float(SDE.diffusion(tt)[0]) ** 2
        mu, var = state[:d], state[d:]
        k = f + 0.5 * g2 * a
        return np.concatenate([k * mu - 0.5 * g2 * b, 2 * k * var])

    sol = integrate.solve_ivp(
        rhs, (SDE.T, SDE.t_min), np.concatenate([np.zeros(d), np.ones(d)]), rtol=1e-10,
        atol=1e-12,
    )  # fmt: skip
    return sol.y[:d, -1], sol.y[d:, -1]


@pytest.mark.slow
def test_classifier_free_guidance_samples_the_tilted_law_only_for_equal_covariances():
    """Probability-flow sampling (dopri5) with the guided score, n = 4000.

    Equal covariances Σ: the tilted p_0(x|y)^{1+w} p_0(x)^{-w} = N((1+w)μ_y - wμ, Σ) diffuses
    into exactly the tilted marginals, so the samples follow it. Unequal covariances: the tilted
    marginals are not the diffusion of one law; the samples follow the law the guided flow
    carries N(0, I) to (computed by integrating its mean and variance), and *not* the tilted
    p_0. With μ_y = 1, Σ_y = 0.25, μ = 0, Σ = 1, w = 1 per coordinate the tilted p_0 is
    N(8/7, 1/7) = N(1.143, 0.143), the guided flow ends at N(1.377, 0.0625) (the reverse SDE
    with the same score, Euler, 1000 steps, at about N(1.25, 0.11): the score is no marginal
    score, so the SDE and the ODE disagree too); check_samples rejects the tilted law."""
    w = 1.0
    gen = torch.Generator().manual_seed(5)

    def run(cond_law, law):
        guided = guidance.classifier_free_guidance(cond_law.score_fn(SDE), law.score_fn(SDE), w)
        with torch.no_grad():
            return sdegen.sample(
                SDE, guided, (4000, 2), method="ode_dopri5", generator=gen, dtype=F64
            ).samples

    same = torch.tensor([0.25, 0.25], dtype=F64)
    samples = run(gaussian([1.0, -1.0], same), gaussian([0.0, 0.0], same))
    report = check_samples(samples, gaussian([2.0, -2.0], same))
    assert report.passed, report

    cond_law, law = gaussian([1.0, -1.0], same), gaussian([0.0, 0.0], torch.ones(2, dtype=F64))
    samples = run(cond_law, law)
    guided = guidance.classifier_free_guidance(cond_law.score_fn(SDE), law.score_fn(SDE), w)
    mean, var = _flow_law_of_linear_score(guided, 2)
    np.testing.assert_allclose([mean[0], var[0]], [1.377, 0.0625], atol=1e-3)  # as quoted
    report = check_samples(samples, gaussian(mean, torch.as_tensor(var)))
    assert report.passed, report
    tilted_prec = (1 + w) / same - w
    tilted_mean = ((1 + w) * torch.tensor([1.0, -1.0], dtype=F64) / same) / tilted_prec
    assert not check_samples(samples, gaussian(tilted_mean, 1 / tilted_prec)).passed


# Inpainting --------------------------------------------------------------------------------------


def _inpaint(gm, observed_idx, y, n, seed=0, **kwargs):
    observed = torch.zeros(n, gm.dim, dtype=F64)
    observed[:, observed_idx] = y
    mask = torch.zeros(gm.dim, dtype=torch.bool)
    mask[observed_idx] = True
    with torch.no_grad():
        res = guidance.inpaint(
            SDE, gm.score_fn(SDE), observed, mask, generator=torch.Generator().manual_seed(seed),
            **kwargs,
        )  # fmt: skip
    return res, observed


def test_inpaint_keeps_the_observations_counts_evaluations_and_is_reproducible():
    gm = mixture_2d()
    y = torch.tensor([-0.8], dtype=F64)
    res, observed = _inpaint(gm, [0], y, 64, steps=20, corrector_steps=2)
    assert torch.equal(res.samples[:, 0], observed[:, 0])
    assert res.nfe == 20 * (1 + 2)  # one predictor and two corrector evaluations per step
    again, _ = _inpaint(gm, [0], y, 64, steps=20, corrector_steps=2)
    assert torch.equal(res.samples, again.samples)
    other, _ = _inpaint(gm, [0], y, 64, seed=1, steps=20, corrector_steps=2)
    assert not torch.equal(res.samples, other.samples)
    # Any sample() method is a predictor; a per-sample mask is accepted.
    per_sample = torch.zeros(64, 2, dtype=torch.bool)
    per_sample[:, 1] = True
    with torch.no_grad():
        out = guidance.inpaint(
            SDE, gm.score_fn(SDE), observed, per_sample, method="ancestral", steps=10,
            corrector_steps=0,
        )  # fmt: skip
    assert torch.equal(out.samples[:, 1], observed[:, 1]) and out.nfe == 10


@pytest.mark.slow
def test_inpaint_recovers_a_nearly_unimodal_conditional():
    """Observing x_0 = 2 leaves one dominant component (weight 0.999) of p(x_1 | x_0), mean 1.00,
    variance 0.220. Measured (n = 4000): replacement alone (100 or 500 steps) puts ~10% of the
    samples in the wrong modes (mean 0.55, variance 1.47); 100 steps x 5 corrector steps: mean
    0.86, variance 0.76; 200 steps x 10 corrector steps: mean 0.998, variance 0.264, passes."""
    gm = mixture_2d()
    y = torch.tensor([2.0], dtype=F64)
    law, free = conditional_mixture(gm, [0], y)
    assert law.weights.max() > 0.99
    res, _ = _inpaint(gm, [0], y, 4000, steps=200, corrector_steps=10)
    report = check_samples(res.samples[:, free], law)
    assert report.passed, report


# Measured on this problem (2-D mixture, x_0 = -0.8 observed, p(x_1 | x_0) has weights
# 0.354 / 0.002 / 0.644 on components 0 / 1 / 2; VP, reverse-diffusion predictor, n = 4000):
#   replacement only, 500 steps: weights 0.650 / 0.007 / 0.342, mean error 1.06, rejected;
#   1 corrector step (snr 0.16):  0.460 / 0.002 / 0.537, mean error 0.35, rejected;
#   5 corrector steps:            0.383 / 0.002 / 0.615, mean error 0.09, borderline;
#   200 steps x 20 correctors:    0.371 / 0.002 / 0.628, mean error 0.05, passes.
@pytest.mark.slow
def test_inpaint_bimodal_conditional_needs_the_corrector():
    gm = mixture_2d()
    y = torch.tensor([-0.8], dtype=F64)
    law, free = conditional_mixture(gm, [0], y)
    bare, _ = _inpaint(gm, [0], y, 4000, steps=500, corrector_steps=0)
    bare_weights = component_weights(bare.samples[:, free], law)
    # The known bias of plain replacement: mode weights chosen while x_0(t) is still noisy.
    assert (bare_weights - law.weights).abs().max() > 0.2, bare_weights
    assert not check_samples(bare.samples[:, free], law).passed
    res, _ = _inpaint(gm, [0], y, 4000, steps=200, corrector_steps=20)
    weights = component_weights(res.samples[:, free], law)
    assert (weights - law.weights).abs().max() < 0.04, weights
    report = check_samples(res.samples[:, free], law)
    assert report.passed, report


@pytest.mark.slow
def test_inpaint_8d_mixture_with_four_coordinates_observed():
    """8-D, 3 components, x_0..x_3 observed at the midpoint of two means: p(x_u | x_o) has
    weights 0.565 / 0.435 / 0. Measured (n = 4000): replacement alone gets the weights nearly
    right (0.596 / 0.404) but the within-mode laws wrong (KS rejects, mean error 0.25);
    200 steps x 20 corrector steps pass check_samples (mean error 0.10, weights 0.542 / 0.458)."""
    gm = make_mixture(8, 3, seed=1)
    y = (0.5 * (gm.means[0] + gm.means[1]))[:4]
    law, free = conditional_mixture(gm, [0, 1, 2, 3], y)
    res, _ = _inpaint(gm, [0, 1, 2, 3], y, 4000, steps=200, corrector_steps=20)
    weights = component_weights(res.samples[:, free], law)
    assert (weights - law.weights).abs().max() < 0.05, weights
    report = check_samples(res.samples[:, free], law)
    assert report.passed, report


# Linear inverse problems -------------------------------------------------------------------------


def _gaussian_inverse_problem(d=4, v=0.5, noise_std=0.3):
    g = torch.Generator().manual_seed(7)
    mu = torch.randn(d, generator=g, dtype=F64)
    A = torch.randn(2, d, generator=g, dtype=F64)
    y = torch.randn(2, generator=g, dtype=F64)
    prior = gaussian(mu, torch.full((d,), v, dtype=F64))
    # Posterior of x_0 given y = A x_0 + n: precision I/v + A^T A / σ_y^2.
    prec = torch.eye(d, dtype=F64) / v + A.T @ A / noise_std**2
    cov = torch.linalg.inv(prec)
    mean = cov @ (mu / v + A.T @ y / noise_std**2)
    return prior, A, y, gaussian(mean, 0.5 * (cov + cov.T))


def test_gaussian_measurement_score_is_exact_for_isotropic_gaussian_data():
    prior, A, y, post = _gaussian_inverse_problem()
    score = guidance.linear_inverse_score(SDE, prior.score_fn(SDE), A, y, 0.3, data_var=0.5)
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    torch.testing.assert_close(score(x, times()), post.score_fn(SDE)(x, times()))
    # DPS (no posterior variance) is not exact, most of all at large t.
    dps = guidance.linear_inverse_score(SDE, prior.score_fn(SDE), A, y, 0.3, method="dps")
    gap = (dps(x, times()) - post.score_fn(SDE)(x, times())).norm(dim=1)
    # measured: 3.7e-3 at t_min, up to 56 at t = 0.13, 0.28 at T (scores of norm 1-55)
    assert gap.max() > 10 and gap[0] < 1e-2


@pytest.mark.slow
def test_gaussian_measurement_guidance_samples_the_posterior():
    prior, A, y, post = _gaussian_inverse_problem()
    score = guidance.linear_inverse_score(SDE, prior.score_fn(SDE), A, y, 0.3, data_var=0.5)
    with torch.no_grad():
        res = sdegen.sample(
            SDE, score, (4000, 4), steps=400, generator=torch.Generator().manual_seed(3),
            dtype=F64,
        )  # fmt: skip
    report = check_samples(res.samples, post)
    assert report.passed, report


# The noise-conditional classifier ----------------------------------------------------------------


def test_noisy_classifier_shapes_and_training_on_a_mixture():
    """Cross-entropy training on noisy mixture samples approaches the Bayes cross-entropy of the
    exact p_t(k | x) on held-out noisy points (measured after 600 steps: 0.652 vs 0.650 nats)."""
    torch.manual_seed(0)
    gm = mixture_2d()
    gen = torch.Generator().manual_seed(0)
    # Labelled data: each component sampled in proportion to its weight.
    parts = [components(gm)[k].sample(int(4000 * float(w)), gen) for k, w in enumerate(gm.weights)]
    data = torch.cat(parts)
    labels = torch.cat([torch.full((p.shape[0],), k) for k, p in enumerate(parts)])
    clf = guidance.NoisyClassifier(SDE, (2,), 3, hidden=64, depth=2)
    assert clf(data[:5], 0.5).shape == (5, 3)
    result = guidance.train_classifier(
        clf, SDE, data, labels, steps=600, batch_size=256, lr=3e-3, generator=gen
    )
    assert result.losses.shape == (600,) and result.losses[-50:].mean() < result.losses[:50].mean()
    # Held-out comparison with the exact posterior at the same noisy points.
    x0 = gm.sample(2000, gen, dtype=torch.float32)
    t = torch.rand(2000, generator=gen) * (SDE.T - SDE.t_min) + SDE.t_min
    xt = SDE.perturb(x0, t, torch.randn(x0.shape, generator=gen))
    exact_logits = posterior_classifier(gm)(xt.double(), t.double())
    p = torch.softmax(exact_logits, 1)
    with torch.no_grad():
        learned = torch.log_softmax(clf(xt, t).double(), 1)
    exact_ce = -(p * torch.log_softmax(exact_logits, 1)).sum(1).mean()
    learned_ce = -(p * learned).sum(1).mean()
    assert learned_ce - exact_ce < 0.03, (float(learned_ce), float(exact_ce))


# Validation --------------------------------------------------------------------------------------


def test_bad_arguments_are_refused_by_name():
    gm = mixture_2d()
    score = gm.score_fn(SDE)
    clf = posterior_classifier(gm)
    with pytest.raises(ValueError, match="scale"):
        guidance.classifier_guidance(score, clf, 0, -1.0)
    with pytest.raises(ValueError, match="scale"):
        guidance.classifier_free_guidance(score, score, -2.0)
    with pytest.raises(TypeError, match="scale"):
        guidance.classifier_free_guidance(score, score, "big")
    with pytest.raises(TypeError, match="classifier"):
        guidance.classifier_guidance(score, None, 0)
    with pytest.raises(TypeError, match="y must"):
        guidance.classifier_guidance(score, clf, 1.5)
    with pytest.raises(ValueError, match="y holds class 7"):
        guidance.classifier_guidance(score, clf, 7)(torch.zeros(2, 2, dtype=F64), 0.5)
    with pytest.raises(ValueError, match=r"logits of shape \(batch, K\)"):
        bad = guidance.classifier_guidance(score, lambda x, t: x.sum(1), 0)
        bad(torch.zeros(2, 2, dtype=F64), 0.5)
    with pytest.raises(ValueError, match="scale function"):
        guided = guidance.classifier_free_guidance(score, score, lambda t: torch.ones(3))
        guided(torch.zeros(2, 2, dtype=F64), 0.5)
    observed = torch.zeros(4, 2, dtype=F64)
    with pytest.raises(ValueError, match="mask must have"):
        guidance.inpaint(SDE, score, observed, torch.ones(3))
    with pytest.raises(ValueError, match="0/1"):
        guidance.inpaint(SDE, score, observed, torch.full((2,), 0.5))
    with pytest.raises(ValueError, match="corrector_steps"):
        guidance.inpaint(SDE, score, observed, torch.ones(2), corrector_steps=-1)
    with pytest.raises(ValueError, match="callback"):
        guidance.inpaint(SDE, score, observed, torch.ones(2), callback=print)
    with pytest.raises(ValueError, match="closed-form"):
        guidance.inpaint(_NoKernel(), score, observed, torch.ones(2))
    A = torch.ones(3, 2, dtype=F64)
    with pytest.raises(ValueError, match="y must have shape"):
        guidance.linear_inverse_score(SDE, score, A, torch.zeros(2, dtype=F64), 0.1)
    with pytest.raises(ValueError, match="noise_std"):
        guidance.linear_inverse_score(SDE, score, A, torch.zeros(3, dtype=F64), 0.0)
    with pytest.raises(ValueError, match="method"):
        guidance.linear_inverse_score(SDE, score, A, torch.zeros(3, dtype=F64), 0.1, method="x")
    with pytest.raises(ValueError, match="num_classes"):
        guidance.NoisyClassifier(SDE, (2,), 1)
    with pytest.raises(ValueError, match="labels must"):
        guidance.train_classifier(
            guidance.NoisyClassifier(SDE, (2,), 3), SDE, observed, torch.zeros(3).long()
        )


class _NoKernel(sdegen.AbstractSDE):
    def __init__(self):
        super().__init__(1e-3, 1.0)

    def drift(self, x, t):
        return -x

    def diffusion(self, t):
        return torch.ones_like(t)

    def prior_sample(self, shape, generator=None, *, dtype=None, device=None):
        return torch.randn(shape, generator=generator, dtype=dtype, device=device)

    def prior_log_prob(self, x):
        return -0.5 * x.flatten(1).pow(2).sum(1) - 0.5 * x[0].numel() * math.log(2 * math.pi)


# The example -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_conditional_digits_example_runs_tiny(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-W", "error", str(ROOT / "examples" / "conditional_digits.py"),
         "--tiny", "--out", str(tmp_path)],
        cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "accuracy" in proc.stdout
    for name in ("class_conditional.png", "inpainting.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
