"""Figures a person can look at: image grids, 2-D samples and densities, diffusion trajectories,
and sampler error-vs-NFE curves.

Image grids and GIFs are written with Pillow (no torchvision); line and density plots with
matplotlib on the non-interactive ``Agg`` backend, so every function works on a headless machine.
Each function writes ``path`` (parent folders are created) and returns it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ._validation import check_tensor

__all__ = [
    "density_2d",
    "error_vs_nfe",
    "image_grid",
    "save_image_grid",
    "scatter_2d",
    "trajectory_gif",
    "trajectory_strip",
]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _prepare(path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def image_grid(
    images: Tensor,
    *,
    value_range: tuple[float, float] = (-1.0, 1.0),
    levels: int | None = None,
    nrow: int | None = None,
    padding: int = 1,
    scale: int = 4,
) -> np.ndarray:
    """Tile ``(N, C, H, W)`` images (C = 1 or 3) into one ``uint8`` array ``(rows, cols, 3)``.

    Arguments:
        images: model-space floats in ``value_range``, or integer levels when ``levels`` is given
            (``0 .. levels - 1``, e.g. 17 for scikit-learn's digits).
        nrow: images per row (default: about ``sqrt(N)``).
        padding: pixels of mid-grey between tiles (before scaling).
        scale: nearest-neighbour upscaling, so 8×8 digits are visible.
    """
    if isinstance(images, Tensor) and not images.is_floating_point():
        images = images.double()  # integer levels
    images = check_tensor("images", images, min_dim=4)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, C, H, W) with C = 1 or 3; got {tuple(images.shape)}")
    x = images.detach().to("cpu", torch.float64)
    if levels is not None:
        x = x / (levels - 1)
    else:
        lo, hi = value_range
        if not hi > lo:
            raise ValueError(f"value_range must be (low, high) with low < high; got {value_range}")
        x = (x - lo) / (hi - lo)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    n, _, h, w = x.shape
    ncol = nrow or max(1, math.ceil(math.sqrt(n)))
    nrows = math.ceil(n / ncol)
    grid = torch.full(
        (3, nrows * (h + padding) + padding, ncol * (w + padding) + padding), 128, dtype=torch.uint8
    )
    for i in range(n):
        r, c = divmod(i, ncol)
        top, left = padding + r * (h + padding), padding + c * (w + padding)
        grid[:, top : top + h, left : left + w] = x[i]
    grid = grid.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    return grid.permute(1, 2, 0).numpy()


def save_image_grid(images: Tensor, path: str | Path, **kwargs) -> Path:
    """Write :func:`image_grid` of ``images`` as a PNG. Keyword arguments as for
    :func:`image_grid`.

    Example:
        >>> save_image_grid(samples, "runs/demo/samples.png", levels=17)  # doctest: +SKIP
    """
    from PIL import Image

    path = _prepare(path)
    Image.fromarray(image_grid(images, **kwargs)).save(path)
    return path


def scatter_2d(
    samples: Tensor | Mapping[str, Tensor],
    path: str | Path,
    *,
    reference: Tensor | None = None,
    title: str | None = None,
    limit: float | None = None,
    max_points: int = 5000,
) -> Path:
    """Scatter plots of 2-D samples, one panel per entry when ``samples`` is a dict
    ``{label: (n, 2)}``, each over the faint ``reference`` points (e.g. data) when given."""
    plt = _pyplot()
    panels = dict(samples) if isinstance(samples, Mapping) else {title or "samples": samples}
    for name, value in panels.items():
        value = check_tensor(f"samples[{name!r}]", value, min_dim=2)
        if value.ndim != 2 or value.shape[1] != 2:
            raise ValueError(f"samples[{name!r}] must be (n, 2); got {tuple(value.shape)}")
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), squeeze=False)
    points = [v.detach().cpu().double()[:max_points] for v in panels.values()]
    if limit is None:
        stacked = torch.cat(
            points + ([reference.detach().cpu().double()] if reference is not None else [])
        )
        limit = float(torch.quantile(stacked.abs().flatten(), 0.995)) * 1.15
    for ax, (name, pts) in zip(axes[0], zip(panels, points, strict=True), strict=True):
        if reference is not None:
            ref = reference.detach().cpu().double()[:max_points]
            ax.scatter(ref[:, 0], ref[:, 1], s=2, c="0.8", lw=0, label="data")
        ax.scatter(pts[:, 0], pts[:, 1], s=2, c="C0", lw=0)
        ax.set(xlim=(-limit, limit), ylim=(-limit, limit), aspect="equal", title=name)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(_prepare(path), dpi=120)
    plt.close(fig)
    return Path(path)


def density_2d(
    log_prob: Callable[[Tensor], Tensor],
    path: str | Path,
    *,
    limit: float = 3.0,
    resolution: int = 120,
    samples: Tensor | None = None,
    title: str | None = None,
    batch: int = 4096,
    dtype: torch.dtype = torch.float64,
) -> Path:
    """Heat map of ``exp(log_prob(x))`` on ``[-limit, limit]^2``, e.g. the exact log-likelihood of
    a trained model (``lambda x: log_likelihood(sde, score, x).log_prob``) or a closed form.

    ``log_prob`` maps ``(n, 2)`` points to ``(n,)`` log-densities; it is called on batches of
    ``batch`` grid points. Optional ``samples`` are overlaid as dots.
    """
    plt = _pyplot()
    axis = torch.linspace(-limit, limit, resolution, dtype=dtype)
    xx, yy = torch.meshgrid(axis, axis, indexing="xy")
    grid = torch.stack([xx.flatten(), yy.flatten()], dim=1)
    values = torch.cat([log_prob(chunk).detach().cpu().double() for chunk in grid.split(batch)])
    if values.shape != (grid.shape[0],):
        raise ValueError(f"log_prob must return (n,) values; got {tuple(values.shape)}")
    density = values.exp().reshape(resolution, resolution).numpy()
    fig, ax = plt.subplots(figsize=(3.6, 3.4))
    image = ax.imshow(density, origin="lower", extent=(-limit, limit, -limit, limit), cmap="magma")
    if samples is not None:
        s = samples.detach().cpu().double()[:2000]
        ax.scatter(s[:, 0], s[:, 1], s=1.5, c="cyan", lw=0, alpha=0.6)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="density")
    ax.set_title(title or "density")
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(_prepare(path), dpi=120)
    plt.close(fig)
    return Path(path)


def _snapshot_images(snapshots: Tensor, index: int, **grid_kwargs) -> np.ndarray:
    return image_grid(snapshots[:, index], nrow=snapshots.shape[0], **grid_kwargs)


def trajectory_strip(
    times: Sequence[float] | Tensor,
    states: Tensor,
    path: str | Path,
    *,
    num_snapshots: int = 8,
    max_items: int = 8,
    limit: float | None = None,
    **grid_kwargs,
) -> Path:
    """A strip of snapshots of a forward or reverse trajectory.

    Arguments:
        times: ``(S,)`` times of the saved states.
        states: ``(S, batch, *event)``: 2-D points (event ``(2,)``) give one scatter panel per
            snapshot; images (event ``(C, H, W)``) give one grid row per item, a column per
            snapshot.
        num_snapshots: evenly spaced snapshots shown.
        max_items: images shown per snapshot.
        grid_kwargs: ``value_range`` / ``levels`` / ``scale`` for images.
    """
    states = check_tensor("states", states, min_dim=3)
    times = torch.as_tensor(times, dtype=torch.float64).flatten()
    if times.shape[0] != states.shape[0]:
        raise ValueError(
            f"times must have one entry per state; got {times.shape[0]} times and "
            f"{states.shape[0]} states"
        )
    pick = (
        torch.linspace(0, states.shape[0] - 1, min(num_snapshots, states.shape[0])).round().long()
    )
    if states.ndim == 3 and states.shape[2] == 2:
        plt = _pyplot()
        fig, axes = plt.subplots(1, len(pick), figsize=(2.0 * len(pick), 2.2), squeeze=False)
        lim = limit or float(torch.quantile(states[pick].abs().double().flatten(), 0.99)) * 1.1
        for ax, i in zip(axes[0], pick.tolist(), strict=True):
            pts = states[i].detach().cpu().double()[:3000]
            ax.scatter(pts[:, 0], pts[:, 1], s=1, lw=0)
            ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", xticks=[], yticks=[])
            ax.set_title(f"t = {float(times[i]):.3g}", fontsize=8)
        fig.tight_layout()
        fig.savefig(_prepare(path), dpi=120)
        plt.close(fig)
        return Path(path)
    if states.ndim != 5:
        raise ValueError(
            f"states must be (S, batch, 2) points or (S, batch, C, H, W) images; got "
            f"{tuple(states.shape)}"
        )
    from PIL import Image

    chosen = states[pick][:, :max_items]  # (snapshots, items, C, H, W)
    columns = chosen.transpose(0, 1).reshape(-1, *chosen.shape[2:])
    grid = image_grid(columns, nrow=len(pick), **grid_kwargs)
    Image.fromarray(grid).save(_prepare(path))
    return Path(path)


def trajectory_gif(
    states: Tensor,
    path: str | Path,
    *,
    max_items: int = 16,
    frames: int = 40,
    duration_ms: int = 80,
    **grid_kwargs,
) -> Path:
    """An animated GIF of an image trajectory ``(S, batch, C, H, W)``: one grid of ``max_items``
    images per frame, ``frames`` evenly spaced states, the last frame held longer."""
    from PIL import Image

    states = check_tensor("states", states, min_dim=5)
    pick = torch.linspace(0, states.shape[0] - 1, min(frames, states.shape[0])).round().long()
    images = [
        Image.fromarray(image_grid(states[i, :max_items], **grid_kwargs)) for i in pick.tolist()
    ]
    durations = [duration_ms] * (len(images) - 1) + [duration_ms * 15]
    images[0].save(
        _prepare(path), save_all=True, append_images=images[1:], duration=durations, loop=0
    )
    return Path(path)


def error_vs_nfe(
    curves: Mapping[str, Mapping[int, float]],
    path: str | Path,
    *,
    ylabel: str = "path error (RMS)",
    title: str | None = None,
    targets: Mapping[int, float] | None = None,
) -> Path:
    """Log–log error against NFE, one line per sampler: ``curves = {name: {nfe: error}}``;
    optional ``targets = {nfe: error}`` are drawn as black crosses."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.0, 3.8))
    for name, points in curves.items():
        nfe = sorted(k for k, v in points.items() if v is not None and np.isfinite(v) and v > 0)
        if nfe:
            ax.plot(nfe, [points[k] for k in nfe], marker="o", ms=3, label=name)
    if targets:
        ax.scatter(
            list(targets), list(targets.values()), marker="x", c="k", zorder=5, label="target"
        )
    ax.set(xscale="log", yscale="log", xlabel="NFE (score evaluations)", ylabel=ylabel)
    if title:
        ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(_prepare(path), dpi=120)
    plt.close(fig)
    return Path(path)
