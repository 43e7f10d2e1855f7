"""Two-dimensional toy distributions, sampled from a seeded ``torch.Generator``.

Every set is defined on a natural scale and then shifted and scaled by constants derived in
closed form, so that its law has mean exactly 0 and ``E‖x‖² = 2`` exactly: the average of the
two coordinate variances is 1. The two coordinates need not have equal variance (``moons``,
``swissroll`` and ``2spirals`` are anisotropic). The constants do not depend on ``n``, so a draw
of any size comes from the same law.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..analytic import GaussianMixture

# Natural-scale parameters (before centring and scaling).
_SWISSROLL_T = (1.5 * math.pi, 4.5 * math.pi)
_SWISSROLL_NOISE = 0.5
_MOONS_NOISE = 0.1
_EIGHT_RADIUS, _EIGHT_STD = 1.0, 0.1
_PINWHEEL_ARMS, _PINWHEEL_RADIAL_STD, _PINWHEEL_TANGENTIAL_STD, _PINWHEEL_RATE = 5, 0.3, 0.1, 0.25
_SPIRALS_TURN, _SPIRALS_NOISE = 3 * math.pi, 0.3
_RINGS_RADII, _RINGS_NOISE = (1.0, 2.0, 3.0, 4.0), 0.08
_CIRCLES_RADII, _CIRCLES_NOISE = (1.0, 0.5), 0.05


def _swissroll_moments() -> tuple[tuple[float, float], float]:
    # t ~ U[a, b], x = (t cos t, t sin t): E[t cos t] = [t sin t + cos t]/(b - a),
    # E[t sin t] = [sin t - t cos t]/(b - a), E‖x‖² = E t² = (b³ - a³) / (3 (b - a)).
    a, b = _SWISSROLL_T
    mx = ((b * math.sin(b) + math.cos(b)) - (a * math.sin(a) + math.cos(a))) / (b - a)
    my = ((math.sin(b) - b * math.cos(b)) - (math.sin(a) - a * math.cos(a))) / (b - a)
    second = (b**3 - a**3) / (3 * (b - a)) + 2 * _SWISSROLL_NOISE**2
    return (mx, my), second - mx**2 - my**2


def _moons_moments() -> tuple[tuple[float, float], float]:
    # Upper moon (cos θ, sin θ), lower moon (1 - cos θ, 1/2 - sin θ), θ ~ U[0, π], equal halves:
    # mean (1/2, 1/4); Var x = 3/4, Var y = 9/16 - 1/π.
    return (0.5, 0.25), 0.75 + 9 / 16 - 1 / math.pi + 2 * _MOONS_NOISE**2


# name -> (centre, total variance E‖x - centre‖²) on the natural scale.
_MOMENTS: dict[str, tuple[tuple[float, float], float]] = {
    "swissroll": _swissroll_moments(),
    "moons": _moons_moments(),
    "8gaussians": ((0.0, 0.0), _EIGHT_RADIUS**2 + 2 * _EIGHT_STD**2),
    # Uniform on the 8 dark squares of a 4 x 4 board on [-2, 2]²: each marginal is U[-2, 2].
    "checkerboard": ((0.0, 0.0), 2 * 16 / 12),
    # ‖x‖² = r² + e² whatever the rotation, r ~ N(1, σ_r²), e ~ N(0, σ_t²).
    "pinwheel": (
        (0.0, 0.0),
        1 + _PINWHEEL_RADIAL_STD**2 + _PINWHEEL_TANGENTIAL_STD**2,
    ),
    # n = 3π √u has density 2n / (3π)² on [0, 3π], so E n² = (3π)² / 2.
    "2spirals": ((0.0, 0.0), _SPIRALS_TURN**2 / 2 + 2 * _SPIRALS_NOISE**2),
    "rings": (
        (0.0, 0.0),
        sum(r * r for r in _RINGS_RADII) / len(_RINGS_RADII) + 2 * _RINGS_NOISE**2,
    ),
    "circles": (
        (0.0, 0.0),
        sum(r * r for r in _CIRCLES_RADII) / len(_CIRCLES_RADII) + 2 * _CIRCLES_NOISE**2,
    ),
}


def _scale(name: str) -> float:
    """Factor applied after centring: ``sqrt(2 / E‖x - centre‖²)``."""
    return math.sqrt(2.0 / _MOMENTS[name][1])


def _uniform(n: int, g, dev) -> Tensor:
    return torch.rand(n, generator=g, dtype=torch.float64, device=dev)


def _normal(shape, g, dev) -> Tensor:
    return torch.randn(shape, generator=g, dtype=torch.float64, device=dev)


def _swissroll(n: int, g, dev) -> Tensor:
    a, b = _SWISSROLL_T
    t = a + (b - a) * _uniform(n, g, dev)
    x = torch.stack([t * torch.cos(t), t * torch.sin(t)], dim=1)
    return x + _SWISSROLL_NOISE * _normal((n, 2), g, dev)


def _moons(n: int, g, dev) -> Tensor:
    theta = math.pi * _uniform(n, g, dev)
    lower = torch.rand(n, generator=g, device=dev) < 0.5
    upper_pts = torch.stack([torch.cos(theta), torch.sin(theta)], dim=1)
    lower_pts = torch.stack([1 - torch.cos(theta), 0.5 - torch.sin(theta)], dim=1)
    x = torch.where(lower[:, None], lower_pts, upper_pts)
    return x + _MOONS_NOISE * _normal((n, 2), g, dev)


def _eight_means(dev=None) -> Tensor:
    angles = torch.arange(8, dtype=torch.float64, device=dev) * (2 * math.pi / 8)
    return _EIGHT_RADIUS * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)


def _eight_gaussians(n: int, g, dev) -> Tensor:
    k = torch.randint(0, 8, (n,), generator=g, device=dev)
    return _eight_means(dev)[k] + _EIGHT_STD * _normal((n, 2), g, dev)


def _checkerboard(n: int, g, dev) -> Tensor:
    # Pick a column uniformly in [-2, 2], then one of its two dark squares.
    x = 4 * _uniform(n, g, dev) - 2
    col = torch.floor(x + 2)
    row = 2 * torch.randint(0, 2, (n,), generator=g, device=dev).double() + (col % 2)
    y = row - 2 + _uniform(n, g, dev)
    return torch.stack([x, y], dim=1)


def _pinwheel(n: int, g, dev) -> Tensor:
    k = torch.randint(0, _PINWHEEL_ARMS, (n,), generator=g, device=dev)
    r = 1 + _PINWHEEL_RADIAL_STD * _normal(n, g, dev)
    e = _PINWHEEL_TANGENTIAL_STD * _normal(n, g, dev)
    angle = k.double() * (2 * math.pi / _PINWHEEL_ARMS) + _PINWHEEL_RATE * torch.exp(r)
    c, s = torch.cos(angle), torch.sin(angle)
    return torch.stack([c * r - s * e, s * r + c * e], dim=1)


def _two_spirals(n: int, g, dev) -> Tensor:
    m = _SPIRALS_TURN * torch.sqrt(_uniform(n, g, dev))
    sign = 2 * torch.randint(0, 2, (n,), generator=g, device=dev).double() - 1
    x = sign[:, None] * torch.stack([-m * torch.cos(m), m * torch.sin(m)], dim=1)
    return x + _SPIRALS_NOISE * _normal((n, 2), g, dev)


def _on_circles(radii: tuple[float, ...], noise: float, n: int, g, dev) -> Tensor:
    k = torch.randint(0, len(radii), (n,), generator=g, device=dev)
    r = torch.tensor(radii, dtype=torch.float64, device=dev)[k]
    theta = 2 * math.pi * _uniform(n, g, dev)
    x = r[:, None] * torch.stack([torch.cos(theta), torch.sin(theta)], dim=1)
    return x + noise * _normal((n, 2), g, dev)


def _rings(n: int, g, dev) -> Tensor:
    return _on_circles(_RINGS_RADII, _RINGS_NOISE, n, g, dev)


def _circles(n: int, g, dev) -> Tensor:
    return _on_circles(_CIRCLES_RADII, _CIRCLES_NOISE, n, g, dev)


_SAMPLERS: dict[str, Callable[[int, torch.Generator | None, torch.device], Tensor]] = {
    "swissroll": _swissroll,
    "moons": _moons,
    "8gaussians": _eight_gaussians,
    "checkerboard": _checkerboard,
    "pinwheel": _pinwheel,
    "2spirals": _two_spirals,
    "rings": _rings,
    "circles": _circles,
}

TOY_2D_NAMES: tuple[str, ...] = tuple(_SAMPLERS)
"""Names accepted by :func:`toy_2d` (``_``, ``-`` and spaces are ignored, case too)."""


def _canonical(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, one of {TOY_2D_NAMES}; got {type(name).__name__}")
    key = name.lower().replace("_", "").replace("-", "").replace(" ", "")
    if key not in _SAMPLERS:
        raise ValueError(f"name must be one of {TOY_2D_NAMES}; got {name!r}")
    return key


def toy_2d(
    name: str,
    n: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """``n`` independent draws from a two-dimensional toy distribution, shape ``(n, 2)``.

    Each law is centred and scaled so that its mean is 0 and ``E‖x‖² = 2`` exactly (the two
    coordinate variances average to 1); see the module docstring. On the natural scale:

    - ``swissroll``: ``t (cos t, sin t)``, ``t ~ U[1.5π, 4.5π]``, plus ``N(0, 0.5²)`` noise;
    - ``moons``: two interleaved half circles of radius 1, ``N(0, 0.1²)`` noise;
    - ``8gaussians``: 8 equal-weight components ``N(mu_k, 0.1² I)``, ``mu_k`` on the unit circle
      at angles ``2πk/8``; its exact law is :func:`eight_gaussians_mixture`;
    - ``checkerboard``: uniform on the 8 dark squares of a 4 × 4 board on ``[-2, 2]²`` (a
      piecewise constant density, ``1/6`` on the squares after scaling);
    - ``pinwheel``: 5 arms; radius ``r ~ N(1, 0.3²)``, tangential offset ``N(0, 0.1²)``, rotated by
      ``2πk/5 + 0.25 exp(r)``;
    - ``2spirals``: ``±(-m cos m, m sin m)``, ``m = 3π √u``, plus ``N(0, 0.3²)`` noise;
    - ``rings``: uniform angle on circles of radius 1, 2, 3, 4 (equal weights), ``N(0, 0.08²)``;
    - ``circles``: circles of radius 1 and 0.5 (equal weights), ``N(0, 0.05²)``.

    Arguments:
        name: one of :data:`TOY_2D_NAMES`.
        n: number of points, ``>= 1``.
        generator: a ``torch.Generator``; the draw is made on its device and is reproducible from
            its seed. ``None`` uses torch's global generator.
        dtype: floating dtype of the result (default ``torch.get_default_dtype()``); the draw is
            made in float64 and rounded once, so the points do not depend on ``dtype``.

    Returns:
        ``(n, 2)`` tensor.
    """
    key = _canonical(name)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int; got {n!r}")
    dtype = dtype or torch.get_default_dtype()
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating dtype; got {dtype}")
    device = generator.device if generator is not None else torch.device("cpu")
    x = _SAMPLERS[key](n, generator, device)
    centre = torch.tensor(_MOMENTS[key][0], dtype=torch.float64, device=device)
    return ((x - centre) * _scale(key)).to(dtype)


def eight_gaussians_mixture() -> GaussianMixture:
    """The exact law of ``toy_2d("8gaussians", n)``: 8 equal-weight Gaussians with means
    ``c (cos 2πk/8, sin 2πk/8)`` and covariance ``(0.1 c)² I``, ``c = sqrt(2 / 1.02)``.

    Its density, score and marginals under every linear SDE are exact, so a model trained on the
    samples can be compared with the truth.
    """
    c = _scale("8gaussians")
    return GaussianMixture(c * _eight_means(), (c * _EIGHT_STD) ** 2)
