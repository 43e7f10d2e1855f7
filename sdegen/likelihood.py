"""Exact log-likelihood through the probability-flow ODE, bits/dim, and the diffusion ELBO."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
import torchdiffeq
from torch import Tensor

from ._utils import append_dims, batch_sum
from ._validation import check_scalar, check_tensor
from .reverse import _ADAPTIVE_ODE_METHODS, CountedScore, ScoreFn, _check_sde

_DIVERGENCES = ("auto", "exact", "hutchinson")
_PROBES = ("rademacher", "gaussian")
_NORMS = ("per_sample", "rms")
# "auto" uses the exact trace up to this dimension: d vector-Jacobian products per evaluation
# stay affordable there, and the estimate's noise (measured 0.03-0.15 nats/dim per point with
# one Rademacher probe at d = 64 and 16) would dominate any tolerance.
EXACT_MAX_DIM = 128
# The quadrature integrator's x-path tolerance and per-sample panel tolerance, relative to
# the requested (rtol, atol): measured on 8-component mixtures and an MLP score at d = 2 and 64.
# With Hutchinson the x-solve (forward passes only) is most of the cost and the x-path at the
# requested tolerance already keeps the solver error below the reference recipe's (measured,
# d = 784 MLP: 4.8e-6 nats/dim at 1e-5 and at 1e-6, for 103 against 175 x-evaluations).
_QUAD_X_TOL = {"exact": 1e-1, "hutchinson": 1.0}
# The panel tolerance is QUAD_TOL_FACTOR * atol * d nats per sample: with rtol = atol = 1e-5
# the reference recipe's own error was 5e-6 to 2e-5 nats/dim on the benchmark's problems, and
# |K15 - G7| overestimates the K15 error by 3x to 4000x there (measured with an exact path:
# d = 784 mixture, 1 / 2 / 4 / 8 panels: errors 3.3e-4 / 1.2e-4 / 1.0e-5 / 2.4e-8 nats/dim,
# |K15 - G7| 1.0e-3 / 7.3e-4 / 2.0e-4 / 1.4e-5; MLP, 1 panel: 8e-11 against 3.3e-7).
QUAD_TOL_FACTOR = 1.0
# Bisection levels below the initial panels; the main x-solve stores the nodes of the first
# _QUAD_STORED_LEVELS levels, deeper nodes come from one re-solve per last-stored-level panel.
QUAD_MAX_DEPTH = 3
_QUAD_STORED_LEVELS = 2
# Default initial panels: with the exact trace each node costs d vector-Jacobian products, and
# 3 panels met the tolerance without a split on the benchmark's mixtures and MLPs at d = 64.
# With Hutchinson the x-solve (forward passes only) dominates and one panel of 15 nodes was
# enough for an MLP score (quadrature error 8e-11 nats/dim); a mixture, whose integrand has
# a sharp feature where the components merge, is bisected where the certificate asks.
_QUAD_PANELS = {"exact": 3, "hutchinson": 1}
# Below this dimension the exact trace is cheap and the separate x-solve of the quadrature
# integrator costs more than it saves (d = 2: 0.6x the augmented solve's speed).
QUADRATURE_MIN_DIM = 16


@dataclasses.dataclass
class LikelihoodResult:
    """What :func:`log_likelihood` returns (all per sample, nats).

    Attributes:
        log_prob: ``log p_{t_min}(x)``, ``(batch,)``.
        prior_log_prob: ``log p_T(x_T)`` at the end of the flow, ``(batch,)``.
        delta_log_prob: ``∫_{t_min}^T ∇·f̃(x_t, t) dt``, ``(batch,)``; ``log_prob`` is the sum.
        std_error: Monte-Carlo standard error of ``log_prob`` over Hutchinson probes (``None``
            for the exact trace or a single probe).
        nfe: score evaluations made.
        divergence: ``"exact"`` or ``"hutchinson"`` (what ``"auto"`` chose).
        error_estimate: with ``integrator="quadrature"``, the per-sample certificate of the
            divergence integral: summed over the panels kept, ``|K15 - G7|`` or, where a panel
            was bisected, the gap between it and its halves (pessimistic; the error of the
            x-path is not in it).
    """

    log_prob: Tensor
    prior_log_prob: Tensor
    delta_log_prob: Tensor
    std_error: Tensor | None
    nfe: int
    divergence: str
    error_estimate: Tensor | None = None


def _per_sample_norm(z: Tensor) -> Tensor:
    # Each sample's own RMS error must meet the tolerance: a sample's accuracy then does not
    # depend on which other samples share its batch (only the shared step sizes do).
    return z.pow(2).mean(dim=1).sqrt().max()


def _rms_norm(z: Tensor) -> Tensor:
    return z.pow(2).mean().sqrt()


def _closed_form_divergence(sde, score: ScoreFn):
    """``score_and_divergence(x, t)`` when the (unwrapped) score offers one (a closed-form
    ground truth such as ``GaussianMixture.score_fn``) and the drift is affine, else ``None``."""
    fn = getattr(score, "score_and_divergence", None)
    if callable(fn) and getattr(sde, "has_marginal", False) and hasattr(sde, "drift_coeff"):
        return fn
    return None


def _flow_and_divergence(
    sde, score: CountedScore, x: Tensor, t: Tensor, probes: Tensor | None
) -> tuple[Tensor, Tensor]:
    """The probability-flow velocity ``f̃ = f - ½ g^2 score`` at ``(x, t)`` and its divergence:
    ``(batch, 1)`` exact (one vector-Jacobian product per dimension: on CPU the plain loop was
    faster than ``vmap`` or batched gradients), or ``(batch, K)`` Hutchinson estimates, one per
    probe."""
    batch = x.shape[0]
    closed_form = _closed_form_divergence(sde, score.score)
    if probes is None and closed_form is not None:
        # ∇·f̃ = d a(t) - ½ g^2 ∇·s for the affine drift a(t) x + b(t): no autograd at all.
        s, div_s = closed_form(x, t)
        score.nfe += 1
        g2 = sde.diffusion(t) ** 2
        v = sde.drift(x, t) - 0.5 * append_dims(g2, x.dim()) * s
        div = x[0].numel() * sde.drift_coeff(t) - 0.5 * g2 * div_s
        return v, div[:, None]
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        g2 = append_dims(sde.diffusion(t) ** 2, x.dim())
        v = sde.drift(x, t) - 0.5 * g2 * score(x, t)
        if probes is None:
            flat = v.reshape(batch, -1)
            div = torch.zeros(batch, dtype=x.dtype, device=x.device)
            for i in range(flat.shape[1]):
                (row,) = torch.autograd.grad(flat[:, i].sum(), x, retain_graph=True)
                div = div + row.reshape(batch, -1)[:, i]
            divs = div[:, None]
        else:
            cols = []
            for k, probe in enumerate(probes):
                last = k == len(probes) - 1
                (jv,) = torch.autograd.grad((v * probe).sum(), x, retain_graph=not last)
                cols.append(batch_sum(jv * probe))
            divs = torch.stack(cols, dim=1)
    return v.detach(), divs.detach()


class _AugmentedFlow(torch.nn.Module):
    """``d/dt (x, Δ_1..Δ_K) = (f̃, div_1 f̃, ..., div_K f̃)`` on a flat ``(batch, d + K)`` state."""

    def __init__(self, sde, score: CountedScore, event_shape, probes: Tensor | None) -> None:
        super().__init__()
        self.sde, self.score = sde, score
        self.event_shape = tuple(event_shape)
        self.d = math.prod(self.event_shape)
        self.probes = probes

    def forward(self, t: Tensor, state: Tensor) -> Tensor:
        batch = state.shape[0]
        tt = t.to(dtype=state.dtype, device=state.device).expand(batch)
        x = state[:, : self.d].reshape(batch, *self.event_shape)
        v, divs = _flow_and_divergence(self.sde, self.score, x, tt, self.probes)
        return torch.cat([v.reshape(batch, -1), divs], dim=1)


# 15-point Gauss–Kronrod rule on [-1, 1] with its embedded 7-point Gauss rule (QUADPACK's
# qk15 constants; the tests check the polynomial degrees they integrate exactly).
_XGK = (
    0.991455371120812639206854697526329,
    0.949107912342758524526189684047851,
    0.864864423359769072789712788640926,
    0.741531185599394439863864773280788,
    0.586087235467691130294144845693013,
    0.405845151377397166906606412076961,
    0.207784955007898467600689403773245,
    0.0,
)
_WGK = (
    0.022935322010529224963732008058970,
    0.063092092629978553290700663189204,
    0.104790010322250183839876322541518,
    0.140653259715525918745189590510238,
    0.169004726639267902826583426598550,
    0.190350578064785409913256402421014,
    0.204432940075298892414161999234649,
    0.209482141084727828012999174891714,
)
_WG = (
    0.129484966168869693270611432679082,
    0.279705391489276667901467771423780,
    0.381830050505118944950369775488975,
    0.417959183673469387755102040816327,
)


def kronrod15() -> tuple[Tensor, Tensor, Tensor]:
    """Nodes ``(15,)``, Kronrod weights ``(15,)`` and embedded Gauss weights ``(15,)`` (zero at
    the Kronrod-only nodes) on ``[-1, 1]``, float64."""
    nodes = torch.tensor(
        [-x for x in _XGK[:-1]] + [0.0] + list(_XGK[:-1])[::-1], dtype=torch.float64
    )
    wk = torch.tensor([*list(_WGK[:-1]), _WGK[-1], *list(_WGK[:-1])[::-1]], dtype=torch.float64)
    gauss = [*list(_WG[:-1]), _WG[-1], *list(_WG[:-1])[::-1]]
    wg = torch.zeros(15, dtype=torch.float64)
    wg[1::2] = torch.tensor(gauss, dtype=torch.float64)
    return nodes, wk, wg


def _quadrature_solve(sde, counted, x, start, probes, x_tol, quad_tol, panels):
    """x(t) by one forward-only solve; ∫ div f̃ dt by adaptive Gauss–Kronrod panels in
    v = sqrt(t) (the integrand behaves like t^(-1/2) near t_min for real networks): a panel is
    bisected while some sample's ``|K15 - G7|`` on it exceeds the panel's share (by width) of
    ``quad_tol`` nats, down to ``QUAD_MAX_DEPTH`` levels, for that sample only. The solve
    outputs the path at the nodes of the first ``_QUAD_STORED_LEVELS`` levels and at the edges
    of the finest panels (dense output, no extra steps); deeper nodes come from one forward-only
    solve across their ancestor at the last stored level, from its stored left edge, for the
    samples that need them, so memory stays that of these states. Returns the integral
    ``(batch, K)``, the per-sample certificate over the panels kept ``(batch,)``, and x_T."""
    nodes, wk, wg = kronrod15()
    v0, v1 = math.sqrt(start), math.sqrt(sde.T)
    depth, finest = QUAD_MAX_DEPTH, panels * 2**QUAD_MAX_DEPTH
    edges_v = torch.linspace(v0, v1, finest + 1, dtype=torch.float64)
    stored = []  # the nodes of levels 0 .. STORED_LEVELS - 1, level by level
    for level in range(min(_QUAD_STORED_LEVELS, depth + 1)):
        coarse = edges_v[:: 2 ** (depth - level)]
        mid, half = (coarse[1:] + coarse[:-1]) / 2, (coarse[1:] - coarse[:-1]) / 2
        stored.append((mid[:, None] + half[:, None] * nodes).flatten())
    # Output times: the stored nodes and the inner finest edges (a midpoint can be both).
    out_v = torch.unique(torch.cat([*stored, edges_v[1:-1]]))  # sorted

    def where(v: Tensor) -> Tensor:  # positions of v in the solver's output
        return torch.searchsorted(out_v, v) + 1

    ts = torch.cat([out_v.new_tensor([start]), out_v**2, out_v.new_tensor([sde.T])])
    flow = _VelocityOnly(sde, counted)

    def solve(x0, times, first_step=1e-3 * (sde.T - start)):
        options = {"step_t": times[-1:]}
        if first_step is not None:
            options["first_step"] = first_step
        with torch.no_grad():
            return torchdiffeq.odeint(
                flow, x0, times.to(x0.device), method="dopri5", rtol=x_tol, atol=x_tol,
                options=options,
            )  # fmt: skip

    path = solve(x, ts)
    node_pos = [where(v).tolist() for v in stored]
    edge_pos = where(edges_v[1:-1]).tolist()

    def edge_state(k: int) -> Tensor:  # x at edges_v[k]
        if k == 0:
            return x
        return path[-1] if k == finest else path[edge_pos[k - 1]]

    w_k, w_g = wk.to(x), wg.to(x)
    width = v1 - v0

    def panel_nodes(level: int, p: int) -> tuple[float, float, float, Tensor]:
        span = 2 ** (depth - level)  # finest panels per panel at this level
        a, b = float(edges_v[p * span]), float(edges_v[(p + 1) * span])
        h = (b - a) / 2
        return a, b, h, (a + b) / 2 + h * nodes

    top = len(stored)  # the first level whose nodes the main solve did not store
    deep_cache: dict[int, tuple[Tensor, Tensor, Tensor]] = {}  # ancestor -> (idx, v, path)

    def deep_states(level: int, p: int, idx: Tensor) -> list[Tensor]:
        """x at the nodes of a panel below the stored levels, for the samples ``idx``: one
        forward-only solve across its ancestor at the last stored level gives the nodes of all
        the levels below it (cached); later requests ask for subsets of the same samples."""
        anc = p >> (level - top + 1)
        if anc not in deep_cache:
            v_all = [
                panel_nodes(lv, q)[3]
                for lv in range(top, depth + 1)
                for q in range(anc << (lv - top + 1), (anc + 1) << (lv - top + 1))
            ]
            v_out = torch.unique(torch.cat(v_all))
            a, b = panel_nodes(top - 1, anc)[:2]
            times = torch.cat([v_out.new_tensor([a]), v_out, v_out.new_tensor([b])]) ** 2
            # torchdiffeq picks the first step (two evaluations) on this shorter span.
            out = solve(edge_state(anc * 2 ** (depth - top + 1))[idx], times, None)
            deep_cache[anc] = (idx, v_out, out)
        rows_idx, v_out, out = deep_cache[anc]
        rows = torch.searchsorted(rows_idx, idx).clamp(max=len(rows_idx) - 1)
        v_nodes = panel_nodes(level, p)[3]
        pos = torch.searchsorted(v_out, v_nodes).clamp(max=len(v_out) - 1)
        if not torch.equal(v_out[pos], v_nodes) or not torch.equal(rows_idx[rows], idx):
            raise RuntimeError("quadrature: a refined panel's nodes are not in the cached path")
        pos = (pos + 1).tolist()
        return [out[i][rows] for i in pos]

    def evaluate(level: int, p: int, idx: Tensor) -> tuple[Tensor, Tensor, float]:
        """K15 over panel p of ``level`` for the samples ``idx`` ``(n, K)``, its
        ``|K15 - G7|`` ``(n,)``, and the panel's share of the tolerance."""
        _, _, h, v_nodes = panel_nodes(level, p)
        if level < len(stored):
            states = [path[node_pos[level][15 * p + j]][idx] for j in range(15)]
        else:
            states = deep_states(level, p, idx)
        sub_probes = None if probes is None else probes[:, idx]
        vals = []
        for j in range(15):
            tt = torch.full((len(idx),), float(v_nodes[j]) ** 2, dtype=x.dtype, device=x.device)
            div = _flow_and_divergence(sde, counted, states[j], tt, sub_probes)[1]
            vals.append(div * (2 * float(v_nodes[j])))
        f = torch.stack(vals)  # (15, n, K): ∫ div dt = ∫ div(v^2) 2 v dv
        k15 = (w_k[:, None, None] * f).sum(0) * h
        err = ((w_k - w_g)[:, None, None] * f).sum(0).abs().amax(dim=1) * h
        return k15, err, quad_tol * (2 * h / width)

    def integrate(level: int, p: int, idx: Tensor, k15: Tensor, err: Tensor, share: float):
        """The panel's integral and certificate for the samples ``idx``. A sample whose
        ``|K15 - G7|`` meets the panel's share keeps K15; the others get the panel bisected
        (only they are evaluated on the halves: each sample is refined where its own integrand
        needs it) and keep the halves' sum when it agrees with the whole to the share:
        ``|K15 - G7|`` measures G7's error, far above K15's on a panel with a sharp feature,
        so the halves agree long before their own ``|K15 - G7|`` would pass. Halves that
        still disagree are bisected further, down to ``depth``."""
        out, cert = k15.clone(), err.clone()
        redo = torch.nonzero(err > share).flatten() if level < depth else idx[:0]
        if len(redo) == 0:
            return out, cert
        sub = idx[redo]
        halves = [evaluate(level + 1, 2 * p + i, sub) for i in range(2)]
        both = halves[0][0] + halves[1][0]
        gap = (k15[redo] - both).abs().amax(dim=1)
        out[redo], cert[redo] = both, gap
        again = torch.nonzero(gap > share).flatten()
        if len(again) > 0:
            refined = [
                integrate(level + 1, 2 * p + i, sub[again], halves[i][0][again],
                          halves[i][1][again], halves[i][2])
                for i in range(2)
            ]  # fmt: skip
            rows = redo[again]
            out[rows] = refined[0][0] + refined[1][0]
            cert[rows] = refined[0][1] + refined[1][1]
        return out, cert

    everyone = torch.arange(x.shape[0], device=x.device)
    total = certificate = 0
    for p in range(panels):
        k, e = integrate(0, p, everyone, *evaluate(0, p, everyone))
        total, certificate = total + k, certificate + e
    return total, certificate, path[-1]


