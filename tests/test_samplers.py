"""Every sampling method, tested the same way against the exact Gaussian-mixture score:
reproduction of the mixture, convergence orders, NFE accounting, grids, hooks and options."""

import itertools
import math

import pytest
import torch
import torchsde
from conftest import CorrelatedOU, make_mixture

import sdegen
from sdegen._utils import StepNoise, step_noise
from sdegen.reverse import CountedScore
from sdegen.sampling import fewstep, methods
from sdegen.sampling._hooks import StepHooks
from sdegen.sampling.fewstep import adams_bashforth_weights, exponential_weights, unipc_plan
from sdegen.sampling.grids import (
    MarginalCoefficients,
    optimised_warp,
    place_warp,
    resample_warp,
    sigma_grid,
    time_grid,
)
from sdegen.testing import check_samples, convergence_order

F64 = torch.float64
METHODS = methods()
STABLE = [name for name, m in METHODS.items() if m.stable]
FIXED = [name for name, m in METHODS.items() if not m.adaptive and m.stable]
ODE_FIXED = [n for n in FIXED if METHODS[n].deterministic]


def _sde(name):
    return {"vp": sdegen.VPSDE(), "ve": sdegen.VESDE()}[name]


def _generous_steps(name):
    """A step count at which each method's bias is far below what 4000 samples can see."""
    m = METHODS[name]
    if m.adaptive:
        return None
    if name == "annealed_langevin":
        return 100
    if m.family == "exponential":
        return 100 if m.deterministic else 400
    if m.family == "torchdiffeq":
        return 1000 if m.order == 1 else 100
    return 200 if m.score_evals_per_step > 1 else 500


def _options(name):
    # Annealed Langevin needs many Langevin steps per level to remove its step-size bias.
    return {"corrector_steps": 20} if name == "annealed_langevin" else {}


class CountingScore:
    def __init__(self, score):
        self.score, self.calls = score, 0

    def __call__(self, x, t):
        self.calls += 1
        return self.score(x, t)


# --- Reproduction of the mixture: one test, every method ------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("sde_name", ["vp", "ve"])
@pytest.mark.parametrize("name", STABLE)
def test_every_method_reproduces_the_mixture(name, sde_name):
    """Moments, whitened second moments and per-coordinate KS/CvM at family level 1e-3 (fixed
    seeds), n = 4000, against the exact p_{t_min}."""
    sde, gm = _sde(sde_name), make_mixture(2, k=3, seed=2)
    res = sdegen.sample(
        sde, gm.score_fn(sde), (4000, 2), method=name, steps=_generous_steps(name),
        generator=torch.Generator().manual_seed(0), dtype=F64, **_options(name),
    )  # fmt: skip
    report = check_samples(res.samples, gm.marginal(sde, sde.t_min))
    assert report.passed, f"{name}: {report}"


@pytest.mark.parametrize(
    "name,steps", [("unipc", 30), ("dpmpp_3m", 40), ("pc_reverse_diffusion", 150)]
)
def test_fast_methods_reproduce_the_mixture(name, steps):
    sde, gm = sdegen.VPSDE(), make_mixture(2, k=3, seed=3)
    res = sdegen.sample(
        sde, gm.score_fn(sde), (4000, 2), method=name, steps=steps,
        generator=torch.Generator().manual_seed(1), dtype=F64,
    )  # fmt: skip
    report = check_samples(res.samples, gm.marginal(sde, sde.t_min))
    assert report.passed, str(report)


@pytest.mark.parametrize("name", ["pc_reverse_diffusion", "unipc"])
def test_a_wrong_score_fails_the_same_check(name):
    """The reproduction check has power: a score off by 30% fails it."""
    sde, gm = sdegen.VESDE(), make_mixture(2, k=3, seed=2)
    exact = gm.score_fn(sde)
    res = sdegen.sample(
        sde, lambda x, t: 1.3 * exact(x, t), (4000, 2), method=name, steps=100,
        generator=torch.Generator().manual_seed(0), dtype=F64,
    )  # fmt: skip
    assert not check_samples(res.samples, gm.marginal(sde, sde.t_min)).passed


