"""Boundary checks. Each one raises with the argument's name, the allowed range and the value seen.

Entry points call these once; inner loops (drift, score, solver steps) trust their inputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


def check_scalar(
    name: str,
    value: float,
    *,
    positive: bool = False,
    nonnegative: bool = False,
) -> float:
    """Return ``value`` as a finite float, or raise naming ``name``."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise TypeError(f"{name} must be a number; got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number; got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite; got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0; got {value}")
    if nonnegative and value < 0:
        raise ValueError(f"{name} must be >= 0; got {value}")
    return value


def check_time_range(t_min: float, T: float) -> tuple[float, float]:
    t_min = check_scalar("t_min", t_min, positive=True)
    T = check_scalar("T", T, positive=True)
    if not t_min < T:
        raise ValueError(f"t_min must be smaller than T; got t_min={t_min}, T={T}")
    return t_min, T


def check_tensor(name: str, x: object, *, min_dim: int = 1) -> Tensor:
    """``x`` must be a floating tensor with a batch dimension and only finite entries."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype; got {x.dtype}")
    if x.dim() < min_dim:
        raise ValueError(
            f"{name} must have at least {min_dim} dimension(s) (batch, *event); "
            f"got shape {tuple(x.shape)}"
        )
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} contains {bad} NaN or inf entries; pass finite values")
    return x


def check_same_shape(name: str, x: Tensor, other_name: str, other: Tensor) -> None:
    if x.shape != other.shape:
        raise ValueError(
            f"{name} must have the same shape as {other_name}: "
            f"got {tuple(x.shape)} and {tuple(other.shape)}"
        )


def check_shape(name: str, shape: Sequence[int]) -> tuple[int, ...]:
    if isinstance(shape, int):
        shape = (shape,)
    try:
        shape = tuple(shape)
    except TypeError:
        raise TypeError(
            f"{name} must be a tuple of ints (batch, *event); got {type(shape).__name__}"
        ) from None
    if len(shape) < 2 or not all(isinstance(s, int) and s > 0 for s in shape):
        raise ValueError(
            f"{name} must be a tuple of positive ints (batch, *event) with at least one event "
            f"dimension, e.g. (512, 2); got {shape}"
        )
    return shape


def as_time(name: str, t: float | Tensor, batch: int, like: Tensor) -> Tensor:
    """Turn ``t`` (a float, a 0-d tensor or a ``(batch,)`` tensor) into a ``(batch,)`` tensor
    with the dtype and device of ``like``."""
    if isinstance(t, Tensor):
        if t.dim() == 0:
            t = t.expand(batch)
        elif t.shape != (batch,):
            raise ValueError(
                f"{name} must be a float or a tensor of shape (batch,) = ({batch},); "
                f"got shape {tuple(t.shape)}"
            )
        return t.to(dtype=like.dtype, device=like.device)
    if isinstance(t, bool) or not isinstance(t, (int, float)):
        raise TypeError(f"{name} must be a float or a tensor; got {type(t).__name__}")
    return torch.full((batch,), float(t), dtype=like.dtype, device=like.device)


def check_time_in_range(name: str, t: Tensor, t_min: float, T: float) -> None:
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or inf; pass times in [t_min, T] = [{t_min}, {T}]")
    lo, hi = float(t.min()), float(t.max())
    # Compare in t's own dtype so that float32(t_min) counts as inside the range.
    if bool((t < t.new_tensor(t_min)).any()) or bool((t > t.new_tensor(T)).any()):
        raise ValueError(f"{name} must lie in [t_min, T] = [{t_min}, {T}]; got min {lo}, max {hi}")
