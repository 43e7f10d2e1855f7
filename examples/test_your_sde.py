"""Test your own SDE with sdegen.testing: a user-written linear SDE, checked five ways.

The SDE ``dx = -x dt + sqrt(2) e^t dw`` has ``m(t) = e^{-t}`` and, from x_0 at t = 0,

    s(t)^2 = m(t)^2 ∫_0^t 2 e^{2u} / m(u)^2 du = e^{-2t} (e^{4t} - 1) / 2 = sinh(2t).

``--bug`` plants a mistake a person could make when deriving this by hand:

- ``start``: ``s^2 = sinh(2t) + 0.05 e^{-2t}`` — solves the same variance ODE, so the
  Fokker–Planck residual cannot see it; the t -> 0 limit check does.
- ``variance``: ``s^2 = 1.02 sinh(2t)`` — a 2% error; Fokker–Planck sees it at once.
- ``drift``: the drift's sign flipped in ``drift()`` while the kernel is unchanged.

Run:  python examples/test_your_sde.py [--bug start|variance|drift] [--quick]
"""

from __future__ import annotations

import argparse
import math

import torch

import sdegen
from sdegen.testing import (
    check_chapman_kolmogorov,
    check_marginal_limits,
    check_score,
    check_transition_kernel,
    fokker_planck_residual,
    linear_kernel,
)


class GrowingNoiseSDE(sdegen.AbstractLinearSDE):
    """``dx = -x dt + sqrt(2) e^t dw``; kernel ``N(e^{-t} x_0, sinh(2t) I)``; prior
    ``N(0, (e^{-2T} + sinh(2T)) I)``."""

    def __init__(self, bug: str | None = None, T: float = 1.0) -> None:
        super().__init__(t_min=1e-4, T=T)
        self.bug = bug
        self.prior_std = math.sqrt(math.exp(-2 * T) + math.sinh(2 * T))

    def drift_coeff(self, t):
        return torch.full_like(t, 1.0 if self.bug == "drift" else -1.0)

    def diffusion(self, t):
        return math.sqrt(2.0) * torch.exp(t)

    def log_mean_coeff(self, t):
        return -t

    def marginal_var(self, t):
        var = torch.sinh(2 * t)
        if self.bug == "start":
            return var + 0.05 * torch.exp(-2 * t)
        if self.bug == "variance":
            return 1.02 * var
        return var


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bug", choices=["start", "variance", "drift"], default=None)
    parser.add_argument("--quick", action="store_true", help="smaller Monte-Carlo sizes")
    args = parser.parse_args()
    torch.set_num_threads(1)
    n = 4000 if args.quick else 40_000
    sde = GrowingNoiseSDE(args.bug)
    data = sdegen.GaussianMixture(torch.tensor([[-1.0, 0.5], [1.0, -0.5]]), 0.1)
    gen = torch.Generator().manual_seed(0)
    x = data.sample(64, gen, dtype=torch.float64)
    t = sde.t_min + (sde.T - sde.t_min) * torch.rand(64, generator=gen, dtype=torch.float64)
    x = sde.perturb(x, t, torch.randn(x.shape, generator=gen, dtype=torch.float64))

    results = []
    fp = float(fokker_planck_residual(sde, data.log_prob_fn(sde), x, t).max())
    results.append(("Fokker–Planck residual (max, tol 1e-10)", f"{fp:.1e}", fp <= 1e-10))
    limits = check_marginal_limits(sde, data, end_kl_tol=1e-1)
    results.append(("limits t -> 0 and t -> T", str(limits), limits.passed))
    kernel = check_transition_kernel(
        sde, sde, torch.tensor([1.0, -1.0]), 0.5, n=n, steps=500, generator=gen
    )
    results.append((f"kernel vs torchsde simulation (n = {n})", str(kernel), kernel.passed))
    ck = check_chapman_kolmogorov(
        linear_kernel(sde), 0.1, 0.4, 0.8, x=torch.tensor([1.0, -1.0]), n=n, generator=gen
    )
    results.append(("Chapman–Kolmogorov (Monte Carlo)", str(ck), ck.passed))
    score = check_score(data.score_fn(sde), data.log_prob_fn(sde), x, t)
    results.append(("mixture score vs autograd / finite differences", str(score), score.passed))

    print(f"SDE: dx = -x dt + sqrt(2) e^t dw, planted bug: {args.bug or 'none'}")
    for name, detail, passed in results:
        print(f"  [{'pass' if passed else 'FAIL'}] {name}: {detail}")
    failed = [name for name, _, passed in results if not passed]
    print("verdict:", "all checks pass" if not failed else f"{len(failed)} check(s) failed")
    # Exit 0 when the verdict is the expected one: clean SDE passes, a planted bug is caught.
    return 0 if bool(failed) == bool(args.bug) else 1


if __name__ == "__main__":
    raise SystemExit(main())
