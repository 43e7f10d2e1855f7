from __future__ import annotations

import torch
from torch import Tensor


def append_dims(v: Tensor, ndim: int) -> Tensor:
    """Reshape a ``(batch,)`` tensor to ``(batch, 1, ..., 1)`` with ``ndim`` dimensions in all,
    so that a per-sample scalar broadcasts over event dimensions of any rank."""
    return v.reshape(v.shape + (1,) * (ndim - v.dim()))


def batch_sum(x: Tensor) -> Tensor:
    """Sum over all event dimensions: ``(batch, *event) -> (batch,)``."""
    return x.flatten(1).sum(1)


def sample_normal(
    shape: tuple[int, ...],
    *,
    generator: torch.Generator | None,
    dtype: torch.dtype | None,
    device: torch.device | str | None,
) -> Tensor:
    """Standard normal noise; the device defaults to the generator's so seeded draws work."""
    if device is None and generator is not None:
        device = generator.device
    return torch.randn(shape, generator=generator, dtype=dtype, device=device)
