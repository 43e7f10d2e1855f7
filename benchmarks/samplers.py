"""Few-step and stochastic samplers on an 8-component Gaussian mixture in d = 64, exact score.

Two SDEs with the same σ = s/m range [0.002, σ_max]: the EDM/VE setting (``VESDE(0.002, 80)``
with ``t_min`` where ``s(t_min) = 0.002``) and the linear VP SDE (``t_min`` where σ = 0.002,
σ_max ≈ 152). For NFE 10, 20, 50:

- deterministic samplers: path error, the RMS over all coordinates of the difference to a
  converged probability-flow solve from the same noise (torchdiffeq dopri5, rtol = atol = 1e-10);
- stochastic samplers: sliced Wasserstein distance (``--projections`` random directions, W2 per
  direction from sorted samples) between the samples and ``--batch`` exact samples of p_{t_min},
  next to the floor, the same distance between two independent exact sample sets;
- wall time, and the share of it spent outside the score (timed by wrapping the score).

Prints a Markdown table and writes a log–log error-vs-NFE figure (``--figure``).
Targets: path error ≤ 0.05 / 0.01 / 1e-3 at 10 / 20 / 50 NFE; stochastic SWD within 15% of the
floor at 20 NFE; time outside the score ≤ 15% at d = 64, batch 2000.

Run:  python benchmarks/samplers.py            (default: batch 2000, one thread; ~3-4 minutes)
      python benchmarks/samplers.py --quick    (batch 500)
"""

from __future__ import annotations

import argparse
import math
import time

import torch

import sdegen
from sdegen.sampling import methods

F64 = torch.float64
DETERMINISTIC = ["ode_rk4", "ddim", "dpmpp_2m", "dpmpp_3m", "edm_heun", "ipndm", "unipc"]
STOCHASTIC = ["ancestral", "sde_dpmpp_2m", "pc_reverse_diffusion", "euler"]
NFES = [10, 20, 50]


