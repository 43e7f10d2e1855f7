"""Bad input fails at the boundary, naming the argument and the allowed range."""

import math

import pytest
import torch

import sdegen

F64 = torch.float64
NAN = float("nan")


@pytest.mark.parametrize(
    "make,exc,match",
    [
        (lambda: sdegen.VESDE(sigma_min=-1.0), ValueError, r"sigma_min must be > 0; got -1.0"),
        (lambda: sdegen.VESDE(sigma_min=NAN), ValueError, r"sigma_min must be finite"),
        (lambda: sdegen.VESDE(5.0, 1.0), ValueError, r"sigma_min must be smaller than sigma_max"),
        (lambda: sdegen.VESDE(sigma_max="50"), TypeError, r"sigma_max must be a number"),
        (lambda: sdegen.VPSDE(beta_min=-0.1), ValueError, r"beta_min must be >= 0"),
        (lambda: sdegen.VPSDE(beta_max=0.0), ValueError, r"beta_max must be > 0"),
        (lambda: sdegen.VPSDE(5.0, 1.0), ValueError, r"beta_max must be >= beta_min"),
        (lambda: sdegen.SubVPSDE(beta_max=math.inf), ValueError, r"beta_max must be finite"),
        (lambda: sdegen.VPSDE(schedule="quadratic"), ValueError, r"schedule must be one of"),
        (
            lambda: sdegen.VPSDE(schedule="cosine", T=1.0),
            ValueError,
            r"T must be < 1 for the cosine",
        ),
        (lambda: sdegen.VPSDE(t_min=0.0), ValueError, r"t_min must be > 0"),
        (lambda: sdegen.VESDE(t_min=0.5, T=0.1), ValueError, r"t_min must be smaller than T"),
        (lambda: sdegen.OUSDE(theta=0.0), ValueError, r"theta must be > 0"),
        (lambda: sdegen.OUSDE(sigma=-1.0), ValueError, r"sigma must be > 0"),
        (lambda: sdegen.LinearSDE(), ValueError, r"needs beta, or both drift_coeff and diffusion"),
        (
            lambda: sdegen.LinearSDE(beta=1.0, drift_coeff=-1.0),
            ValueError,
            r"either beta, or drift_coeff and diffusion",
        ),
        (
            lambda: sdegen.LinearSDE(drift_coeff=-1.0, diffusion=lambda t: 0 * t),
            ValueError,
            r"kernel variance s\(t\)\^2 must be finite and > 0",
        ),
        (
            lambda: sdegen.LinearSDE(drift_coeff=-1.0, diffusion=lambda t: t.sum()),
            TypeError,
            r"diffusion must map a tensor of times to a tensor of the same shape",
        ),
        (lambda: sdegen.LinearSDE(beta=1.0, cells=4), ValueError, r"cells must be an int >= 16"),
    ],
)
def test_bad_sde_parameters(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_bad_kernel_inputs():
    sde = sdegen.VPSDE()
    x0 = torch.zeros(4, 2)
    noise = torch.zeros(4, 2)
    with pytest.raises(
        ValueError, match=r"t must lie in \[t_min, T\] = \[1e-05, 1.0\]; got min 0.0"
    ):
        sde.perturb(x0, torch.tensor([0.0, 0.5, 0.5, 0.5]), noise)
    with pytest.raises(ValueError, match=r"t must lie in .* max 1.5"):
        sde.perturb(x0, 1.5, noise)
    with pytest.raises(
        ValueError, match=r"t must be a float or a tensor of shape \(batch,\) = \(4,\)"
    ):
        sde.perturb(x0, torch.full((3,), 0.5), noise)
    with pytest.raises(ValueError, match=r"x0 contains 1 NaN or inf"):
        sde.perturb(torch.tensor([[NAN, 0.0]] + [[0.0, 0.0]] * 3), 0.5, noise)
    with pytest.raises(ValueError, match=r"noise must have the same shape as x0"):
        sde.perturb(x0, 0.5, torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"x_t must have the same shape as x0"):
        sde.kernel_score(torch.zeros(4, 3), x0, 0.5)
    with pytest.raises(TypeError, match=r"x0 must be a torch.Tensor"):
        sde.kernel_log_prob(x0, [[0.0, 0.0]] * 4, 0.5)
    with pytest.raises(ValueError, match=r"t contains NaN"):
        sde.kernel_log_prob(x0, x0, NAN)


def test_bad_prior_inputs():
    sde = sdegen.VESDE()
    with pytest.raises(ValueError, match=r"shape must be a tuple of positive ints"):
        sde.prior_sample((0, 2))
    with pytest.raises(ValueError, match=r"at least one event dimension"):
        sde.prior_sample((5,))
    with pytest.raises(ValueError, match=r"x must have at least 2 dimension"):
        sde.prior_log_prob(torch.zeros(5))


def test_bad_mixtures():
    with pytest.raises(ValueError, match=r"means must have shape \(K, \*event\)"):
        sdegen.GaussianMixture(torch.zeros(3))
    with pytest.raises(ValueError, match=r"covs must be positive definite"):
        sdegen.GaussianMixture(torch.zeros(2, 2), torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match=r"covs must be symmetric"):
        sdegen.GaussianMixture(torch.zeros(1, 2), torch.tensor([[[1.0, 0.5], [0.0, 1.0]]]))
    with pytest.raises(ValueError, match=r"covs must be a float, \(K,\)"):
        sdegen.GaussianMixture(torch.zeros(2, 2), torch.ones(3, 3))
    with pytest.raises(ValueError, match=r"weights must be positive and sum to 1"):
        sdegen.GaussianMixture(torch.zeros(2, 2), 1.0, torch.tensor([0.5, 0.6]))
    with pytest.raises(ValueError, match=r"means contains 1 NaN"):
        sdegen.GaussianMixture(torch.tensor([[NAN, 0.0]]))
    gm = sdegen.GaussianMixture(torch.zeros(2, 3), 1.0)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, \*event\) with event \(3,\)"):
        gm.log_prob(torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"n must be a positive int"):
        gm.sample(0)
    with pytest.raises(ValueError, match=r"t must lie in \[t_min, T\]"):
        gm.marginal(sdegen.VPSDE(), 2.0)