class _VelocityOnly(torch.nn.Module):
    def __init__(self, sde, score: CountedScore) -> None:
        super().__init__()
        self.sde, self.score = sde, score

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        tt = t.to(dtype=x.dtype, device=x.device).expand(x.shape[0])
        g2 = append_dims(self.sde.diffusion(tt) ** 2, x.dim())
        return self.sde.drift(x, tt) - 0.5 * g2 * self.score(x, tt)


def log_likelihood(
    sde,
    score: ScoreFn,
    x: Tensor,
    *,
    divergence: str = "auto",
    num_probes: int = 1,
    probe: str = "rademacher",
    method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    t_min: float | None = None,
    norm: str = "per_sample",
    prior_log_prob: Callable[[Tensor], Tensor] | None = None,
    integrator: str = "auto",
    panels: int | None = None,
    generator: torch.Generator | None = None,
) -> LikelihoodResult:
    """Exact log-likelihood of ``x`` under the probability-flow model of ``(sde, score)``.

    With ``f̃ = f - ½ g^2 score`` the flow carries ``p_t`` along, and along a path
    ``d log p_t(x_t) / dt = -∇·f̃(x_t, t)`` (the instantaneous change of variables), so

        ``log p_{t_min}(x) = log p_T(x_T) + ∫_{t_min}^T ∇·f̃(x_t, t) dt``.

    The augmented state ``(x, Δ)`` is integrated from ``t_min`` up to ``T`` with torchdiffeq; the
    whole batch is one ODE. The default ``norm="per_sample"`` makes every sample's own error meet
    the tolerance, so a sample's value does not depend on its batch mates beyond the (shared)
    step choice; a hard sample then costs the whole batch steps — evaluate it in its own batch if
    that matters. ``norm="rms"`` is torchdiffeq's default (cheaper, batch-dependent accuracy).

    Arguments:
        sde: the forward SDE (``drift``, ``diffusion``, ``prior_log_prob``).
        score: ``(x, t) -> ∇ log p_t(x)``.
        x: ``(batch, *event)`` data; its dtype sets the precision (float64 for tests).
        divergence: ``"exact"`` (trace by one vector-Jacobian product per dimension),
            ``"hutchinson"`` (``num_probes`` probes drawn once from ``generator`` and fixed over
            the solve) or ``"auto"`` (exact up to ``d = 128``; the result says which).
        num_probes, probe: Hutchinson probes, ``"rademacher"`` (far lower variance on score
            Jacobians) or ``"gaussian"``. With several probes, ``std_error`` is reported.
        method, rtol, atol: torchdiffeq solver and tolerances.
        t_min: start time (default ``sde.t_min``).
        prior_log_prob: ``x_T -> log p_T(x_T)`` in place of ``sde.prior_log_prob`` (e.g. the
            exact ``p_T`` of a known data law; the declared prior differs from it slightly).
        integrator: ``"augmented"`` (above), ``"quadrature"`` or ``"auto"`` (quadrature from
            d = 16 on, augmented otherwise: measured fastest). Quadrature: the divergence never
            feeds back into ``x``, so ``x(t)`` is solved alone (forward passes only, dopri5 at
            ``0.1 rtol, 0.1 atol`` with the exact trace, at ``rtol, atol`` with Hutchinson) and
            ``∫ ∇·f̃ dt`` is integrated per sample by 15-point Gauss–Kronrod panels in
            ``v = sqrt(t)``, bisected (up to 3 times) while ``|K15 - G7|`` on a panel exceeds
            its share of ``atol d`` nats for some sample, which needs far fewer divergence
            evaluations on smooth integrands.
            With Hutchinson the probes are the same fixed ones at every node, so the integral
            is the same deterministic quantity the augmented solve integrates.
            ``error_estimate`` then holds the per-sample certificate.
        panels: initial Gauss–Kronrod panels of the quadrature integrator (default 3 with the
            exact trace, 1 with Hutchinson).

    Returns:
        A :class:`LikelihoodResult`. Gradients are not tracked: the solve runs under
        ``torch.no_grad`` (autograd is used only inside each evaluation for the divergence), so
        memory does not grow with the number of steps.

    Example:
        >>> res = log_likelihood(VPSDE(), gm.score_fn(VPSDE()), x)
        >>> res.log_prob, res.nfe
    """
    _check_sde(sde)
    x = check_tensor("x", x, min_dim=2)
    if divergence not in _DIVERGENCES:
        raise ValueError(f"divergence must be one of {_DIVERGENCES}; got {divergence!r}")
    if probe not in _PROBES:
        raise ValueError(f"probe must be one of {_PROBES}; got {probe!r}")
    if norm not in _NORMS:
        raise ValueError(f"norm must be one of {_NORMS}; got {norm!r}")
    if isinstance(num_probes, bool) or not isinstance(num_probes, int) or num_probes < 1:
        raise ValueError(f"num_probes must be a positive int; got {num_probes!r}")
    rtol = check_scalar("rtol", rtol, positive=True)
    atol = check_scalar("atol", atol, positive=True)
    start = sde.t_min if t_min is None else check_scalar("t_min", t_min, positive=True)
    if not sde.t_min <= start < sde.T:
        raise ValueError(f"t_min must lie in [sde.t_min, T) = [{sde.t_min}, {sde.T}); got {start}")
    d = x[0].numel()
    raw = score.score if isinstance(score, CountedScore) else score
    # A closed-form divergence (e.g. GaussianMixture.score_fn) is exact and costs one pass.
    analytic = _closed_form_divergence(sde, raw) is not None
    exact_by_default = analytic or d <= EXACT_MAX_DIM
    chosen = divergence if divergence != "auto" else ("exact" if exact_by_default else "hutchinson")
    probes = None
    if chosen == "hutchinson":
        shape = (num_probes, *x.shape)
        if probe == "rademacher":
            bits = torch.randint(0, 2, shape, generator=generator, device=x.device)
            probes = bits.to(x.dtype) * 2 - 1
        else:
            probes = torch.randn(shape, generator=generator, dtype=x.dtype, device=x.device)
    if integrator not in ("auto", "augmented", "quadrature"):
        raise ValueError(
            f"integrator must be 'auto', 'augmented' or 'quadrature'; got {integrator!r}"
        )
    if integrator == "auto":
        # Measured (benchmarks/likelihood.py): with the exact trace each divergence evaluation
        # costs d vector-Jacobian products, and quadrature needs far fewer of them; with
        # Hutchinson the x-solve takes forward passes only (no graph, no backward) and one
        # panel of 15 nodes replaces a backward pass at each of the augmented solve's ~110 steps.
        cheap = analytic and chosen == "exact"  # no trace to save: the plain solve is cheapest
        integrator = "quadrature" if d >= QUADRATURE_MIN_DIM and not cheap else "augmented"
    if panels is None:
        panels = _QUAD_PANELS[chosen]
    if isinstance(panels, bool) or not isinstance(panels, int) or panels < 1:
        raise ValueError(f"panels must be a positive int; got {panels!r}")
    counted = score if isinstance(score, CountedScore) else CountedScore(score)
    prior_fn = sde.prior_log_prob if prior_log_prob is None else prior_log_prob
    n_cols = 1 if probes is None else num_probes
    if integrator == "quadrature":
        integral, certificate, x_T = _quadrature_solve(
            sde,
            counted,
            x.detach(),
            start,
            probes,
            _QUAD_X_TOL[chosen] * min(rtol, atol),
            QUAD_TOL_FACTOR * atol * d,
            panels,
        )
        prior = prior_fn(x_T)
        per_probe = prior[:, None] + integral
        std_error = per_probe.std(dim=1) / math.sqrt(n_cols) if n_cols > 1 else None
        return LikelihoodResult(
            per_probe.mean(dim=1),
            prior,
            integral.mean(dim=1),
            std_error,
            counted.nfe,
            chosen,
            certificate,
        )
    flow = _AugmentedFlow(sde, counted, x.shape[1:], probes)
    state0 = torch.cat([x.detach().reshape(x.shape[0], -1), x.new_zeros(x.shape[0], n_cols)], 1)
    ts = torch.tensor([start, sde.T], dtype=torch.float64, device=x.device)
    options = {}
    if method in _ADAPTIVE_ODE_METHODS:
        options = {
            "norm": _per_sample_norm if norm == "per_sample" else _rms_norm,
            "step_t": ts[1:],
            # Keep torchdiffeq's first-step probe inside [t_min, T].
            "first_step": 1e-3 * (sde.T - start),
        }
    with torch.no_grad():
        end = torchdiffeq.odeint(
            flow, state0, ts, method=method, rtol=rtol, atol=atol, options=options
        )[-1]
    x_T = end[:, :d].reshape(x.shape)
    deltas = end[:, d:]
    prior = prior_fn(x_T)
    per_probe = prior[:, None] + deltas
    std_error = per_probe.std(dim=1) / math.sqrt(n_cols) if n_cols > 1 else None
    return LikelihoodResult(
        per_probe.mean(dim=1), prior, deltas.mean(dim=1), std_error, counted.nfe, chosen
    )