# --- Convergence orders -------------------------------------------------------------------


def _order_problem():
    sde, gm = sdegen.VPSDE(), make_mixture(2, k=3, seed=1)
    score = gm.score_fn(sde)
    x_T = sde.prior_sample((64, 2), torch.Generator().manual_seed(0), dtype=F64)
    ode = sdegen.ProbabilityFlowODE(sde, score)
    ref = ode.solve(x_T, [sde.T, sde.t_min], rtol=1e-12, atol=1e-12)[-1]
    return sde, score, x_T, ref


@pytest.mark.parametrize(
    "name", [n for n in ODE_FIXED if METHODS[n].family == "exponential"] + ["ode_midpoint"]
)
def test_deterministic_samplers_converge_at_their_stated_order(name):
    """Path error vs a dopri5 solve at rtol = atol = 1e-12, steps 32 .. 256 on the log-SNR grid
    (uniform t for torchdiffeq): fitted slope within ±0.3 of ``methods()[name].order``."""
    sde, score, x_T, ref = _order_problem()
    grid = "uniform" if METHODS[name].family == "torchdiffeq" else "logsnr"
    steps = [32, 64, 128, 256] if METHODS[name].order < 4 else [24, 48, 96, 192]
    if name == "ipndm":
        # Its first steps are of order 1, 2, 3 (a startup error that fades only slowly): local
        # slopes 2.9, 3.4, 3.7, 3.9 from 24 to 384 steps.
        steps = [64, 128, 256, 512]

    # unipc's default order="auto" changes the predictor's order at 20 steps: pin the one
    # whose order methods() states (order-3 predictor + corrector: 4).
    options = {"order": 3} if name == "unipc" else {}

    def solve(n):
        return sdegen.sample(
            sde, score, x_T.shape, method=name, steps=n, x_T=x_T, time_grid=grid, **options
        ).samples

    report = convergence_order(solve, steps, ref)
    assert abs(report.order - METHODS[name].order) <= 0.3, f"{name}: {report}"


def test_unipc_auto_order_is_3_below_20_steps_and_4_from_there():
    sde, score, x_T, _ = _order_problem()

    def run(steps, **order):
        return sdegen.sample(sde, score, x_T.shape, method="unipc", steps=steps, x_T=x_T, **order)

    for steps, order in ((19, 3), (20, 4)):
        auto = run(steps).samples
        assert torch.equal(auto, run(steps, order=order).samples)
        assert not torch.equal(auto, run(steps, order=7 - order).samples)
    with pytest.raises(ValueError, match="'auto' or an int"):
        run(20, order="best")


def test_euler_maruyama_strong_order_on_one_brownian_path():
    """Euler–Maruyama on the reverse VP SDE, all step counts driven by the same
    BrownianInterval: strong order (RMS error at t_min vs 1024 steps) in [0.5, 1.1]."""
    sde, gm = sdegen.VPSDE(), make_mixture(2, k=3, seed=1)
    rsde = sdegen.ReverseSDE(sde, gm.score_fn(sde), (2,))
    x_T = sde.prior_sample((64, 2), torch.Generator().manual_seed(0), dtype=F64)
    span = sde.T - sde.t_min
    bm = torchsde.BrownianInterval(
        t0=0.0, t1=span, size=(64, 2), dtype=F64, entropy=3, levy_area_approximation="space-time"
    )

    def solve(n):
        dt = span / n * (1 + 1e-10)
        return rsde.solve(x_T, [sde.T, sde.t_min], method="euler", dt=dt, bm=bm)[-1]

    report = convergence_order(solve, [16, 32, 64, 128], lambda: solve(1024))
    assert 0.5 <= report.order <= 1.1, str(report)


