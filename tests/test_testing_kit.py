"""sdegen.testing over every shipped SDE, its power against planted errors, and hypothesis
property tests over arbitrary valid linear SDEs and mixtures."""

import math

import pytest
import torch
from conftest import CorrelatedOU, PerturbedVE, make_mixture
from hypothesis import given, settings
from hypothesis import strategies as st

import sdegen
from sdegen.testing import (
    assert_score,
    check_chapman_kolmogorov,
    check_marginal_limits,
    check_samples,
    check_score,
    check_transition_kernel,
    convergence_order,
    fokker_planck_residual,
    linear_kernel,
    probability_flow_residual,
)
from sdegen.testing import strategies as sst

F64 = torch.float64


def _times(sde, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return sde.t_min + (sde.T - sde.t_min) * torch.rand(n, generator=g, dtype=F64)


# --- every check over every shipped SDE (conftest.all_linear_sdes) ----------------------------


def test_marginal_limits(linear_sde):
    report = check_marginal_limits(linear_sde, make_mixture(2))
    assert report.passed, str(report)


def test_chapman_kolmogorov(linear_sde):
    t = min(0.9, linear_sde.T)
    report = check_chapman_kolmogorov(
        linear_kernel(linear_sde),
        0.1,
        0.4,
        t,
        x=torch.tensor([1.0, -2.0]),
        generator=torch.Generator().manual_seed(0),
    )
    assert report.passed, str(report)


def test_closed_form_score(linear_sde):
    gm = make_mixture(3, k=4)
    x = gm.sample(32, torch.Generator().manual_seed(0), dtype=F64)
    report = check_score(
        gm.score_fn(linear_sde), gm.log_prob_fn(linear_sde), x, _times(linear_sde, 32)
    )
    assert report.passed, str(report)


def test_marginal_of_mixture_matches_simulation_from_data(linear_sde):
    """The marginal check: draw x0 from the data law, simulate, compare with p_t."""
    gm = make_mixture(2, seed=3)
    t = min(0.5, linear_sde.T)
    report = check_transition_kernel(
        linear_sde,
        gm.marginal(linear_sde, t),
        gm,
        t,
        n=4000,
        steps=400,
        generator=torch.Generator().manual_seed(1),
    )
    assert report.passed, str(report)


# --- planted errors are caught ----------------------------------------------------------------


def test_limits_catch_a_ve_kernel_that_starts_at_sigma_min():
    gm = make_mixture(2)
    wrong = PerturbedVE()
    report = check_marginal_limits(wrong, gm)
    assert not report.passed and max(report.start_variance_error) > 1e3
    # The Fokker–Planck residual alone cannot tell: sigma(t)^2 satisfies the same equation.
    x = gm.sample(32, torch.Generator().manual_seed(0), dtype=F64)
    assert (
        float(fokker_planck_residual(wrong, gm.log_prob_fn(wrong), x, _times(wrong, 32)).max())
        < 1e-10
    )


@pytest.mark.parametrize(
    "planted,match",
    [
        ("variance_10pct", "white"),
        ("mean_0.2sd", "mean"),
        ("correlation_dropped", "white[0,1]"),
    ],
)
def test_transition_kernel_check_catches_planted_errors(planted, match):
    sde = sdegen.OUSDE(theta=1.0, sigma=1.0)
    x0 = torch.tensor([1.0, -1.0], dtype=F64)
    t = 0.5
    tt = torch.tensor([t], dtype=F64)
    mean = sde.marginal_mean(x0[None], tt)[0]
    var = float(sde.marginal_var(tt))
    cov = var * torch.eye(2, dtype=F64)
    sim = sde
    if planted == "variance_10pct":
        cov = 1.1 * cov
    elif planted == "mean_0.2sd":
        mean = mean + 0.2 * math.sqrt(var)
    else:
        # dx = A x dt + dw with symmetric A = Q diag(lam) Q^T, from x0 = 0: mean 0 and
        # cov = Q diag((exp(2 lam t) - 1) / (2 lam)) Q^T. Claim it without its correlation.
        sim, x0 = CorrelatedOU(), torch.zeros(2, dtype=F64)
        full = CorrelatedOU.covariance(t)
        mean, cov = torch.zeros(2, dtype=F64), torch.diag(torch.diagonal(full))
    claim = sdegen.GaussianMixture(mean[None], cov[None])
    report = check_transition_kernel(
        sim, claim, x0, t, n=4000, steps=200, generator=torch.Generator().manual_seed(0)
    )
    assert not report.passed
    assert match in report.worst()[0]


def test_transition_kernel_check_catches_a_flipped_drift():
    sde = sdegen.VPSDE()

    class Flipped(sdegen.VPSDE):
        def drift(self, x, t):
            return -super().drift(x, t)

    report = check_transition_kernel(
        Flipped(),
        sde,
        torch.tensor([2.0, -1.0]),
        0.3,
        n=4000,
        steps=200,
        generator=torch.Generator().manual_seed(0),
    )
    assert not report.passed


def test_chapman_kolmogorov_catches_a_wrong_composition():
    sde = sdegen.VPSDE()
    right = linear_kernel(sde)

    def wrong(x, s, t):  # forgets the contraction of the variance accumulated up to s
        mean, _ = right(x, s, t)
        return mean, torch.sqrt(sde.marginal_var(t) - sde.marginal_var(s))

    report = check_chapman_kolmogorov(
        wrong, 0.2, 0.5, 0.9, x=torch.tensor([1.0, 1.0]), generator=torch.Generator().manual_seed(0)
    )
    assert not report.passed


def test_check_score_catches_a_one_percent_error():
    sde, gm = sdegen.VPSDE(), make_mixture(3)
    x = gm.sample(32, torch.Generator().manual_seed(0), dtype=F64)
    exact = gm.score_fn(sde)
    report = check_score(lambda x, t: 1.01 * exact(x, t), gm.log_prob_fn(sde), x, _times(sde, 32))
    assert not report.passed and report.autograd_error > 1e-3


def test_check_score_float32_tolerances():
    sde, gm = sdegen.VESDE(), make_mixture(2)
    x = gm.sample(32, torch.Generator().manual_seed(0), dtype=torch.float32)
    assert_score(gm.score_fn(sde), gm.log_prob_fn(sde), x, _times(sde, 32).float())


# --- Hutchinson Fokker–Planck -----------------------------------------------------------------


def test_hutchinson_residual_is_exact_for_diagonal_jacobians():
    """Rademacher probes give v^T D v = tr D exactly when the Jacobian D is diagonal."""
    sde = sdegen.VPSDE()
    gm = sdegen.GaussianMixture(torch.zeros(1, 64, dtype=F64), torch.rand(1, 64, dtype=F64) + 0.2)
    x = gm.sample(16, torch.Generator().manual_seed(0), dtype=F64)
    res = fokker_planck_residual(
        sde,
        gm.log_prob_fn(sde),
        x,
        _times(sde, 16),
        divergence="hutchinson",
        num_probes=2,
        generator=torch.Generator().manual_seed(0),
    )
    assert float(res.max()) < 1e-10


def test_hutchinson_residual_is_unbiased_on_full_covariances():
    sde, gm = sdegen.VPSDE(), make_mixture(8, k=2)
    x = gm.sample(16, torch.Generator().manual_seed(0), dtype=F64)
    t = _times(sde, 16)
    exact = fokker_planck_residual(sde, gm.log_prob_fn(sde), x, t)
    noisy = fokker_planck_residual(
        sde,
        gm.log_prob_fn(sde),
        x,
        t,
        divergence="hutchinson",
        num_probes=256,
        generator=torch.Generator().manual_seed(0),
    )
    assert float(exact.max()) < 1e-10
    assert 0 < float(noisy.median()) < 0.05


# --- convergence order ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method,order", [("ode_euler", 1.0), ("ode_midpoint", 2.0), ("ode_rk4", 4.0)]
)
def test_convergence_order_of_probability_flow_solvers(method, order):
    sde, gm = sdegen.VPSDE(t_min=0.05), make_mixture(2)
    score = gm.score_fn(sde)
    x_T = sde.prior_sample((64, 2), torch.Generator().manual_seed(0), dtype=F64)
    ode = sdegen.ProbabilityFlowODE(sde, score)
    ref = ode.solve(x_T, [sde.T, sde.t_min], rtol=1e-12, atol=1e-12)[-1]

    def solve(steps):
        return sdegen.sample(sde, score, (64, 2), method=method, steps=steps, x_T=x_T).samples

    report = convergence_order(solve, [64, 128, 256, 512], ref)
    assert report.ci[0] - 0.15 <= order <= report.ci[1] + 0.15, str(report)
    assert abs(report.order - order) < 0.3, str(report)