# --- bits per dimension ------------------------------------------------------------------------

_RANGES = ("[0,1]", "[-1,1]")


@dataclasses.dataclass
class BitsPerDim:
    """What :func:`bits_per_dim` returns.

    Attributes:
        mean: mean bits/dim over the data set.
        std_error: its standard error (over data points; each point averaged over the
            dequantization draws).
        per_sample: ``(batch,)`` bits/dim of each point.
        nfe: score evaluations over all solves.
    """

    mean: float
    std_error: float
    per_sample: Tensor
    nfe: int


def dequantize(
    x: Tensor, levels: int, generator: torch.Generator | None = None, dtype=None
) -> Tensor:
    """Uniform dequantization ``y = (x + u) / K``, ``u ~ U[0, 1)^D``: integer data in
    ``{0, ..., K-1}`` become a density on ``[0, 1]^D`` whose likelihood lower-bounds the discrete
    one (Theis et al. 2016)."""
    dtype = dtype or (x.dtype if x.is_floating_point() else torch.get_default_dtype())
    u = torch.rand(x.shape, generator=generator, dtype=dtype, device=x.device)
    return (x.to(dtype) + u) / levels


def data_transform(
    y: Tensor, data_range: str = "[-1,1]", logit: float | None = None
) -> tuple[Tensor, Tensor]:
    """Map dequantized data ``y`` in ``[0, 1]^D`` to model space ``z`` and return
    ``(z, log|det dz/dy|)`` per sample.

    - ``logit=alpha``: ``z = logit(alpha + (1 - 2 alpha) y)`` (then ``data_range`` is ignored);
    - ``data_range="[0,1]"``: ``z = y``; ``"[-1,1]"``: ``z = 2y - 1`` (log-det ``D log 2``).
    """
    d = y[0].numel()
    if logit is not None:
        alpha = check_scalar("logit", logit, positive=True)
        if not alpha < 0.5:
            raise ValueError(f"logit (alpha) must lie in (0, 0.5); got {alpha}")
        p = alpha + (1 - 2 * alpha) * y
        z = torch.log(p) - torch.log1p(-p)
        logdet = batch_sum(math.log(1 - 2 * alpha) - torch.log(p) - torch.log1p(-p))
        return z, logdet
    if data_range not in _RANGES:
        raise ValueError(f"data_range must be one of {_RANGES}; got {data_range!r}")
    if data_range == "[0,1]":
        return y, y.new_zeros(y.shape[0])
    return 2 * y - 1, y.new_full((y.shape[0],), d * math.log(2.0))


