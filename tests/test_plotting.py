"""Figures: the files exist, decode, and show the pixels they claim."""

import numpy as np
import pytest
import torch
from PIL import Image

from sdegen import plotting


def test_image_grid_places_each_image_in_its_tile():
    images = torch.arange(6).reshape(6, 1, 1, 1).expand(6, 1, 2, 2).clone()  # levels 0..5
    grid = plotting.image_grid(images, levels=6, nrow=3, padding=1, scale=1)
    assert grid.shape == (2 * 3 + 1, 3 * 3 + 1, 3) and grid.dtype == np.uint8
    for i in range(6):
        r, c = divmod(i, 3)
        tile = grid[1 + 3 * r : 3 + 3 * r, 1 + 3 * c : 3 + 3 * c]
        assert np.all(tile == round(255 * i / 5))
    assert np.all(grid[0] == 128)  # padding


def test_image_grid_value_range_and_scale():
    images = torch.tensor([-1.0, 0.0, 1.0]).reshape(3, 1, 1, 1).expand(3, 3, 1, 1)
    grid = plotting.image_grid(images, nrow=3, padding=0, scale=2)
    assert grid.shape == (2, 6, 3)
    assert grid[0, :, 0].tolist() == [0, 0, 128, 128, 255, 255]


def test_image_grid_rejects_bad_shapes():
    with pytest.raises(ValueError, match="images must be"):
        plotting.image_grid(torch.zeros(2, 2, 4, 4))
    with pytest.raises(ValueError, match="value_range"):
        plotting.image_grid(torch.zeros(2, 1, 4, 4), value_range=(1.0, 1.0))


def test_png_and_gif_files_decode(tmp_path):
    images = torch.rand(5, 1, 8, 8) * 2 - 1
    png = plotting.save_image_grid(images, tmp_path / "a" / "grid.png")
    with Image.open(png) as im:
        assert im.size[0] > 8
    states = torch.rand(10, 4, 1, 8, 8)
    gif = plotting.trajectory_gif(states, tmp_path / "t.gif", value_range=(0.0, 1.0), frames=5)
    with Image.open(gif) as im:
        assert im.n_frames == 5
    strip = plotting.trajectory_strip(
        torch.linspace(1, 0, 10),
        states,
        tmp_path / "strip.png",
        num_snapshots=4,
        max_items=3,
        value_range=(0.0, 1.0),
        scale=1,
        padding=0,
    )
    with Image.open(strip) as im:
        assert im.size == (4 * 8, 3 * 8)


def test_matplotlib_figures_are_written(tmp_path):
    pts = torch.randn(300, 2, generator=torch.Generator().manual_seed(0))
    paths = [
        plotting.scatter_2d({"a": pts, "b": pts * 0.5}, tmp_path / "s.png", reference=pts),
        plotting.density_2d(
            lambda x: -0.5 * (x**2).sum(1) - np.log(2 * np.pi),
            tmp_path / "d.png",
            resolution=30,
            samples=pts,
        ),
        plotting.trajectory_strip(
            torch.linspace(0, 1, 5), torch.randn(5, 100, 2), tmp_path / "p.png"
        ),
        plotting.error_vs_nfe(
            {"heun": {10: 0.1, 20: 0.02}, "ddim": {10: 0.3, 20: 0.15}},
            tmp_path / "e.png",
            targets={10: 0.05},
        ),
    ]
    for path in paths:
        with Image.open(path) as im:
            assert im.size[0] > 100 and im.size[1] > 100


def test_scatter_and_trajectory_validate_shapes(tmp_path):
    with pytest.raises(ValueError, match=r"samples\['x'\] must be \(n, 2\)"):
        plotting.scatter_2d({"x": torch.zeros(4, 3)}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="one entry per state"):
        plotting.trajectory_strip([0.0, 1.0], torch.zeros(3, 4, 2), tmp_path / "y.png")
