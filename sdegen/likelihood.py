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
_QUAD_TOL = 1e3
# Default initial panels: with the exact trace each node costs d vector-Jacobian products, and
# 3 panels met the tolerance without a split on the benchmark's mixtures and MLPs at d = 64
# (errors 1.5e-5 / 3e-7 nats/dim against the reference recipe's 2.2e-5 / 6.9e-6; 4 panels
# cost 60-90 nodes for errors 50x below the recipe's). With Hutchinson the x-solve dominates;
# one panel was enough for an MLP score but left 7e-4 nats/dim of solver error on a d = 16
# mixture (2 panels: 3e-5; the augmented solve: 7e-6).
_QUAD_PANELS = {"exact": 3, "hutchinson": 2}
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
        error_estimate: with ``integrator="quadrature"``, the per-sample Gauss–Kronrod error
            certificate ``Σ |K15 - G7|`` of the divergence integral (pessimistic; the error of
            the x-path is not in it).
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
    """x(t) by one forward-only solve; ∫ div f̃ dt by Gauss–Kronrod panels in v = sqrt(t)
    (the integrand behaves like t^(-1/2) near t_min for real networks), each panel split once
    where its |K15 - G7| estimate exceeds its share of ``quad_tol``. Returns the integral
    ``(batch, K)``, its error certificate ``(batch,)`` and x_T."""
    nodes, wk, wg = kronrod15()
    v0, v1 = math.sqrt(start), math.sqrt(sde.T)
    coarse = torch.linspace(v0, v1, panels + 1, dtype=torch.float64)
    fine = torch.linspace(v0, v1, 2 * panels + 1, dtype=torch.float64)

    def panel_nodes(edges):
        mid, half = (edges[1:] + edges[:-1]) / 2, (edges[1:] - edges[:-1]) / 2
        return mid[:, None] + half[:, None] * nodes, half  # (P, 15) in v

    v_coarse, half_coarse = panel_nodes(coarse)
    v_fine, half_fine = panel_nodes(fine)
    t_nodes = torch.cat([v_coarse.flatten(), v_fine.flatten()]) ** 2
    sorted_t, perm = t_nodes.sort()
    # position in the solver's output of node i (coarse nodes first, then fine ones)
    where = torch.empty_like(perm)
    where[perm] = torch.arange(1, len(perm) + 1)
    ts = torch.cat([sorted_t.new_tensor([start]), sorted_t, sorted_t.new_tensor([sde.T])])
    ode_fn = _VelocityOnly(sde, counted)
    options = {"step_t": ts[-1:], "first_step": 1e-3 * (sde.T - start)}
    with torch.no_grad():
        path = torchdiffeq.odeint(
            ode_fn, x, ts.to(x.device), method="dopri5", rtol=x_tol, atol=x_tol, options=options
        )

    def panel_values(v_nodes, half, first):
        # ∫ div dt = ∫ div(v^2) 2 v dv over each panel, by K15 and G7; node (p, j) is node
        # first + 15 p + j of t_nodes.
        out_k, out_g = [], []
        for p in range(v_nodes.shape[0]):
            vals = []
            for j, v in enumerate(v_nodes[p].tolist()):
                i = first + 15 * p + j
                xv = path[int(where[i])]
                tt = torch.full((x.shape[0],), float(t_nodes[i]), dtype=x.dtype, device=x.device)
                vals.append(_flow_and_divergence(sde, counted, xv, tt, probes)[1] * (2 * v))
            f = torch.stack(vals)  # (15, batch, K)
            w_k = wk.to(f)[:, None, None] * float(half[p])
            w_g = wg.to(f)[:, None, None] * float(half[p])
            out_k.append((w_k * f).sum(0))
            out_g.append((w_g * f).sum(0))
        return torch.stack(out_k), torch.stack(out_g)  # (P, batch, K)

    k_c, g_c = panel_values(v_coarse, half_coarse, 0)
    err_c = (k_c - g_c).abs().amax(dim=2)  # (P, batch)
    total, certificate = k_c.sum(0), err_c.sum(0)
    refine = (err_c > quad_tol / panels).any(dim=1)
    for p in torch.nonzero(refine).flatten().tolist():
        k_f, g_f = panel_values(
            v_fine[2 * p : 2 * p + 2], half_fine[2 * p : 2 * p + 2], 15 * panels + 30 * p
        )
        total = total - k_c[p] + k_f.sum(0)
        certificate = certificate - err_c[p] + (k_f - g_f).abs().amax(dim=2).sum(0)
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
            ``v = sqrt(t)`` (``panels`` of them, each split once where ``|K15 - G7|`` exceeds
            its share of ``1e3 atol d`` nats), which needs far fewer divergence evaluations.
            With Hutchinson the probes are the same fixed ones at every node, so the integral
            is the same deterministic quantity the augmented solve integrates.
            ``error_estimate`` then holds the per-sample certificate.
        panels: initial Gauss–Kronrod panels of the quadrature integrator (default 3 with the
            exact trace, 2 with Hutchinson).

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
            _QUAD_TOL * atol * d,
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