def test_convergence_order_needs_three_points():
    with pytest.raises(ValueError, match="at least 3"):
        convergence_order(lambda n: torch.zeros(1), [1, 2], torch.zeros(1))


# --- hypothesis properties ----------------------------------------------------------------------


@settings(max_examples=40)
@given(sde=sst.linear_sdes(), mixture=sst.gaussian_mixtures(), seed=sst.torch_seeds())
def test_property_mixture_marginal_solves_fokker_planck(sde, mixture, seed):
    g = torch.Generator().manual_seed(seed)
    x0 = mixture.sample(16, g, dtype=F64)
    t = sde.t_min + (sde.T - sde.t_min) * torch.rand(16, generator=g, dtype=F64)
    x = sde.perturb(x0, t, torch.randn(x0.shape, generator=g, dtype=F64))
    res = fokker_planck_residual(sde, mixture.log_prob_fn(sde), x, t)
    assert float(res.max()) < 1e-9


@settings(max_examples=40)
@given(sde=sst.linear_sdes(), mixture=sst.gaussian_mixtures(), seed=sst.torch_seeds())
def test_property_closed_form_score_passes_check_score(sde, mixture, seed):
    g = torch.Generator().manual_seed(seed)
    x0 = mixture.sample(16, g, dtype=F64)
    t = sde.t_min + (sde.T - sde.t_min) * torch.rand(16, generator=g, dtype=F64)
    x = sde.perturb(x0, t, torch.randn(x0.shape, generator=g, dtype=F64))
    assert_score(mixture.score_fn(sde), mixture.log_prob_fn(sde), x, t)