def bits_per_dim(
    sde,
    score: ScoreFn,
    x: Tensor,
    *,
    levels: int,
    data_range: str = "[-1,1]",
    logit: float | None = None,
    repeats: int = 1,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    **likelihood_kwargs,
) -> BitsPerDim:
    """Bits per dimension of discrete data under the probability-flow model.

    For integer data ``x`` in ``{0, ..., K-1}^D`` (``K = levels``: 256 for 8-bit images, 17 for
    scikit-learn's digits): dequantize ``y = (x + u) / K``, map to model space ``z = T(y)``
    (see :func:`data_transform`) and

        ``bpd = -[log p_Z(z) + log|det dz/dy| - D ln K] / (D ln 2)``,

    averaged over ``repeats`` fresh dequantization draws per point. ``- D ln K`` is the
    log-Jacobian of ``y = (x + u) / K``; nothing else is added. The score must be the score of the
    model in ``z`` space.

    Arguments:
        x: ``(batch, *event)`` integer-valued data (any dtype).
        levels: ``K``.
        data_range, logit: the data transform.
        repeats: dequantization draws per point.
        generator: seeds the dequantization noise and any Hutchinson probes.
        likelihood_kwargs: passed to :func:`log_likelihood` (``divergence``, ``rtol``, ...).
    """
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
        raise ValueError(f"levels must be an int >= 2 (e.g. 256 for 8-bit data); got {levels!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive int; got {repeats!r}")
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor; got {type(x).__name__}")
    xf = x.double() if not x.is_floating_point() else x
    if bool((xf < 0).any()) or bool((xf > levels - 1).any()) or bool((xf != xf.round()).any()):
        raise ValueError(
            f"x must hold integers in {{0, ..., levels-1}} = {{0, ..., {levels - 1}}}; "
            f"got values in [{float(xf.min())}, {float(xf.max())}]; pass raw counts, not "
            "scaled data"
        )
    d = x[0].numel()
    total = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    nfe = 0
    for _ in range(repeats):
        y = dequantize(x, levels, generator, dtype)
        z, logdet = data_transform(y, data_range, logit)
        res = log_likelihood(sde, score, z, generator=generator, **likelihood_kwargs)
        nfe += res.nfe
        log_y = res.log_prob + logdet - d * math.log(levels)
        total += (-log_y / (d * math.log(2.0))).double()
    per_sample = total / repeats
    n = per_sample.shape[0]
    se = float(per_sample.std() / math.sqrt(n)) if n > 1 else float("nan")
    return BitsPerDim(float(per_sample.mean()), se, per_sample, nfe)