# --- NFE ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", STABLE)
def test_nfe_is_the_number_of_score_calls(name):
    sde, gm = sdegen.VPSDE(), make_mixture(2)
    score = CountingScore(gm.score_fn(sde))
    steps = None if METHODS[name].adaptive else 6
    res = sdegen.sample(
        sde, score, (16, 2), method=name, steps=steps, generator=torch.Generator().manual_seed(0)
    )
    assert res.nfe == score.calls
    if steps is not None:
        assert res.nfe == steps * METHODS[name].score_evals_per_step


@pytest.mark.parametrize("budget", [7, 10, 23])
@pytest.mark.parametrize("name", FIXED)
def test_nfe_budget_is_never_exceeded(name, budget):
    sde, gm = sdegen.VESDE(), make_mixture(2)
    score = CountingScore(gm.score_fn(sde))
    per_step = METHODS[name].score_evals_per_step
    if budget < per_step:
        with pytest.raises(ValueError, match="less than one step"):
            sdegen.sample(sde, score, (8, 2), method=name, nfe=budget)
        return
    res = sdegen.sample(sde, score, (8, 2), method=name, nfe=budget)
    assert res.nfe == score.calls <= budget
    assert res.nfe > budget - per_step  # the largest whole number of steps


def test_nfe_is_refused_for_adaptive_methods_and_with_steps():
    sde, gm = sdegen.VPSDE(), make_mixture(2)
    with pytest.raises(ValueError, match="adaptive"):
        sdegen.sample(sde, gm.score_fn(sde), (8, 2), method="ode_dopri5", nfe=50)
    with pytest.raises(ValueError, match="not both"):
        sdegen.sample(sde, gm.score_fn(sde), (8, 2), method="unipc", nfe=10, steps=10)


# --- Registry -----------------------------------------------------------------------------


def test_registry_lists_properties_of_every_method():
    for name, m in METHODS.items():
        assert m.name == name
        assert m.deterministic == (m.kind == "ode")
        assert m.family in {"torchsde", "torchdiffeq", "pc", "exponential"}
        assert m.supports in {"any SDE", "linear SDEs (has_marginal)"}
        assert m.default_grid in {"uniform", "logsnr", "rho", "optimised"}
    needed = {"pc_euler_maruyama", "pc_reverse_diffusion", "pc_ancestral", "annealed_langevin",
              "ddim", "dpmpp_2m", "dpmpp_3m", "edm_heun", "ipndm", "unipc", "ancestral",
              "sde_dpmpp_2m", "sde_dpmpp_3m"}  # fmt: skip
    assert needed <= set(METHODS)


@pytest.mark.parametrize("name", [n for n, m in METHODS.items() if m.needs_marginal])
def test_methods_needing_a_kernel_fail_clearly_without_one(name):
    with pytest.raises(ValueError, match="closed-form Gaussian kernel"):
        sdegen.sample(CorrelatedOU(), lambda x, t: -x, (8, 2), method=name, steps=4)


@pytest.mark.parametrize("name", ["pc_euler_maruyama", "pc_reverse_diffusion", "euler"])
def test_kernel_free_methods_run_on_a_user_sde(name):
    res = sdegen.sample(CorrelatedOU(), lambda x, t: -x, (8, 2), method=name, steps=20, dtype=F64)
    assert res.samples.isfinite().all()


def test_unknown_options_are_refused_naming_who_takes_them():
    sde, gm = sdegen.VPSDE(), make_mixture(2)
    with pytest.raises(ValueError, match="takes no 'corrector'"):
        sdegen.sample(sde, gm.score_fn(sde), (8, 2), method="unipc", corrector="langevin")
    with pytest.raises(ValueError, match="corrector must be one of"):
        sdegen.sample(sde, gm.score_fn(sde), (8, 2), method="pc_ancestral", corrector="bogus")
    with pytest.raises(ValueError, match="order must be at most 3"):
        sdegen.sample(sde, gm.score_fn(sde), (8, 2), method="sde_dpmpp_2m", order=4)
    with pytest.raises(ValueError, match="order must be at most 2"):
        sdegen.sample(sde, gm.score_fn(sde), (8, 2), method="ancestral", order=3)
    with pytest.raises(ValueError, match="eta must be"):
        sdegen.sample(sde, gm.score_fn(sde), (8, 2), method="sde_dpmpp_3m", eta=-0.5)
    with pytest.raises(ValueError, match="takes no 'eta'"):
        sdegen.sample(sde, gm.score_fn(sde), (8, 2), method="unipc", eta=0.5)


