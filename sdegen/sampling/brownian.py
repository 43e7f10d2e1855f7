"""A Brownian motion for fixed-step torchsde solves that costs one ``randn`` per step."""

from __future__ import annotations

import math

import torch
import torchsde
from torch import Tensor

from .._utils import step_noise


class StepBrownian(torchsde.BaseBrownian):
    """Fresh, seeded Gaussian increments on a fixed step grid, meeting torchsde's ``BaseBrownian``.

    ``bm(ta, tb)`` returns ``W(tb) - W(ta) ~ N(0, (tb - ta) I)`` drawn from ``generator``; with
    ``return_U=True`` it also returns the space-time integral ``U = ∫_ta^tb (W_s - W_ta) ds =
    h (ΔW / 2 + H)`` with ``H ~ N(0, h / 12)`` independent of ``ΔW`` (what torchsde's SRK needs).

    torchsde's ``BrownianInterval`` keeps a tree of every queried interval so that any interval
    can be re-queried consistently, which adaptive stepping needs but which costs several
    Euler–Maruyama steps per step when the score is cheap. A fixed-step solver queries each step
    once, in order; this class enforces that (a repeated query of the last interval returns the
    same increment, any other out-of-order query raises) so it cannot silently give a wrong law.
    """

    __slots__ = ("_device", "_dtype", "_generator", "_last", "_last_out", "_shape", "_tol")

    def __init__(
        self,
        t0: float,
        shape: tuple[int, int],
        *,
        dtype: torch.dtype,
        device: torch.device | str,
        generator: torch.Generator | None = None,
    ) -> None:
        self._shape = tuple(shape)
        self._dtype = dtype
        self._device = torch.device(device)
        self._generator = generator
        self._last = (None, float(t0))
        self._last_out: tuple[Tensor, Tensor | None] | None = None
        self._tol = 1e-9

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        if tb is None:
            raise ValueError("StepBrownian answers interval queries bm(ta, tb) only")
        if return_A:
            raise ValueError(
                "StepBrownian has no Lévy area; use a torchsde.BrownianInterval for log-ODE methods"
            )
        ta, tb = float(ta), float(tb)
        prev_a, prev_b = self._last
        scale = self._tol * max(1.0, abs(tb))
        if prev_a is not None and abs(ta - prev_a) <= scale and abs(tb - prev_b) <= scale:
            dW, U = self._last_out
        elif abs(ta - prev_b) <= scale and tb > ta:
            h = tb - ta
            noise = step_noise(
                (2 if return_U else 1, *self._shape),
                generator=self._generator,
                dtype=self._dtype,
                device=self._device,
            )
            dW = noise[0] * math.sqrt(h)
            U = h * (0.5 * dW + noise[1] * math.sqrt(h / 12)) if return_U else None
            self._last, self._last_out = (ta, tb), (dW, U)
        else:
            raise RuntimeError(
                f"StepBrownian was queried on [{ta}, {tb}] after [{prev_a}, {prev_b}]; it serves "
                "consecutive steps of a fixed-step solve only (use BrownianInterval for adaptive "
                "stepping)"
            )
        if return_U:
            if U is None:
                raise RuntimeError("return_U must be asked for on the first query of a step")
            return dW, U
        return dW

    def __repr__(self) -> str:
        return f"StepBrownian(shape={self._shape}, dtype={self._dtype}, device={self._device})"

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def shape(self) -> tuple[int, int]:
        return self._shape

    @property
    def levy_area_approximation(self) -> str:
        return "space-time"