@given(mixture=sst.gaussian_mixtures(dims=st.integers(1, 3)), seed=sst.torch_seeds())
@settings(max_examples=15)
def test_property_mixture_samples_pass_their_own_check(mixture, seed):
    x = mixture.sample(2000, torch.Generator().manual_seed(seed), dtype=F64)
    # alpha = 1e-3 per example over 15 examples: a false failure has probability <= 1.5%, and
    # the CI profile is derandomised, so a pass is reproducible.
    assert check_samples(x, mixture).passed


# --- probability flow -------------------------------------------------------------------------


def test_probability_flow_residual(linear_sde):
    gm = make_mixture(3)
    x = gm.sample(32, torch.Generator().manual_seed(0), dtype=F64)
    t = _times(linear_sde, 32)
    score, logp = gm.score_fn(linear_sde), gm.log_prob_fn(linear_sde)
    assert float(probability_flow_residual(linear_sde, score, logp, x, t).max()) < 1e-10
    # g^2 in place of ½ g^2 is the flow of the doubled score.
    doubled = probability_flow_residual(linear_sde, lambda x, t: 2 * score(x, t), logp, x, t)
    assert float(doubled.median()) > 1e-2


def test_transition_kernel_check_catches_a_ve_kernel_that_starts_at_sigma_min():
    """Passed as an SDE, the claim's own kernel variance sigma(t)^2 is tested as stated; at
    t = 1e-3 it is about twice the simulated variance."""
    sde = sdegen.VESDE()
    report = check_transition_kernel(
        sde,
        PerturbedVE(),
        torch.tensor([1.0, -2.0]),
        1e-3,
        n=4000,
        steps=100,
        generator=torch.Generator().manual_seed(0),
    )
    assert not report.passed


def test_small_samples_warn():
    from sdegen.testing import SmallSampleWarning

    gm = make_mixture(2)
    with pytest.warns(SmallSampleWarning, match="n = 50"):
        check_samples(gm.sample(50, torch.Generator().manual_seed(0), dtype=F64), gm)
