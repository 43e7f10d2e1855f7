"""Size and power of the Monte-Carlo checks in ``sdegen.testing``.

A check of a *correct* claim should fail with probability at most its family-wise level
``alpha`` (its *size*); a check of a claim with a planted error should fail as often as
possible (its *power*). This script measures both by repeating each check over many seeds and
prints Markdown tables, every rate with its 95% Clopper–Pearson interval. Every Monte-Carlo
verdict is recomputed from the report's p-values at both ``--alpha`` and 0.05 (the Bonferroni
check passes iff ``min(p) >= alpha / len(p)``), so one run gives both levels; at 1e-3 a few
hundred seeds can only expose a gross excess, at 0.05 they resolve the rate.

SIZE (``--seeds`` seeds per row, default 200; each row has its own seeds, so rows are
independent and can be pooled):

- ``check_transition_kernel(sde, sde, x0, t, n, steps, generator=Generator().manual_seed(seed))``
  for every SDE of ``tests/conftest.py::all_linear_sdes()`` (2-D, ``x0 = (1, -2)``,
  ``t = min(0.5, T)``, n = 4000, 400 Euler steps). The kernel is exact but the simulation is
  Euler–Maruyama, whose law is off by O(dt), which is not in the p-values; each row prints that
  bias, from the exact law of the Euler chain (Gaussian for a linear SDE: a deterministic
  recursion), and the shift it causes in the mean and variance z-statistics at that n, to set
  against the Bonferroni threshold (|z| ≈ 3.9 at alpha = 1e-3 over 9 tests, 2.8 at 0.05).
- ``check_chapman_kolmogorov(linear_kernel(sde), 0.1, 0.4, min(0.9, T), x=(1, -2))`` per SDE,
  n = 20000 as in the tests (exact draws: pure statistics).
- ``check_samples`` on exact draws from ``make_mixture`` for n from 50 to 1e5 (pure
  statistics; 10x the seeds for n <= 200, where the checks are cheap and the z-tests'
  normal approximation is at its worst).
- OU at n = 1e5: the "correct claim" column of the first power rows.

POWER (``--power-seeds`` seeds per row, default 100; ``--big-seeds``, default 50, for the
n = 1e5 rows). Each row also gives the false-failure rate of the correct claim checked on the
same kind of samples with the same seeds:

- kernel variance ×1.01 / ×1.02 and mean + 0.01 / 0.05 sd (OU, n = 1e5, 400 steps; one
  simulation per seed, every claim tested on it);
- off-diagonal correlation dropped (a coupled linear SDE claimed with the diagonal of its
  covariance), n from 50 to 4000 (the first n rows of one n = 4000 simulation per seed);
- drift sign flipped (VP simulated with the drift negated, claimed to have the VP kernel);
- VE kernel with variance sigma(t)^2 (started at sigma_min^2, not 0), by sampling at t = 1e-3
  and 0.5, claimed both as the law ``N(x0, sigma(t)^2 I)`` and as
  ``check_transition_kernel(ve, PerturbedVE(), ...)`` reads it (through ``linear_kernel``,
  whose ``s(t)^2 - m(t)^2 s(0)^2`` cancels the planted sigma_min^2: that claim is correct);
  and deterministically: ``check_marginal_limits`` against the Fokker–Planck residual, which
  cannot see it;
- g^2 in place of ½g^2 in the probability flow, i.e. the flow of the doubled score: the
  deterministic ``probability_flow_residual`` for every SDE, and sampling with
  ``sdegen.sample(vp, 2 * score, method="ode_rk4", steps=100)``, n = 1000, checked by
  ``check_samples`` against the exact ``p_{t_min}``.

Several claims are tested on one simulation (``simulate_forward`` + ``check_samples``); the
script asserts this equals ``check_transition_kernel`` sample for sample.

Run:  python benchmarks/bench_testing_power.py                 (about 9 minutes on one core)
      python benchmarks/bench_testing_power.py --quick         (10 seeds, small n; ~10 s)
      python benchmarks/bench_testing_power.py --out power.json
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import pathlib
import sys
import time
import warnings

import torch

torch.set_num_threads(1)  # small tensors on a shared 2-core machine: threads only cost

import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

import sdegen  # noqa: E402
from sdegen.testing import (  # noqa: E402
    SmallSampleWarning,
    check_chapman_kolmogorov,
    check_marginal_limits,
    check_samples,
    check_transition_kernel,
    fokker_planck_residual,
    linear_kernel,
    probability_flow_residual,
    simulate_forward,
)

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
from conftest import CorrelatedOU, PerturbedVE, all_linear_sdes, make_mixture  # noqa: E402

F64 = torch.float64
X0 = torch.tensor([1.0, -2.0], dtype=F64)

CONFIGS = {
    "default": {
        "seeds": 200,
        "power_seeds": 100,
        "kernel_n": 4000,
        "kernel_steps": 400,
        "ck_n": 20_000,
        "mixture_n": [50, 200, 4000, 100_000],
        "small_n_seed_factor": 10,
        "big_seeds": 50,
        "big_n": 100_000,
        "big_steps": 400,
        "small_n": 4000,
        "small_steps": 200,
        "subsets": [50, 100, 200, 300, 500, 1000, 2000, 4000],
        "flow_n": 1000,
        "flow_steps": 100,
    },
    "quick": {
        "seeds": 10,
        "power_seeds": 10,
        "kernel_n": 1000,
        "kernel_steps": 100,
        "ck_n": 2000,
        "mixture_n": [50, 1000],
        "small_n_seed_factor": 2,
        "big_seeds": 10,
        "big_n": 5000,
        "big_steps": 100,
        "small_n": 1000,
        "small_steps": 100,
        "subsets": [50, 200, 1000],
        "flow_n": 500,
        "flow_steps": 50,
    },
}


# --- planted errors -----------------------------------------------------------------------------


class FlippedVP(sdegen.VPSDE):
    """VP with the drift sign flipped (the diffusion and the claimed kernel unchanged)."""

    def drift(self, x, t):
        return -super().drift(x, t)


# --- bookkeeping ----------------------------------------------------------------------------------


class Tally:
    """The p-values of repeated Bonferroni checks; verdicts at any level."""

    def __init__(self) -> None:
        self.runs: list[tuple[list[str], np.ndarray]] = []

    def add(self, report) -> None:
        self.runs.append((list(report.names), np.asarray(report.p_values, dtype=float)))

    def failures(self, alpha: float) -> int:
        return sum(bool((p < alpha / len(p)).any()) for _, p in self.runs)

    def families(self, alpha: float) -> str:
        """Which kinds of test rejected (``ks``, ``cvm``, ``mean``, ``white``), over all runs."""
        counts: collections.Counter[str] = collections.Counter()
        for names, p in self.runs:
            for name, pv in zip(names, p, strict=True):
                if pv < alpha / len(p):
                    counts[name.split("[")[0]] += 1
        return ", ".join(f"{k} {v}" for k, v in counts.most_common()) or "-"

    def __len__(self) -> int:
        return len(self.runs)


def rate(k: int, n: int) -> dict:
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    return {"k": k, "n": n, "rate": k / n, "ci": [float(ci.low), float(ci.high)]}


def fmt_rate(r: dict) -> str:
    return f"{r['k']}/{r['n']} = {r['rate']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]"


def size_verdict(r: dict, alpha: float) -> str:
    """Against the target rate <= 2 alpha."""
    if r["ci"][0] > 2 * alpha:
        return "**> 2α (significant)**"
    if r["rate"] > 2 * alpha:
        return "> 2α (CI covers 2α)"
    return "ok"


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")
    sys.stdout.flush()


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def seed_range(row: int, seeds: int) -> range:
    """Disjoint seeds for each row: the SDEs are linear, so the same seed would give strongly
    correlated samples (and p-values) in different rows, and pooled rates would be overstated."""
    return range(10**6 * row, 10**6 * row + seeds)


def starts(x0: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` copies of the start point, as ``check_transition_kernel`` makes them."""
    return x0.reshape(1, -1).expand(n, -1).contiguous()


