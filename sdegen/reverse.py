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
_ADAPTIVE_ODE_METHODS = frozenset({"dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun"})


class CountedScore(torch.nn.Module):
    """Wraps ``score(x, t)``, counting every call in ``nfe`` and checking the first output's shape.

    Being a module, it registers a score network's parameters for adjoint solvers."""

    def __init__(self, score: ScoreFn) -> None:
        super().__init__()
        if not callable(score):
            raise TypeError(f"score must be callable as score(x, t); got {type(score).__name__}")
        self.score = score
        self.nfe = 0
        self._checked = False

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
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


def _counted(score: ScoreFn) -> CountedScore:
    return score if isinstance(score, CountedScore) else CountedScore(score)


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
        self.score = _counted(score)
        self.event_shape = tuple(event_shape)
        self.sde_type = sde_type

    @property
    def nfe(self) -> int:
        return self.score.nfe

    def _unflatten(self, s: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        x = y.reshape(y.shape[0], *self.event_shape)
        t = (self.forward_sde.T - s).to(dtype=y.dtype, device=y.device).expand(y.shape[0])
        return x, t

    def f(self, s: Tensor, y: Tensor) -> Tensor:
        x, t = self._unflatten(s, y)
        g2 = append_dims(self.forward_sde.diffusion(t) ** 2, x.dim())
        drift = self.forward_sde.drift(x, t) - g2 * self.score(x, t)
        return -drift.reshape(y.shape)

    def g(self, s: Tensor, y: Tensor) -> Tensor:
        _, t = self._unflatten(s, y)
        return self.forward_sde.diffusion(t)[:, None].expand_as(y)

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

        Returns ``(len(ts), batch, *event)``; ``ts`` must be strictly decreasing."""
        x = check_tensor("x", x, min_dim=2)
        ts = torch.as_tensor(ts, dtype=torch.float64)
        if ts.dim() != 1 or ts.numel() < 2 or bool((ts[1:] >= ts[:-1]).any()):
            raise ValueError("ts must be a strictly decreasing 1-D sequence of forward times")
        s = (self.forward_sde.T - ts).to(x.device)
        ys = torchsde.sdeint(
            self,
            x.reshape(x.shape[0], -1),
            s,
            bm=bm,
            method=method,
            dt=dt,
            adaptive=adaptive,
            rtol=rtol,
            atol=atol,
        )
        return ys.reshape(ys.shape[0], *x.shape)


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
        self.score = _counted(score)

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
        return torchdiffeq.odeint(self, x, ts, method=method, rtol=rtol, atol=atol, options=options)