# --- ELBO ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class ElboResult:
    """What :func:`elbo` returns: per-sample bound (nats), its Monte-Carlo standard error, NFE."""

    elbo: Tensor
    std_error: Tensor
    nfe: int


def elbo(
    sde,
    score: ScoreFn,
    x: Tensor,
    *,
    num_samples: int = 64,
    t_min: float | None = None,
    prior_log_prob: Callable[[Tensor], Tensor] | None = None,
    generator: torch.Generator | None = None,
) -> ElboResult:
    """A lower bound on the log-likelihood of the reverse-SDE model (Song et al. 2021, Huang
    et al. 2021), in its denoising form, for a linear SDE:

        ``log p(x) >= E[log p_T(x_T)] + ∫_{t_min}^T E[-½ g^2 ||s(x_t, t) - ∇log p(x_t|x)||^2
        + ½ g^2 ||∇log p(x_t|x)||^2 + ∇·f(x_t, t)] dt``,

    expectations over ``x_t ~ p(x_t | x_0 = x)``. It needs only score evaluations (no
    divergence of the score), estimated by Monte Carlo with ``num_samples`` draws of
    ``(t, x_t)`` per point, ``t = t_min + (T - t_min) u^2`` with ``u`` uniform (importance
    weight ``2 (T - t_min) u``); ``||∇log p(x_t|x)||^2`` is replaced by ``||noise||^2 / s^2`` with
    the same noise that made ``x_t`` (unbiased), which cancels the ``1/s^2`` terms and keeps the
    variance finite; ``∇·f = d a(t)``. The prior
    term uses one draw of ``x_T`` per Monte-Carlo sample. Returned with its Monte-Carlo
    standard error. The part of the time integral below ``t_min`` is left out (it is O(t_min)
    for a smooth density).

    With the exact score and ``prior_log_prob`` the exact ``p_T`` the bound is tight: the reverse
    SDE then reproduces the forward path law, so the gap is zero up to the part below
    ``t_min`` (measured: consistent with zero to ±0.01 nats at d = 2). A wrong score opens a gap.
    """
    _check_sde(sde)
    if not getattr(sde, "has_marginal", False):
        raise TypeError("elbo needs a linear SDE with a closed-form kernel (has_marginal = True)")
    x = check_tensor("x", x, min_dim=2)
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 2:
        raise ValueError(f"num_samples must be an int >= 2; got {num_samples!r}")
    start = sde.t_min if t_min is None else check_scalar("t_min", t_min, positive=True)
    if not sde.t_min <= start < sde.T:
        raise ValueError(f"t_min must lie in [sde.t_min, T) = [{sde.t_min}, {sde.T}); got {start}")
    prior_fn = sde.prior_log_prob if prior_log_prob is None else prior_log_prob
    batch, d = x.shape[0], x[0].numel()
    counted = score if isinstance(score, CountedScore) else CountedScore(score)
    terms = []
    with torch.no_grad():
        for _ in range(num_samples):
            # t = t_min + (T - t_min) u^2 puts more draws near t_min, where the integrand
            # varies fastest; w = dt/du is the importance weight.
            u = torch.rand(batch, generator=generator, dtype=x.dtype, device=x.device)
            t = start + (sde.T - start) * u**2
            weight = 2 * (sde.T - start) * u
            noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
            std = sde.marginal_std(t)
            x_t = sde.marginal_mean(x, t) + append_dims(std, x.dim()) * noise
            s = counted(x_t, t)
            g2 = sde.diffusion(t) ** 2
            # -½ g² ||s - k||² + ½ g² E||k||² with k = -noise / std, and E||k||² replaced by its
            # unbiased draw ||noise||² / std² (a control variate that cancels the 1/std² terms):
            integrand = -g2 * batch_sum(noise * s) / std - 0.5 * g2 * batch_sum(s**2)
            integrand = integrand + d * sde.drift_coeff(t)
            noise_T = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
            t_end = torch.full((batch,), sde.T, dtype=x.dtype, device=x.device)
            x_T = (
                sde.marginal_mean(x, t_end)
                + append_dims(sde.marginal_std(t_end), x.dim()) * noise_T
            )
            terms.append(prior_fn(x_T) + weight * integrand)
    stacked = torch.stack(terms, dim=1)
    return ElboResult(stacked.mean(1), stacked.std(1) / math.sqrt(num_samples), counted.nfe)