def assert_same_as_check_transition_kernel(sde, kernel, law, t: float, steps: int) -> None:
    """``simulate_forward`` + ``check_samples(x, law)`` must be ``check_transition_kernel(sde,
    kernel, ...)`` sample for sample (the power rows test several claims on one simulation)."""
    report = check_transition_kernel(sde, kernel, X0, t, n=500, steps=steps, generator=gen(0))
    x = simulate_forward(sde, starts(X0, 500), 0.0, t, steps=steps, generator=gen(0))
    assert np.array_equal(report.p_values, check_samples(x, law).p_values)


def euler_bias(sde, x0: torch.Tensor, t: float, steps: int) -> tuple[float, float]:
    """Relative variance error and largest mean error (in sd) of the Euler–Maruyama chain's law
    at ``t`` against the exact kernel. For ``dx = (a x + b) dt + g dw`` the chain stays Gaussian
    with ``m <- m + f(m, t_k) h`` and ``v <- (1 + a h)^2 v + g^2 h``, left-point times as
    torchsde's Euler."""
    h = t / steps
    m, v = x0.reshape(1, -1).clone(), torch.zeros((), dtype=F64)
    for k in range(steps):
        tk = torch.tensor([k * h], dtype=F64)
        a, g = sde.drift_coeff(tk)[0], sde.diffusion(tk)[0]
        m = m + sde.drift(m, tk) * h
        v = (1 + a * h) ** 2 * v + g * g * h
    tt = torch.tensor([t], dtype=F64)
    mean, var = sde.marginal_mean(x0.reshape(1, -1), tt)[0], sde.marginal_var(tt)[0]
    return float(v / var - 1), float(((m[0] - mean).abs() / var.sqrt()).max())


