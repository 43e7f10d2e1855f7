"""A worked example of a non-linear user SDE: the overdamped double well.

Each coordinate of ``x`` follows

    dx = (x - x^3) dt + sqrt(2 eps) dw,

Langevin dynamics in the potential ``U(x) = x^4/4 - x^2/2`` at temperature ``eps``. Its drift is
not affine, so there is no closed-form transition kernel, but its stationary law is known:

    p(x) = exp((x^2/2 - x^4/4) / eps) / Z,     Z = ∫ exp((x^2/2 - x^4/4) / eps) dx,

independently in every coordinate, with stationary score ``∇ log p = (x - x^3) / eps``.

The script

1. defines the SDE by subclassing :class:`sdegen.AbstractSDE` (drift, diffusion, and the
   stationary law as the prior: exact inverse-CDF sampling, log-density normalised by quadrature);
2. checks with :func:`sdegen.testing.assert_fokker_planck` that the stationary density solves the
   Fokker–Planck equation (to 1e-10 in float64), and that the check fails for a wrong density;
3. simulates the forward SDE from a point mass with :func:`sdegen.testing.simulate_forward` up to
   ``T`` and compares the samples with the stationary law (Kolmogorov–Smirnov);
4. samples with :func:`sdegen.sample`: started from the stationary law, the reverse-time SDE with
   the stationary score, ``dx = [f - g^2 ∇log p] dt + g dw̄``, has reverse drift
   ``(x - x^3) - 2 eps (x - x^3) / eps = -(x - x^3)``: in reverse time it is the forward SDE
   again, so it stays stationary and the samples must follow ``p`` (KS). As a negative control
   the score plus a constant 0.2 is run too; its samples must be rejected;
5. optionally draws the histograms against the density (``--out fig.png``).

KS tests use the exact 1-D stationary CDF per coordinate (coordinates are independent) at
family-wise level 1e-3 (Bonferroni). Euler–Maruyama has weak order 1, so the simulated laws are
off by O(dt); with the default step the bias is far below what 4000 samples can resolve.

Mass moves between the wells slowly: the spectral gap of the generator is about 0.19 at
eps = 0.25, so at T = 30 a point mass in one well has relaxed to within exp(-0.19 * 30) ≈ 4e-3.
The gap closes like exp(-1/(4 eps)) as eps -> 0 (Kramers), so at, say, eps = 0.05 the wells do
not mix by T = 30: the forward check then fails, rightly, and so does the control (a sampler that
cannot move mass between wells cannot show the tilt). Raise ``--T`` (and ``--steps``) with it.

Run:  python examples/double_well.py                 (a few seconds on one CPU core)
      python examples/double_well.py --out dw.png    (also save a figure; needs matplotlib)
      python examples/double_well.py --quick         (tiny, for tests)

Exits with status 1 if any check fails.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np
import torch
from scipy import integrate, stats

import sdegen
import sdegen.testing

ALPHA = 1e-3  # family-wise level of the KS tests


class DoubleWell(sdegen.AbstractSDE):
    """The double-well SDE ``dx = (x - x^3) dt + sqrt(2 eps) dw``, independently per coordinate.

    Stationary law: ``p(x) ∝ exp((x^2/2 - x^4/4) / eps)`` per coordinate, used as the prior
    ``p_T`` (the process is time-homogeneous, so ``t_min`` and ``T`` only set the time span).

    Arguments:
        eps: the temperature (> 0); the barrier between the wells at ``±1`` is ``1/4``.
        t_min, T: the time span of the SDE.
        grid_size: points of the 1-D grid on which the stationary CDF is tabulated for
            inverse-CDF sampling.
    """

    def __init__(
        self, eps: float = 0.25, t_min: float = 1e-3, T: float = 30.0, grid_size: int = 100_001
    ) -> None:
        super().__init__(t_min, T)
        if not eps > 0:
            raise ValueError(f"eps must be > 0; got {eps}")
        self.eps = float(eps)
        self.sigma = math.sqrt(2 * self.eps)
        # Work with the density relative to its peak, exp((phi(x) - 1/4) / eps) <= 1, which
        # is reached at x = ±1; the problem is symmetric, so integrate [0, 1] and [1, inf).
        peak = 0.25 / self.eps

        def rel_density(x):
            return math.exp(self.phi(x) / self.eps - peak)

        halves = [(0.0, 1.0), (1.0, math.inf)]
        quad = [integrate.quad(rel_density, a, b, epsabs=0.0, epsrel=1e-13)[0] for a, b in halves]
        self.log_norm = math.log(2 * sum(quad)) + peak  # log Z of one coordinate
        # The CDF on [-L, 0], where the density at -L is e^-40 of its peak; F(x) = 1 - F(-x)
        # gives the right half without the cancellation of 1 - F near 1.
        half_width = math.sqrt(1 + math.sqrt(160 * self.eps))
        self._grid = np.linspace(-half_width, 0.0, grid_size)
        dens = np.exp(self.phi(self._grid) / self.eps - peak)
        cum = integrate.cumulative_trapezoid(dens, self._grid, initial=0.0)
        self.grid_log_norm = math.log(2 * cum[-1]) + peak  # the grid's own log Z, a cross-check
        self._cdf = cum / (2 * cum[-1])  # 0 at -L, exactly 1/2 at 0

    @staticmethod
    def phi(x):
        """``-U(x) = x^2/2 - x^4/4`` (numpy or torch)."""
        return x**2 / 2 - x**4 / 4

    def drift(self, x, t):
        return x - x**3

    def diffusion(self, t):
        return torch.full_like(t, self.sigma)

    def prior_sample(self, shape, generator=None, *, dtype=None, device=None):
        """Draws of the stationary law by inverting its CDF, tabulated finely enough that the
        quantiles are exact to ~1e-9; uniforms come from ``generator`` (on its device)."""
        shape = tuple(shape)
        src = generator.device if generator is not None else torch.device("cpu")
        u = torch.rand(shape, generator=generator, dtype=torch.float64, device=src).cpu().numpy()
        left = np.interp(np.minimum(u, 1 - u), self._cdf, self._grid)  # a quantile <= 0
        x = np.where(u < 0.5, left, -left)
        dtype = torch.get_default_dtype() if dtype is None else dtype
        return torch.as_tensor(x, dtype=dtype, device=src if device is None else device)

    def prior_log_prob(self, x):
        d = x[0].numel()
        return (self.phi(x) / self.eps).flatten(1).sum(1) - d * self.log_norm

    def stationary_score(self, x, t):
        """``∇ log p(x) = (x - x^3) / eps``: the exact score of ``p_t`` when ``p_0 = p``."""
        return (x - x**3) / self.eps

    def second_moment(self):
        """``E[x^2]`` of one coordinate under the stationary law (scipy quad)."""

        def integrand(x):  # x^2 p(x) on x > 0, doubled by symmetry
            return 2 * x * x * math.exp(self.phi(x) / self.eps - self.log_norm)

        halves = [(0.0, 1.0), (1.0, math.inf)]
        return sum(integrate.quad(integrand, a, b, epsrel=1e-12)[0] for a, b in halves)

    def tilted_right_mass(self, c):
        """``P(x > 0)`` under the tilted law ``∝ p(x) exp(c x)`` (scipy quad)."""
        peak = 0.25 / self.eps

        def mass(a, b):
            return integrate.quad(
                lambda x: math.exp(self.phi(x) / self.eps - peak + c * x), a, b, epsrel=1e-12
            )[0]

        right = mass(0.0, 1.0) + mass(1.0, math.inf)
        return right / (right + mass(-1.0, 0.0) + mass(-math.inf, -1.0))

    def stationary_cdf(self, v):
        """The exact 1-D stationary CDF (numpy in, numpy out)."""
        v = np.asarray(v, dtype=np.float64)
        left = np.interp(-np.abs(v), self._grid, self._cdf)
        return np.where(v <= 0, left, 1 - left)

    def stationary_density(self, v):
        """The normalised 1-D stationary density (numpy in, numpy out)."""
        return np.exp(self.phi(np.asarray(v, dtype=np.float64)) / self.eps - self.log_norm)


def ks_check(sde, samples, *, control=False):
    """KS test of every coordinate of ``samples`` ``(n, d)`` against the stationary CDF, each at
    level ``ALPHA / d``. Returns a report line and whether the check passed: for a ``control``,
    passing means the samples were rejected."""
    x = samples.detach().reshape(samples.shape[0], -1).double().cpu().numpy()
    bad = int((~np.isfinite(x)).sum())
    if bad:
        return f"{bad} non-finite values: Euler–Maruyama diverged (raise --steps) -> FAIL", False
    results = [stats.kstest(x[:, i], sde.stationary_cdf) for i in range(x.shape[1])]
    worst = min(results, key=lambda r: r.pvalue)
    accepted = worst.pvalue >= ALPHA / x.shape[1]
    if control:
        verdict = "NOT rejected (FAIL)" if accepted else "rejected, as it should be"
    else:
        verdict = "ok" if accepted else "FAIL"
    text = (
        f"KS vs stationary law (worst of {x.shape[1]}): D = {worst.statistic:.4f}, "
        f"p = {worst.pvalue:.3g} -> {verdict}"
    )
    return text, accepted != control


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, help="number of samples (default 4000; 500 with --quick)")
    p.add_argument(
        "--steps",
        type=int,
        help="Euler–Maruyama steps over [t_min, T], forward and reverse "
        "(default 3000; 750 with --quick)",
    )
    p.add_argument("--eps", type=float, default=0.25, help="temperature (default 0.25)")
    p.add_argument("--dim", type=int, default=2, help="coordinates per sample (default 2)")
    p.add_argument("--T", type=float, default=30.0, help="time horizon (default 30)")
    p.add_argument("--x0", type=float, default=1.0, help="forward start point (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="save a figure (PNG) here; default: no figure")
    p.add_argument("--quick", action="store_true", help="tiny, fast run (n=500, steps=750)")
    args = p.parse_args(argv)
    if args.n is None:
        args.n = 500 if args.quick else 4000
    if args.steps is None:
        args.steps = 750 if args.quick else 3000
    if args.n < 2 or args.steps < 1 or args.dim < 1:
        p.error("--n must be >= 2, --steps and --dim >= 1")
    return args


def save_figure(path, sde, x0, forward, reverse, wrong, delta):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lim = 2.2
    v = np.linspace(-lim, lim, 801)
    dens = sde.stationary_density(v)
    bins = np.linspace(-lim, lim, 61)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    panels = [
        (axes[0], forward, f"forward SDE from δ({x0:g}) to t = T = {sde.T:g}"),
        (axes[1], reverse, "sdegen.sample with the stationary score"),
    ]
    for ax, samples, title in panels:
        ax.hist(samples.flatten().numpy(), bins=bins, density=True, alpha=0.5, label="samples")
        ax.plot(v, dens, "k", lw=1.5, label="stationary density")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("x (all coordinates)")
    axes[0].axvline(x0, color="C3", ls="--", lw=1, label="start point")
    axes[1].hist(
        wrong.flatten().numpy(),
        bins=bins,
        density=True,
        histtype="step",
        color="C3",
        label=f"score + {delta:g} (control)",
    )
    axes[0].set_ylabel("density")
    for ax in axes:
        ax.set_xlim(-lim, lim)
        ax.legend(fontsize=8, loc="upper center")
    fig.suptitle(
        f"dx = (x - x³) dt + √(2ε) dw,  ε = {sde.eps:g}: samples vs p(x) ∝ exp((x²/2 - x⁴/4)/ε)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    dtype = torch.float64
    sde = DoubleWell(eps=args.eps, T=args.T)
    n, d = args.n, args.dim
    dt = (sde.T - sde.t_min) / args.steps
    failures = []
    print(f"{sde!r}: dx = (x - x^3) dt + sqrt(2 eps) dw, eps = {sde.eps:g}, d = {d}")
    print(f"n = {n} samples, {args.steps} Euler steps (dt = {dt:.4g}), seed {args.seed}")

    # 1. The prior: normalising constant by quadrature, cross-checked on the sampling grid.
    rel = abs(math.expm1(sde.grid_log_norm - sde.log_norm))
    print(
        f"\n[1] log Z per coordinate = {sde.log_norm:.12f} (scipy quad); "
        f"sampling grid agrees to {rel:.1e}"
    )
    if not rel < 1e-8:
        failures.append("normalising constant")
    # ... and prior_sample against the second moment by quadrature.
    gen = torch.Generator().manual_seed(args.seed + 4)
    draws = sde.prior_sample((n, d), gen, dtype=dtype).flatten().numpy()
    m2 = sde.second_moment()
    z = (np.mean(draws**2) - m2) / (np.std(draws**2, ddof=1) / math.sqrt(draws.size))
    print(f"    prior_sample: mean x^2 = {np.mean(draws**2):.4f} vs {m2:.4f} (quad), z = {z:+.2f}")
    if not abs(z) < 4:
        failures.append("prior_sample")

    # 2. Fokker–Planck: the stationary density must make the residual vanish.
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.cat(
        [
            sde.prior_sample((256, d), gen, dtype=dtype),
            torch.linspace(-2.5, 2.5, 101, dtype=dtype)[:, None].expand(101, d),
        ]
    )
    t = sde.t_min + (sde.T - sde.t_min) * torch.rand(x.shape[0], generator=gen, dtype=dtype)

    def log_p(x, t):
        return sde.prior_log_prob(x)

    try:
        res = sdegen.testing.assert_fokker_planck(sde, log_p, x, t, tol=1e-10)
        print(f"[2] Fokker–Planck residual of p: max {float(res.max()):.2e} <= 1e-10: ok")
    except AssertionError as err:
        print(f"[2] Fokker–Planck FAILED: {err}")
        failures.append("Fokker–Planck")
    wrong_fp = DoubleWell(eps=1.2 * sde.eps, T=sde.T)
    res_wrong = sdegen.testing.fokker_planck_residual(
        sde, lambda x, t: wrong_fp.prior_log_prob(x), x, t
    )
    print(
        f"    control: the density at eps' = {wrong_fp.eps:g} has residual up to "
        f"{float(res_wrong.max()):.2f}"
    )
    if not float(res_wrong.max()) > 1e-3:
        failures.append("Fokker–Planck control")
    with torch.enable_grad():
        xg = x.clone().requires_grad_(True)
        (auto_score,) = torch.autograd.grad(sde.prior_log_prob(xg).sum(), xg)
    score_err = float((auto_score - sde.stationary_score(x, t)).abs().max())
    print(f"    stationary_score = autograd ∇ prior_log_prob to {score_err:.1e}")
    if not score_err < 1e-10:
        failures.append("stationary score")
    print(f"    ({time.perf_counter() - t0:.2f} s)")

    # 3. Forward simulation from a point mass relaxes to the stationary law.
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(args.seed + 1)
    x_start = torch.full((n, d), args.x0, dtype=dtype)
    forward = sdegen.testing.simulate_forward(
        sde, x_start, 0.0, sde.T, steps=args.steps, generator=gen
    )
    text, ok = ks_check(sde, forward)
    frac = float((forward > 0).double().mean())
    print(
        f"\n[3] forward SDE from x = {args.x0:g} to t = {sde.T:g}: "
        f"{100 * frac:.1f}% of coordinates in the right well (stationary: 50%)"
    )
    print(f"    {text} ({time.perf_counter() - t0:.2f} s)")
    if not ok:
        failures.append("forward simulation")

    # 4. sample(): the reverse SDE with the stationary score keeps the stationary law.
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(args.seed + 2)
    result = sdegen.sample(
        sde,
        sde.stationary_score,
        (n, d),
        method="euler",
        steps=args.steps,
        generator=gen,
        dtype=dtype,
    )
    text, ok = ks_check(sde, result.samples)
    print(
        f"\n[4] sdegen.sample(method='euler', steps={args.steps}) with score (x - x^3)/eps,\n"
        f"    x_T ~ prior, from T = {sde.T:g} to t_min = {sde.t_min:g}: nfe = {result.nfe}"
    )
    print(f"    {text} ({time.perf_counter() - t0:.2f} s)")
    if not ok:
        failures.append("sample() with the stationary score")
    # Control: a score off by a constant delta must be rejected. The reverse drift gains
    # g^2 delta, which tilts the law the sampler keeps to p(x) exp(2 delta x): more mass in the
    # right well.
    delta = 0.2
    gen = torch.Generator().manual_seed(args.seed + 3)
    wrong = sdegen.sample(
        sde,
        lambda x, t: sde.stationary_score(x, t) + delta,
        (n, d),
        method="euler",
        steps=args.steps,
        generator=gen,
        dtype=dtype,
    ).samples
    text, ok = ks_check(sde, wrong, control=True)
    frac = float((wrong > 0).double().mean())
    expected = sde.tilted_right_mass(2 * delta)
    print(
        f"    control: score + {delta:g}: {100 * frac:.1f}% in the right well (its tilted law "
        f"p(x) exp({2 * delta:g} x): {100 * expected:.1f}%)"
    )
    print(f"    {text}")
    if not ok:
        failures.append("sample() control")

    if args.out is not None:
        save_figure(args.out, sde, args.x0, forward, result.samples, wrong, delta)
        print(f"\nfigure saved to {args.out}")

    total = time.perf_counter() - start
    if failures:
        print(f"\nFAILED: {', '.join(failures)} ({total:.1f} s)")
        return 1
    print(f"\nall checks passed ({total:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
