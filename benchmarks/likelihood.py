"""Speed and accuracy of ``sdegen.log_likelihood`` against the widely used reference recipe.

WHAT. For the VP SDE (``sdegen.VPSDE()``: t from ``t_min = 1e-5`` to ``T = 1``) and rtol = atol =
1e-5 for both methods, this prints one Markdown table per dimension d = 2, 64 and 784 and a
met / missed line per speed target (exact trace at d = 64: >= 1.5x faster than the baseline;
Hutchinson at d = 784: >= 2x; no row slower). Each setting is solved by the baseline and by
sdegen on the same points; the columns are the error in nats/dim (vs the closed form, or vs a
tight reference), the ODE right-hand-side evaluations (NFE), the score-network calls, the wall
time, baseline_time / sdegen_time, and the same for process CPU time (less sensitive to other
processes on a shared machine). Settings:

- closed-form score of an 8-component Gaussian mixture (full covariances at d = 2, diagonal
  ones at d = 64 and 784; ``GaussianMixture.score_fn``), float64. Truth:
  ``gm.marginal_log_prob(sde, x, t_min)``. Both methods get the exact ``p_T``
  (``gm.marginal(sde, T).log_prob``) as the prior, so the error is the solver's; one row at
  d = 2 uses the declared ``N(0, I)`` prior instead, for reference.
- an MLP score network (input ``[x, t]``, 2 hidden layers of 256 SiLU units, default init from a
  fixed seed, in the noise-prediction form ``score = -net(x, t) / s(t)`` that score_sde uses for
  VP models), float32, declared ``N(0, I)`` prior. No closed form, so the truth is a float64
  copy of the same network solved with the exact trace at rtol = atol = 1e-9 (``--ref-tol``):
  torchdiffeq dopri5 on the augmented ODE with sdegen's per-sample norm and the trace in closed
  form (for this MLP ``tr J = d2^T (W2 * (W1x W3)^T) d1``, ``d_k = silu'(h_k)``; an autograd
  trace at d = 784 would take minutes per solve). At d = 2 and 64 it is checked against
  ``sdegen.log_likelihood(divergence="exact")`` at the same tolerance on 32 of the points
  (``--check-n``); the agreement is printed under the table.

Exact divergence at d = 2 and 64; Hutchinson with one probe at d = 784. Points: 256 at d = 2 and
64, 64 at d = 784, drawn from the mixture's ``p_{t_min}`` (the same points for the MLP).
Hutchinson rows use Gaussian probes (``--probe``), as the reference code's tutorial does
(``torch.randn_like``; score_sde's ``likelihood.py`` offers Gaussian and Rademacher), one per
point, and both methods use the *same* probes (the baseline draws them with the same seeded
generator call as sdegen), so their difference is solver error; the error column then shows
the mean over points with its standard error and the per-point spread, all dominated by the
estimator's noise.

BASELINE (written here; what score_sde's ``likelihood.py`` and its tutorial do): scipy
``solve_ivp(method="RK45", rtol, atol)`` from ``t_min`` to ``T`` on a flattened float64 numpy copy
of the whole batch state ``[x, Δ]`` (one ODE for the batch); at every evaluation the state is
copied numpy -> torch (in the row's dtype) and the results torch -> numpy; the score network is
called once for the drift ``f - ½ g² s`` and once more, under autograd, for the divergence (2
calls per evaluation); the exact trace is a Python loop of d ``torch.autograd.grad`` calls (one
vector-Jacobian product per dimension), Hutchinson one ``grad`` of ``<v, ε>``; the whole solve runs
under ``torch.no_grad``; the prior is evaluated at the end point.

sdegen: ``sdegen.log_likelihood`` with its defaults (dopri5, per-sample error norm;
``--sdegen-norm rms`` for torchdiffeq's) and the same divergence, probes, tolerances and prior.

TIMING. Up to ``--repeats`` (default 3) interleaved rounds (baseline, sdegen, baseline, ...) after
an untimed warm-up on two points, fewer where another round would take a row past ``--budget``
seconds; the tables show the minimum (``--stat``) per method. One torch thread by default
(``--threads``). The error, NFE and call columns come from the first round (rounds are
deterministic). ``--profile`` adds a cProfile of sdegen on the target rows.

Run:  python benchmarks/likelihood.py                (3–4 minutes here, --profile included)
      python benchmarks/likelihood.py --quick        (d = 2 / 16 / 48, tiny; ~10 s)
      python benchmarks/likelihood.py --only 784 --probe rademacher
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import dataclasses
import functools
import io
import math
import os
import pstats
import statistics
import time
from collections.abc import Callable

# One BLAS thread for numpy/scipy too (before they load): with two, OpenBLAS ran the baseline's
# RK45 stage sums on a second, mostly spinning thread (CPU time 2x wall time). Export
# OPENBLAS_NUM_THREADS to override.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import torch  # noqa: E402

torch.set_num_threads(1)  # small tensors on a shared 2-core machine: threads only cost

import numpy as np  # noqa: E402
import torchdiffeq  # noqa: E402
from scipy.integrate import solve_ivp  # noqa: E402

import sdegen  # noqa: E402

F64 = torch.float64
Tensor = torch.Tensor


# --- problems ------------------------------------------------------------------------------------


def make_mixture(d: int, k: int = 8, seed: int = 1, full: bool = True) -> sdegen.GaussianMixture:
    """The tests' well-conditioned mixture (``tests/conftest.py::make_mixture``)."""
    g = torch.Generator().manual_seed(seed)
    means = 1.5 * torch.randn(k, d, generator=g, dtype=F64)
    weights = torch.rand(k, generator=g, dtype=F64) + 0.5
    weights = weights / weights.sum()
    if full:
        a = torch.randn(k, d, d, generator=g, dtype=F64)
        covs = 0.3 * a @ a.transpose(-1, -2) / d + 0.05 * torch.eye(d, dtype=F64)
    else:
        covs = 0.1 + 0.4 * torch.rand(k, d, generator=g, dtype=F64)
    return sdegen.GaussianMixture(means, covs, weights)