def z_shift(var_err: float, mean_err: float, n: int) -> str:
    # the z-test of E[y^2] = 1 has sd sqrt(2 / n); of the mean, 1 / sqrt(n) (in sd units)
    return f"var {var_err * math.sqrt(n / 2):+.2f}, mean {mean_err * math.sqrt(n):.2f}"


def gaussian_claim(mean: torch.Tensor, cov: torch.Tensor | float) -> sdegen.GaussianMixture:
    cov = torch.as_tensor(cov, dtype=F64)
    if cov.dim() == 0:
        cov = cov * torch.eye(mean.numel(), dtype=F64)
    return sdegen.GaussianMixture(mean.reshape(1, -1), cov[None])


# --- size -----------------------------------------------------------------------------------------


def size_tables(cfg: dict, alphas: tuple[float, float], results: dict) -> None:
    alpha, loose = alphas
    seeds, n, steps = cfg["seeds"], cfg["kernel_n"], cfg["kernel_steps"]
    rows, out = [], []
    pooled = [0, 0, 0]
    for row, sde in enumerate(all_linear_sdes()):
        t = min(0.5, sde.T)
        tally = Tally()
        t0 = time.perf_counter()
        for seed in seed_range(row, seeds):
            tally.add(
                check_transition_kernel(sde, sde, X0, t, n=n, steps=steps, generator=gen(seed))
            )
        var_err, mean_err = euler_bias(sde, X0, t, steps)
        r, r_loose = rate(tally.failures(alpha), seeds), rate(tally.failures(loose), seeds)
        pooled = [pooled[0] + r["k"], pooled[1] + r_loose["k"], pooled[2] + seeds]
        rows.append(
            [
                repr(sde)[:48],
                t,
                f"{var_err:+.1e} / {mean_err:.1e}",
                z_shift(var_err, mean_err, n),
                fmt_rate(r),
                size_verdict(r, alpha),
                fmt_rate(r_loose),
                size_verdict(r_loose, loose),
                tally.families(loose),
                f"{time.perf_counter() - t0:.0f}",
            ]
        )
        out.append(
            {
                "sde": repr(sde),
                "t": t,
                "n": n,
                "steps": steps,
                "euler_var_rel_err": var_err,
                "euler_mean_err_sd": mean_err,
                str(alpha): r,
                str(loose): r_loose,
                "rejecting_tests": tally.families(loose),
            }
        )
    p_r, p_loose = rate(pooled[0], pooled[2]), rate(pooled[1], pooled[2])
    rows.append(
        [
            "**all pooled**",
            "",
            "",
            "",
            fmt_rate(p_r),
            size_verdict(p_r, alpha),
            fmt_rate(p_loose),
            size_verdict(p_loose, loose),
            "",
            "",
        ]
    )
    results["size_transition_kernel"] = [
        *out,
        {"pooled": True, str(alpha): p_r, str(loose): p_loose},
    ]
    print_table(
        f"Size of check_transition_kernel(sde, sde, x0=(1,-2), t): n = {n}, {steps} Euler "
        f"steps, {seeds} seeds",
        [
            "SDE",
            "t",
            "Euler bias: var rel / mean (sd)",
            f"z shift at n={n}",
            f"fail @ {alpha:g} [95% CI]",
            f"≤ 2·{alpha:g}?",
            f"fail @ {loose:g} [95% CI]",
            f"≤ 2·{loose:g}?",
            f"rejections by test @ {loose:g}",
            "s",
        ],
        rows,
    )

    rows, out = [], []
    for row, sde in enumerate(all_linear_sdes(), start=10):
        t_end = min(0.9, sde.T)
        tally = Tally()
        kernel = linear_kernel(sde)
        for seed in seed_range(row, seeds):
            tally.add(
                check_chapman_kolmogorov(
                    kernel, 0.1, 0.4, t_end, x=X0, n=cfg["ck_n"], generator=gen(seed)
                )
            )
        r, r_loose = rate(tally.failures(alpha), seeds), rate(tally.failures(loose), seeds)
        rows.append(
            [
                repr(sde)[:48],
                fmt_rate(r),
                size_verdict(r, alpha),
                fmt_rate(r_loose),
                size_verdict(r_loose, loose),
                tally.families(loose),
            ]
        )
        out.append({"sde": repr(sde), "n": cfg["ck_n"], str(alpha): r, str(loose): r_loose})
    results["size_chapman_kolmogorov"] = out
    print_table(
        f"Size of check_chapman_kolmogorov(linear_kernel(sde), 0.1, 0.4, min(0.9, T)): "
        f"n = {cfg['ck_n']}, {seeds} seeds",
        ["SDE", f"fail @ {alpha:g}", "ok?", f"fail @ {loose:g}", "ok?", "rejections by test"],
        rows,
    )

    rows, out = [], []
    settings = [(2, 3, n_mix) for n_mix in cfg["mixture_n"]] + [
        (3, 4, n_mix) for n_mix in cfg["mixture_n"] if n_mix <= 4000
    ]
    for row, (d, k, n_mix) in enumerate(settings, start=20):
        gm = make_mixture(d, k=k)
        reps = seeds * cfg["small_n_seed_factor"] if n_mix <= 200 else seeds
        tally = Tally()
        for seed in seed_range(row, reps):
            tally.add(check_samples(gm.sample(n_mix, gen(seed), dtype=F64), gm))
        r, r_loose = rate(tally.failures(alpha), reps), rate(tally.failures(loose), reps)
        rows.append(
            [
                f"make_mixture({d}, k={k})",
                n_mix,
                reps,
                len(tally.runs[0][0]),
                fmt_rate(r),
                size_verdict(r, alpha),
                fmt_rate(r_loose),
                size_verdict(r_loose, loose),
                tally.families(loose),
            ]
        )
        out.append({"d": d, "k": k, "n": n_mix, "seeds": reps, str(alpha): r, str(loose): r_loose})
    results["size_check_samples"] = out
    print_table(
        "Size of check_samples on exact mixture draws (no solver)",
        [
            "law",
            "n",
            "seeds",
            "tests",
            f"fail @ {alpha:g}",
            "ok?",
            f"fail @ {loose:g}",
            "ok?",
            "rejections by test",
        ],
        rows,
    )