def test_edm_churn_options_reach_the_sampler_and_are_checked():
    sde, gm = sdegen.VESDE(), make_mixture(2)
    x_T = sde.prior_sample((64, 2), torch.Generator().manual_seed(0), dtype=F64)

    def run(**opts):
        g = torch.Generator().manual_seed(1)
        return sdegen.sample(
            sde, gm.score_fn(sde), x_T.shape, method="edm_churn", steps=8, x_T=x_T, generator=g,
            **opts,
        ).samples  # fmt: skip

    heun = sdegen.sample(sde, gm.score_fn(sde), x_T.shape, method="edm_heun", steps=8, x_T=x_T)
    # No churn is EDM's deterministic Heun sampler; so is churn outside [s_tmin, s_tmax].
    torch.testing.assert_close(run(churn=0.0), heun.samples, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        run(churn=5.0, s_tmin=1e3, s_tmax=2e3), heun.samples, rtol=1e-12, atol=1e-12
    )
    assert not torch.allclose(run(), heun.samples)
    assert not torch.equal(run(s_noise=1.003), run())
    with pytest.raises(ValueError, match="churn must be"):
        run(churn=-1.0)
    with pytest.raises(ValueError, match="s_tmax must be at least s_tmin"):
        run(s_tmin=2.0, s_tmax=1.0)
    with pytest.raises(ValueError, match="takes no 'churn'"):
        sdegen.sample(sde, gm.score_fn(sde), (8, 2), method="unipc", churn=1.0)


def test_sde_dpmpp_eta_zero_is_the_deterministic_multistep_solver():
    """η = 0 removes the noise and κ = 1 + η gives DPM-Solver++'s weights: the same samples
    as dpmpp_2m / dpmpp_3m from the same x_T, whatever the generator."""
    sde, gm = sdegen.VPSDE(), make_mixture(2)
    x_T = sde.prior_sample((64, 2), torch.Generator().manual_seed(0), dtype=F64)
    for order in (2, 3):
        det = sdegen.sample(sde, gm.score_fn(sde), x_T.shape, method=f"dpmpp_{order}m", steps=12,
                            x_T=x_T)  # fmt: skip
        sto = sdegen.sample(
            sde, gm.score_fn(sde), x_T.shape, method=f"sde_dpmpp_{order}m", steps=12, x_T=x_T,
            eta=0.0, generator=torch.Generator().manual_seed(5),
        )  # fmt: skip
        torch.testing.assert_close(sto.samples, det.samples, rtol=1e-12, atol=1e-12)


# --- Predictor–corrector details ----------------------------------------------------------


def test_langevin_corrector_survives_a_zero_score():
    """An untrained, zero-initialised network: finite samples, no NaN from 0/0."""
    sde = sdegen.VESDE()
    res = sdegen.sample(
        sde, lambda x, t: torch.zeros_like(x), (32, 2), method="pc_reverse_diffusion", steps=20
    )
    assert res.samples.isfinite().all()


def test_ancestral_predictor_matches_the_exponential_ancestral_sampler():
    """The PC ancestral predictor without corrector and the first-order stochastic exponential
    integrator are the same step from the marginal coefficients: equal samples, same noise."""
    sde, gm = sdegen.VPSDE(), make_mixture(2)

    def run(method, **kw):
        g = torch.Generator().manual_seed(4)
        return sdegen.sample(
            sde, gm.score_fn(sde), (64, 2), method=method, steps=30, generator=g,
            dtype=F64, time_grid="logsnr", **kw,
        ).samples  # fmt: skip

    torch.testing.assert_close(run("pc_ancestral", corrector=None), run("ancestral"))


