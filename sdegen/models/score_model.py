"""``ScoreModel``: the one place where a raw network's output becomes a score."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor, nn

from .._utils import append_dims
from .._validation import as_time, check_scalar
from ..sde import sde_from_config
from ..sde.base import AbstractSDE
from .mlp import MLP
from .unet import UNet

PARAMETERIZATIONS = ("eps", "score", "x0", "v")


class ScoreModel(nn.Module):
    """A score ``∇_x log p_t(x)`` from a raw network, with EDM-style input scaling (Karras et al.
    2022) and one of four output parameterizations.

    For a linear SDE with kernel ``x_t = m(t) x_0 + c(t) + s(t) z``, ``z ~ N(0, I)``, write
    ``x̃ = x_t - c(t)`` and ``D = sqrt(m^2 sigma_data^2 + s^2)`` (the std of ``x̃`` for data of std
    ``sigma_data``). The network ``F`` is called as

        ``F = net(x̃ / D, c_noise, labels)``,  ``c_noise = log(s / m) / 4``,

    so its input has about unit variance at every ``t`` and ``c_noise`` is the log noise-to-signal
    ratio (about ``[-2, 1.3]`` for the default VP SDE). ``F`` is read as:

    - ``"eps"``: the noise, ``ε̂ = F``; ``score = -F / s``; ``x̂_0 = (x̃ - s F) / m``.
    - ``"score"``: the scaled score ``s ∇log p_t = F`` (the well-scaled form of Song et al. 2021:
      its target ``-z`` has unit variance at every ``t``); ``score = F / s``.
    - ``"x0"``: the data, ``x̂_0 = F``; ``score = -(x̃ - m F) / s^2``.
    - ``"v"``: with ``α = m sigma_data / D`` and ``σ̂ = s / D`` (so ``α^2 + σ̂^2 = 1`` and
      ``x̃ / D = α x_0 / sigma_data + σ̂ z``), ``v = α z - σ̂ x_0 / sigma_data``. Then
      ``ẑ = σ̂ x̃ / D + α F`` and ``x̂_0 = sigma_data (α x̃ / D - σ̂ F)``; ``score = -ẑ / s``.
      With ``sigma_data = 1`` on the VP SDE this is the v of Salimans & Ho (2022); in general its
      ``x̂_0`` equals EDM's ``c_skip x + c_out F`` preconditioning.

    For an SDE without a closed-form kernel (``sde.has_marginal`` false) only ``"score"`` is
    available and the network output is the score itself, with ``x`` unscaled and
    ``c_noise = t``.

    Arguments:
        net: a module called as ``net(x_in, c_noise, labels)`` with ``x_in`` ``(batch, *event)``,
            ``c_noise`` ``(batch,)`` and returning ``x_in``'s shape (:class:`MLP`, :class:`UNet`).
        sde: the forward SDE.
        parameterization: ``"eps"``, ``"score"``, ``"x0"`` or ``"v"``.
        sigma_data: the data's standard deviation per coordinate (0.5 for data in ``[-1, 1]``).
        base: an optional closed-form model whose exact score the network corrects: an
            ``nn.Module`` with ``marginal_score(sde, x, t)`` and ``config()``, such as
            :class:`sdegen.analytic.DequantizedCategorical` for discrete data ("eps" and
            "score" only). The score is then ``base score + α(t)^2 × network score`` with
            ``α^2 = m^2 sigma_data^2 / (m^2 sigma_data^2 + s^2)``: a zero network is exactly the
            base model, and the correction fades as the data are forgotten, as the true
            residual does (a base with the data's per-coordinate marginals differs from
            ``p_t`` by ``O(m^2)``), so an untrained direction of the network cannot push the
            probability flow away at large ``t``. Its tensors travel in the state dict.

    ``model(x, t, labels=None)`` returns the score, so a model (or a DDP wrapper of it) is a
    score function for the samplers. ``x``: ``(batch, *event)``, ``t``: ``(batch,)`` forward times
    in ``[sde.t_min, sde.T]`` or a float; ``t`` is not range-checked (this runs inside solvers)
    and ``s(t) = 0`` at ``t = 0`` makes the score infinite. Scalings are computed in at least
    float32 from the SDE's ``marginal_std``, which keeps its digits near ``t_min``. "eps" and
    "score" divide the output by ``s`` and lose nothing there; "x0" and "v" form
    ``x̃ - m x̂_0`` and so carry ``x``'s rounding times ``1 / s^2`` (in float32 at the sub-VP
    ``t_min``, ``s = 1e-6``, that is a few percent of the score): prefer "eps" when ``t_min`` is
    tiny.

    Raises:
        ValueError: an unknown parameterization, or one other than ``"score"`` for an SDE without
            a kernel.

    Example:
        >>> model = ScoreModel(MLP(2), VPSDE(), "eps")
        >>> score = model(x, t)                       # (batch, 2)
        >>> sample(VPSDE(), model.bind(labels), ...)  # class-conditional score
    """

    def __init__(
        self,
        net: nn.Module,
        sde: AbstractSDE,
        parameterization: str = "eps",
        *,
        sigma_data: float = 0.5,
        base: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(net, nn.Module):
            raise TypeError(
                f"net must be a torch.nn.Module called as net(x_in, c_noise, labels); got "
                f"{type(net).__name__}"
            )
        for attr in ("drift", "diffusion", "t_min", "T"):
            if not hasattr(sde, attr):
                raise TypeError(f"sde must provide {attr} (see sdegen.AbstractSDE); got {sde!r}")
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(
                f"parameterization must be one of {PARAMETERIZATIONS}; got {parameterization!r}"
            )
        self.linear = bool(getattr(sde, "has_marginal", False))
        if not self.linear and parameterization != "score":
            raise ValueError(
                f"parameterization={parameterization!r} needs the SDE's closed-form Gaussian "
                f"kernel (m(t), s(t)), which {sde!r} does not have (has_marginal is False); "
                "use parameterization='score'"
            )
        self.net = net
        self.sde = sde
        self.parameterization = parameterization
        self.sigma_data = check_scalar("sigma_data", sigma_data, positive=True)
        if base is not None:
            if not isinstance(base, nn.Module) or not callable(
                getattr(base, "marginal_score", None)
            ):
                raise TypeError(
                    "base must be an nn.Module with marginal_score(sde, x, t) (e.g. "
                    f"sdegen.analytic.DequantizedCategorical); got {type(base).__name__}"
                )
            if not self.linear:
                raise ValueError("base needs an SDE with a closed-form kernel (has_marginal)")
            if parameterization not in ("eps", "score"):
                raise ValueError(
                    f"base works with parameterization 'eps' or 'score' (a zero network is then "
                    f"a zero correction); got {parameterization!r}"
                )
        self.base = base

    # Coefficients -----------------------------------------------------------------------------

    def _coefficients(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
        """``m``, ``s``, ``c`` (or None) and ``log(s / m)`` as ``(batch,)`` tensors."""
        m = self.sde.marginal_mean_coeff(t)
        s = self.sde.marginal_std(t)
        c = self.sde.mean_offset(t) if hasattr(self.sde, "mean_offset") else None
        log_m_fn = getattr(self.sde, "log_mean_coeff", None)
        # log m straight from the SDE: m itself may underflow for strongly contracting drifts.
        log_m = log_m_fn(t) if log_m_fn is not None else torch.log(m)
        return m, s, c, torch.log(s) - log_m

    def _prepare(
        self, x: Tensor, t: float | Tensor, labels: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2:
            got = (
                f"shape {tuple(x.shape)}, dtype {x.dtype}"
                if isinstance(x, Tensor)
                else type(x).__name__
            )
            raise ValueError(f"x must be a floating tensor of shape (batch, *event); got {got}")
        # Scalings in at least float32 so that a bfloat16 x does not round s(t) near t_min.
        work = torch.promote_types(x.dtype, torch.float32)
        t = as_time("t", t, x.shape[0], x.new_empty(0, dtype=work))
        if labels is not None and not isinstance(labels, Tensor):
            raise TypeError(
                f"labels must be an int64 tensor of shape (batch,) or None; got {labels!r}"
            )
        return x, t, labels

    def _net(self, x_in: Tensor, c_noise: Tensor, labels: Tensor | None) -> Tensor:
        out = self.net(x_in, c_noise, labels) if labels is not None else self.net(x_in, c_noise)
        if not isinstance(out, Tensor) or out.shape != x_in.shape:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"net(x_in, c_noise, labels) must return a tensor shaped like x_in "
                f"{tuple(x_in.shape)}; got {got}"
            )
        return out

    def _linear_forward(
        self, x: Tensor, t: Tensor, labels: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Return ``x̃``, the network output ``F`` and ``m``, ``s``, ``D`` broadcast to ``x``."""
        m, s, c, log_noise_ratio = self._coefficients(t)
        n = x.dim()
        x_work = x.to(t.dtype)
        x_tilde = x_work if c is None else x_work - append_dims(c, n)
        m, s = append_dims(m, n), append_dims(s, n)
        scale = torch.sqrt(m**2 * self.sigma_data**2 + s**2)
        x_in = (x_tilde / scale).to(x.dtype)
        F = self._net(x_in, (log_noise_ratio / 4).to(x.dtype), labels).to(t.dtype)
        return x_tilde, F, m, s, scale

    # Public API -------------------------------------------------------------------------------

    def forward(self, x: Tensor, t: float | Tensor, labels: Tensor | None = None) -> Tensor:
        """The score ``∇_x log p_t(x)``, shaped like ``x`` (see the class docstring)."""
        x, t, labels = self._prepare(x, t, labels)
        if not self.linear:
            return self._net(x, t.to(x.dtype), labels)
        x_tilde, F, m, s, scale = self._linear_forward(x, t, labels)
        p = self.parameterization
        if p == "eps":
            score = -F / s
        elif p == "score":
            score = F / s
        elif p == "x0":
            score = -(x_tilde - m * F) / s**2
        else:  # v: score = -ẑ / s with ẑ = σ̂ x̃ / D + α F, σ̂ / s = 1 / D
            alpha = m * self.sigma_data / scale
            score = -(x_tilde / scale**2 + alpha * F / s)
        if self.base is not None:
            fade = (m * self.sigma_data / scale) ** 2
            score = fade * score + self.base.marginal_score(self.sde, x, t)
        return score.to(x.dtype)

    def score(self, x: Tensor, t: float | Tensor, labels: Tensor | None = None) -> Tensor:
        """Same as calling the model: the score, shaped like ``x``."""
        return self(x, t, labels)

    def denoise(self, x: Tensor, t: float | Tensor, labels: Tensor | None = None) -> Tensor:
        """The prediction ``x̂_0 ≈ E[x_0 | x_t = x]`` (Tweedie: ``(x̃ + s^2 score) / m``), shaped
        like ``x``. Needs a linear SDE."""
        if not self.linear:
            raise ValueError(
                f"denoise needs the SDE's closed-form kernel; {self.sde!r} has none "
                "(has_marginal is False)"
            )
        x, t, labels = self._prepare(x, t, labels)
        x_tilde, F, m, s, scale = self._linear_forward(x, t, labels)
        p = self.parameterization
        if p == "eps":
            x0 = (x_tilde - s * F) / m
        elif p == "score":
            x0 = (x_tilde + s * F) / m
        elif p == "x0":
            x0 = F
        else:
            sd = self.sigma_data
            x0 = sd * (m * sd * x_tilde / scale**2 - s * F / scale)
        if self.base is not None:  # Tweedie on the combined score
            return ((x_tilde + s**2 * self.forward(x, t, labels)) / m).to(x.dtype)
        return x0.to(x.dtype)

    def net_target(self, x0: Tensor, t: float | Tensor, noise: Tensor) -> Tensor:
        """What the network should output at ``x_t = m x0 + c + s noise``: ``noise`` (eps),
        ``-noise`` (score), ``x0`` (x0) or ``α noise - σ̂ x0 / sigma_data`` (v). Linear SDEs only.

        ``x0``, ``noise``: ``(batch, *event)``; ``t``: ``(batch,)`` or a float."""
        if not self.linear:
            raise ValueError(
                f"net_target needs the SDE's closed-form kernel; {self.sde!r} has none"
            )
        t = as_time("t", t, x0.shape[0], x0)
        p = self.parameterization
        if p == "eps":
            return noise
        if p == "score":
            return -noise
        if p == "x0":
            return x0
        m, s, _, _ = self._coefficients(t)
        m, s = append_dims(m, x0.dim()), append_dims(s, x0.dim())
        scale = torch.sqrt(m**2 * self.sigma_data**2 + s**2)
        return (m * self.sigma_data * noise - s * x0 / self.sigma_data) / scale

    def bind(self, labels: Tensor | int | None) -> _BoundScore:
        """A score function ``(x, t) -> score`` with the labels fixed (an int is used for every
        sample; ``None`` is the null label, i.e. the unconditional score)."""
        return _BoundScore(self, labels)

    # Serialisation ----------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """``{"net": net.config(), "sde": sde.config(), "parameterization", "sigma_data"}``;
        :meth:`from_config` rebuilds the model (weights are loaded separately)."""
        if not callable(getattr(self.net, "config", None)):
            raise TypeError(
                f"{type(self.net).__name__} has no config(); only networks with config() (MLP, "
                "UNet) can be written to a config"
            )
        config = {
            "net": self.net.config(),
            "sde": self.sde.config(),
            "parameterization": self.parameterization,
            "sigma_data": self.sigma_data,
        }
        if self.base is not None:
            config["base"] = self.base.config()
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ScoreModel:
        """Rebuild a model from :meth:`config`'s dict, with freshly initialised weights."""
        if not isinstance(config, dict) or "net" not in config or "sde" not in config:
            raise ValueError(
                "config must be a dict from ScoreModel.config() with keys 'net' and 'sde'; got "
                f"{config!r}"
            )
        unknown = sorted(set(config) - {"net", "sde", "parameterization", "sigma_data", "base"})
        if unknown:
            raise ValueError(f"unknown key(s) {unknown} in the ScoreModel config")
        return cls(
            net_from_config(config["net"]),
            sde_from_config(config["sde"]),
            config.get("parameterization", "eps"),
            sigma_data=config.get("sigma_data", 0.5),
            base=_base_from_config(config["base"]) if "base" in config else None,
        )

    def extra_repr(self) -> str:
        return (
            f"sde={self.sde!r}, parameterization={self.parameterization!r}, "
            f"sigma_data={self.sigma_data}"
        )


