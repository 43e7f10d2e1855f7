"""Noise-level and class embeddings shared by the networks.

A network sees the noise level only through ``c_noise``, a ``(batch,)`` feature chosen by
:class:`~sdegen.models.ScoreModel` (``log(s(t) / m(t)) / 4`` for linear SDEs, about ``[-3, 2]``
for the shipped ones; ``t`` for SDEs without a kernel). These modules turn it into a vector.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class GaussianFourierFeatures(nn.Module):
    """Random Fourier features ``[sin(2π c W), cos(2π c W)]`` of a scalar ``c``
    (Tancik et al. 2020; used for time by Song et al. 2021).

    ``W ~ N(0, scale^2)`` has ``dim // 2`` fixed frequencies drawn from a generator seeded with
    ``seed``, so two modules built with the same arguments are equal without copying weights;
    they are also kept in the state dict.

    Arguments:
        dim: output size (even).
        scale: standard deviation of the frequencies; ``c_noise`` spans a few units, so periods of
            about one unit (``scale = 1``) resolve it.
        seed: seed of the frequency draw.

    Shapes: ``c`` ``(batch,)`` -> ``(batch, dim)``.
    """

    def __init__(self, dim: int, scale: float = 1.0, seed: int = 0) -> None:
        super().__init__()
        _check_even("dim", dim)
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("freqs", torch.randn(dim // 2, generator=g) * scale)

    def forward(self, c: Tensor) -> Tensor:
        phase = 2 * math.pi * c[:, None].to(self.freqs.dtype) * self.freqs[None]
        return torch.cat([phase.sin(), phase.cos()], dim=1)


class SinusoidalEmbedding(nn.Module):
    """Transformer-style features ``[sin(ω_k c), cos(ω_k c)]`` with ``dim // 2`` frequencies
    ``ω_k`` spaced geometrically in ``[min_freq, max_freq]`` (Vaswani et al. 2017; Ho et al. 2020).

    Shapes: ``c`` ``(batch,)`` -> ``(batch, dim)``.
    """

    def __init__(self, dim: int, min_freq: float = 0.5, max_freq: float = 100.0) -> None:
        super().__init__()
        _check_even("dim", dim)
        if not 0 < min_freq < max_freq:
            raise ValueError(
                f"need 0 < min_freq < max_freq; got min_freq={min_freq}, max_freq={max_freq}"
            )
        freqs = torch.exp(torch.linspace(math.log(min_freq), math.log(max_freq), dim // 2))
        self.register_buffer("freqs", freqs)

    def forward(self, c: Tensor) -> Tensor:
        phase = c[:, None].to(self.freqs.dtype) * self.freqs[None]
        return torch.cat([phase.sin(), phase.cos()], dim=1)


def time_embedding(kind: str, dim: int, scale: float) -> nn.Module:
    """``"fourier"`` -> :class:`GaussianFourierFeatures`, ``"sinusoidal"`` ->
    :class:`SinusoidalEmbedding`."""
    if kind == "fourier":
        return GaussianFourierFeatures(dim, scale)
    if kind == "sinusoidal":
        return SinusoidalEmbedding(dim)
    raise ValueError(f"embedding must be 'fourier' or 'sinusoidal'; got {kind!r}")


class ClassEmbedding(nn.Module):
    """A learned vector per class plus one for the *null* label.

    With ``num_classes = K`` the labels are ``0..K-1`` and ``K`` is the null label, used for
    unconditional predictions (classifier-free guidance trains it by label dropout);
    ``labels=None`` means the null label for the whole batch.

    Shapes: ``labels`` ``(batch,)`` int64 or None -> ``(batch, dim)``.
    """

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.embedding = nn.Embedding(num_classes + 1, dim)

    def forward(self, labels: Tensor | None, batch: int, device: torch.device) -> Tensor:
        if labels is None:
            labels = torch.full((batch,), self.num_classes, dtype=torch.long, device=device)
        else:
            check_labels(labels, batch, self.num_classes)
        return self.embedding(labels.long())


def check_num_classes(num_classes: int | None) -> int | None:
    if num_classes is None:
        return None
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be None or an int >= 1; got {num_classes!r}")
    return num_classes


def check_labels(labels: object, batch: int, num_classes: int | None) -> None:
    """Labels are a ``(batch,)`` integer tensor with values in ``0..num_classes`` (the last being
    the null label). The range check reads the values, so it is skipped under ``torch.compile``."""
    if num_classes is None:
        raise ValueError(
            "labels were given but the network is unconditional (num_classes=None); build it "
            "with num_classes=K to condition on K classes, or pass labels=None"
        )
    if not isinstance(labels, Tensor):
        raise TypeError(f"labels must be an int64 tensor of shape (batch,); got {type(labels)}")
    if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"labels must be an integer tensor (int64); got dtype {labels.dtype}")
    if labels.shape != (batch,):
        raise ValueError(f"labels must have shape (batch,) = ({batch},); got {tuple(labels.shape)}")
    if not torch.compiler.is_compiling() and labels.numel() > 0:
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi > num_classes:
            raise ValueError(
                f"labels must lie in 0..{num_classes} (0..{num_classes - 1} are classes, "
                f"{num_classes} is the null label); got min {lo}, max {hi}"
            )


def _check_even(name: str, dim: int) -> None:
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2 or dim % 2:
        raise ValueError(f"{name} must be an even int >= 2; got {dim!r}")