def test_pc_step_options_change_the_cost():
    sde, gm = sdegen.VESDE(), make_mixture(2)
    res = sdegen.sample(
        sde, gm.score_fn(sde), (8, 2), method="pc_reverse_diffusion", steps=5, corrector_steps=3
    )
    assert res.nfe == 5 * 4


# --- Grids, trajectory, callback, reproducibility -----------------------------------------


@pytest.mark.parametrize("name", ["uniform", "logsnr", "rho", "optimised"])
@pytest.mark.parametrize("sde_name", ["vp", "ve"])
def test_named_grids_run_from_T_to_t_min(name, sde_name):
    sde = _sde(sde_name)
    ts = time_grid(sde, name, 12)
    assert ts.dtype == F64 and ts.shape == (13,)
    assert float(ts[0]) == sde.T and float(ts[-1]) == sde.t_min
    assert bool((ts.diff() < 0).all())


def test_sigma_is_inverted_and_grids_are_where_they_say():
    sde = sdegen.VPSDE()
    coeffs = MarginalCoefficients(sde)
    sig = sigma_grid("logsnr", 10, coeffs.sigma_min, coeffs.sigma_max)
    torch.testing.assert_close(coeffs.sigma(coeffs.time_of_sigma(sig)), sig, rtol=1e-9, atol=0)
    torch.testing.assert_close(sig.log().diff(), sig.log().diff()[:1].expand(10))
    rho = sigma_grid("rho", 10, 0.002, 80.0, rho=7.0)
    steps = rho ** (1 / 7)
    torch.testing.assert_close(steps.diff(), steps.diff()[:1].expand(10))
    warp = optimised_warp(13)  # interpolated from a fitted schedule
    assert warp[0] == 0 and warp[-1] == 1 and bool((warp.diff() > 0).all())


def test_warps_resample_onto_themselves_and_place_differentiably():
    fitted = optimised_warp(20, "unipc")
    torch.testing.assert_close(resample_warp(fitted, 20), fitted, rtol=0, atol=1e-15)
    coarse = resample_warp(fitted, 10)  # every other point of the quantile function
    torch.testing.assert_close(coarse, fitted[::2], rtol=0, atol=1e-15)
    # The schedule fit differentiates the placed σ grid in the warp (VP's longer range).
    v = fitted.clone().requires_grad_(True)
    sig = place_warp(v, 0.002, 152.0)
    assert float(sig[0].detach()) == 152.0 and float(sig[-1].detach()) == 0.002
    (grad,) = torch.autograd.grad(sig[1:-1].log().sum(), v)
    assert bool(torch.isfinite(grad).all()) and float(grad.abs().sum()) > 0


def test_user_grid_trajectory_and_callback():
    sde, gm = sdegen.VESDE(), make_mixture(2)
    grid = [sde.T, 0.5, 0.1, 0.01, sde.t_min]
    seen = []

    def callback(i, t, x):
        seen.append((i, t))
        return torch.zeros_like(x) if i == 3 else None  # replaces the final state

    res = sdegen.sample(
        sde, gm.score_fn(sde), (16, 2), method="dpmpp_2m", time_grid=grid,
        return_trajectory=True, callback=callback, dtype=F64,
    )  # fmt: skip
    assert [i for i, _ in seen] == [0, 1, 2, 3]
    assert [t for _, t in seen] == pytest.approx(grid[1:])
    assert res.trajectory.shape == (5, 16, 2) and res.nfe == 4
    torch.testing.assert_close(res.times, torch.tensor(grid, dtype=F64))
    assert torch.equal(res.samples, torch.zeros(16, 2, dtype=F64))
    assert torch.equal(res.trajectory[-1], res.samples)