# --- power ----------------------------------------------------------------------------------------


def power_rows(label, sde_name, n, steps, tallies, correct, alphas):
    """One table row per planted error, with the correct claim's false failures alongside."""
    alpha, loose = alphas
    seeds = len(correct)
    size = rate(correct.failures(alpha), seeds)
    size_loose = rate(correct.failures(loose), seeds)
    rows, out = [], []
    for name, tally in tallies.items():
        r, r_loose = rate(tally.failures(alpha), seeds), rate(tally.failures(loose), seeds)
        rows.append(
            [
                f"{label}: {name}" if name else label,
                sde_name,
                n,
                steps,
                seeds,
                fmt_rate(r),
                fmt_rate(r_loose),
                tally.families(alpha),
                fmt_rate(size),
                fmt_rate(size_loose),
            ]
        )
        out.append(
            {
                "setting": f"{label}: {name}" if name else label,
                "sde": sde_name,
                "n": n,
                "steps": steps,
                "power": {str(alpha): r, str(loose): r_loose},
                "correct_claim_failures": {str(alpha): size, str(loose): size_loose},
            }
        )
    return rows, out


def power_kernel_big_n(cfg, alphas, results):
    """Kernel variance ×1.01/×1.02 and mean + 0.01/0.05 sd, OU at large n: one simulation per
    seed, every claim (and the correct one) tested on it."""
    sde = sdegen.OUSDE(theta=0.7, sigma=1.3, mu=0.4, T=6.0)
    t, n, steps = 0.5, cfg["big_n"], cfg["big_steps"]
    tt = torch.tensor([t], dtype=F64)
    mean, var = sde.marginal_mean(X0[None], tt)[0], float(sde.marginal_var(tt))
    sd = math.sqrt(var)
    right = gaussian_claim(mean, var)
    claims = {
        "variance ×1.01": gaussian_claim(mean, 1.01 * var),
        "variance ×1.02": gaussian_claim(mean, 1.02 * var),
        "mean + 0.01 sd": gaussian_claim(mean + 0.01 * sd, var),
        "mean + 0.05 sd": gaussian_claim(mean + 0.05 * sd, var),
    }
    assert_same_as_check_transition_kernel(sde, right, right, t, steps)
    correct, tallies = Tally(), {name: Tally() for name in claims}
    for seed in seed_range(30, cfg["big_seeds"]):
        x = simulate_forward(sde, starts(X0, n), 0.0, t, steps=steps, generator=gen(seed))
        correct.add(check_samples(x, right))
        for name, claim in claims.items():
            tallies[name].add(check_samples(x, claim))
    var_err, mean_err = euler_bias(sde, X0, t, steps)
    results["ou_big_n_euler_bias"] = {"var_rel_err": var_err, "mean_err_sd": mean_err}
    note = (
        f"OU at n = {n}, {steps} steps: Euler bias var {var_err:+.1e} (relative), mean "
        f"{mean_err:.1e} sd, i.e. a z shift of {z_shift(var_err, mean_err, n)}, against "
        f"{0.02 / 1.02 * math.sqrt(n / 2):.1f} for the 2% variance error and "
        f"{0.05 * math.sqrt(n):.1f} for the 0.05 sd shift."
    )
    return power_rows(
        "kernel", "OU(0.7, 1.3, 0.4), t=0.5", n, steps, tallies, correct, alphas
    ), note