def mixture(d: int = 64, k: int = 8, seed: int = 0) -> sdegen.GaussianMixture:
    """8 components, means ~ N(0, I), per-coordinate variances in [0.02, 0.3], unequal weights."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(k, d, generator=g, dtype=F64)
    covs = 0.02 + 0.28 * torch.rand(k, d, generator=g, dtype=F64)
    w = 0.5 + torch.rand(k, generator=g, dtype=F64)
    return sdegen.GaussianMixture(means, covs, w / w.sum())


def problems() -> dict[str, sdegen.AbstractLinearSDE]:
    """VE with σ ∈ [0.002, 80] and VP with σ_min = 0.002; t_min found from σ(t)."""
    ve = sdegen.VESDE(sigma_min=0.002, sigma_max=80.0, t_min=math.log(2) / (2 * math.log(4e4)))
    vp = sdegen.VPSDE()
    from sdegen.sampling.grids import MarginalCoefficients

    t_min = float(MarginalCoefficients(vp).time_of_sigma(torch.tensor(0.002)))
    return {"VE": ve, "VP": sdegen.VPSDE(t_min=t_min)}


class TimedScore:
    """The exact score, timing its own calls."""

    def __init__(self, score):
        self.score, self.seconds = score, 0.0

    def __call__(self, x, t):
        t0 = time.perf_counter()
        out = self.score(x, t)
        self.seconds += time.perf_counter() - t0
        return out


def reference(sde, score, x_T):
    ode = sdegen.ProbabilityFlowODE(sde, score)
    return ode.solve(x_T, [sde.T, sde.t_min], rtol=1e-10, atol=1e-10)[-1], ode.nfe


def sliced_w2(a: torch.Tensor, b: torch.Tensor, directions: torch.Tensor) -> float:
    """sqrt(mean over directions of W2² of the 1-D projections), equal sample sizes."""
    pa, pb = (a @ directions).sort(0).values, (b @ directions).sort(0).values
    return float(((pa - pb) ** 2).mean().sqrt())


def run(args) -> list[dict]:
    gm = mixture()
    rows = []
    for sde_name, sde in problems().items():
        exact = gm.score_fn(sde)
        law = gm.marginal(sde, sde.t_min)
        g = torch.Generator().manual_seed(args.seed)
        directions = torch.randn(64, args.projections, generator=g, dtype=F64)
        directions /= directions.norm(dim=0)
        truth = law.sample(args.batch, g, dtype=F64)
        floor = sliced_w2(truth, law.sample(args.batch, g, dtype=F64), directions)
        x_T = sde.prior_sample((args.batch, 64), g, dtype=F64)
        t0 = time.perf_counter()
        ref, ref_nfe = reference(sde, exact, x_T)
        print(
            f"# {sde_name}: reference dopri5 1e-10, {ref_nfe} NFE, {time.perf_counter() - t0:.1f} s"
        )
        for name in DETERMINISTIC + STOCHASTIC:
            spec = methods()[name]
            for nfe in NFES:
                score = TimedScore(exact)
                gen = torch.Generator().manual_seed(args.seed + 1)
                t0 = time.perf_counter()
                res = sdegen.sample(
                    sde, score, (args.batch, 64), method=name, nfe=nfe, x_T=x_T, generator=gen
                )
                wall = time.perf_counter() - t0
                if spec.deterministic:
                    err = float(((res.samples - ref) ** 2).mean().sqrt())
                else:
                    err = sliced_w2(res.samples, truth, directions)
                rows.append(
                    dict(
                        sde=sde_name, method=name, kind=spec.kind, nfe=res.nfe, budget=nfe,
                        error=err, floor=floor, wall=wall, outside=1 - score.seconds / wall,
                    )
                )  # fmt: skip
    return rows


def target(row) -> str:
    if row["kind"] == "ode":
        goal = {10: 0.05, 20: 0.01, 50: 1e-3}[row["budget"]]
        return "yes" if row["error"] <= goal else "no"
    if row["budget"] != 20:
        return ""
    return "yes" if row["error"] <= 1.15 * row["floor"] else "no"


def table(rows) -> None:
    print("\n| SDE | method | NFE | path error / SWD | SWD floor | target | wall (s) | outside |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        floor = "" if r["kind"] == "ode" else f"{r['floor']:.4f}"
        print(
            f"| {r['sde']} | `{r['method']}` | {r['nfe']} | {r['error']:.2e} | {floor} | "
            f"{target(r)} | {r['wall']:.2f} | {100 * r['outside']:.0f}% |"
        )


def figure(rows, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sdes = sorted({r["sde"] for r in rows})
    fig, axes = plt.subplots(2, len(sdes), figsize=(5 * len(sdes), 8), squeeze=False)
    for col, sde in enumerate(sdes):
        for row, kind in enumerate(["ode", "sde"]):
            ax = axes[row, col]
            sub = [r for r in rows if r["sde"] == sde and r["kind"] == kind]
            for name in dict.fromkeys(r["method"] for r in sub):
                pts = [(r["nfe"], r["error"]) for r in sub if r["method"] == name]
                ax.loglog(*zip(*pts, strict=True), "o-", label=name)
            if kind == "ode":
                ax.loglog(NFES, [0.05, 0.01, 1e-3], "k--", label="target")
                ax.set_ylabel("path error (RMS)")
            else:
                ax.axhline(sub[0]["floor"], color="k", ls="--", label="floor")
                ax.set_ylabel("sliced W2 to exact samples")
            ax.set_xlabel("NFE")
            ax.set_title(f"{sde}: {'deterministic' if kind == 'ode' else 'stochastic'}")
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"\nfigure: {path}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--batch", type=int, default=2000)
    p.add_argument("--projections", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--figure", default="samplers.png")
    p.add_argument("--quick", action="store_true", help="batch 500")
    p.add_argument("--fit", action="store_true", help="fit the optimised schedules instead")
    p.add_argument("--fit-batch", type=int, default=1000)
    p.add_argument("--fit-batches", type=int, default=2)
    p.add_argument("--fit-iters", type=int, default=40)
    args = p.parse_args()
    if args.fit:
        torch.set_num_threads(args.threads)
        return fit(args)
    if args.quick:
        args.batch = 500
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    rows = run(args)
    table(rows)
    figure(rows, args.figure)
    print(f"total {time.perf_counter() - t0:.0f} s, batch {args.batch}, threads {args.threads}")


# Fitting the optimised step schedules -------------------------------------------------------


def _ipndm_edm(gm, xt, sigmas, order=4):
    """iPNDM on dx̃/dσ = (x̃ - D)/σ for the mixture's exact EDM denoiser, differentiable in the
    σ grid (the same steps as sdegen.sampling.fewstep.ipndm)."""
    from sdegen.sampling.fewstep import _ADAMS_BASHFORTH

    slopes = []
    ones = xt.new_ones(xt.shape[0])
    for i in range(len(sigmas) - 1):
        s2 = (sigmas[i] ** 2) * ones
        denoised = xt + s2[:, None] * gm._score(xt, ones, None, s2)
        slopes = [(xt - denoised) / sigmas[i], *slopes][:order]
        coef = _ADAMS_BASHFORTH[min(order, i + 1)]
        xt = xt + (sigmas[i + 1] - sigmas[i]) * sum(
            c * e for c, e in zip(coef, slopes, strict=False)
        )
    return xt


def fit(args) -> None:
    """Fit the warp v (log σ = log σ_max + v (log σ_min - log σ_max)) of an N-step iPNDM-4 grid by
    L-BFGS on the squared path error against converged solves, on the VE problem, with training
    noise from seeds 1000 + b (b = 0 .. --fit-batches - 1); report the error on held-out seeds."""
    gm = mixture()
    sde = problems()["VE"]
    exact = gm.score_fn(sde)
    sig_min, sig_max = 0.002, 80.0

    def batch(seed):
        x_T = sde.prior_sample((args.fit_batch, 64), torch.Generator().manual_seed(seed), dtype=F64)
        ref = sdegen.sample(sde, exact, x_T.shape, method="unipc", steps=400,
                            time_grid="logsnr", x_T=x_T).samples  # fmt: skip
        return x_T, ref

    train = [batch(1000 + b) for b in range(args.fit_batches)]
    held = [batch(2000 + b) for b in range(2)]
    out = {}
    for steps in NFES:
        from sdegen.sampling.grids import sigma_grid

        init = sigma_grid("rho", steps, sig_min, sig_max, 7.0).log()
        v0 = (init - math.log(sig_max)) / (math.log(sig_min) - math.log(sig_max))
        logits = torch.log(v0.diff()).clone().requires_grad_(True)

        def sigmas_of(logits):
            v = torch.cat([logits.new_zeros(1), torch.cumsum(torch.softmax(logits, 0), 0)])
            return torch.exp(math.log(sig_max) + v * (math.log(sig_min) - math.log(sig_max))), v

        def loss_on(data, logits):
            sig, _ = sigmas_of(logits)
            errs = [((_ipndm_edm(gm, x_T, list(sig)) - ref) ** 2).mean() for x_T, ref in data]
            return torch.stack(errs).mean()

        opt = torch.optim.LBFGS(
            [logits], lr=0.5, max_iter=args.fit_iters, line_search_fn="strong_wolfe"
        )

        def closure(opt=opt, logits=logits):
            opt.zero_grad()
            loss = loss_on(train, logits)
            loss.backward()
            return loss

        with torch.no_grad():
            before = float(loss_on(held, logits).sqrt())
        opt.step(closure)
        with torch.no_grad():
            after_train = float(loss_on(train, logits).sqrt())
            after = float(loss_on(held, logits).sqrt())
            v = sigmas_of(logits)[1]
        out[steps] = [round(float(x), 5) for x in v]
        out[steps][-1] = 1.0
        sig = [round(float(s), 4) for s in sigmas_of(logits)[0]]
        print(
            f"N = {steps}: held-out path error rho=7 {before:.3e} -> fitted {after:.3e} "
            f"(train {after_train:.3e}); σ = {sig}"
        )
    print("OPTIMISED_SCHEDULES = {")
    for k, v in out.items():
        print(f"    {k}: {v},")
    print("}")


if __name__ == "__main__":
    main()
