"""What happens after every step of a sampler: the user's callback, the trajectory, progress."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .._validation import check_tensor

Callback = Callable[[int, float, Tensor], "Tensor | None"]


class StepHooks:
    """Called once per step as ``x = hooks(i, t, x)``.

    ``callback(i, t, x)`` receives the step index ``i`` (``0 .. steps - 1``), the forward time
    ``t`` that ``x`` has reached (a float) and ``x`` ``(batch, *event)``; if it returns a tensor,
    that tensor replaces ``x`` (it must have ``x``'s shape). The trajectory, when asked for,
    records ``x`` at every grid time after the callback.
    """

    def __init__(
        self,
        grid: Tensor,
        x_T: Tensor,
        *,
        callback: Callback | None,
        trajectory: bool,
        progress: bool,
        desc: str,
    ) -> None:
        self.grid = grid
        self.callback = callback
        self.states = [x_T.clone()] if trajectory else None
        self.bar = None
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=grid.numel() - 1, desc=desc, leave=False)

    @property
    def active(self) -> bool:
        """Whether a step-by-step loop is needed (a callback, a trajectory or a progress bar)."""
        return self.callback is not None or self.states is not None or self.bar is not None

    def __call__(self, i: int, x: Tensor) -> Tensor:
        t = float(self.grid[i + 1])
        if self.callback is not None:
            out = self.callback(i, t, x)
            if out is not None:
                out = check_tensor("callback's return value", out)
                if out.shape != x.shape:
                    raise ValueError(
                        f"callback must return None or a tensor shaped like x {tuple(x.shape)}; "
                        f"got {tuple(out.shape)}"
                    )
                x = out.to(dtype=x.dtype, device=x.device)
        if self.states is not None:
            self.states.append(x.clone())
        if self.bar is not None:
            self.bar.update(1)
        return x

    def owned(self, i: int, x: Tensor) -> Tensor:
        """``hooks(i, x)`` for a loop that updates its state in place: a copy of the result, since
        the callback may keep ``x`` or return a tensor of its own; ``x`` itself when there is
        nothing to call."""
        return self(i, x).clone() if self.active else x

    def trajectory(self) -> Tensor | None:
        if self.bar is not None:
            self.bar.close()
        return None if self.states is None else torch.stack(self.states)