class _BoundScore(nn.Module):
    """``(x, t) -> model(x, t, labels)`` with fixed labels; a module, so solvers that collect
    parameters see the model's."""

    def __init__(self, model: ScoreModel, labels: Tensor | int | None) -> None:
        super().__init__()
        if labels is not None and not isinstance(labels, Tensor):
            if isinstance(labels, bool) or not isinstance(labels, int):
                raise TypeError(f"labels must be a tensor, an int or None; got {labels!r}")
        self.model = model
        self.labels = labels

    def forward(self, x: Tensor, t: float | Tensor) -> Tensor:
        labels = self.labels
        if isinstance(labels, int):
            labels = torch.full((x.shape[0],), labels, dtype=torch.long, device=x.device)
        elif isinstance(labels, Tensor):
            labels = labels.to(x.device)
        return self.model(x, t, labels)


def _registry() -> dict[str, type[nn.Module]]:
    return {"MLP": MLP, "UNet": UNet}


def _base_from_config(config: dict[str, Any]) -> nn.Module:
    from ..analytic import DequantizedCategorical

    bases = {"DequantizedCategorical": DequantizedCategorical}
    name = config.get("class") if isinstance(config, dict) else None
    if name not in bases:
        raise ValueError(f"config['base']['class'] must be one of {sorted(bases)}; got {name!r}")
    return bases[name].from_config(config)


def net_from_config(config: dict[str, Any]) -> nn.Module:
    """Rebuild a network from its ``config()`` dict (``{"class": "MLP" | "UNet", **kwargs}``)."""
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict from net.config(); got {type(config).__name__}")
    kwargs = dict(config)
    name = kwargs.pop("class", None)
    registry = _registry()
    if name not in registry:
        raise ValueError(f"config['class'] must be one of {sorted(registry)}; got {name!r}")
    cls = registry[name]
    allowed = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ValueError(
            f"unknown key(s) {unknown} in the {name} config; allowed: {sorted(allowed)}"
        )
    return cls(**kwargs)
