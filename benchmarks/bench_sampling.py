"""Overhead of ``sdegen.sample()`` (torchsde Euler–Maruyama) over a hand-written Euler–Maruyama.

For each setting (VP SDE, exact Gaussian-mixture score, float32, batch 512, d = 2 and d = 3072)
this times three ways of taking the same uniform reverse-time Euler–Maruyama steps with the same
score and prints a Markdown table:

- hand loop: ``x -= (f - g² score) dt - g √dt ε`` in plain torch, ``t`` from ``T`` to ``t_min``;
- ``sdegen.sample(method="euler")``: torchsde with sdegen's one-``randn``-per-step ``StepBrownian``;
- BrownianInterval path: the same torchsde solve through ``sdegen.ReverseSDE.solve`` with
  torchsde's default ``torchsde.BrownianInterval``, which shows why ``StepBrownian`` exists.

Times include drawing the prior noise; each is the median (or ``--stat min``) of interleaved
rounds after a warm-up round (``--repeats`` rounds, fewer, but at least 3, where that would take
over ``--budget`` seconds). Peak extra memory is the rise of the peak RSS (``VmHWM``, reset via
``/proc/self/clear_refs`` after ``malloc_trim``; Linux/glibc only, else NaN) over the RSS before
one run. The hand loop and ``sample()`` draw the same random numbers, so their samples agree up
to rounding; the largest difference is printed as a check.

Run:  python benchmarks/bench_sampling.py            (about 2 minutes on one core)
      python benchmarks/bench_sampling.py --quick    (a few seconds)
"""

from __future__ import annotations

import argparse
import ctypes
import math
import statistics
import time
from functools import partial

import torch
import torchsde

import sdegen


def hand_loop(sde, score, shape, steps):
    gen = torch.Generator().manual_seed(0)
    x = sde.prior_sample(shape, gen, dtype=torch.float32)
    dt = (sde.T - sde.t_min) / steps
    for i in range(steps):
        t = torch.full((shape[0],), sde.T - i * dt, dtype=x.dtype)
        g = sde.diffusion(t)[:, None]
        drift = sde.drift(x, t) - g**2 * score(x, t)
        noise = torch.randn(shape, generator=gen, dtype=x.dtype)
        x = x - drift * dt + g * math.sqrt(dt) * noise
    return x


def sdegen_path(sde, score, shape, steps):
    gen = torch.Generator().manual_seed(0)
    res = sdegen.sample(
        sde, score, shape, method="euler", steps=steps, generator=gen, dtype=torch.float32
    )
    return res.samples


def interval_path(sde, score, shape, steps):
    x_T = sde.prior_sample(shape, torch.Generator().manual_seed(0), dtype=torch.float32)
    span = sde.T - sde.t_min
    bm = torchsde.BrownianInterval(t0=0.0, t1=span, size=shape, dtype=torch.float32, entropy=0)
    rsde = sdegen.ReverseSDE(sde, score, shape[1:], sde_type="ito")
    ys = rsde.solve(x_T, [sde.T, sde.t_min], method="euler", dt=span / steps * (1 + 1e-10), bm=bm)
    return ys[-1]


def _proc_kib(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))


def peak_extra_mib(fn):
    """Peak RSS rise during one call of ``fn``, in MiB, or NaN where ``/proc`` does not allow it."""
    try:
        ctypes.CDLL(None).malloc_trim(0)  # hand freed heap pages back, so reuse shows up as growth
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        before = _proc_kib("VmRSS:")
        fn()
        return (_proc_kib("VmHWM:") - before) / 1024
    except (OSError, AttributeError, StopIteration):
        return float("nan")


def scores(sde, d):
    """``(label, score)`` rows for dimension ``d``: a Gaussian-mixture score, and for large ``d``
    also the cheapest exact score, that of N(0, I) data (``p_t = N(0, I)`` under the VP SDE)."""
    g = torch.Generator().manual_seed(1)
    if d < 16:  # 8 modes on a circle in the first two coordinates; d >= 2
        angles = torch.arange(8) * (2 * math.pi / 8)
        means = 4 * torch.stack([angles.cos(), angles.sin()], 1)
        means = torch.cat([means, torch.zeros(8, d - 2)], 1)
        return [("GM K=8, iso cov", sdegen.GaussianMixture(means, 0.05).score_fn(sde))]
    means = 2 * torch.randn(2, d, generator=g)
    covs = 0.05 + 0.5 * torch.rand(2, d, generator=g)
    gm = sdegen.GaussianMixture(means, covs).score_fn(sde)
    return [("GM K=2, diag cov", gm), ("N(0,I): -x", lambda x, t: -x)]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny run: batch 64, 20 steps, 3 rounds")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--dims", type=int, nargs="+", default=[2, 3072])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--repeats", type=int, default=15, help="timed rounds per row, at most")
    p.add_argument("--budget", type=float, default=30, help="seconds per row; at least 3 rounds")
    p.add_argument("--stat", choices=["median", "min"], default="median")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--target", type=float, default=1.15, help="sample / hand-loop ratio goal")
    args = p.parse_args()
    if args.quick:
        args.batch, args.steps, args.repeats = 64, 20, 3
    torch.set_num_threads(args.threads)
    stat = statistics.median if args.stat == "median" else min
    sde = sdegen.VPSDE()
    paths = {"hand": hand_loop, "sample": sdegen_path, "interval": interval_path}

    print(
        f"# torch {torch.__version__}, torchsde {torchsde.__version__}, threads {args.threads}, "
        f"batch {args.batch}, float32, VPSDE, {args.stat} of <= {args.repeats} rounds\n"
    )
    print(
        "| d | score | steps | hand loop (ms) | sdegen.sample (ms) | ratio | "
        "BrownianInterval path (ms) | ratio | ≤ target | peak extra MiB (hand/sample/BI) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    checks = []
    for d in args.dims:
        shape = (args.batch, d)
        for label, score in scores(sde, d):
            runs = {k: partial(fn, sde, score, shape, args.steps) for k, fn in paths.items()}
            t0 = time.perf_counter()
            outs = {k: run() for k, run in runs.items()}  # warm-up
            warm = time.perf_counter() - t0
            rounds = min(args.repeats, max(3, int(args.budget / warm)))
            times = {k: [] for k in runs}
            for _ in range(rounds):  # interleaved, so drifts in machine load hit all alike
                for k, run in runs.items():
                    t0 = time.perf_counter()
                    run()
                    times[k].append(1e3 * (time.perf_counter() - t0))
            ms = {k: stat(v) for k, v in times.items()}
            mem = "/".join(f"{peak_extra_mib(run):.1f}" for run in runs.values())
            r_s, r_i = ms["sample"] / ms["hand"], ms["interval"] / ms["hand"]
            ok = "yes" if r_s <= args.target else "**no**"
            print(
                f"| {d} | {label} | {args.steps} | {ms['hand']:.1f} | {ms['sample']:.1f} | "
                f"{r_s:.2f} | {ms['interval']:.1f} | {r_i:.2f} | {ok} | {mem} |"
            )
            diff = (outs["hand"] - outs["sample"]).abs().max().item()
            checks.append(f"d={d}, {label}: max |hand - sample| = {diff:.1e} ({rounds} rounds)")
    print(f"\ntarget: sdegen.sample / hand loop ≤ {args.target}")
    print("check (same random numbers, so only rounding differs):\n  " + "\n  ".join(checks))


if __name__ == "__main__":
    main()
