"""``sample()``: one entry point over torchsde's reverse-SDE solvers, torchdiffeq's ODE solvers,
predictor–corrector samplers and few-step exponential integrators."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence

import torch
import torchsde
from torch import Tensor

from .._validation import check_scalar, check_shape, check_tensor
from ..reverse import CountedScore, ProbabilityFlowODE, ReverseSDE, ScoreFn, _check_sde
from ..sde.base import AbstractSDE
from . import fewstep, grids, pc
from ._hooks import Callback, StepHooks
from .brownian import StepBrownian
from .grids import needs_marginal


class StabilityWarning(UserWarning):
    """A method is known to be unstable on the problem it was asked to solve."""


@dataclasses.dataclass(frozen=True)
class SamplingMethod:
    """What a sampling method is, as data.

    Attributes:
        name: the name ``sample(method=...)`` takes.
        kind: ``"sde"`` (stochastic: reverse-time SDE, Langevin) or ``"ode"`` (deterministic
            given ``x_T``: the probability flow).
        solver: the torchsde / torchdiffeq method, predictor or integrator used.
        adaptive: whether the step size is chosen by an error estimate.
        order: for ``"ode"`` methods the classical order in the step size (measured in
            tests/test_samplers.py); for ``"sde"`` methods the strong order for this
            state-independent noise (Langevin-only methods: 1, the weak order in the step size).
        score_evals_per_step: score evaluations per (accepted) step at the default options.
        sde_type: the torchsde SDE type the solver needs (``None`` if not a torchsde method).
        stable: ``False`` where the method is known to diverge on stiff reverse diffusions.
        family: ``"torchsde"``, ``"torchdiffeq"``, ``"pc"`` (predictor–corrector, Langevin) or
            ``"exponential"`` (few-step samplers on the marginal coefficients).
        needs_marginal: whether the SDE must have a closed-form Gaussian kernel
            (``has_marginal``); otherwise only ``drift`` and ``diffusion`` are used.
        default_grid: the time grid used when ``time_grid`` is not given.
        defaults: the method's default options (``predictor``, ``corrector``,
            ``corrector_steps``, ``snr``, ``order``) as ``(name, value)`` pairs.
    """

    name: str
    kind: str
    solver: str
    adaptive: bool
    order: float
    score_evals_per_step: float
    sde_type: str | None = "ito"
    stable: bool = True
    family: str = "torchsde"
    needs_marginal: bool = False
    default_grid: str = "uniform"
    defaults: tuple = ()

    @property
    def deterministic(self) -> bool:
        return self.kind == "ode"

    @property
    def supports(self) -> str:
        """Which SDEs the method runs on, in words."""
        return "linear SDEs (has_marginal)" if self.needs_marginal else "any SDE"


def _torchdiffeq(name, solver, adaptive, order, evals):
    return SamplingMethod(name, "ode", solver, adaptive, order, evals, None, family="torchdiffeq")


def _pc(name, predictor, corrector, order, evals, needs_marginal, snr=0.16, corrector_steps=1):
    defaults = (
        ("predictor", predictor),
        ("corrector", corrector),
        ("corrector_steps", corrector_steps),
        ("snr", snr),
    )
    return SamplingMethod(
        name, "sde", predictor, False, order, evals, None, True, "pc", needs_marginal, "uniform",
        defaults,
    )  # fmt: skip


def _fewstep(name, kind, solver, order, evals, grid, solver_order=None, defaults=()):
    defaults = defaults if solver_order is None else (("order", solver_order), *defaults)
    return SamplingMethod(
        name, kind, solver, False, order, evals, None, True, "exponential", True, grid, defaults
    )


_CHURN = tuple(fewstep.CHURN_DEFAULTS.items())
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
        _torchdiffeq("ode_euler", "euler", False, 1.0, 1),
        _torchdiffeq("ode_midpoint", "midpoint", False, 2.0, 2),
        _torchdiffeq("ode_heun3", "heun3", False, 3.0, 3),
        _torchdiffeq("ode_rk4", "rk4", False, 4.0, 4),
        _torchdiffeq("ode_bosh3", "bosh3", True, 3.0, 3),
        _torchdiffeq("ode_dopri5", "dopri5", True, 5.0, 6),
        _torchdiffeq("ode_dopri8", "dopri8", True, 8.0, 13),
        _pc("pc_euler_maruyama", "euler_maruyama", "langevin", 1.0, 2, False),
        _pc("pc_reverse_diffusion", "reverse_diffusion", "langevin", 1.0, 2, False),
        _pc("pc_ancestral", "ancestral", "langevin", 1.0, 2, True),
        _pc("annealed_langevin", "none", "ald", 1.0, 10, True, snr=0.3, corrector_steps=10),
        _fewstep("ddim", "ode", "multistep_exponential", 1.0, 1, "logsnr", 1),
        _fewstep("dpmpp_2m", "ode", "multistep_exponential", 2.0, 1, "logsnr", 2),
        _fewstep("dpmpp_3m", "ode", "multistep_exponential", 3.0, 1, "logsnr", 3),
        _fewstep("edm_heun", "ode", "edm_heun", 2.0, 2, "rho"),
        _fewstep("ipndm", "ode", "ipndm", 4.0, 1, "optimised", 4),
        _fewstep("unipc", "ode", "unipc", 4.0, 1, "optimised", "auto"),
        _fewstep("ancestral", "sde", "ancestral", 0.5, 1, "logsnr", 1),
        _fewstep("sde_dpmpp_2m", "sde", "sde_dpmpp", 1.0, 1, "logsnr", 2, (("eta", 1.0),)),
        _fewstep("sde_dpmpp_3m", "sde", "sde_dpmpp", 1.0, 1, "logsnr", 3, (("eta", 1.0),)),
        _fewstep("edm_churn", "sde", "edm_churn", 1.0, 2, "rho", None, _CHURN),
    ]
}

_DEFAULT_STEPS = {"torchsde": 1000, "torchdiffeq": 200, "pc": 1000, "exponential": 20}
_DEFAULT_STEPS_BY_NAME = {
    "annealed_langevin": 100,
    "ancestral": 100,
    "sde_dpmpp_2m": 50,
    "sde_dpmpp_3m": 50,
}
_DEFAULT_TOL = {"sde": 1e-3, "ode": 1e-5}
_UNSET = object()


def methods() -> dict[str, SamplingMethod]:
    """Every method ``sample()`` accepts, by name, with its properties."""
    return dict(_METHODS)


@dataclasses.dataclass
class SampleResult:
    """What :func:`sample` returns.

    Attributes:
        samples: ``(batch, *event)`` samples at the last grid time (``t_min`` by default).
        nfe: score evaluations actually made (including solver set-up calls).
        method: the :class:`SamplingMethod` used.
        steps: fixed steps taken, or ``None`` for adaptive methods.
        times: the float64 grid of forward times, ``(steps + 1,)`` (for adaptive methods the
            output times).
        trajectory: ``(len(times), batch, *event)`` states at ``times`` when
            ``return_trajectory=True``, else ``None``.
    """

    samples: Tensor
    nfe: int
    method: SamplingMethod
    steps: int | None
    times: Tensor | None = None
    trajectory: Tensor | None = None


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


def _check_count(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "positive int" if minimum == 1 else f"int >= {minimum}"
        raise ValueError(f"{name} must be a {kind}; got {value!r}")
    return value


def _options(spec: SamplingMethod, given: dict) -> dict:
    """The method's options: its defaults, overridden by the ones given; options a method does
    not take are refused, naming the methods that do."""
    opts = dict(spec.defaults)
    for key, value in given.items():
        if value is _UNSET:
            continue
        if key not in opts:
            takers = sorted(n for n, m in _METHODS.items() if key in dict(m.defaults))
            raise ValueError(f"method {spec.name!r} takes no {key!r} option; it is for {takers}")
        opts[key] = value
    if spec.family == "pc":
        for key, allowed in (("predictor", pc.PREDICTORS), ("corrector", pc.CORRECTORS)):
            if opts[key] is None:
                opts[key] = "none"
            if opts[key] not in allowed:
                raise ValueError(f"{key} must be one of {allowed}; got {opts[key]!r}")
        opts["corrector_steps"] = _check_count("corrector_steps", opts["corrector_steps"], 0)
        opts["snr"] = check_scalar("snr", opts["snr"], positive=True)
        if opts["predictor"] == "none" and (
            opts["corrector"] == "none" or not opts["corrector_steps"]
        ):
            raise ValueError("a predictor-corrector sampler needs a predictor or a corrector")
    if spec.solver == "edm_churn":
        for key in ("churn", "s_tmin", "s_noise"):
            opts[key] = check_scalar(key, opts[key], nonnegative=True)
        opts["s_tmax"] = check_scalar("s_tmax", opts["s_tmax"], positive=True)
        if opts["s_tmax"] < opts["s_tmin"]:
            raise ValueError(
                f"s_tmax must be at least s_tmin; got s_tmin={opts['s_tmin']}, "
                f"s_tmax={opts['s_tmax']}"
            )
    if "eta" in opts:
        opts["eta"] = check_scalar("eta", opts["eta"], nonnegative=True)
    if "order" in opts and not (spec.solver == "unipc" and opts["order"] == "auto"):
        top = {"ipndm": 4, "unipc": 4, "multistep_exponential": 4, "sde_dpmpp": 3}.get(
            spec.solver, 2
        )
        if spec.solver == "unipc" and not isinstance(opts["order"], int):
            raise ValueError(f"order must be 'auto' or an int from 1 to 4; got {opts['order']!r}")
        opts["order"] = _check_count("order", opts["order"])
        if opts["order"] > top:
            raise ValueError(f"order must be at most {top} for {spec.name!r}; got {opts['order']}")
    return opts


def _evals_per_step(spec: SamplingMethod, opts: dict) -> float:
    if spec.family == "pc":
        predictor = opts["predictor"] != "none"
        return int(predictor) + (opts["corrector"] != "none") * opts["corrector_steps"]
    return spec.score_evals_per_step


def sample(
    sde: AbstractSDE,
    score: ScoreFn,
    shape: Sequence[int],
    *,
    method: str = "euler",
    steps: int | None = None,
    nfe: int | None = None,
    time_grid: str | Sequence[float] | Tensor | None = None,
    x_T: Tensor | None = None,
    generator: torch.Generator | None = None,
    return_trajectory: bool = False,
    callback: Callback | None = None,
    progress: bool = False,
    predictor: str = _UNSET,
    corrector: str | None = _UNSET,
    corrector_steps: int = _UNSET,
    snr: float = _UNSET,
    order: int = _UNSET,
    eta: float = _UNSET,
    churn: float = _UNSET,
    s_tmin: float = _UNSET,
    s_tmax: float = _UNSET,
    s_noise: float = _UNSET,
    rho: float = 7.0,
    rtol: float | None = None,
    atol: float | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> SampleResult:
    """Draw samples by solving from ``T`` down to ``t_min``: the reverse-time SDE, the
    probability-flow ODE, predictor–corrector or Langevin samplers, or few-step integrators.

    Arguments:
        sde: the forward SDE.
        score: ``score(x, t) -> ∇ log p_t(x)`` for ``x`` ``(batch, *event)`` and ``t`` ``(batch,)``.
        shape: ``(batch, *event)``.
        method: a name from :func:`methods` (see docs/sampling.md for the table): torchsde's
            ``euler``, ``milstein``, ``srk``, ``heun``, ``midpoint``, ``euler_heun``,
            ``reversible_heun`` (unstable, warns), ``adaptive_milstein``, ``adaptive_srk``;
            torchdiffeq's ``ode_*``; predictor–corrector ``pc_euler_maruyama``,
            ``pc_reverse_diffusion``, ``pc_ancestral``; ``annealed_langevin``; few-step
            ``ddim``, ``dpmpp_2m``, ``dpmpp_3m``, ``edm_heun``, ``ipndm``, ``unipc``,
            ``ancestral``, ``sde_dpmpp_2m``, ``sde_dpmpp_3m``, ``edm_churn`` (linear SDEs only).
        steps: number of steps (grid intervals). Defaults: 1000 for torchsde and
            predictor–corrector methods, 200 for torchdiffeq, 20 for few-step ODE samplers,
            100 for ``annealed_langevin`` and ``ancestral``, 50 for ``sde_dpmpp_*m``. For
            adaptive SDE methods it sets the first step to ``(T - t_min) / steps``.
        nfe: instead of ``steps``: spend at most this many score evaluations (the largest
            whole number of steps that fits; not for adaptive methods).
        time_grid: ``"uniform"`` in ``t``, ``"logsnr"`` (uniform in ``log σ``), ``"rho"``
            (Karras et al.'s ρ-spaced σ, exponent ``rho``), ``"optimised"`` (fitted schedules),
            or a strictly decreasing sequence of times in ``[t_min, T]`` (``x_T`` is taken to be
            at its first time). Default: the method's ``default_grid``. For adaptive methods a
            grid only sets the output times.
        x_T: start from this prior noise, ``(batch, *event)``, instead of drawing it.
        generator: a ``torch.Generator``; the same generator state gives the same samples (prior
            noise, Brownian increments, Langevin noise).
        return_trajectory: also return the states at every grid time.
        callback: ``callback(i, t, x)`` after step ``i`` (``0 .. steps - 1``), with ``x`` at
            forward time ``t``; if it returns a tensor, that replaces ``x`` (e.g. inpainting by
            replacement: put back the known pixels, noised to ``t``).
        progress: show a tqdm progress bar.
        predictor, corrector, corrector_steps, snr: predictor–corrector options (see
            :mod:`sdegen.sampling.pc`): ``predictor`` in ``euler_maruyama``,
            ``reverse_diffusion``, ``ancestral``, ``none``; ``corrector`` in ``langevin``,
            ``ald``, ``none``/``None``; ``corrector_steps`` Langevin steps per step; ``snr`` the
            signal-to-noise ratio setting the Langevin step size.
        order: order of the multistep methods (``ddim``, ``dpmpp_*``, ``ipndm``, ``unipc``:
            at most 4; ``sde_dpmpp_*m``: at most 3; ``ancestral``: at most 2); ``unipc``'s default
            ``"auto"`` is 3 below 20 steps and 4 from there.
        eta: ``sde_dpmpp_*m``'s noise level ``η >= 0``: 1 (default) is the reverse SDE,
            0 the probability flow, values between mix them (see docs/sampling.md).
        churn, s_tmin, s_tmax, s_noise: ``edm_churn``'s options (Karras et al. 2022, Algorithm
            2): noise is raised by ``γ = min(churn / steps, √2 - 1)`` at the steps with
            ``σ ∈ [s_tmin, s_tmax]``, with the fresh noise scaled by ``s_noise``; defaults 10,
            0.05, 50, 1.
        rho: exponent of the ``"rho"`` grid.
        rtol, atol: tolerances of adaptive methods (default 1e-5 for ODEs; 1e-3 for SDEs, whose
            strong-error control on every path gets very expensive at tighter tolerances).
        dtype, device: of the samples when ``x_T`` is not given (default: torch's default dtype,
            the generator's device).

    Returns:
        A :class:`SampleResult` with ``samples`` ``(batch, *event)``, ``nfe``, ``times`` and,
        if asked for, ``trajectory``.

    Raises:
        ValueError / TypeError: for unknown methods or options, bad shapes or grids, non-finite
            ``x_T``, non-positive step counts, an ``nfe`` too small for one step, or a method that
            needs a closed-form kernel on an SDE without one, before any solver runs.

    Example:
        >>> res = sample(VPSDE(), gm.score_fn(VPSDE()), (512, 2), method="unipc", nfe=10,
        ...              generator=torch.Generator().manual_seed(0))
        >>> res.samples.shape, res.nfe
        (torch.Size([512, 2]), 10)
    """
    _check_sde(sde)
    spec = _resolve_method(method)
    opts = _options(
        spec,
        {
            "predictor": predictor,
            "corrector": corrector,
            "corrector_steps": corrector_steps,
            "snr": snr,
            "order": order,
            "eta": eta,
            "churn": churn,
            "s_tmin": s_tmin,
            "s_tmax": s_tmax,
            "s_noise": s_noise,
        },
    )
    if spec.needs_marginal:
        needs_marginal(sde, f"method {spec.name!r}")
    if opts.get("predictor") == "ancestral":
        needs_marginal(sde, "predictor 'ancestral'")
    if opts.get("corrector") == "ald":
        needs_marginal(sde, "corrector 'ald' (annealed Langevin)")
    shape = check_shape("shape", shape)
    if x_T is not None:
        x_T = check_tensor("x_T", x_T, min_dim=2)
        if tuple(x_T.shape) != shape:
            raise ValueError(f"x_T must have shape {shape}; got {tuple(x_T.shape)}")
    rho = check_scalar("rho", rho, positive=True)
    per_step = _evals_per_step(spec, opts)
    if steps is not None:
        steps = _check_count("steps", steps)
    if nfe is not None:
        nfe = _check_count("nfe", nfe)
        if steps is not None:
            raise ValueError(f"give steps or nfe, not both; got steps={steps}, nfe={nfe}")
        if spec.adaptive:
            raise ValueError(
                f"nfe cannot bound adaptive method {spec.name!r}, whose evaluations depend on "
                "the error control; use a fixed-step method or rtol/atol"
            )
        steps = int(nfe // per_step)
        if steps < 1:
            raise ValueError(
                f"nfe={nfe} is less than one step of {spec.name!r} ({per_step:g} evaluations)"
            )
    grid_spec = spec.default_grid if time_grid is None else time_grid
    if isinstance(grid_spec, str) and steps is None:
        steps = _DEFAULT_STEPS_BY_NAME.get(spec.name, _DEFAULT_STEPS[spec.family])
    grid = grids.time_grid(sde, grid_spec, steps, rho=rho, method=spec.name)
    steps = grid.numel() - 1
    if nfe is not None and steps * per_step > nfe:
        raise ValueError(
            f"time_grid has {steps} steps, {steps * per_step:g} evaluations > nfe={nfe}"
        )
    default_tol = _DEFAULT_TOL[spec.kind]
    rtol = check_scalar("rtol", default_tol if rtol is None else rtol, positive=True)
    atol = check_scalar("atol", default_tol if atol is None else atol, positive=True)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable as callback(i, t, x); got {callback!r}")
    if not spec.stable:
        warnings.warn(
            f"method {spec.name!r} is known to diverge on stiff reverse diffusions (VP/VE reverse "
            "SDEs) unless steps are very small; prefer 'euler', 'milstein' or 'srk'",
            StabilityWarning,
            stacklevel=2,
        )
    if x_T is None:
        x_T = sde.prior_sample(shape, generator, dtype=dtype, device=device)
    hooks = StepHooks(
        grid, x_T, callback=callback, trajectory=return_trajectory, progress=progress,
        desc=spec.name,
    )  # fmt: skip
    counted = CountedScore(score)
    run = {"torchsde": _run_torchsde, "torchdiffeq": _run_torchdiffeq}.get(spec.family)
    if run is not None:
        x = run(spec, sde, counted, x_T, grid, hooks, generator, rtol, atol, time_grid is None)
    elif spec.family == "pc":
        ctx = pc.PCContext(sde, counted, grid, generator)
        x = pc.pc_sample(ctx, x_T, hooks, **opts)
    else:
        ctx = fewstep.EDMContext(sde, counted, grid, generator, f"method {spec.name!r}")
        x = _run_fewstep(spec, ctx, x_T, hooks, opts)
    fixed = None if spec.adaptive else steps
    result = SampleResult(x, counted.nfe, spec, fixed, grid, hooks.trajectory())
    return _finished(result)


def _run_fewstep(spec, ctx, x_T, hooks, opts) -> Tensor:
    if spec.solver == "edm_heun":
        return fewstep.edm_heun(ctx, x_T, hooks)
    if spec.solver == "ipndm":
        return fewstep.ipndm(ctx, x_T, hooks, order=opts["order"])
    if spec.solver == "unipc":
        return fewstep.unipc(ctx, x_T, hooks, order=opts["order"])
    if spec.solver == "edm_churn":
        return fewstep.edm_churn(ctx, x_T, hooks, **opts)
    eta = opts.get("eta", 1.0) if spec.kind == "sde" else 0.0
    return fewstep.multistep_exponential(ctx, x_T, hooks, order=opts["order"], eta=eta)


def _run_torchdiffeq(spec, sde, score, x_T, grid, hooks, generator, rtol, atol, default_grid):
    ode = ProbabilityFlowODE(sde, score)

    def solve(x, ts):
        return ode.solve(x, ts, method=spec.solver, rtol=rtol, atol=atol)

    if hooks.active:
        x = x_T
        for i in range(grid.numel() - 1):
            x = hooks(i, solve(x, grid[i : i + 2])[-1])
        return x
    if spec.adaptive and default_grid:
        return solve(x_T, grid[[0, -1]])[-1]
    return solve(x_T, grid)[-1]


def _run_torchsde(spec, sde, score, x_T, grid, hooks, generator, rtol, atol, default_grid):
    rsde = ReverseSDE(sde, score, x_T.shape[1:], sde_type=spec.sde_type)
    s_grid = sde.T - grid
    span = float(s_grid[-1] - s_grid[0])
    steps = grid.numel() - 1
    noise_shape = (x_T.shape[0], x_T[0].numel())
    if spec.adaptive:
        bm = torchsde.BrownianInterval(
            t0=float(s_grid[0]),
            t1=float(s_grid[-1]),
            size=noise_shape,
            dtype=x_T.dtype,
            device=x_T.device,
            entropy=_generator_seed(generator),
            levy_area_approximation="space-time",
        )
    else:
        bm = StepBrownian(
            float(s_grid[0]), noise_shape, dtype=x_T.dtype, device=x_T.device, generator=generator
        )

    def solve(x, ts, dt):
        return rsde.solve(
            x, ts, method=spec.solver, dt=dt, bm=bm, adaptive=spec.adaptive, rtol=rtol, atol=atol
        )

    uniform = bool(torch.allclose(s_grid.diff(), s_grid.diff()[:1], rtol=1e-9, atol=0))
    if not hooks.active and (uniform or spec.adaptive):
        # torchsde steps by curr_t + dt and clips the last step at the end; a hair over
        # span/steps keeps rounding from adding a tiny extra step.
        dt = span / steps * (1 + 1e-10)
        return solve(x_T, grid[[0, -1]], dt)[-1]
    x = x_T
    for i in range(steps):
        # One solver step per grid interval (adaptive: the interval's first step size).
        dt = float(s_grid[i + 1] - s_grid[i]) * (1 + 1e-10)
        x = hooks(i, solve(x, grid[i : i + 2], dt)[-1])
    return x