class _NonLinear(sdegen.AbstractSDE):
    def __init__(self):
        super().__init__(1e-3, 1.0)

    def drift(self, x, t):
        return -(x**3)

    def diffusion(self, t):
        return torch.ones_like(t)

    def prior_sample(self, shape, generator=None, *, dtype=None, device=None):
        return torch.randn(shape, generator=generator, dtype=dtype, device=device)

    def prior_log_prob(self, x):
        return -0.5 * (x**2).flatten(1).sum(1)


def test_mixture_marginal_needs_a_linear_sde():
    gm = sdegen.GaussianMixture(torch.zeros(2, 3), 1.0)
    with pytest.raises(TypeError, match=r"sde must have a closed-form Gaussian kernel"):
        gm.score_fn(_NonLinear())


class _CountingScore:
    def __init__(self, shape_fn=None):
        self.calls = 0
        self.shape_fn = shape_fn

    def __call__(self, x, t):
        self.calls += 1
        return -x if self.shape_fn is None else self.shape_fn(x)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"method": "rk45"}, ValueError, r"method must be one of \["),
        ({"steps": 0}, ValueError, r"steps must be a positive int; got 0"),
        ({"steps": 2.5}, ValueError, r"steps must be a positive int; got 2.5"),
        ({"shape": (4,)}, ValueError, r"shape must be a tuple of positive ints"),
        ({"x_T": torch.full((4, 2), NAN)}, ValueError, r"x_T contains 8 NaN or inf"),
        ({"x_T": torch.zeros(4, 3)}, ValueError, r"x_T must have shape \(4, 2\)"),
        ({"rtol": -1e-3, "method": "ode_dopri5"}, ValueError, r"rtol must be > 0"),
        ({"atol": NAN}, ValueError, r"atol must be finite"),
    ],
)
def test_bad_sample_arguments_fail_before_any_solver_runs(kwargs, exc, match):
    score = _CountingScore()
    args = {"method": "euler", "steps": 10, "shape": (4, 2)} | kwargs
    shape = args.pop("shape")
    with pytest.raises(exc, match=match):
        sdegen.sample(sdegen.VPSDE(), score, shape, **args)
    assert score.calls == 0


@pytest.mark.parametrize("method", ["euler", "ode_rk4"])
def test_score_with_wrong_output_shape(method):
    score = _CountingScore(lambda x: x[:, :1])
    with pytest.raises(
        ValueError, match=r"score\(x, t\) must return a tensor shaped like x \(4, 2\)"
    ):
        sdegen.sample(sdegen.VPSDE(), score, (4, 2), method=method, steps=5)
    assert score.calls == 1


def test_score_must_be_callable():
    with pytest.raises(TypeError, match=r"score must be callable as score\(x, t\)"):
        sdegen.sample(sdegen.VPSDE(), 3.0, (4, 2))


def test_bad_reverse_and_flow_arguments():
    sde = sdegen.VPSDE()
    with pytest.raises(ValueError, match=r"sde_type must be one of"):
        sdegen.ReverseSDE(sde, lambda x, t: -x, (2,), sde_type="ito_strat")
    rsde = sdegen.ReverseSDE(sde, lambda x, t: -x, (2,))
    with pytest.raises(ValueError, match=r"ts must be a strictly decreasing"):
        rsde.solve(torch.zeros(4, 2), [0.5, 1.0], method="euler", dt=0.1)
    ode = sdegen.ProbabilityFlowODE(sde, lambda x, t: -x)
    with pytest.raises(ValueError, match=r"ts must be a 1-D sequence of at least two times"):
        ode.solve(torch.zeros(4, 2), [1.0])
    with pytest.raises(TypeError, match=r"sde must provide drift"):
        sdegen.ProbabilityFlowODE(object(), lambda x, t: -x)


def test_reversible_heun_warns():
    gm = sdegen.GaussianMixture(torch.zeros(1, 2), 1.0)
    sde = sdegen.VPSDE()
    with pytest.warns(sdegen.StabilityWarning, match="known to diverge on stiff"):
        sdegen.sample(sde, gm.score_fn(sde), (4, 2), method="reversible_heun", steps=5)