@pytest.mark.parametrize("name", ["euler", "ode_rk4", "pc_reverse_diffusion", "unipc"])
def test_replacement_callback_pins_known_coordinates(name):
    """Inpainting by replacement: the callback puts coordinate 0 back to a known value noised
    to t; at the end coordinate 0 equals it (up to the last noise, ~s(t_min))."""
    sde, gm = sdegen.VPSDE(), make_mixture(2)
    known = torch.full((64,), 1.5, dtype=F64)
    coeffs = MarginalCoefficients(sde)

    def replace(i, t, x):
        t_ = torch.tensor([t], dtype=F64)
        x = x.clone()
        x[:, 0] = float(coeffs.m(t_)) * known
        return x

    res = sdegen.sample(
        sde, gm.score_fn(sde), (64, 2), method=name, steps=40, callback=replace, dtype=F64
    )
    torch.testing.assert_close(res.samples[:, 0], known, atol=1e-3, rtol=0)


def test_callback_must_return_the_right_shape():
    sde, gm = sdegen.VPSDE(), make_mixture(2)
    with pytest.raises(ValueError, match="callback must return"):
        sdegen.sample(
            sde, gm.score_fn(sde), (8, 2), method="ddim", steps=3,
            callback=lambda i, t, x: x[:, :1],
        )  # fmt: skip


@pytest.mark.parametrize(
    "name", ["pc_ancestral", "sde_dpmpp_2m", "sde_dpmpp_3m", "annealed_langevin", "edm_churn"]
)
def test_stochastic_samplers_are_reproducible_from_a_generator(name):
    sde, gm = sdegen.VESDE(), make_mixture(2)

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        return sdegen.sample(sde, gm.score_fn(sde), (32, 2), method=name, steps=10, generator=g)

    assert torch.equal(run(0).samples, run(0).samples)
    assert not torch.equal(run(0).samples, run(1).samples)


@pytest.mark.parametrize(
    "name", ["pc_euler_maruyama", "pc_reverse_diffusion", "pc_ancestral", "annealed_langevin"]
)
def test_in_place_pc_steps_leave_inputs_and_kept_states_alone(name):
    """The predictor–corrector steps update their state in place: the caller's x_T, the states
    a callback keeps without copying, and a score that hands back its own input (an alias of
    the state) must all behave as if every step made a new tensor."""
    sde, gm = sdegen.VPSDE(), make_mixture(2)
    exact = gm.score_fn(sde)
    x_T = sde.prior_sample((16, 2), torch.Generator().manual_seed(0), dtype=F64)
    before = x_T.clone()

    def run(score, callback=None):
        g = torch.Generator().manual_seed(1)
        return sdegen.sample(
            sde, score, (16, 2), method=name, steps=6, x_T=x_T, generator=g, callback=callback
        ).samples

    kept = []
    out = run(exact, callback=lambda i, t, x: kept.append(x))
    assert torch.equal(x_T, before)
    assert len(kept) == 6 and torch.equal(kept[-1], out)
    assert all(not torch.equal(a, b) for a, b in itertools.pairwise(kept))

    # The score of an (improper) density exp(|x|²/2) is x: returned as a view of x, or a copy.
    aliased = run(lambda x, t: x.view_as(x))
    assert torch.isfinite(aliased).all()
    torch.testing.assert_close(aliased, run(lambda x, t: x.clone()), rtol=1e-12, atol=0)


def test_step_noise_buffer_is_reused_and_draws_what_step_noise_draws():
    noise, like = StepNoise(torch.Generator().manual_seed(3)), torch.zeros(50, 4, dtype=F64)
    first = noise.draw(like)
    ptr = first.data_ptr()
    second = noise.draw(like)
    assert second.data_ptr() == ptr  # one buffer
    g = torch.Generator().manual_seed(3)
    expect = [step_noise((50, 4), generator=g, dtype=F64, device="cpu") for _ in range(2)]
    assert torch.equal(second.double(), expect[1])
    x = torch.ones(7, 3, dtype=F64)
    noise.add_(x, torch.full((7, 1), 2.0, dtype=F64))  # a new shape: a new buffer
    assert x.dtype == F64 and not torch.equal(x, torch.ones(7, 3, dtype=F64))