def power_correlation(cfg, alphas):
    """A coupled linear SDE claimed with the diagonal of its covariance, over sample sizes (the
    first m rows of one simulation per seed: rows are i.i.d.)."""
    t, n, steps = 0.5, cfg["small_n"], cfg["small_steps"]
    cov = CorrelatedOU.covariance(t)
    zero = torch.zeros(2, dtype=F64)
    right, wrong = gaussian_claim(zero, cov), gaussian_claim(zero, torch.diag(cov.diagonal()))
    sizes = [m for m in cfg["subsets"] if m <= n]
    rights, wrongs = {m: Tally() for m in sizes}, {m: Tally() for m in sizes}
    for seed in seed_range(31, cfg["power_seeds"]):
        x = simulate_forward(
            CorrelatedOU(), starts(zero, n), 0.0, t, steps=steps, generator=gen(seed)
        )
        for m in sizes:
            wrongs[m].add(check_samples(x[:m], wrong))
            rights[m].add(check_samples(x[:m], right))
    label = f"correlation {float(cov[0, 1] / cov.diagonal().prod().sqrt()):.2f} dropped"
    return [
        power_rows(label, f"coupled OU, t={t}", m, steps, {"": wrongs[m]}, rights[m], alphas)
        for m in sizes
    ]


def power_flipped_drift(cfg, alphas):
    """VP simulated with its drift negated, claimed to have the VP kernel (the correct claim:
    the same check on the true VP, same seeds)."""
    vp, flipped = sdegen.VPSDE(), FlippedVP()
    x0, t, n, steps = torch.tensor([2.0, -1.0], dtype=F64), 0.3, cfg["small_n"], cfg["small_steps"]
    tt = torch.tensor([t], dtype=F64)
    claim = gaussian_claim(vp.marginal_mean(x0[None], tt)[0], float(vp.marginal_var(tt)))
    sizes = [cfg["subsets"][0], n]
    rights, wrongs = {m: Tally() for m in sizes}, {m: Tally() for m in sizes}
    for seed in seed_range(32, cfg["power_seeds"]):
        xw = simulate_forward(flipped, starts(x0, n), 0.0, t, steps=steps, generator=gen(seed))
        xr = simulate_forward(vp, starts(x0, n), 0.0, t, steps=steps, generator=gen(seed))
        for m in sizes:
            wrongs[m].add(check_samples(xw[:m], claim))
            rights[m].add(check_samples(xr[:m], claim))
    return [
        power_rows("drift sign flipped", f"VP, t={t}", m, steps, {"": wrongs[m]}, rights[m], alphas)
        for m in sizes
    ]


