"""Simulate a forward SDE with torchsde, for Monte-Carlo checks of kernels and marginals."""

from __future__ import annotations

import torch
import torchsde
from torch import Tensor

from .._utils import append_dims
from .._validation import check_tensor
from ..sampling.brownian import StepBrownian


class _ForwardTorchSDE(torch.nn.Module):
    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, sde, event_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.sde = sde
        self.event_shape = event_shape

    def _x_t(self, t: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        return y.reshape(y.shape[0], *self.event_shape), t.to(y.dtype).expand(y.shape[0])

    def f(self, t: Tensor, y: Tensor) -> Tensor:
        x, t = self._x_t(t, y)
        return self.sde.drift(x, t).reshape(y.shape)

    def g(self, t: Tensor, y: Tensor) -> Tensor:
        _, t = self._x_t(t, y)
        return append_dims(self.sde.diffusion(t), 2).expand_as(y)


def simulate_forward(
    sde,
    x0: Tensor,
    t0: float,
    t1: float,
    *,
    steps: int,
    method: str = "euler",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Solve ``dx = f dt + g dw`` from ``x0`` at ``t0`` to ``t1`` with ``steps`` fixed torchsde
    steps (``euler``: weak order 1, so the law is off by O(dt)). Returns ``(batch, *event)``."""
    x0 = check_tensor("x0", x0, min_dim=2)
    if not t0 < t1:
        raise ValueError(f"t0 must be smaller than t1; got t0={t0}, t1={t1}")
    y0 = x0.reshape(x0.shape[0], -1)
    bm = StepBrownian(t0, tuple(y0.shape), dtype=x0.dtype, device=x0.device, generator=generator)
    ts = torch.tensor([t0, t1], dtype=torch.float64, device=x0.device)
    dt = (t1 - t0) / steps * (1 + 1e-10)
    ys = torchsde.sdeint(
        _ForwardTorchSDE(sde, tuple(x0.shape[1:])), y0, ts, bm=bm, method=method, dt=dt
    )
    return ys[-1].reshape(x0.shape)