def test_remembered_plans_equal_fresh_ones():
    lam = -torch.log(sigma_grid("logsnr", 12, 0.01, 50.0))
    fresh = [p.tolist() for p in unipc_plan(lam, 3)]
    assert list(fewstep._sampling_plan(unipc_plan, lam, 3)) == fresh
    assert fewstep._sampling_plan(unipc_plan, lam, 3) is fewstep._sampling_plan(unipc_plan, lam, 3)
    assert fewstep._sampling_plan(unipc_plan, lam, 2) != fresh


def test_x_T_is_the_starting_noise():
    sde, gm = sdegen.VPSDE(), make_mixture(2)
    x_T = torch.randn(8, 2, dtype=F64)
    res = sdegen.sample(
        sde, gm.score_fn(sde), (8, 2), method="unipc", steps=5, x_T=x_T, return_trajectory=True
    )
    assert torch.equal(res.trajectory[0], x_T)


def test_bad_grids_are_refused():
    sde, gm = sdegen.VPSDE(), make_mixture(2)
    score = gm.score_fn(sde)
    with pytest.raises(ValueError, match="strictly decreasing"):
        sdegen.sample(sde, score, (8, 2), method="ddim", time_grid=[0.1, 0.5, 1.0])
    with pytest.raises(ValueError, match="lie in"):
        sdegen.sample(sde, score, (8, 2), method="ddim", time_grid=[2.0, 0.5])
    with pytest.raises(ValueError, match="time_grid must be one of"):
        sdegen.sample(sde, score, (8, 2), method="ddim", time_grid="cosine")
    with pytest.raises(ValueError, match="disagrees"):
        sdegen.sample(sde, score, (8, 2), method="ddim", time_grid=[1.0, 0.5, 0.1], steps=5)


# --- Exponential-integrator weights -------------------------------------------------------


@pytest.mark.parametrize("kappa", [1.0, 2.0])
def test_exponential_weights_integrate_polynomials_exactly(kappa):
    """Σ w_j P(u_j) = ∫_0^h κ e^{-κ(h-u)} P(u) du for P = 1 + u - u² + 0.5 u³, by quadrature."""
    h, nodes = 0.7, [0.0, -0.3, -0.8, -1.0]
    w = exponential_weights(h, nodes, kappa).tolist()
    poly = lambda u: 1 + u - u**2 + 0.5 * u**3  # noqa: E731
    u = torch.linspace(0, h, 20001, dtype=F64)
    exact = torch.trapezoid(kappa * torch.exp(-kappa * (h - u)) * poly(u), u)
    assert sum(wj * poly(uj) for wj, uj in zip(w, nodes, strict=True)) == pytest.approx(
        float(exact), rel=1e-7
    )
    assert float(exponential_weights(h, [0.0], kappa)[0]) == pytest.approx(-math.expm1(-kappa * h))


def test_adams_bashforth_weights_are_exact_on_uneven_steps():
    """∫_0^h P = Σ w_j P(u_j) for a cubic on uneven past nodes (closed form), and on equal steps
    the weights are the classical h (55, -59, 37, -9)/24 and h (23, -16, 5)/12."""
    h, nodes = -0.3, [0.0, 0.45, 1.2, 1.6]  # σ decreases: past nodes lie above
    w = adams_bashforth_weights(h, nodes).tolist()
    poly = lambda u: 2 - u + 3 * u**2 - 0.7 * u**3  # noqa: E731
    exact = 2 * h - h**2 / 2 + h**3 - 0.7 * h**4 / 4
    assert sum(wj * poly(uj) for wj, uj in zip(w, nodes, strict=True)) == pytest.approx(
        exact, rel=1e-12
    )
    classical = adams_bashforth_weights(0.1, [0.0, -0.1, -0.2, -0.3]) / 0.1
    torch.testing.assert_close(classical, torch.tensor([55, -59, 37, -9], dtype=F64) / 24)
    classical = adams_bashforth_weights(0.1, [0.0, -0.1, -0.2]) / 0.1
    torch.testing.assert_close(classical, torch.tensor([23, -16, 5], dtype=F64) / 12)


