"""A compact U-Net for images ``(batch, C, H, W)``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .embeddings import ClassEmbedding, check_num_classes, time_embedding


def _groups(channels: int) -> int:
    """GroupNorm groups: at most 32, at least 4 channels per group where possible."""
    g = max(1, min(32, channels // 4))
    while channels % g:
        g -= 1
    return g


class _ResBlock(nn.Module):
    """``h + conv(SiLU(GN(conv(SiLU(GN(h))) + W e)))``, the second conv starting at zero."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(in_ch), in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_ch)
        self.norm2 = nn.GroupNorm(_groups(out_ch), out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class _Attention(nn.Module):
    """Multi-head self-attention over the ``H W`` positions, added residually (output projection
    starts at zero)."""

    def __init__(self, channels: int, head_channels: int) -> None:
        super().__init__()
        self.heads = channels // head_channels if channels % head_channels == 0 else 1
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W).unbind(1)
        # (B, heads, HW, head_dim) for scaled_dot_product_attention.
        out = F.scaled_dot_product_attention(
            q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2)
        )
        return x + self.proj(out.transpose(-1, -2).reshape(B, C, H, W))


class _Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        return self.conv(x)


class _Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """A compact U-Net ``net(x_in, c_noise, labels=None) -> (batch, C, H, W)`` (after Ho et al.
    2020 and Dhariwal & Nichol 2021).

    Level ``i`` works at ``H / 2^i`` with ``channels * channel_mults[i]`` channels and holds
    ``num_res_blocks`` residual blocks (GroupNorm, SiLU, 3×3 convolutions, dropout) on the way
    down and ``num_res_blocks + 1`` on the way up, each up block reading the matching down
    activation by concatenation. Between levels: stride-2 convolution down, nearest-neighbour
    ×2 and a convolution up. The middle is residual block, self-attention, residual block.
    ``c_noise`` goes through Fourier (or sinusoidal) features and a two-layer MLP to an
    embedding of ``4 * channels`` (plus a learned class vector when ``num_classes`` is set) that
    every residual block adds as a per-channel bias. The last convolution of every residual
    block, attention and the output starts at zero, so a fresh net outputs 0.

    ``H`` and ``W`` must be divisible by ``2^(len(channel_mults) - 1)``: 8×8 and 28×28 take two
    levels (28 -> 14 -> 7), 32×32 up to four.

    Arguments:
        in_channels: image channels ``C`` (output has the same).
        channels: base width.
        channel_mults: width multiplier per level; its length sets the number of levels.
        num_res_blocks: residual blocks per level on the way down.
        attention_resolutions: resolutions (pixels along ``H``) at which down and up blocks are
            followed by self-attention, e.g. ``(16,)``; needs ``image_size``.
        dropout: dropout rate inside residual blocks.
        num_classes: ``K`` for class conditioning on labels ``0..K-1``; label ``K`` is the null
            label and ``labels=None`` means it.
        image_size: ``H`` or ``(H, W)``; when given, inputs must have that size (checked), and
            divisibility is checked at construction.
        mid_attention: self-attention in the middle, at the lowest resolution.
        embedding: ``"fourier"`` or ``"sinusoidal"`` features of ``c_noise``.
        fourier_scale: standard deviation of the Fourier frequencies.
        head_channels: channels per attention head (one head if it does not divide the width).

    Shapes: ``x_in`` ``(batch, in_channels, H, W)``, ``c_noise`` ``(batch,)``, ``labels``
    ``(batch,)`` int64 or None; returns ``x_in``'s shape.

    Example:
        >>> net = UNet(1, channels=32, channel_mults=(1, 2), num_res_blocks=1)   # 8x8 digits
        >>> net = UNet(3, channels=64, channel_mults=(1, 2, 2, 2), attention_resolutions=(16,),
        ...            image_size=32, dropout=0.1, num_classes=10)                # CIFAR-10
    """

    def __init__(
        self,
        in_channels: int,
        channels: int = 64,
        channel_mults: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (),
        dropout: float = 0.0,
        num_classes: int | None = None,
        *,
        image_size: int | Sequence[int] | None = None,
        mid_attention: bool = True,
        embedding: str = "fourier",
        fourier_scale: float = 1.0,
        head_channels: int = 32,
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("channels", channels),
            ("num_res_blocks", num_res_blocks),
            ("head_channels", head_channels),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1; got {value!r}")
        mults = tuple(channel_mults)
        if not mults or not all(isinstance(m, int) and m >= 1 for m in mults):
            raise ValueError(f"channel_mults must be a non-empty tuple of ints >= 1; got {mults}")
        if channels % 2:
            raise ValueError(f"channels must be even (it sizes the noise features); got {channels}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must lie in [0, 1); got {dropout}")
        attn_res = tuple(int(r) for r in attention_resolutions)
        self.in_channels = in_channels
        self.channel_mults = mults
        self.num_levels = len(mults)
        self.factor = 2 ** (self.num_levels - 1)
        self.image_size = self._check_image_size(image_size)
        if attn_res:
            if self.image_size is None:
                raise ValueError(
                    f"attention_resolutions={attn_res} needs image_size (the input height) to "
                    "know which levels they are; pass image_size=H, or use mid_attention alone"
                )
            levels = [self.image_size[0] // 2**i for i in range(self.num_levels)]
            missing = sorted(set(attn_res) - set(levels))
            if missing:
                raise ValueError(
                    f"attention_resolutions {missing} are not among this net's resolutions "
                    f"{levels} (image_size={self.image_size}, channel_mults={mults})"
                )
        else:
            levels = []
        self._config = {
            "in_channels": in_channels,
            "channels": channels,
            "channel_mults": list(mults),
            "num_res_blocks": num_res_blocks,
            "attention_resolutions": list(attn_res),
            "dropout": float(dropout),
            "num_classes": check_num_classes(num_classes),
            "image_size": None if self.image_size is None else list(self.image_size),
            "mid_attention": bool(mid_attention),
            "embedding": embedding,
            "fourier_scale": float(fourier_scale),
            "head_channels": head_channels,
        }
        emb_dim = 4 * channels
        self.time_features = time_embedding(embedding, channels, fourier_scale)
        self.time_mlp = nn.Sequential(
            nn.Linear(channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        self.class_embedding = ClassEmbedding(num_classes, emb_dim) if num_classes else None

        def attends(level: int) -> bool:
            return bool(levels) and levels[level] in attn_res

        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.down = nn.ModuleList()
        skip_channels = [channels]
        ch = channels
        for level, mult in enumerate(mults):
            for _ in range(num_res_blocks):
                block = nn.ModuleList([_ResBlock(ch, channels * mult, emb_dim, dropout)])
                ch = channels * mult
                if attends(level):
                    block.append(_Attention(ch, head_channels))
                self.down.append(block)
                skip_channels.append(ch)
            if level != self.num_levels - 1:
                self.down.append(nn.ModuleList([_Downsample(ch)]))
                skip_channels.append(ch)
        self.mid = nn.ModuleList([_ResBlock(ch, ch, emb_dim, dropout)])
        if mid_attention:
            self.mid.append(_Attention(ch, head_channels))
        self.mid.append(_ResBlock(ch, ch, emb_dim, dropout))
        self.up = nn.ModuleList()
        for level in reversed(range(self.num_levels)):
            for i in range(num_res_blocks + 1):
                out = channels * mults[level]
                block = nn.ModuleList([_ResBlock(ch + skip_channels.pop(), out, emb_dim, dropout)])
                ch = out
                if attends(level):
                    block.append(_Attention(ch, head_channels))
                if level != 0 and i == num_res_blocks:
                    block.append(_Upsample(ch))
                self.up.append(block)
        self.norm_out = nn.GroupNorm(_groups(ch), ch)
        self.conv_out = nn.Conv2d(ch, in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def _check_image_size(self, image_size: int | Sequence[int] | None) -> tuple[int, int] | None:
        if image_size is None:
            return None
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if len(size) != 2 or not all(isinstance(s, int) and s >= 1 for s in size):
            raise ValueError(f"image_size must be an int H or a pair (H, W); got {image_size!r}")
        self._check_divisible(size)
        return size  # type: ignore[return-value]

    def _check_divisible(self, size: tuple[int, ...]) -> None:
        if size[0] % self.factor or size[1] % self.factor:
            raise ValueError(
                f"image height and width must be divisible by 2^(len(channel_mults) - 1) = "
                f"{self.factor} for channel_mults={self.channel_mults}; got "
                f"{size[0]}x{size[1]}. Use fewer levels (e.g. channel_mults=(1, 2, 2) for 28x28) "
                "or pad the images"
            )

    def forward(self, x_in: Tensor, c_noise: Tensor, labels: Tensor | None = None) -> Tensor:
        if x_in.dim() != 4 or x_in.shape[1] != self.in_channels:
            raise ValueError(
                f"x must have shape (batch, C, H, W) with C = in_channels = {self.in_channels}; "
                f"got {tuple(x_in.shape)}"
            )
        size = tuple(x_in.shape[2:])
        if self.image_size is not None and size != self.image_size:
            raise ValueError(
                f"x must be {self.image_size[0]}x{self.image_size[1]} images (image_size); got "
                f"{size[0]}x{size[1]}"
            )
        self._check_divisible(size)
        batch = x_in.shape[0]
        if c_noise.shape != (batch,):
            raise ValueError(f"c_noise must have shape ({batch},); got {tuple(c_noise.shape)}")
        emb = self.time_mlp(self.time_features(c_noise).to(x_in.dtype))
        if self.class_embedding is not None:
            emb = emb + self.class_embedding(labels, batch, x_in.device)
        elif labels is not None:
            raise ValueError(
                "labels were given but the network is unconditional (num_classes=None); build it "
                "with num_classes=K to condition on K classes, or pass labels=None"
            )
        emb = F.silu(emb)
        h = self.conv_in(x_in)
        skips = [h]
        for block in self.down:
            for layer in block:
                h = layer(h, emb)
            skips.append(h)
        for layer in self.mid:
            h = layer(h, emb)
        for block in self.up:
            h = torch.cat([h, skips.pop()], dim=1)
            for layer in block:
                h = layer(h, emb)
        return self.conv_out(F.silu(self.norm_out(h)))

    def config(self) -> dict[str, Any]:
        """Constructor arguments plus ``"class"``; :func:`net_from_config` rebuilds the net."""
        return {"class": "UNet", **self._config}