def power_ve_start(cfg, alphas):
    """The VE kernel with variance sigma(t)^2, by sampling: ``check_transition_kernel(ve,
    PerturbedVE(), ...)`` tests the claim's kernel as stated, N(x0, sigma(t)^2 I)."""
    ve, wrong_ve = sdegen.VESDE(), PerturbedVE()
    n, steps = cfg["small_n"], cfg["kernel_steps"]
    out = []
    for row, t in enumerate((1e-3, 0.5), start=50):
        tt = torch.tensor([t], dtype=F64)
        as_sde = gaussian_claim(X0, float(wrong_ve.marginal_var(tt)))
        claims = {"claim kernel=PerturbedVE()": as_sde}
        right = gaussian_claim(X0, float(ve.marginal_var(tt)))
        assert_same_as_check_transition_kernel(ve, wrong_ve, as_sde, t, steps)
        correct, tallies = Tally(), {name: Tally() for name in claims}
        for seed in seed_range(row, cfg["power_seeds"]):
            x = simulate_forward(ve, starts(X0, n), 0.0, t, steps=steps, generator=gen(seed))
            correct.add(check_samples(x, right))
            for name, claim in claims.items():
                tallies[name].add(check_samples(x, claim))
        out.append(
            power_rows("VE kernel var σ(t)²", f"VE, t={t:g}", n, steps, tallies, correct, alphas)
        )
    return out


def power_flow(cfg, alphas):
    """Probability-flow sampling (``ode_rk4``) with the doubled score, i.e. g^2 in place of
    ½g^2, against the exact p_{t_min} (the correct claim: the exact score, same prior draws)."""
    vp, gm = sdegen.VPSDE(), make_mixture(2)
    score = gm.score_fn(vp)
    target = gm.marginal(vp, vp.t_min)
    n, steps = cfg["flow_n"], cfg["flow_steps"]
    sizes = [cfg["subsets"][0], n]
    rights, wrongs = {m: Tally() for m in sizes}, {m: Tally() for m in sizes}
    for seed in seed_range(33, cfg["power_seeds"]):
        for fn, tallies in ((lambda x, t: 2 * score(x, t), wrongs), (score, rights)):
            res = sdegen.sample(
                vp, fn, (n, 2), method="ode_rk4", steps=steps, generator=gen(seed), dtype=F64
            )
            for m in sizes:
                tallies[m].add(check_samples(res.samples[:m], target))
    label = "flow with g² for ½g² (ode_rk4)"
    return [
        power_rows(label, "VP, make_mixture(2)", m, steps, {"": wrongs[m]}, rights[m], alphas)
        for m in sizes
    ]


def power_tables(cfg: dict, alphas: tuple[float, float], results: dict) -> None:
    alpha, loose = alphas
    big, note = power_kernel_big_n(cfg, alphas, results)
    parts = [big]
    parts += power_correlation(cfg, alphas)
    parts += power_flipped_drift(cfg, alphas)
    parts += power_ve_start(cfg, alphas)
    parts += power_flow(cfg, alphas)
    results["power"] = [entry for _, entries in parts for entry in entries]
    print_table(
        "Power against planted errors ('correct claim': the same check of the true law on the "
        "same kind of samples, same seeds)",
        [
            "planted error",
            "SDE",
            "n",
            "steps",
            "seeds",
            f"detected @ {alpha:g} [95% CI]",
            f"detected @ {loose:g}",
            f"rejections by test @ {alpha:g}",
            f"correct claim fails @ {alpha:g}",
            f"correct claim fails @ {loose:g}",
        ],
        [row for rows, _ in parts for row in rows],
    )
    print(f"\n{note}")


# --- deterministic checks -------------------------------------------------------------------------


