"""Forward SDEs: closed forms, kernel vs simulation, Fokker–Planck, limits, quadrature."""

import math

import numpy as np
import pytest
import torch
from conftest import make_mixture

import sdegen
from sdegen.testing import assert_fokker_planck, check_transition_kernel

F64 = torch.float64


def _times(sde, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return sde.t_min + (sde.T - sde.t_min) * torch.rand(n, generator=g, dtype=F64)


# --- closed forms of the lecture notes -------------------------------------------------------


def test_ou_kernel_closed_form():
    theta, sigma, mu = 1.7, 0.8, 0.3
    sde = sdegen.OUSDE(theta=theta, sigma=sigma, mu=mu)
    t = torch.tensor([1e-3, 0.1, 1.0, 4.0], dtype=F64)
    x0 = torch.tensor([[2.0], [-1.0], [0.5], [3.0]], dtype=F64)
    mean = mu + torch.exp(-theta * t)[:, None] * (x0 - mu)
    var = sigma**2 / (2 * theta) * (1 - torch.exp(-2 * theta * t))
    torch.testing.assert_close(sde.marginal_mean(x0, t), mean, rtol=1e-14, atol=0)
    torch.testing.assert_close(sde.marginal_var(t), var, rtol=1e-12, atol=0)
    xt = x0 + 0.3
    expected = torch.distributions.Normal(mean[:, 0], var.sqrt()).log_prob(xt[:, 0])
    torch.testing.assert_close(sde.kernel_log_prob(xt, x0, t), expected, rtol=1e-13, atol=0)


def test_vp_variance_law_on_mixture():
    """Var(x_t) = I + exp(-∫beta) (Var(x_0) - I) for the VP SDE."""
    sde = sdegen.VPSDE()
    gm = make_mixture(3)
    for t in [1e-4, 0.1, 0.5, 1.0]:
        B = 0.1 * t + 0.5 * t**2 * (20.0 - 0.1)
        expected = torch.eye(3, dtype=F64) + math.exp(-B) * (
            gm.covariance() - torch.eye(3, dtype=F64)
        )
        torch.testing.assert_close(
            gm.marginal(sde, t).covariance(), expected, rtol=1e-12, atol=1e-14
        )


def test_ve_preserves_mean_and_adds_variance():
    sde = sdegen.VESDE(0.01, 50.0)
    gm = make_mixture(3)
    for t in [1e-4, 0.3, 1.0]:
        pt = gm.marginal(sde, t)
        torch.testing.assert_close(pt.mean(), gm.mean(), rtol=0, atol=1e-14)
        added = 0.01**2 * ((50 / 0.01) ** (2 * t) - 1)
        torch.testing.assert_close(
            pt.covariance(),
            gm.covariance() + added * torch.eye(3, dtype=F64),
            rtol=1e-12,
            atol=1e-14,
        )


def test_subvp_variance_below_vp():
    t = torch.linspace(1e-5, 1, 101, dtype=F64)
    assert bool((sdegen.SubVPSDE().marginal_var(t) <= sdegen.VPSDE().marginal_var(t)).all())


@pytest.mark.parametrize("sde_cls", [sdegen.VPSDE, sdegen.SubVPSDE])
def test_marginal_std_keeps_digits_near_zero_in_float32(sde_cls):
    """expm1 keeps s(t) accurate at t = 1e-5 in float32 (1 - exp(-x) would be ~1% off)."""
    sde = sde_cls()
    t64 = torch.tensor([1e-5, 1e-4], dtype=F64)
    ref = sde.marginal_std(t64)
    got = sde.marginal_std(t64.float()).double()
    assert float(((got - ref) / ref).abs().max()) < 1e-6


@pytest.mark.parametrize("sde_cls", [sdegen.VPSDE, sdegen.SubVPSDE, sdegen.VESDE])
def test_diffusion_is_consistent_with_kernel_variance(sde_cls):
    """d/dt s^2 = 2 a s^2 + g^2: the kernel solves the variance ODE of the SDE's own a and g."""
    sde = sde_cls()
    t = torch.linspace(0.01, 0.99, 50, dtype=F64, requires_grad=True)
    var = sde.marginal_var(t)
    (dvar,) = torch.autograd.grad(var.sum(), t)
    rhs = 2 * sde.drift_coeff(t) * var + sde.diffusion(t) ** 2
    torch.testing.assert_close(dvar, rhs.detach(), rtol=1e-10, atol=0)


# --- Fokker–Planck ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_mixture_marginal_solves_fokker_planck(linear_sde, dtype, tol):
    gm = make_mixture(3, k=4)
    x = gm.marginal(linear_sde, 0.5 * (linear_sde.t_min + linear_sde.T)).sample(
        64, torch.Generator().manual_seed(0), dtype=dtype
    )
    t = _times(linear_sde, 64).to(dtype)
    assert_fokker_planck(linear_sde, gm.log_prob_fn(linear_sde), x, t, tol=tol)


def test_fokker_planck_detects_a_one_percent_variance_error():
    sde = sdegen.VPSDE()
    gm = make_mixture(2)

    class Wrong(sdegen.AbstractLinearSDE):
        prior_std = 1.0

        def __init__(self):
            super().__init__(sde.t_min, sde.T)

        def drift_coeff(self, t):
            return sde.drift_coeff(t)

        def diffusion(self, t):
            return sde.diffusion(t)

        def log_mean_coeff(self, t):
            return sde.log_mean_coeff(t)

        def marginal_var(self, t):
            return 1.01 * sde.marginal_var(t)

    wrong = Wrong()
    x = gm.sample(64, torch.Generator().manual_seed(0), dtype=F64)
    with pytest.raises(AssertionError, match="Fokker–Planck residual"):
        assert_fokker_planck(wrong, gm.log_prob_fn(wrong), x, _times(wrong, 64))


# --- VE: the kernel starts at the data, not at a sigma_min-perturbed copy ----------------------


def test_ve_kernel_tends_to_data_as_t_goes_to_zero():
    sde = sdegen.VESDE(0.01, 50.0, t_min=1e-6)
    t = torch.tensor([1e-6, 1e-4, 1e-2], dtype=F64)
    var = sde.marginal_var(t)
    # var(t) = sigma_min^2 (exp(2 t log r) - 1) ~ 2 log r sigma_min^2 t: linear in t, 0 at t = 0.
    expected = 2 * math.log(5000) * 0.01**2 * t
    torch.testing.assert_close(var[:2], expected[:2], rtol=2e-3, atol=0)
    assert float(var[0]) < 1e-8 * 0.01**2 * 1e4  # far below sigma_min^2 = 1e-4
    gm = make_mixture(2)
    near = gm.marginal(sde, 1e-6)
    torch.testing.assert_close(near.covariance(), gm.covariance(), rtol=0, atol=1e-8)


# --- kernel vs Monte-Carlo simulation of the SDE's own drift and diffusion --------------------


def test_kernel_matches_simulation(linear_sde):
    """Simulate drift/diffusion from a fixed x0 with torchsde (Euler, 400 steps: weak bias
    O(dt), below the Monte-Carlo resolution at n = 4000) and test the kernel: per-coordinate KS
    and Cramér–von Mises, means, whitened second moments; Bonferroni at family level 1e-3."""
    t1 = min(linear_sde.T, 0.6)
    report = check_transition_kernel(
        linear_sde,
        linear_sde,
        torch.tensor([1.5, -0.5], dtype=F64),
        t1,
        n=4000,
        steps=400,
        generator=torch.Generator().manual_seed(7),
    )
    assert report.passed, str(report)


def test_kernel_score_and_perturb_agree():
    sde = sdegen.VPSDE()
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(16, 3, 4, generator=g, dtype=F64)
    noise = torch.randn(16, 3, 4, generator=g, dtype=F64)
    t = _times(sde, 16)
    xt = sde.perturb(x0, t, noise)
    score = sde.kernel_score(xt, x0, t)
    torch.testing.assert_close(
        score, -noise / sde.marginal_std(t)[:, None, None], rtol=1e-10, atol=0
    )
    xt_ = xt.clone().requires_grad_(True)
    (auto,) = torch.autograd.grad(sde.kernel_log_prob(xt_, x0, t).sum(), xt_)
    torch.testing.assert_close(score, auto, rtol=1e-10, atol=1e-12)


# --- LinearSDE quadrature --------------------------------------------------------------------


def test_linear_sde_quadrature_matches_vp_closed_form():
    vp = sdegen.VPSDE()
    lin = sdegen.LinearSDE(beta=lambda t: 0.1 + 19.9 * t)
    t = torch.linspace(1e-5, 1.0, 997, dtype=F64)
    for name in ["log_mean_coeff", "marginal_var", "diffusion", "drift_coeff"]:
        ref, got = getattr(vp, name)(t), getattr(lin, name)(t)
        assert float(((got - ref) / ref).abs().max()) < 1e-13, name


def test_linear_sde_general_quadrature_matches_ve_closed_form():
    """Exponential g (VE): the nested quadrature of V(t) = ∫ g^2 / m^2 is accurate to 1e-9."""
    ve = sdegen.VESDE()
    lr = math.log(50 / 0.01)
    lin = sdegen.LinearSDE(
        drift_coeff=0.0, diffusion=lambda t: 0.01 * torch.exp(lr * t) * math.sqrt(2 * lr)
    )
    t = torch.linspace(1e-5, 1.0, 200_001, dtype=F64)
    rel = ((lin.marginal_var(t) - ve.marginal_var(t)) / ve.marginal_var(t)).abs().max()
    assert float(rel) < 1e-9


def test_linear_sde_general_quadrature_matches_ou_closed_form():
    ou = sdegen.OUSDE(theta=1.3, sigma=0.7, T=3.0)
    lin = sdegen.LinearSDE(drift_coeff=-1.3, diffusion=0.7, T=3.0)
    t = torch.linspace(1e-5, 3.0, 200_001, dtype=F64)
    for name, tol in [("log_mean_coeff", 1e-13), ("marginal_var", 1e-10)]:
        ref, got = getattr(ou, name)(t), getattr(lin, name)(t)
        assert float(((got - ref) / ref).abs().max()) < tol, name


def test_linear_sde_closed_forms_override_quadrature():
    lin = sdegen.LinearSDE(
        drift_coeff=-1.0,
        diffusion=math.sqrt(2.0),
        log_mean_coeff=lambda t: -t,
        marginal_var=lambda t: -torch.expm1(-2 * t),
        T=4.0,
    )
    t = torch.tensor([0.5], dtype=F64)
    assert float(lin.marginal_var(t)) == pytest.approx(1 - math.exp(-1.0), rel=1e-15)
    assert lin.prior_std == pytest.approx(1.0, rel=1e-12)


# --- priors ----------------------------------------------------------------------------------


def test_prior_sample_and_log_prob(linear_sde):
    g = torch.Generator().manual_seed(3)
    x = linear_sde.prior_sample((20000, 2), g, dtype=F64)
    assert x.shape == (20000, 2)
    np.testing.assert_allclose(
        x.mean(0), linear_sde.prior_mean, atol=5 * linear_sde.prior_std / 141
    )
    np.testing.assert_allclose(x.std(0), linear_sde.prior_std, rtol=0.03)
    loc = torch.tensor(linear_sde.prior_mean, dtype=F64)
    ref = torch.distributions.Normal(loc, linear_sde.prior_std).log_prob(x).sum(1)
    torch.testing.assert_close(linear_sde.prior_log_prob(x), ref, rtol=1e-12, atol=1e-12)


def test_prior_sample_is_reproducible():
    sde = sdegen.VPSDE()
    a = sde.prior_sample((4, 3), torch.Generator().manual_seed(5))
    b = sde.prior_sample((4, 3), torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


# --- a user SDE ------------------------------------------------------------------------------


class DoubleWell(sdegen.AbstractSDE):
    """dx = (x - x^3) dt + sqrt(2 eps) dw; stationary density ∝ exp((x^2/2 - x^4/4) / eps)."""

    def __init__(self, eps=0.5):
        super().__init__(t_min=1e-3, T=5.0)
        self.eps = eps

    def drift(self, x, t):
        return x - x**3

    def diffusion(self, t):
        return torch.full_like(t, math.sqrt(2 * self.eps))

    def prior_sample(self, shape, generator=None, *, dtype=None, device=None):
        return torch.randn(shape, generator=generator, dtype=dtype, device=device)

    def prior_log_prob(self, x):
        return self.log_stationary(x, None)

    def log_stationary(self, x, t):
        return ((x**2 / 2 - x**4 / 4) / self.eps).sum(-1)


def test_user_sde_stationary_density_solves_fokker_planck():
    sde = DoubleWell()
    x = torch.linspace(-2, 2, 41, dtype=F64)[:, None]
    t = torch.full((41,), 1.0, dtype=F64)
    # Unnormalised is fine: the log-form equation only sees derivatives of log p.
    assert_fokker_planck(sde, sde.log_stationary, x, t, tol=1e-10)
    with pytest.raises(AssertionError):
        wrong = DoubleWell(eps=0.6)
        assert_fokker_planck(sde, wrong.log_stationary, x, t, tol=1e-6)


def test_config_round_trip_gives_the_same_process(linear_sde):
    """Every SDE defined by numbers rebuilds from its JSON config with identical coefficients;
    those defined by Python callables refuse with a TypeError instead of half-serialising."""
    import json

    from sdegen.sde import sde_from_config

    try:
        config = linear_sde.config()
    except TypeError as err:
        assert "cannot be serialised" in str(err)
        return
    rebuilt = sde_from_config(json.loads(json.dumps(config)))
    assert type(rebuilt) is type(linear_sde)
    t = torch.linspace(linear_sde.t_min, linear_sde.T, 17, dtype=torch.float64)
    assert torch.equal(rebuilt.marginal_std(t), linear_sde.marginal_std(t))
    assert torch.equal(rebuilt.diffusion(t), linear_sde.diffusion(t))
    assert torch.equal(rebuilt.marginal_mean_coeff(t), linear_sde.marginal_mean_coeff(t))


def test_config_errors_name_the_key():
    from sdegen.sde import sde_from_config

    with pytest.raises(ValueError, match="'NoSuchSDE'"):
        sde_from_config({"class": "NoSuchSDE"})
    with pytest.raises(ValueError, match=r"\['beta_mx'\]"):
        sde_from_config({"class": "VPSDE", "beta_mx": 3.0})
    with pytest.raises(ValueError, match="beta_max"):
        sde_from_config({"class": "VPSDE", "beta_min": 5.0, "beta_max": 1.0})
