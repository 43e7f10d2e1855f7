"""Maps between integer levels and model space, paired with :func:`sdegen.bits_per_dim`, and
the simplest likelihood baselines for discrete images."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..likelihood import _RANGES, data_transform
from ..likelihood import dequantize as _dequantize
from .images import ImageDataset


def _check_levels(levels: object) -> int:
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
        raise ValueError(f"levels must be an int >= 2 (e.g. 256 for 8-bit data); got {levels!r}")
    return levels


def _check_integer_data(name: str, x: object, levels: int) -> Tensor:
    if isinstance(x, ImageDataset):
        x = x.images
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or an ImageDataset; got {type(x).__name__}")
    if x.dim() < 2:
        raise ValueError(f"{name} must have shape (batch, *event); got {tuple(x.shape)}")
    xf = x if x.is_floating_point() else x.double()
    if x.numel() and (
        bool((xf < 0).any()) or bool((xf > levels - 1).any()) or bool((xf != xf.round()).any())
    ):
        raise ValueError(
            f"{name} must hold integers in {{0, ..., levels-1}} = {{0, ..., {levels - 1}}}; got "
            f"values in [{float(xf.min())}, {float(xf.max())}]; pass raw levels, not scaled data"
        )
    return x


def to_model_space(
    images: Tensor,
    levels: int,
    *,
    data_range: str = "[-1,1]",
    logit: float | None = None,
    dequantize: bool = True,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Integer levels ``x ∈ {0, ..., K-1}^D`` to model space ``z``, the same way
    :func:`sdegen.bits_per_dim` does it:

        ``y = (x + u) / K``, ``u ~ U[0, 1)^D`` (``dequantize=True``, via
        :func:`sdegen.dequantize`), or ``y = (x + 1/2) / K`` (bin centres, ``dequantize=False``);
        then ``z = T(y)`` with :func:`sdegen.data_transform`: ``2y - 1`` for ``"[-1,1]"``, ``y``
        for ``"[0,1]"``, ``logit(alpha + (1 - 2 alpha) y)`` for ``logit=alpha``.

    A model trained on dequantized data is the model whose bits/dim ``bits_per_dim`` reports; with
    the same ``generator`` state both draw the same ``u``.

    Arguments:
        images: ``(batch, *event)`` integer levels (any dtype), or an :class:`ImageDataset`.
        levels: ``K``.
        data_range, logit: the transform ``T``.
        dequantize: add uniform noise (for training), or use bin centres (for display, tests).
        generator: seeds ``u``.
        dtype: floating dtype of ``z``; default: that of ``images`` if floating, else
            ``torch.get_default_dtype()`` (as in :func:`sdegen.dequantize`).

    Returns:
        ``z``, shaped like ``images``.
    """
    levels = _check_levels(levels)
    x = _check_integer_data("images", images, levels)
    # The same default as sdegen.dequantize (and so bits_per_dim): a floating input keeps its
    # dtype, an integer one gets torch's default.
    dtype = dtype or (x.dtype if x.is_floating_point() else torch.get_default_dtype())
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating dtype; got {dtype}")
    if dequantize:
        y = _dequantize(x, levels, generator, dtype)
    else:
        y = (x.to(dtype) + 0.5) / levels
    return data_transform(y, data_range, logit)[0]


def from_model_space(
    z: Tensor,
    levels: int,
    *,
    data_range: str = "[-1,1]",
    logit: float | None = None,
) -> Tensor:
    """Model space back to integer levels: ``y = T^{-1}(z)``, ``x = clamp(floor(K y), 0, K-1)``.

    ``floor`` inverts both maps of :func:`to_model_space`: the bin ``[x/K, (x+1)/K)`` holds every
    dequantized value of level ``x`` and its centre. Values outside the data range (samples of a
    model) are clamped, and NaN maps to 0.

    Returns:
        int64 tensor shaped like ``z``.
    """
    levels = _check_levels(levels)
    if not isinstance(z, Tensor) or not z.is_floating_point():
        raise TypeError(
            "z must be a floating torch.Tensor; got "
            + (str(z.dtype) if isinstance(z, Tensor) else type(z).__name__)
        )
    if logit is not None:
        alpha = float(logit)
        if not 0 < alpha < 0.5:
            raise ValueError(f"logit (alpha) must lie in (0, 0.5); got {logit}")
        y = (torch.sigmoid(z) - alpha) / (1 - 2 * alpha)
    elif data_range == "[0,1]":
        y = z
    elif data_range == "[-1,1]":
        y = (z + 1) / 2
    else:
        raise ValueError(f"data_range must be one of {_RANGES}; got {data_range!r}")
    x = torch.floor(torch.nan_to_num(y, nan=0.0) * levels)
    return x.clamp(0, levels - 1).long()


def uniform_bits_per_dim(levels: int) -> float:
    """``log2 K``: the bits/dim of the uniform distribution over ``K`` levels, the score of a
    model that has learnt nothing."""
    return math.log2(_check_levels(levels))


def categorical_bits_per_dim(
    train: Tensor | ImageDataset,
    test: Tensor | ImageDataset,
    levels: int,
    alpha: float = 1.0,
) -> float:
    """Held-out bits/dim of independent per-pixel categorical distributions, a baseline any
    generative model of the images should beat.

    For every coordinate ``d`` the train counts ``n_{d,k}`` of level ``k`` give the add-``alpha``
    estimate ``p_{d,k} = (n_{d,k} + alpha) / (N + K alpha)``, and

        ``bpd = -1/(M D) Σ_{test images} Σ_d log2 p_{d, x_d}``.

    It is a discrete likelihood, directly comparable with :func:`sdegen.bits_per_dim` (whose
    dequantized value bounds the discrete one from above).

    Arguments:
        train, test: ``(N, *event)`` and ``(M, *event)`` integer levels, or ImageDatasets.
        levels: ``K``.
        alpha: smoothing pseudo-count, ``> 0`` (so that unseen levels keep a finite cost).
    """
    levels = _check_levels(levels)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise ValueError(f"alpha must be a number > 0; got {alpha!r}")
    xtr = _check_integer_data("train", train, levels).flatten(1).long()
    xte = _check_integer_data("test", test, levels).flatten(1).long()
    if xtr.shape[1] != xte.shape[1]:
        raise ValueError(
            f"train and test must have the same event size; got {xtr.shape[1]} and {xte.shape[1]}"
        )
    n, d = xtr.shape
    counts = torch.zeros(d, levels, dtype=torch.float64)
    counts.scatter_add_(1, xtr.T.contiguous(), torch.ones(d, n, dtype=torch.float64))
    log_p = torch.log2(counts + alpha) - math.log2(n + levels * alpha)
    picked = log_p.gather(1, xte.T.contiguous())  # (D, M)
    return float(-picked.mean())