def deterministic_tables(results: dict) -> None:
    gm = make_mixture(2)
    x = gm.sample(256, gen(0), dtype=F64)
    rows, out = [], []
    for sde in (sdegen.VESDE(), PerturbedVE()):
        rep = check_marginal_limits(sde, gm)
        times = sde.t_min + (sde.T - sde.t_min) * torch.rand(256, generator=gen(1), dtype=F64)
        fp = float(fokker_planck_residual(sde, gm.log_prob_fn(sde), x, times).max())
        name = "VE (correct kernel)" if isinstance(sde, sdegen.VESDE) else "VE kernel σ(t)²"
        rows.append(
            [
                name,
                f"{max(rep.start_variance_error):.3e}",
                f"{rep.start_kl:.2e}",
                "pass" if rep.passed else "**FAIL**",
                f"{fp:.1e}",
                "pass" if fp < 1e-10 else "FAIL",
            ]
        )
        out.append(
            {
                "kernel": name,
                "start_variance_error": max(rep.start_variance_error),
                "start_kl": rep.start_kl,
                "limits_passed": rep.passed,
                "fokker_planck_max_residual": fp,
            }
        )
    results["ve_start"] = out
    print_table(
        "VE kernel started at σ_min² (deterministic): check_marginal_limits vs the Fokker–Planck "
        "residual (256 points, tol 1e-10)",
        [
            "kernel",
            "start variance error",
            "start KL",
            "limits",
            "max FP residual",
            "FP verdict",
        ],
        rows,
    )

    rows, out = [], []
    for sde in all_linear_sdes():
        times = sde.t_min + (sde.T - sde.t_min) * torch.rand(256, generator=gen(1), dtype=F64)
        score, logp = gm.score_fn(sde), gm.log_prob_fn(sde)
        ok = probability_flow_residual(sde, score, logp, x, times)
        bad = probability_flow_residual(sde, lambda x, t, s=score: 2 * s(x, t), logp, x, times)
        rows.append(
            [
                repr(sde)[:48],
                f"{float(ok.max()):.1e}",
                f"{float(bad.median()):.2e}",
                f"{float(bad.min()):.2e}",
                f"{float(bad.max()):.2e}",
            ]
        )
        out.append(
            {
                "sde": repr(sde),
                "correct_max": float(ok.max()),
                "doubled_median": float(bad.median()),
                "doubled_min": float(bad.min()),
            }
        )
    results["probability_flow_residual"] = out
    print_table(
        "probability_flow_residual, correct flow vs g² in place of ½g² (relative residual, "
        "256 points of make_mixture(2), t uniform in [t_min, T])",
        ["SDE", "correct: max", "g² flow: median", "g² flow: min", "g² flow: max"],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, help="seeds per size row (default 200)")
    parser.add_argument("--power-seeds", type=int, help="seeds per power row (default 100)")
    parser.add_argument("--big-seeds", type=int, help="seeds for the n = 1e5 rows (default 50)")
    parser.add_argument("--alpha", type=float, default=1e-3, help="family-wise level")
    parser.add_argument("--quick", action="store_true", help="10 seeds, small n (< 30 s)")
    parser.add_argument("--out", type=pathlib.Path, help="also write the results as JSON here")
    args = parser.parse_args()
    # The small-n rows measure exactly what this warning is about.
    warnings.simplefilter("ignore", SmallSampleWarning)
    cfg = dict(CONFIGS["quick" if args.quick else "default"])
    if args.seeds is not None:
        cfg["seeds"] = args.seeds
    if args.power_seeds is not None:
        cfg["power_seeds"] = args.power_seeds
    if args.big_seeds is not None:
        cfg["big_seeds"] = args.big_seeds
    alphas = (args.alpha, 0.05)
    results: dict = {"config": cfg, "alphas": list(alphas)}
    start = time.perf_counter()
    print(f"## Size and power of sdegen.testing (torch threads: {torch.get_num_threads()})")
    for name, fn in [("size", size_tables), ("power", power_tables)]:
        t0 = time.perf_counter()
        fn(cfg, alphas, results)
        results[f"{name}_seconds"] = time.perf_counter() - t0
        print(f"\n({name} tables: {results[f'{name}_seconds']:.0f} s)")
    deterministic_tables(results)
    results["total_seconds"] = time.perf_counter() - start
    print(f"\nTotal {results['total_seconds']:.0f} s.")
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
