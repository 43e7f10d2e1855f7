"""``sample()``: one entry point over torchsde's reverse-SDE and torchdiffeq's ODE solvers."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence

import torch
import torchsde
from torch import Tensor

from .._validation import check_scalar, check_shape, check_tensor
from ..reverse import ProbabilityFlowODE, ReverseSDE, ScoreFn, _check_sde
from ..sde.base import AbstractSDE
from .brownian import StepBrownian


class StabilityWarning(UserWarning):
    """A method is known to be unstable on the problem it was asked to solve."""


@dataclasses.dataclass(frozen=True)
class SamplingMethod:
    """What a sampling method is, as data.

    Attributes:
        name: the name ``sample(method=...)`` takes.
        kind: ``"sde"`` (reverse-time SDE, stochastic) or ``"ode"`` (probability flow,
            deterministic).
        solver: the torchsde / torchdiffeq method name used.
        adaptive: whether the step size is chosen by an error estimate.
        order: strong order (SDE; for this state-independent noise) or classical order (ODE).
        score_evals_per_step: score evaluations per (accepted) step, as measured.
        sde_type: the torchsde SDE type the solver needs (``"ito"`` or ``"stratonovich"``;
            ``None`` for ODE methods).
        stable: ``False`` where the method is known to diverge on stiff reverse diffusions.
    """

    name: str
    kind: str
    solver: str
    adaptive: bool
    order: float
    score_evals_per_step: float
    sde_type: str | None = "ito"
    stable: bool = True

    @property
    def deterministic(self) -> bool:
        return self.kind == "ode"


_METHODS = {
    m.name: m
    for m in [
        SamplingMethod("euler", "sde", "euler", False, 1.0, 1),
        SamplingMethod("milstein", "sde", "milstein", False, 1.0, 1),
        SamplingMethod("srk", "sde", "srk", False, 1.5, 2),
        SamplingMethod("heun", "sde", "heun", False, 1.0, 2, "stratonovich"),
        SamplingMethod("midpoint", "sde", "midpoint", False, 1.0, 2, "stratonovich"),
        SamplingMethod("euler_heun", "sde", "euler_heun", False, 1.0, 1, "stratonovich"),
        SamplingMethod(
            "reversible_heun", "sde", "reversible_heun", False, 1.0, 1, "stratonovich", False
        ),
        SamplingMethod("adaptive_milstein", "sde", "milstein", True, 1.0, 3),
        SamplingMethod("adaptive_srk", "sde", "srk", True, 1.5, 6),
        SamplingMethod("ode_euler", "ode", "euler", False, 1.0, 1, None),
        SamplingMethod("ode_midpoint", "ode", "midpoint", False, 2.0, 2, None),
        SamplingMethod("ode_heun3", "ode", "heun3", False, 3.0, 3, None),
        SamplingMethod("ode_rk4", "ode", "rk4", False, 4.0, 4, None),
        SamplingMethod("ode_bosh3", "ode", "bosh3", True, 3.0, 3, None),
        SamplingMethod("ode_dopri5", "ode", "dopri5", True, 5.0, 6, None),
        SamplingMethod("ode_dopri8", "ode", "dopri8", True, 8.0, 13, None),
    ]
}

_DEFAULT_STEPS = {"sde": 1000, "ode": 200}
_DEFAULT_TOL = {"sde": 1e-3, "ode": 1e-5}


def methods() -> dict[str, SamplingMethod]:
    """Every method ``sample()`` accepts, by name, with its properties."""
    return dict(_METHODS)


@dataclasses.dataclass
class SampleResult:
    """What :func:`sample` returns.

    Attributes:
        samples: ``(batch, *event)`` samples at ``t_min``.
        nfe: score evaluations actually made (including solver set-up calls).
        method: the :class:`SamplingMethod` used.
        steps: fixed steps taken, or ``None`` for adaptive methods.
    """

    samples: Tensor
    nfe: int
    method: SamplingMethod
    steps: int | None


def _resolve_method(method: str) -> SamplingMethod:
    if method not in _METHODS:
        raise ValueError(f"method must be one of {sorted(_METHODS)}; got {method!r}")
    return _METHODS[method]


def _finished(result: SampleResult) -> SampleResult:
    bad = int((~torch.isfinite(result.samples)).flatten(1).any(1).sum())
    if bad:
        warnings.warn(
            f"{bad} of {result.samples.shape[0]} samples are NaN or inf after "
            f"{result.method.name!r} ({result.steps} steps): the solver diverged; use more "
            "steps or a stable method",
            StabilityWarning,
            stacklevel=3,
        )
    return result


def _generator_seed(generator: torch.Generator | None) -> int | None:
    if generator is None:
        return None
    return int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))


def sample(
    sde: AbstractSDE,
    score: ScoreFn,
    shape: Sequence[int],
    *,
    method: str = "euler",
    steps: int | None = None,
    generator: torch.Generator | None = None,
    x_T: Tensor | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> SampleResult:
    """Draw samples by solving the reverse-time SDE or the probability-flow ODE from ``T`` to
    ``t_min``.

    Arguments:
        sde: the forward SDE.
        score: ``score(x, t) -> ∇ log p_t(x)`` for ``x`` ``(batch, *event)`` and ``t`` ``(batch,)``.
        shape: ``(batch, *event)``.
        method: a name from :func:`methods` — torchsde's ``euler``, ``milstein``, ``srk``,
            ``heun``, ``midpoint``, ``euler_heun``, ``reversible_heun`` (unstable, warns),
            ``adaptive_milstein``, ``adaptive_srk``; or torchdiffeq on the probability flow:
            ``ode_dopri5``, ``ode_dopri8``, ``ode_bosh3`` (adaptive), ``ode_euler``,
            ``ode_midpoint``, ``ode_heun3``, ``ode_rk4`` (fixed steps).
        steps: number of uniform steps for fixed-step methods (default 1000 for SDEs, 200 for
            ODEs); for adaptive SDE methods it sets the first step to ``(T - t_min) / steps``.
        generator: a ``torch.Generator``; the same generator state gives the same samples (prior
            noise, Brownian increments and, for adaptive SDE solves, the BrownianInterval seed).
        x_T: start from this prior noise, ``(batch, *event)``, instead of drawing it.
        rtol, atol: tolerances of adaptive methods (default 1e-5 for ODEs; 1e-3 for SDEs, whose
            strong-error control on every path gets very expensive at tighter tolerances).
        dtype, device: of the samples when ``x_T`` is not given (default: torch's default dtype,
            the generator's device).

    Returns:
        A :class:`SampleResult` with ``samples`` ``(batch, *event)`` and ``nfe``.

    Raises:
        ValueError / TypeError: for unknown methods, bad shapes, non-finite ``x_T`` or
            non-positive step counts, before any solver runs.

    Example:
        >>> res = sample(VPSDE(), gm.score_fn(VPSDE()), (512, 2), method="euler", steps=500,
        ...              generator=torch.Generator().manual_seed(0))
        >>> res.samples.shape, res.nfe
        (torch.Size([512, 2]), 500)
    """
    _check_sde(sde)
    spec = _resolve_method(method)
    if x_T is None:
        shape = check_shape("shape", shape)
    else:
        x_T = check_tensor("x_T", x_T, min_dim=2)
        shape = check_shape("shape", shape)
        if tuple(x_T.shape) != shape:
            raise ValueError(f"x_T must have shape {shape}; got {tuple(x_T.shape)}")
    if steps is None:
        steps = _DEFAULT_STEPS[spec.kind]
    elif isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int; got {steps!r}")
    default_tol = _DEFAULT_TOL[spec.kind]
    rtol = check_scalar("rtol", default_tol if rtol is None else rtol, positive=True)
    atol = check_scalar("atol", default_tol if atol is None else atol, positive=True)
    if not spec.stable:
        warnings.warn(
            f"method {spec.name!r} is known to diverge on stiff reverse diffusions (VP/VE reverse "
            "SDEs) unless steps are very small; prefer 'euler', 'milstein' or 'srk'",
            StabilityWarning,
            stacklevel=2,
        )
    if x_T is None:
        x_T = sde.prior_sample(shape, generator, dtype=dtype, device=device)

    if spec.kind == "ode":
        ode = ProbabilityFlowODE(sde, score)
        if spec.adaptive:
            ts = torch.tensor([sde.T, sde.t_min], dtype=torch.float64)
        else:
            ts = torch.linspace(sde.T, sde.t_min, steps + 1, dtype=torch.float64)
        x0 = ode.solve(x_T, ts, method=spec.solver, rtol=rtol, atol=atol)[-1]
        return _finished(SampleResult(x0, ode.nfe, spec, None if spec.adaptive else steps))

    rsde = ReverseSDE(sde, score, shape[1:], sde_type=spec.sde_type)
    span = sde.T - sde.t_min
    noise_shape = (shape[0], x_T[0].numel())
    if spec.adaptive:
        bm = torchsde.BrownianInterval(
            t0=0.0,
            t1=span,
            size=noise_shape,
            dtype=x_T.dtype,
            device=x_T.device,
            entropy=_generator_seed(generator),
            levy_area_approximation="space-time",
        )
        dt = span / steps
    else:
        bm = StepBrownian(0.0, noise_shape, dtype=x_T.dtype, device=x_T.device, generator=generator)
        # torchsde steps by curr_t + dt and clips the last step at the end; a hair over
        # span/steps keeps rounding from adding a tiny extra step.
        dt = span / steps * (1 + 1e-10)
    ys = rsde.solve(
        x_T,
        [sde.T, sde.t_min],
        method=spec.solver,
        dt=dt,
        bm=bm,
        adaptive=spec.adaptive,
        rtol=rtol,
        atol=atol,
    )
    return _finished(SampleResult(ys[-1], rsde.nfe, spec, None if spec.adaptive else steps))
