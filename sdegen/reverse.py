"""Reverse-time SDE (a torchsde SDE object) and probability-flow ODE (a torchdiffeq function)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torchdiffeq
import torchsde
from torch import Tensor

from ._utils import append_dims
from ._validation import check_tensor
from .sde.base import AbstractSDE

ScoreFn = Callable[[Tensor, Tensor], Tensor]

_SDE_TYPES = ("ito", "stratonovich")
# torchsde methods that only use f and g_prod (reversible_heun needs the matrix g).
_ADDITIVE_OK = frozenset({"euler", "milstein", "srk", "heun", "midpoint", "euler_heun"})
_ADAPTIVE_ODE_METHODS = frozenset({"dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun"})


class CountedScore:
    """Wraps ``score(x, t)``, counting every call in ``nfe`` and checking the first output's shape.

    A plain object rather than a module: ``nn.Module.__setattr__`` would cost more per call than
    a cheap score. :class:`ReverseSDE` and :class:`ProbabilityFlowODE` register the wrapped score
    as a submodule when it is one, so its parameters are visible to adjoint solvers."""

    def __init__(self, score: ScoreFn) -> None:
        if not callable(score):
            raise TypeError(f"score must be callable as score(x, t); got {type(score).__name__}")
        self.score = score
        self.nfe = 0
        self._checked = False

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        out = self.score(x, t)
        self.nfe += 1
        if not self._checked:
            if not isinstance(out, Tensor) or out.shape != x.shape:
                got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise ValueError(
                    f"score(x, t) must return a tensor shaped like x {tuple(x.shape)}; got {got}"
                )
            self._checked = True
        return out


def _counted(owner: torch.nn.Module, score: ScoreFn) -> CountedScore:
    counted = score if isinstance(score, CountedScore) else CountedScore(score)
    if isinstance(counted.score, torch.nn.Module):
        owner.score_module = counted.score
    return counted


def _check_sde(sde: AbstractSDE) -> None:
    for attr in ("drift", "diffusion", "t_min", "T"):
        if not hasattr(sde, attr):
            raise TypeError(f"sde must provide {attr} (see sdegen.AbstractSDE); got {sde!r}")


class ReverseSDE(torch.nn.Module):
    """The reverse-time SDE ``dx = [f(x, t) - g(t)^2 ∇log p_t(x)] dt + g(t) dw̄`` as a torchsde
    SDE object.

    torchsde integrates forward in its time variable with ``(batch, d)`` states, so this object
    runs in ``s = T - t`` on flattened states: ``f(s, y) = -[f - g^2 score](x, T - s)`` and
    ``g(s, y) = g(T - s)`` per coordinate (``noise_type = "diagonal"``). Because ``g`` depends on
    ``t`` only, the Itô and Stratonovich forms coincide, so ``sde_type`` may be either, which makes
    torchsde's Stratonovich solvers (midpoint, heun, reversible_heun) usable.

    Use :meth:`solve` to integrate with ``(batch, *event)`` tensors and forward times; ``nfe``
    counts score evaluations (including torchsde's contract check).

    Arguments:
        sde: the forward SDE.
        score: ``score(x, t) -> ∇ log p_t(x)``, ``x`` ``(batch, *event)``, ``t`` ``(batch,)``.
        event_shape: the shape of one sample, e.g. ``(2,)`` or ``(1, 28, 28)``.
        sde_type: ``"ito"`` or ``"stratonovich"``.
    """

    noise_type = "diagonal"

    def __init__(
        self,
        sde: AbstractSDE,
        score: ScoreFn,
        event_shape: Sequence[int],
        sde_type: str = "ito",
    ) -> None:
        super().__init__()
        _check_sde(sde)
        if sde_type not in _SDE_TYPES:
            raise ValueError(f"sde_type must be one of {_SDE_TYPES}; got {sde_type!r}")
        self.forward_sde = sde
        self.score = _counted(self, score)
        self.event_shape = tuple(event_shape)
        self.sde_type = sde_type
        self._last: tuple | None = None

    @property
    def nfe(self) -> int:
        return self.score.nfe

    def _time(self, s: Tensor, y: Tensor) -> Tensor:
        return torch.full(
            (y.shape[0],), self.forward_sde.T - float(s), dtype=y.dtype, device=y.device
        )

    def _drift(self, s: Tensor, y: Tensor, t: Tensor, g: Tensor) -> Tensor:
        # torchsde's contract check and its first step both ask for the drift at (ts[0], y0);
        # remembering the last answer keeps that to one score evaluation.
        key = (float(s), y._version)
        if self._last is not None and self._last[0] is y and self._last[1] == key:
            return self._last[2]
        x = y.reshape(y.shape[0], *self.event_shape)
        g2 = append_dims(g * g, x.dim())
        # In s = T - t the drift changes sign: -(f - g^2 score) = g^2 score - f.
        out = (g2 * self.score(x, t) - self.forward_sde.drift(x, t)).reshape(y.shape)
        self._last = (y, key, out)
        return out

    def f(self, s: Tensor, y: Tensor) -> Tensor:
        t = self._time(s, y)
        return self._drift(s, y, t, self.forward_sde.diffusion(t))

    def g(self, s: Tensor, y: Tensor) -> Tensor:
        return self.forward_sde.diffusion(self._time(s, y))[:, None].expand_as(y)

    def f_and_g(self, s: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        t = self._time(s, y)
        g = self.forward_sde.diffusion(t)
        return self._drift(s, y, t, g), g[:, None].expand_as(y)

    def g_prod(self, s: Tensor, y: Tensor, v: Tensor) -> Tensor:
        return self.forward_sde.diffusion(self._time(s, y))[:, None] * v

    def f_and_g_prod(self, s: Tensor, y: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        t = self._time(s, y)
        g = self.forward_sde.diffusion(t)
        return self._drift(s, y, t, g), g[:, None] * v

    def additive(self) -> _AdditiveView:
        """This SDE declared with torchsde's ``noise_type = "additive"``.

        The diffusion does not depend on the state, so it is additive noise; declaring it lets
        torchsde use its additive-noise schemes (SRA1 for ``srk``: 2 drift evaluations a step
        instead of 9 for the diagonal-noise scheme, same strong order 1.5; Milstein without the
        autograd correction term). The view exposes only ``f``, ``g_prod`` and
        ``f_and_g_prod`` (torchsde would read a ``g`` as a ``(batch, d, m)`` matrix)."""
        return _AdditiveView(self)

    def solve(
        self,
        x: Tensor,
        ts: Sequence[float] | Tensor,
        *,
        method: str,
        dt: float,
        bm: torchsde.BrownianInterval | None = None,
        adaptive: bool = False,
        rtol: float = 1e-5,
        atol: float = 1e-4,
    ) -> Tensor:
        """Integrate from ``x`` at forward time ``ts[0]`` down through decreasing ``ts``.

        ``bm`` is a torchsde Brownian motion over solver time ``s = T - t`` with size
        ``(batch, prod(event))`` (default: a fresh ``BrownianInterval``; for fixed steps
        :class:`~sdegen.sampling.StepBrownian` is several times cheaper). Returns
        ``(len(ts), batch, *event)``; ``ts`` must be strictly decreasing."""
        x = check_tensor("x", x, min_dim=2)
        ts = torch.as_tensor(ts, dtype=torch.float64)
        if ts.dim() != 1 or ts.numel() < 2 or bool((ts[1:] >= ts[:-1]).any()):
            raise ValueError("ts must be a strictly decreasing 1-D sequence of forward times")
        # Solver time stays on the CPU in float64: torchsde does its step arithmetic on 0-d
        # tensors, which would force a device sync per step on an accelerator.
        s = self.forward_sde.T - ts
        if bm is None:
            bm = torchsde.BrownianInterval(
                t0=float(s[0]),
                t1=float(s[-1]),
                size=(x.shape[0], x[0].numel()),
                dtype=x.dtype,
                device=x.device,
                levy_area_approximation="space-time",
            )
        self._last = None
        ys = torchsde.sdeint(
            self.additive() if method in _ADDITIVE_OK else self,
            x.reshape(x.shape[0], -1),
            s,
            bm=bm,
            method=method,
            dt=dt,
            adaptive=adaptive,
            rtol=rtol,
            atol=atol,
        )
        self._last = None
        return ys.reshape(ys.shape[0], *x.shape)


class _AdditiveView(torch.nn.Module):
    noise_type = "additive"

    def __init__(self, rsde: ReverseSDE) -> None:
        super().__init__()
        self.rsde = rsde
        self.sde_type = rsde.sde_type
        self.f = rsde.f
        self.g_prod = rsde.g_prod
        self.f_and_g_prod = rsde.f_and_g_prod


class ProbabilityFlowODE(torch.nn.Module):
    """The probability-flow ODE ``dx/dt = f(x, t) - ½ g(t)^2 ∇log p_t(x)`` as a torchdiffeq
    function ``(t, x) -> dx/dt``.

    Its solutions carry ``p_t`` to ``p_s`` for all ``s, t`` (the same marginals as the SDE), and
    the map is deterministic and invertible. torchdiffeq handles decreasing time natively, so the
    same function integrates data → prior and prior → data. ``t`` may be a 0-d tensor (as
    torchdiffeq passes it) or ``(batch,)``; ``nfe`` counts score evaluations.

    Example:
        >>> ode = ProbabilityFlowODE(sde, score)
        >>> x0 = torchdiffeq.odeint(ode, x_T, torch.tensor([sde.T, sde.t_min]))[-1]
    """

    def __init__(self, sde: AbstractSDE, score: ScoreFn) -> None:
        super().__init__()
        _check_sde(sde)
        self.sde = sde
        self.score = _counted(self, score)

    @property
    def nfe(self) -> int:
        return self.score.nfe

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        t = torch.as_tensor(t).to(dtype=x.dtype, device=x.device)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        g2 = append_dims(self.sde.diffusion(t) ** 2, x.dim())
        return self.sde.drift(x, t) - 0.5 * g2 * self.score(x, t)

    def solve(
        self,
        x: Tensor,
        ts: Sequence[float] | Tensor,
        *,
        method: str = "dopri5",
        rtol: float = 1e-5,
        atol: float = 1e-5,
        options: dict | None = None,
    ) -> Tensor:
        """Integrate from ``x`` at ``ts[0]`` through ``ts`` (increasing or decreasing) with
        torchdiffeq. Returns ``(len(ts), batch, *event)``."""
        x = check_tensor("x", x, min_dim=2)
        ts = torch.as_tensor(ts, dtype=torch.float64)
        if ts.dim() != 1 or ts.numel() < 2:
            raise ValueError("ts must be a 1-D sequence of at least two times")
        ts = ts.to(x.device)
        options = dict(options or {})
        if method in _ADAPTIVE_ODE_METHODS:
            # torchdiffeq's adaptive steps may overshoot the last time and interpolate back;
            # past t_min (or T) the schedules are undefined, so make the last step land on it.
            options.setdefault("step_t", ts[-1:])
            # torchdiffeq's first-step heuristic probes f at t0 + h0, which can lie outside
            # [t_min, T] where schedules are undefined; start small instead and let it grow.
            options.setdefault("first_step", 1e-3 * float((ts[-1] - ts[0]).abs()))
        return torchdiffeq.odeint(self, x, ts, method=method, rtol=rtol, atol=atol, options=options)
