"""A residual MLP for vector data ``(batch, d)``."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from .embeddings import ClassEmbedding, check_num_classes, time_embedding


class MLP(nn.Module):
    """A residual MLP ``net(x_in, c_noise, labels=None) -> (batch, dim)`` for vector data.

    The noise feature goes through Fourier features and a two-layer MLP to an embedding ``e``
    (plus a learned class vector when ``num_classes`` is set); each hidden layer then reads
    ``h + W_e e``:

        ``h_0 = W_in x``,  ``h_{k+1} = h_k + W_k SiLU(h_k + W_{e,k} e)``  (``residual=True``),
        ``out = W_out SiLU(h_depth)``,

    with ``h_{k+1} = W_k SiLU(h_k + W_{e,k} e)`` when ``residual=False``. ``W_out`` starts at zero,
    so a fresh net outputs 0 (``ScoreModel`` turns that into a finite score for every
    parameterization).

    Arguments:
        dim: data dimension ``d``.
        hidden: hidden width.
        depth: number of hidden layers (``>= 1``).
        fourier_features: size of the noise-level features (even).
        fourier_scale: standard deviation of the Fourier frequencies.
        num_classes: ``K`` for class conditioning on labels ``0..K-1``; label ``K`` is the null
            label and ``labels=None`` means it. ``None``: unconditional.
        residual: skip connections around each hidden layer.

    Shapes: ``x_in`` ``(batch, dim)``, ``c_noise`` ``(batch,)``, ``labels`` ``(batch,)`` int64 or
    None; returns ``(batch, dim)``.

    Example:
        >>> net = MLP(2, hidden=128, depth=3)
        >>> model = ScoreModel(net, VPSDE(), "eps")
    """

    def __init__(
        self,
        dim: int,
        hidden: int = 256,
        depth: int = 4,
        fourier_features: int = 64,
        fourier_scale: float = 1.0,
        num_classes: int | None = None,
        residual: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("hidden", hidden), ("depth", depth)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1; got {value!r}")
        if isinstance(fourier_features, bool) or not isinstance(fourier_features, int):
            raise ValueError(f"fourier_features must be an even int >= 2; got {fourier_features!r}")
        if fourier_features < 2 or fourier_features % 2:
            raise ValueError(f"fourier_features must be an even int >= 2; got {fourier_features!r}")
        self.dim = dim
        self._config = {
            "dim": dim,
            "hidden": hidden,
            "depth": depth,
            "fourier_features": fourier_features,
            "fourier_scale": float(fourier_scale),
            "num_classes": check_num_classes(num_classes),
            "residual": bool(residual),
        }
        self.num_classes = num_classes
        self.residual = residual
        self.time_features = time_embedding("fourier", fourier_features, fourier_scale)
        self.time_mlp = nn.Sequential(
            nn.Linear(fourier_features, hidden), nn.SiLU(), nn.Linear(hidden, hidden)
        )
        self.class_embedding = ClassEmbedding(num_classes, hidden) if num_classes else None
        self.input = nn.Linear(dim, hidden)
        self.emb_proj = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth))
        self.layers = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth))
        self.output = nn.Linear(hidden, dim)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    def forward(self, x_in: Tensor, c_noise: Tensor, labels: Tensor | None = None) -> Tensor:
        if x_in.dim() != 2 or x_in.shape[1] != self.dim:
            raise ValueError(
                f"x must have shape (batch, dim) = (batch, {self.dim}) for this MLP; got "
                f"{tuple(x_in.shape)} (image data needs the UNet)"
            )
        batch = x_in.shape[0]
        if c_noise.shape != (batch,):
            raise ValueError(f"c_noise must have shape ({batch},); got {tuple(c_noise.shape)}")
        e = self.time_mlp(self.time_features(c_noise).to(x_in.dtype))
        if self.class_embedding is not None:
            e = e + self.class_embedding(labels, batch, x_in.device)
        elif labels is not None:
            raise ValueError(
                "labels were given but the network is unconditional (num_classes=None); build it "
                "with num_classes=K to condition on K classes, or pass labels=None"
            )
        e = nn.functional.silu(e)
        h = self.input(x_in)
        for layer, proj in zip(self.layers, self.emb_proj, strict=True):
            out = layer(nn.functional.silu(h + proj(e)))
            h = h + out if self.residual else out
        return self.output(nn.functional.silu(h))

    def config(self) -> dict[str, Any]:
        """Constructor arguments plus ``"class"``; :func:`net_from_config` rebuilds the net."""
        return {"class": "MLP", **self._config}
