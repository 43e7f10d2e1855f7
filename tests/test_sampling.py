"""sample(), ReverseSDE and ProbabilityFlowODE against the exact Gaussian-mixture score."""

import math

import pytest
import torch
import torchsde
from conftest import make_mixture
from scipy import stats

import sdegen
from sdegen.sampling import StabilityWarning, StepBrownian, methods
from sdegen.testing import check_samples

F64 = torch.float64
N = 4000


def _run(sde, gm, method, steps, d, seed=0, score=None):
    score = gm.score_fn(sde) if score is None else score
    g = torch.Generator().manual_seed(seed)
    return sdegen.sample(sde, score, (N, d), method=method, steps=steps, generator=g, dtype=F64)


CASES = [
    (sde_name, d, method, steps)
    for sde_name in ["vp", "ve"]
    for d in [2, 16]
    for method, steps in [("euler", 500), ("ode_dopri5", None)]
]


def _sde(name):
    return {"vp": sdegen.VPSDE(), "ve": sdegen.VESDE(), "subvp": sdegen.SubVPSDE()}[name]


@pytest.mark.parametrize("sde_name,d,method,steps", CASES)
def test_sampling_reproduces_mixture(sde_name, d, method, steps):
    """Means, all covariances and per-coordinate KS at family level 1e-3 (Bonferroni)."""
    sde, gm = _sde(sde_name), make_mixture(d, k=3, seed=d)
    result = _run(sde, gm, method, steps, d)
    report = check_samples(result.samples, gm)
    assert report.passed, str(report)


@pytest.mark.parametrize("method", ["milstein", "heun", "midpoint", "euler_heun", "srk"])
def test_other_torchsde_solvers_reproduce_mixture(method):
    sde, gm = sdegen.SubVPSDE(), make_mixture(2, seed=5)
    steps = 100 if method == "srk" else 300
    report = check_samples(_run(sde, gm, method, steps, 2).samples, gm)
    assert report.passed, str(report)


@pytest.mark.parametrize("method", ["ode_rk4", "ode_midpoint"])
def test_fixed_step_ode_reproduces_mixture(method):
    sde, gm = sdegen.VPSDE(), make_mixture(2, seed=6)
    report = check_samples(_run(sde, gm, method, 100, 2).samples, gm)
    assert report.passed, str(report)


# Fixed steps: with a wrong drift the ODE is far stiffer and dopri5 would crawl.
@pytest.mark.parametrize("method,steps", [("euler", 500), ("ode_rk4", 100)])
@pytest.mark.parametrize("sde_name", ["vp", "ve"])
@pytest.mark.parametrize("mutation", ["flipped_sign", "doubled"])
def test_sampling_checks_catch_a_wrong_reverse_drift(sde_name, method, steps, mutation):
    """A flipped score sign, or g^2 in place of ½g^2 in the probability flow (the same as a
    doubled score), must make the sample check fail."""
    sde, gm = _sde(sde_name), make_mixture(2)
    exact = gm.score_fn(sde)
    factor = -1.0 if mutation == "flipped_sign" else 2.0
    result = _run(sde, gm, method, steps, 2, score=lambda x, t: factor * exact(x, t))
    assert not check_samples(result.samples, gm).passed


@pytest.mark.parametrize(
    "name", [m.name for m in methods().values() if not m.adaptive and m.stable]
)
def test_nfe_matches_the_method_table(name):
    sde, gm = sdegen.VPSDE(), make_mixture(2)
    assert _run(sde, gm, name, 10, 2).nfe == 10 * methods()[name].score_evals_per_step


def test_diverged_samples_warn():
    sde = sdegen.VPSDE()
    with pytest.warns(StabilityWarning, match="NaN or inf"):
        sdegen.sample(sde, lambda x, t: 1e300 * x, (8, 2), method="euler", steps=5)


def test_nfe_counts_every_score_call():
    sde, gm = sdegen.VPSDE(), make_mixture(2)
    # torchsde's contract check evaluates the drift at (ts[0], y0); ReverseSDE reuses that
    # evaluation in the first step, so NFE is exactly the solver's count.
    assert _run(sde, gm, "euler", 50, 2).nfe == 50
    assert _run(sde, gm, "ode_rk4", 25, 2).nfe == 100
    assert _run(sde, gm, "ode_euler", 30, 2).nfe == 30
    assert _run(sde, gm, "heun", 20, 2).nfe == 40
    assert _run(sde, gm, "srk", 10, 2).nfe == 10 * methods()["srk"].score_evals_per_step


@pytest.mark.parametrize(
    "method", ["euler", "srk", "reversible_heun", "adaptive_milstein", "ode_dopri5"]
)
def test_seeded_sampling_is_reproducible(method):
    sde, gm = sdegen.VPSDE(), make_mixture(2)
    score = gm.score_fn(sde)

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        return sdegen.sample(sde, score, (64, 2), method=method, steps=50, generator=g).samples

    with pytest.warns(StabilityWarning) if method == "reversible_heun" else _nothing():
        a, b, c = run(0), run(0), run(1)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_x_T_is_used_and_checked():
    sde, gm = sdegen.VPSDE(), make_mixture(2)
    x_T = torch.randn(8, 2, dtype=F64)
    a = sdegen.sample(sde, gm.score_fn(sde), (8, 2), method="ode_rk4", steps=10, x_T=x_T)
    b = sdegen.sample(sde, gm.score_fn(sde), (8, 2), method="ode_rk4", steps=10, x_T=x_T)
    assert torch.equal(a.samples, b.samples) and a.samples.dtype == F64


