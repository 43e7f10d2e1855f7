"""``sdegen ground-truth``: the closed-form check of the solvers.

A 2-D Gaussian mixture whose exact score is known is sampled through the reverse-time SDE
(torchsde) and the probability-flow ODE (torchdiffeq), with goodness-of-fit checks, NFE and wall
time per method, a scatter plot, and the exact log-likelihood through the probability flow
against the closed form.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

from ..analytic import GaussianMixture
from ..likelihood import log_likelihood
from ..reverse import ProbabilityFlowODE
from ..sampling import sample
from ..sde import VESDE, VPSDE, SubVPSDE
from ..testing import check_samples

_SDES = {"vp": VPSDE, "ve": VESDE, "subvp": SubVPSDE}
_DEMO_METHODS = [("euler", 500), ("srk", 100), ("ode_rk4", 50), ("ode_dopri5", None)]


def ring_mixture(k: int = 8, radius: float = 2.0, std: float = 0.15) -> GaussianMixture:
    """``k`` equal Gaussians on a circle: multimodal, with a closed-form score at every time."""
    angles = torch.arange(k, dtype=torch.float64) * (2 * math.pi / k)
    means = radius * torch.stack([angles.cos(), angles.sin()], dim=1)
    return GaussianMixture(means, std**2)


def _demo(args: argparse.Namespace) -> int:
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sde = _SDES[args.sde]()
    gm = ring_mixture()
    score = gm.score_fn(sde)
    rows, samples = [], {}
    print(f"sdegen ground-truth: {sde!r}, 8-Gaussian ring, n = {args.n}, exact score")
    print(f"{'method':<12}{'steps':>6}{'NFE':>7}{'time (s)':>10}{'mean err':>10}  goodness of fit")
    for method, steps in _DEMO_METHODS:
        gen = torch.Generator().manual_seed(args.seed)
        start = time.perf_counter()
        result = sample(
            sde, score, (args.n, 2), method=method, steps=steps, generator=gen, dtype=torch.float64
        )
        elapsed = time.perf_counter() - start
        report = check_samples(result.samples, gm)
        mean_err = float((result.samples.mean(0) - gm.mean()).norm())
        rows.append(
            {
                "method": method,
                "steps": steps,
                "nfe": result.nfe,
                "seconds": round(elapsed, 3),
                "mean_error": mean_err,
                "passed": report.passed,
                "worst_test": report.worst()[0],
                "worst_p": report.worst()[2],
            }
        )
        samples[method] = result.samples
        verdict = "pass" if report.passed else "FAIL"
        print(
            f"{method:<12}{steps or '-':>6}{result.nfe:>7}{elapsed:>10.2f}{mean_err:>10.4f}  "
            f"{verdict} (worst {report.worst()[0]}, p = {report.worst()[2]:.2g})"
        )
    # Invertibility of the probability flow: data -> prior -> data.
    ode = ProbabilityFlowODE(sde, score)
    x0 = gm.marginal(sde, sde.t_min).sample(512, torch.Generator().manual_seed(args.seed))
    x0 = x0.double()
    x_T = ode.solve(x0, [sde.t_min, sde.T], rtol=1e-7, atol=1e-7)[-1]
    back = ode.solve(x_T, [sde.T, sde.t_min], rtol=1e-7, atol=1e-7)[-1]
    round_trip = float((back - x0).abs().max())
    print(f"probability-flow round trip (dopri5, tol 1e-7): max error {round_trip:.2e}")
    # Exact log-likelihood through the probability flow vs the closed form.
    start = time.perf_counter()
    ll = log_likelihood(sde, score, x0[:256], prior_log_prob=gm.marginal(sde, sde.T).log_prob)
    ll_error = float((ll.log_prob - gm.marginal_log_prob(sde, x0[:256], sde.t_min)).abs().mean())
    print(
        f"exact log-likelihood (dopri5, tol 1e-5, {ll.divergence} trace): mean "
        f"{float(ll.log_prob.mean()):.4f} nats, error vs closed form {ll_error / 2:.1e} nats/dim, "
        f"NFE {ll.nfe}, {time.perf_counter() - start:.2f} s"
    )
    summary = {
        "sde": repr(sde),
        "n": args.n,
        "methods": rows,
        "round_trip_error": round_trip,
        "log_likelihood": {"mean": float(ll.log_prob.mean()), "error_per_dim": ll_error / 2},
    }
    (out / "demo.json").write_text(json.dumps(summary, indent=2))
    figure = _scatter(samples, gm, out / "demo_samples.png")
    print(f"wrote {out / 'demo.json'}" + (f" and {figure}" if figure else ""))
    ok = all(r["passed"] for r in rows) and round_trip < 1e-4 and ll_error / 2 < 2e-4
    return 0 if ok else 1


def _scatter(samples: dict[str, torch.Tensor], gm: GaussianMixture, path: Path) -> Path | None:
    from ..plotting import scatter_2d

    data = gm.sample(len(next(iter(samples.values()))), torch.Generator().manual_seed(0))
    try:
        return scatter_2d({"data (exact)": data, **samples}, path, limit=3.2)
    except ImportError:
        print("matplotlib not installed (pip install 'sdegen[plot]'): no figure written")
        return None


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "ground-truth",
        help="sample a 2-D mixture with its exact score through every kind of solver and compare "
        "with the closed form",
    )
    parser.add_argument("--sde", choices=sorted(_SDES), default="vp")
    parser.add_argument("--n", type=int, default=4000, help="samples per method (>= 1000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/ground-truth", help="output folder")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # The goodness-of-fit tests keep their false-alarm rate only from about 1000 samples on.
    if args.n < 1000:
        print(f"sdegen: error: --n must be >= 1000; got {args.n}", file=sys.stderr)
        return 2
    return _demo(args)