class MLPScore(torch.nn.Module):
    """``score(x, t) = -net([x, t]) / s(t)``, ``net``: 2 hidden SiLU layers, default init."""

    def __init__(self, sde, d: int, hidden: int, seed: int = 0) -> None:
        super().__init__()
        self.sde, self.d = sde, d
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.l1 = torch.nn.Linear(d + 1, hidden)
            self.l2 = torch.nn.Linear(hidden, hidden)
            self.l3 = torch.nn.Linear(hidden, d)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        h = torch.cat([x, t[:, None]], dim=1)
        h = torch.nn.functional.silu(self.l1(h))
        h = torch.nn.functional.silu(self.l2(h))
        return -self.l3(h) / self.sde.marginal_std(t)[:, None]

    def score_and_trace(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """The score and the trace of its x-Jacobian in closed form (``O(batch h²)``)."""
        h1 = self.l1(torch.cat([x, t[:, None]], dim=1))
        h2 = self.l2(torch.nn.functional.silu(h1))
        out = self.l3(torch.nn.functional.silu(h2))
        # J = W3 D2 W2 D1 W1x, so tr J = Σ_ab D2[a] W2[a,b] D1[b] (W1x W3)[b,a].
        p = self.l2.weight * (self.l1.weight[:, : self.d] @ self.l3.weight).T
        tr = ((_dsilu(h2) @ p) * _dsilu(h1)).sum(1)
        std = self.sde.marginal_std(t)
        return -out / std[:, None], -tr / std


def _dsilu(h: Tensor) -> Tensor:
    s = torch.sigmoid(h)
    return s * (1 + h * (1 - s))


def closed_trace_reference(sde, mlp: MLPScore, x: Tensor, tol: float) -> Tensor:
    """``log p_{t_min}(x)`` of the MLP's flow: torchdiffeq dopri5 on ``(x, Δ)`` with the trace in
    closed form, per-sample error norm as in sdegen, declared prior."""
    d = x.shape[1]

    def flow(t: Tensor, state: Tensor) -> Tensor:
        tt = t.expand(state.shape[0]).to(state.dtype)
        score, tr = mlp.score_and_trace(state[:, :d], tt)
        g2 = sde.diffusion(tt) ** 2
        v = sde.drift(state[:, :d], tt) - 0.5 * g2[:, None] * score
        div = d * sde.drift_coeff(tt) - 0.5 * g2 * tr
        return torch.cat([v, div[:, None]], dim=1)

    state0 = torch.cat([x, x.new_zeros(x.shape[0], 1)], dim=1)
    ts = torch.tensor([sde.t_min, sde.T], dtype=F64)
    options = {"norm": lambda z: z.pow(2).mean(dim=1).sqrt().max(), "first_step": 1e-3}
    with torch.no_grad():
        end = torchdiffeq.odeint(flow, state0, ts, rtol=tol, atol=tol, options=options)[-1]
    return sde.prior_log_prob(end[:, :d]) + end[:, d]


def same_probe_reference(sde, score, x: Tensor, probes: Tensor, prior, tol: float) -> Tensor:
    """``log p`` estimated with the Hutchinson probes ``probes`` (``x``'s shape) held fixed, solved
    tightly: torchdiffeq dopri5 on ``(x, Δ)`` in float64 at ``rtol = atol = tol``, per-sample
    error norm. With the probes fixed the estimate is a deterministic integral, so the gap of a
    method that uses the same probes to this is its solver error (not the estimator's noise)."""
    d, batch = x[0].numel(), x.shape[0]

    def flow(t: Tensor, state: Tensor) -> Tensor:
        tt = t.expand(batch).to(state.dtype)
        with torch.enable_grad():
            y = state[:, :d].reshape(x.shape).detach().requires_grad_(True)
            g2 = sde.diffusion(tt) ** 2
            v = sde.drift(y, tt) - 0.5 * g2[:, None] * score(y, tt)
            (jv,) = torch.autograd.grad((v * probes).sum(), y)
        return torch.cat([v.detach().reshape(batch, -1), (jv * probes).sum(1)[:, None]], dim=1)

    state0 = torch.cat([x.reshape(batch, -1), x.new_zeros(batch, 1)], dim=1)
    ts = torch.tensor([sde.t_min, sde.T], dtype=F64)
    options = {"norm": lambda z: z.pow(2).mean(dim=1).sqrt().max(), "first_step": 1e-3}
    with torch.no_grad():
        end = torchdiffeq.odeint(flow, state0, ts, rtol=tol, atol=tol, options=options)[-1]
    return prior(end[:, :d].reshape(x.shape)) + end[:, d]


# --- the two methods ---------------------------------------------------------------------------


@dataclasses.dataclass
class Run:
    log_prob: Tensor
    nfe: int
    calls: int
    seconds: float
    cpu: float = math.nan  # process CPU time: less sensitive to other processes on the machine


def draw_probes(shape, dtype, probe: str, seed: int) -> Tensor:
    """The probes ``sdegen.log_likelihood(num_probes=1, generator=Generator().manual_seed(seed))``
    draws (same call, same generator state), so both methods see the same ones."""
    g = torch.Generator().manual_seed(seed)
    if probe == "rademacher":
        return (torch.randint(0, 2, (1, *shape), generator=g).to(dtype) * 2 - 1)[0]
    return torch.randn((1, *shape), generator=g, dtype=dtype)[0]


def baseline_log_likelihood(
    sde, score, x: Tensor, *, divergence: str, probe: str, seed: int, rtol, atol, prior_log_prob
) -> Run:
    """The reference recipe (see the module docstring): scipy RK45 on a numpy copy of the batch
    state, two score calls per evaluation, a Python loop of d VJPs for the exact trace."""
    start = time.perf_counter()
    shape, dtype, batch = x.shape, x.dtype, x.shape[0]
    d = x[0].numel()
    calls = 0
    eps = None if divergence == "exact" else draw_probes(shape, dtype, probe, seed)

    def drift_fn(y: Tensor, t: Tensor) -> Tensor:
        nonlocal calls
        calls += 1
        g2 = sde.diffusion(t) ** 2
        return sde.drift(y, t) - 0.5 * g2[:, None] * score(y, t)

    def div_fn(y: Tensor, t: Tensor) -> Tensor:
        with torch.enable_grad():
            y.requires_grad_(True)
            v = drift_fn(y, t)
            if eps is None:
                div = torch.zeros(batch, dtype=dtype)
                for i in range(d):
                    (row,) = torch.autograd.grad(v[:, i].sum(), y, retain_graph=i < d - 1)
                    div = div + row[:, i]
            else:
                (jv,) = torch.autograd.grad((v * eps).sum(), y)
                div = (jv * eps).sum(dim=1)
        y.requires_grad_(False)
        return div

    def ode_func(t: float, y: np.ndarray) -> np.ndarray:
        sample = torch.from_numpy(y[:-batch].reshape(shape)).to(dtype)
        vec_t = torch.ones(batch, dtype=dtype) * t
        drift = drift_fn(sample, vec_t).detach().cpu().numpy().reshape(-1)
        logp_grad = div_fn(sample, vec_t).detach().cpu().numpy().reshape(-1)
        return np.concatenate([drift, logp_grad], axis=0)

    with torch.no_grad():
        init = np.concatenate([x.detach().cpu().numpy().reshape(-1), np.zeros(batch)])
        sol = solve_ivp(ode_func, (sde.t_min, sde.T), init, rtol=rtol, atol=atol, method="RK45")
        if sol.status != 0:
            raise RuntimeError(f"solve_ivp failed: {sol.message}")
        zp = sol.y[:, -1]
        z = torch.from_numpy(zp[:-batch].reshape(shape)).to(dtype)
        delta = torch.from_numpy(zp[-batch:]).to(dtype)
        log_prob = prior_log_prob(z) + delta
    return Run(log_prob, int(sol.nfev), calls, time.perf_counter() - start)


def sdegen_log_likelihood(
    sde,
    score,
    x: Tensor,
    *,
    divergence: str,
    probe: str,
    seed: int,
    rtol,
    atol,
    prior_log_prob,
    norm: str = "per_sample",
    integrator: str | None = None,
) -> Run:
    """``sdegen.log_likelihood`` with one probe from ``Generator().manual_seed(seed)``."""
    start = time.perf_counter()
    counted = sdegen.reverse.CountedScore(score)
    extra = {} if integrator is None else {"integrator": integrator}
    res = sdegen.log_likelihood(
        sde,
        counted,
        x,
        divergence=divergence,
        num_probes=1,
        probe=probe,
        rtol=rtol,
        atol=atol,
        prior_log_prob=prior_log_prob,
        norm=norm,
        generator=torch.Generator().manual_seed(seed),
        **extra,
    )
    seconds = time.perf_counter() - start
    # NFE column: sdegen's own count (score calls; one per right-hand-side evaluation with the
    # augmented integrator).
    return Run(res.log_prob, res.nfe, counted.nfe, seconds)


METHODS = ("baseline", "sdegen")


# --- settings --------------------------------------------------------------------------------


@dataclasses.dataclass
class Setting:
    d: int
    n: int
    score: str  # "mixture" or "mlp"
    divergence: str  # "exact" or "hutchinson"
    prior: str  # "exact p_T" or "N(0, I)"

    @property
    def label(self) -> str:
        what = "mixture" if self.score == "mixture" else "MLP (float32)"
        return f"{what}, {self.n} pts, prior {self.prior}"


def settings_for(dims: tuple[int, int, int], batches: tuple[int, int, int]) -> list[Setting]:
    small, mid, big = dims
    return [
        Setting(small, batches[0], "mixture", "exact", "exact p_T"),
        Setting(small, batches[0], "mixture", "exact", "N(0, I)"),
        Setting(small, batches[0], "mlp", "exact", "N(0, I)"),
        Setting(mid, batches[1], "mixture", "exact", "exact p_T"),
        Setting(mid, batches[1], "mlp", "exact", "N(0, I)"),
        Setting(big, batches[2], "mixture", "hutchinson", "exact p_T"),
        Setting(big, batches[2], "mlp", "hutchinson", "N(0, I)"),
    ]


@dataclasses.dataclass
class Problem:
    sde: object
    score: Callable
    x: Tensor
    truth: Tensor
    truth_note: str
    prior_log_prob: Callable[[Tensor], Tensor]
    probe_ref: Tensor | None = None  # Hutchinson: tight solve with the methods' probes


def with_probe_ref(problem: Problem, s: Setting, args, score64) -> Problem:
    """Adds the same-probe tight solve (float64, ``--ref-tol``, capped at 1e-8) to Hutchinson
    settings."""
    if s.divergence != "hutchinson":
        return problem
    probes = draw_probes(problem.x.shape, problem.x.dtype, args.probe, 7).double()
    start = time.perf_counter()
    tol = max(args.ref_tol, 1e-8)
    problem.probe_ref = same_probe_reference(
        problem.sde, score64, problem.x.double(), probes, problem.prior_log_prob, tol
    )
    problem.truth_note += (
        f"; same-probe reference: float64 augmented solve at tol {tol:g} "
        f"({time.perf_counter() - start:.0f} s)"
    )
    return problem


def make_problem(s: Setting, args) -> Problem:
    sde = sdegen.VPSDE()
    gm = make_mixture(s.d, full=s.d <= 8)
    x = gm.marginal(sde, sde.t_min).sample(s.n, torch.Generator().manual_seed(0), dtype=F64)
    if s.score == "mixture":
        prior = gm.marginal(sde, sde.T).log_prob if s.prior == "exact p_T" else sde.prior_log_prob
        truth = gm.marginal_log_prob(sde, x, sde.t_min)
        problem = Problem(sde, gm.score_fn(sde), x, truth, "closed form", prior)
        return with_probe_ref(problem, s, args, gm.score_fn(sde))
    mlp = MLPScore(sde, s.d, args.hidden)
    truth, note = mlp_reference(sde, mlp, x, args)
    problem = Problem(sde, mlp, x.float(), truth, note, sde.prior_log_prob)
    return with_probe_ref(problem, s, args, copy.deepcopy(mlp).double())


def mlp_reference(sde, mlp: MLPScore, x: Tensor, args) -> tuple[Tensor, str]:
    """Tight float64 exact-trace reference (closed-form trace), checked against
    ``sdegen.log_likelihood(divergence="exact")`` at the same tolerance on up to ``--check-n``
    points where d <= 128."""
    mlp64 = copy.deepcopy(mlp).double()
    tol = args.ref_tol
    start = time.perf_counter()
    ref = closed_trace_reference(sde, mlp64, x, tol)
    note = f"closed-form-trace solve, tol {tol:g}, float64 ({time.perf_counter() - start:.0f} s)"
    d, m = x.shape[1], min(args.check_n, x.shape[0])
    if d <= 128 and m > 0:
        start = time.perf_counter()
        res = sdegen.log_likelihood(sde, mlp64, x[:m], divergence="exact", rtol=tol, atol=tol)
        gap = float((ref[:m] - res.log_prob).abs().max()) / d
        seconds = time.perf_counter() - start
        note += (
            f"; sdegen exact trace at the same tolerance on {m} of the points agrees to "
            f"{gap:.0e} nats/dim (max; {res.nfe} NFE, {seconds:.0f} s)"
        )
    return ref, note


# --- running -------------------------------------------------------------------------------------


@dataclasses.dataclass
class Row:
    setting: Setting
    runs: dict[str, list[Run]]
    truth: Tensor
    truth_note: str
    probe_ref: Tensor | None = None

    def best(self, method: str, stat: str, cpu: bool = False) -> float:
        times = [r.cpu if cpu else r.seconds for r in self.runs[method]]
        return min(times) if stat == "min" else statistics.median(times)


def run_setting(s: Setting, args) -> Row:
    p = make_problem(s, args)
    kw = {
        "divergence": s.divergence,
        "probe": args.probe,
        "seed": 7,
        "rtol": args.tol,
        "atol": args.tol,
        "prior_log_prob": p.prior_log_prob,
    }
    methods = {
        "baseline": baseline_log_likelihood,
        "sdegen": functools.partial(
            sdegen_log_likelihood, norm=args.sdegen_norm, integrator=args.integrator
        ),
    }
    for fn in methods.values():  # warm-up: lazy initialisation, caches
        fn(p.sde, p.score, p.x[:2], **kw)
    runs: dict[str, list[Run]] = {name: [] for name in METHODS}
    start = time.perf_counter()
    for k in range(args.repeats):
        elapsed = time.perf_counter() - start
        if k > 0 and elapsed * (k + 1) / k > args.budget:
            break  # another round would overrun the row's budget
        for name, fn in methods.items():
            cpu = time.process_time()
            run = fn(p.sde, p.score, p.x, **kw)
            run.cpu = time.process_time() - cpu
            runs[name].append(run)
    return Row(s, runs, p.truth, p.truth_note, p.probe_ref)


def fmt_error(row: Row, run: Run) -> str:
    d = row.setting.d
    err = (run.log_prob.double() - row.truth.double()) / d
    if row.setting.divergence == "exact":
        return f"{float(err.abs().mean()):.1e}"
    n = err.numel()
    mean, sd = float(err.mean()), float(err.std())
    return f"{mean:+.1e} ± {sd / math.sqrt(n):.0e} (sd {sd:.0e})"


def fmt_solver_error(row: Row, run: Run) -> str:
    """Exact rows: the error itself; Hutchinson rows: mean |log p - same-probe reference| / d."""
    ref = row.truth if row.probe_ref is None else row.probe_ref
    return f"{float((run.log_prob.double() - ref.double()).abs().mean()) / row.setting.d:.1e}"


def print_table(d: int, rows: list[Row], stat: str, probe: str) -> None:
    print(f"\n### d = {d}\n")
    print(
        "| setting | method | divergence | error (nats/dim) | solver error (nats/dim) "
        "| |sdegen − baseline| (nats/dim) "
        "| NFE | score calls | wall (s) | rounds | baseline / sdegen | CPU (s) | ratio, CPU |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        base, ours = row.best("baseline", stat), row.best("sdegen", stat)
        base_cpu, ours_cpu = row.best("baseline", stat, True), row.best("sdegen", stat, True)
        first = {name: runs[0] for name, runs in row.runs.items()}
        gap = (first["sdegen"].log_prob.double() - first["baseline"].log_prob.double()).abs()
        div = row.setting.divergence
        if div == "hutchinson":
            div += f" (1 {probe} probe)"
        for name in METHODS:
            run = first[name]
            ratio = f"**{base / ours:.2f}**" if name == "sdegen" else ""
            ratio_cpu = f"{base_cpu / ours_cpu:.2f}" if name == "sdegen" else ""
            gap_s = f"{float(gap.mean()) / d:.1e}" if name == "sdegen" else ""
            print(
                f"| {row.setting.label} | {name} | {div} | {fmt_error(row, run)} "
                f"| {fmt_solver_error(row, run)} | {gap_s} "
                f"| {run.nfe} | {run.calls} | {row.best(name, stat):.2f} "
                f"| {len(row.runs[name])} | {ratio} | {row.best(name, stat, True):.2f} "
                f"| {ratio_cpu} |"
            )
    print()
    for row in rows:
        if row.setting.score == "mlp" or row.probe_ref is not None:
            print(f"Truth for the {row.setting.score} at d = {d}: {row.truth_note}.")


def profile_sdegen(s: Setting, args) -> None:
    p = make_problem(s, args)
    kw = {"divergence": s.divergence, "probe": args.probe, "seed": 7, "norm": args.sdegen_norm}
    kw["integrator"] = args.integrator
    prof = cProfile.Profile()
    prof.enable()
    sdegen_log_likelihood(
        p.sde, p.score, p.x, rtol=args.tol, atol=args.tol, prior_log_prob=p.prior_log_prob, **kw
    )
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(15)
    print(f"\n#### cProfile of sdegen, d = {s.d}, {s.label}, {s.divergence} (by tottime)\n")
    print("```")
    print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[:6000])
    print("```")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="d = 2/16/48, 32/32/16 points, h = 32")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds (default 3; quick 1)")
    p.add_argument("--budget", type=float, default=150, help="seconds per row before more rounds")
    p.add_argument("--stat", choices=["min", "median"], default="min")
    p.add_argument("--tol", type=float, default=1e-5, help="rtol = atol of both methods")
    p.add_argument("--ref-tol", type=float, default=None, help="MLP reference (default 1e-9)")
    p.add_argument("--hidden", type=int, default=None, help="MLP width (default 256)")
    p.add_argument("--check-n", type=int, default=None, help="points in the sdegen ref check")
    p.add_argument("--sdegen-norm", choices=["per_sample", "rms"], default="per_sample")
    p.add_argument(
        "--integrator", default=None, help="passed to sdegen.log_likelihood (default: its own)"
    )
    p.add_argument("--probe", choices=["gaussian", "rademacher"], default="gaussian")
    p.add_argument("--only", type=int, nargs="+", help="run only these of the three dimensions")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--profile", action="store_true", help="cProfile sdegen on the target rows")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        dims, batches = (2, 16, 48), (32, 32, 16)
        defaults = {"repeats": 1, "ref_tol": 1e-7, "hidden": 32, "check_n": 8}
    else:
        dims, batches = (2, 64, 784), (256, 256, 64)
        defaults = {"repeats": 3, "ref_tol": 1e-9, "hidden": 256, "check_n": 32}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)

    t0 = time.perf_counter()
    print(
        f"# sdegen.log_likelihood vs the reference recipe (VP SDE, rtol = atol = {args.tol:g}, "
        f"{args.threads} torch thread(s), OPENBLAS_NUM_THREADS="
        f"{os.environ['OPENBLAS_NUM_THREADS']}, {args.stat} of up to {args.repeats} rounds, "
        f"MLP width {args.hidden})\n"
    )
    chosen = [s for s in settings_for(dims, batches) if not args.only or s.d in args.only]
    rows = [run_setting(s, args) for s in chosen]
    for d in sorted({r.setting.d for r in rows}):
        print_table(d, [r for r in rows if r.setting.d == d], args.stat, args.probe)
    print(
        "\nError: exact rows, mean |log p - truth| / d; Hutchinson rows, mean (log p - truth) / d "
        "± its standard error over points (sd: per-point spread, the estimator's noise). "
        "Solver error: exact rows, the error; Hutchinson rows, mean |log p - r| / d with r a tight "
        "float64 solve with the same probes (the part of the error the solver controls). "
        "|sdegen − baseline|: mean per-point difference / d (same probes in Hutchinson rows). "
        f"sdegen norm: {args.sdegen_norm}, integrator: {args.integrator or 'default'}. "
        f"Wall and CPU (process) time: {args.stat} over rounds; "
        "the targets use the wall-time ratio."
    )

    print("\n## Targets\n")
    ratios = {id(r): r.best("baseline", args.stat) / r.best("sdegen", args.stat) for r in rows}
    targets = [("exact", dims[1], 1.5), ("hutchinson", dims[2], 2.0)]
    for div, d, want in targets:
        group = [r for r in rows if r.setting.divergence == div and r.setting.d == d]
        if not group:
            continue
        worst = min(ratios[id(r)] for r in group)
        each = ", ".join(f"{r.setting.score} {ratios[id(r)]:.2f}x" for r in group)
        verdict = "met" if worst >= want else "missed"
        print(f"- {div} at d = {d}: >= {want}x faster: {verdict} (worst {worst:.2f}x; {each})")
    worst = min(ratios.values())
    verdict = "met" if worst >= 1 else "missed"
    print(f"- never slower than the baseline: {verdict} (worst ratio {worst:.2f}x)")

    if args.profile:
        for s in chosen:
            if (s.divergence, s.d) in {("exact", dims[1]), ("hutchinson", dims[2])}:
                profile_sdegen(s, args)
    print(f"\nTotal wall time {time.perf_counter() - t0:.0f} s.")


if __name__ == "__main__":
    main()