@pytest.mark.parametrize("sde_name", ["vp", "ve", "subvp"])
def test_probability_flow_round_trip(sde_name):
    """data -> prior -> data with dopri5 at rtol = atol = 1e-7: max error <= 1e-4."""
    sde, gm = _sde(sde_name), make_mixture(2)
    ode = sdegen.ProbabilityFlowODE(sde, gm.score_fn(sde))
    x0 = gm.marginal(sde, sde.t_min).sample(256, torch.Generator().manual_seed(0), dtype=F64)
    xT = ode.solve(x0, [sde.t_min, sde.T], rtol=1e-7, atol=1e-7)[-1]
    back = ode.solve(xT, [sde.T, sde.t_min], rtol=1e-7, atol=1e-7)[-1]
    err = float((back - x0).abs().max())
    assert err <= 1e-4, err
    assert float((xT - x0).abs().max()) > 0.5  # it did go somewhere


def test_reverse_sde_is_a_torchsde_object_on_user_shapes():
    sde, gm = sdegen.VPSDE(), make_mixture(4)
    means = gm.means.reshape(-1, 1, 2, 2)
    img = sdegen.GaussianMixture(
        means, torch.diagonal(gm.covs, dim1=-2, dim2=-1).reshape(-1, 1, 2, 2)
    )
    rsde = sdegen.ReverseSDE(sde, img.score_fn(sde), event_shape=(1, 2, 2))
    assert rsde.noise_type == "diagonal" and rsde.sde_type == "ito"
    x_T = torch.randn(16, 1, 2, 2, dtype=F64)
    ys = rsde.solve(x_T, [sde.T, 0.5, sde.t_min], method="euler", dt=0.01)
    assert ys.shape == (3, 16, 1, 2, 2)
    assert torch.equal(ys[0], x_T)
    # Forward time s = T - t: torchsde's drift at s is minus the reverse drift at t.
    y = x_T.reshape(16, 4)
    t = torch.full((16,), 0.25, dtype=F64)
    beta = sde.beta(t)[:, None, None, None]
    expected = -(-0.5 * beta * x_T - beta * img.score_fn(sde)(x_T, t))
    s = torch.tensor(sde.T - 0.25, dtype=F64)
    torch.testing.assert_close(rsde.f(s, y), expected.reshape(16, 4))
    torch.testing.assert_close(rsde.g(s, y), beta.reshape(16, 1).sqrt().expand(16, 4))


def test_probability_flow_drift_formula():
    sde, gm = sdegen.VESDE(), make_mixture(2)
    ode = sdegen.ProbabilityFlowODE(sde, gm.score_fn(sde))
    x = torch.randn(5, 2, dtype=F64)
    t = torch.tensor(0.3, dtype=F64)
    g2 = float(sde.diffusion(t.reshape(1)) ** 2)
    torch.testing.assert_close(ode(t, x), -0.5 * g2 * gm.score_fn(sde)(x, t.expand(5)))
    assert ode.nfe == 1


# --- Brownian motion -------------------------------------------------------------------------


def test_step_brownian_increments_have_the_right_law():
    h, n = 0.01, 200_000
    bm = StepBrownian(
        0.0, (n, 1), dtype=F64, device="cpu", generator=torch.Generator().manual_seed(0)
    )
    dW, U = bm(0.0, h, return_U=True)
    dW, U = dW[:, 0].numpy(), U[:, 0].numpy()
    # Var ΔW = h, Var U = h^3 / 3, Cov(U, ΔW) = h^2 / 2; 5-sigma bounds on n samples.
    assert abs(dW.var() / h - 1) < 5 * math.sqrt(2 / n)
    assert abs(U.var() / (h**3 / 3) - 1) < 5 * math.sqrt(2 / n)
    corr = (U * dW).mean() / math.sqrt(h * h**3 / 3)
    assert abs(corr - (h**2 / 2) / math.sqrt(h**4 / 3)) < 5 / math.sqrt(n)
    # A repeated query of the same step returns the same increment; out of order raises.
    again = bm(0.0, h)
    assert torch.equal(again[:, 0], torch.from_numpy(dW))
    with pytest.raises(RuntimeError, match="consecutive steps"):
        bm(0.5, 0.6)


def test_step_brownian_and_brownian_interval_give_the_same_law():
    """Euler on the VP reverse SDE with each Brownian motion: both pass the mixture check and a
    two-sample KS per coordinate does not separate them."""
    sde, gm = sdegen.VPSDE(), make_mixture(2)
    x_T = sde.prior_sample((N, 2), torch.Generator().manual_seed(0), dtype=F64)
    span, steps = sde.T - sde.t_min, 400
    dt = span / steps * (1 + 1e-10)
    out = []
    for bm in [
        StepBrownian(
            0.0, (N, 2), dtype=F64, device="cpu", generator=torch.Generator().manual_seed(1)
        ),
        torchsde.BrownianInterval(t0=0.0, t1=span, size=(N, 2), dtype=F64, entropy=2),
    ]:
        rsde = sdegen.ReverseSDE(sde, gm.score_fn(sde), (2,))
        out.append(rsde.solve(x_T, [sde.T, sde.t_min], method="euler", dt=dt, bm=bm)[-1])
        assert check_samples(out[-1], gm).passed
    pvals = [stats.ks_2samp(out[0][:, i], out[1][:, i]).pvalue for i in range(2)]
    assert min(pvals) > 1e-3 / 2


def test_method_registry_describes_every_method():
    table = methods()
    assert {"euler", "milstein", "srk", "reversible_heun", "ode_dopri5", "ode_rk4"} <= set(table)
    for name, m in table.items():
        assert m.name == name and m.kind in {"sde", "ode"}
        assert m.deterministic == (m.kind == "ode")
        assert m.order > 0 and m.score_evals_per_step >= 1
    assert table["reversible_heun"].stable is False