@pytest.mark.parametrize("steps", [6, 30])
def test_unipc_plan_is_exact_for_a_constant_denoiser(steps):
    """With D ≡ x₀ the flow's exact step is x̃' = e^{-h} x̃ + (1 - e^{-h}) x₀: the predictor and
    the corrector weights must each sum to 1 - e^{-h}, and a = e^{-h}."""
    lam = -torch.log(sigma_grid("rho", steps, 0.002, 80.0))
    a, P, C, c = unipc_plan(lam, 3)
    h = lam.diff()
    torch.testing.assert_close(a, torch.exp(-h))
    torch.testing.assert_close(P.sum(1), -torch.expm1(-h))
    torch.testing.assert_close(C.sum(1) + c, -torch.expm1(-h))


def test_edm_churn_without_churn_is_edm_heun_and_its_noise_is_reproducible():
    sde, gm = sdegen.VESDE(), make_mixture(2)
    score = gm.score_fn(sde)
    grid = time_grid(sde, "rho", 8)
    x_T = sde.prior_sample((32, 2), torch.Generator().manual_seed(0), dtype=F64)

    def run(name, seed=1, **kw):
        ctx = fewstep.EDMContext(
            sde, CountedScore(score), grid, torch.Generator().manual_seed(seed), name
        )
        hooks = StepHooks(grid, x_T, callback=None, trajectory=False, progress=False, desc=name)
        return getattr(fewstep, name)(ctx, x_T, hooks, **kw)

    torch.testing.assert_close(run("edm_churn", churn=0.0), run("edm_heun"), rtol=0, atol=1e-12)
    assert torch.equal(run("edm_churn", churn=10.0), run("edm_churn", churn=10.0))
    assert not torch.equal(run("edm_churn", churn=10.0), run("edm_churn", 2, churn=10.0))


# --- Optimised schedules generalise -------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ipndm", "unipc"])
def test_optimised_schedule_beats_rho_on_held_out_noise(name):
    """On a mixture and noise seeds never used in fitting (mixture seed 7, noise seed 5000), each
    method's own fitted 10-step schedule gives a smaller path error than the ρ = 7 grid
    (d = 64, VE, σ ∈ [0.002, 80], 1000 samples)."""
    g = torch.Generator().manual_seed(7)
    means = torch.randn(8, 64, generator=g, dtype=F64)
    covs = 0.1 + 0.9 * torch.rand(8, 64, generator=g, dtype=F64)
    gm = sdegen.GaussianMixture(means, covs)
    sde = sdegen.VESDE(0.002, 80.0, t_min=math.log(2) / (2 * math.log(4e4)))
    score = gm.score_fn(sde)
    x_T = sde.prior_sample((1000, 64), torch.Generator().manual_seed(5000), dtype=F64)
    ref = sdegen.ProbabilityFlowODE(sde, score).solve(
        x_T, [sde.T, sde.t_min], rtol=1e-9, atol=1e-9
    )[-1]

    def err(grid):
        out = sdegen.sample(sde, score, x_T.shape, method=name, nfe=10, x_T=x_T, time_grid=grid)
        return float(((out.samples - ref) ** 2).mean().sqrt())

    assert err("optimised") < err("rho")


def test_step_noise_is_standard_normal_and_the_same_in_both_precisions():
    """CPU float64 step noise is a widened float32 draw (5x faster than float64 randn there):
    a seeded run sees the same noise in float32 and float64, and the law is N(0, I)."""

    def draw(dtype, seed=0, shape=(4000, 5)):
        g = torch.Generator().manual_seed(seed)
        return step_noise(shape, generator=g, dtype=dtype, device="cpu")

    z64, z32 = draw(F64), draw(torch.float32)
    assert z64.dtype == F64 and z32.dtype == torch.float32 and z64.shape == (4000, 5)
    assert torch.equal(z64, z32.double())
    assert not torch.equal(draw(F64, seed=1), z64)
    standard = sdegen.GaussianMixture(torch.zeros(1, 5, dtype=F64), torch.ones(1, 5, dtype=F64))
    report = check_samples(z64, standard)
    assert report.passed, str(report)
