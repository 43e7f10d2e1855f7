"""Training throughput of ``sdegen.training.Trainer`` and the share of a step spent outside the
network.

WHAT. For each model this prints one row of a Markdown table: the Trainer's training steps per
second (``Trainer.fit``: data indexing, the loss's draws of t and noise, forward, backward,
gradient clipping, AdamW, the EMA update, the scheduler; no checkpoints), the time of the
network's forward + backward alone on a batch of the same shape (``model(x_t, t)``, a
squared-norm loss, ``backward``), and the fraction of a training step spent outside that
forward/backward: ``1 - t_forward_backward / t_step`` (target: at most 10%).

Models:

- ``mlp``: ``ScoreModel(MLP(2, hidden=256, depth=4), VPSDE(), "eps")`` on 2-D data, batch 512,
  ``DenoisingScoreMatching(VPSDE())``;
- ``unet``: ``ScoreModel(UNet(1, ...), VPSDE(), "eps")`` on 1 x 28 x 28 images, batch 32
  (a small configuration so that a CPU finishes; pass ``--device cuda`` for a GPU).

Timing: process CPU time on CPU (least disturbed by other processes on a shared machine),
wall time after synchronisation on CUDA; after warm-up, the median over ``--repeats`` short
interleaved chunks of Trainer steps and of network forward/backward passes. The Trainer step
is ``Trainer._train_step``, i.e. all ``fit`` does per step except the periodic logging and
checkpoints. bf16 autocast is off.

Usage: ``python benchmarks/train.py [--steps 200] [--device cpu] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from sdegen import VPSDE
from sdegen.losses import DenoisingScoreMatching
from sdegen.models import MLP, ScoreModel
from sdegen.training import Trainer


class _Clock:
    """Process CPU time on CPU (what other processes on a shared machine disturb least); wall
    time after a device synchronisation on CUDA."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __call__(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return time.perf_counter()
        return time.process_time()


def forward_backward_time(model, x, t, steps: int, clock: _Clock) -> float:
    """Seconds per forward + backward of the network alone on ``(x, t)``."""
    params = list(model.parameters())
    start = clock()
    for _ in range(steps):
        for p in params:
            p.grad = None
        model(x, t).square().mean().backward()
    return (clock() - start) / steps


def trainer_step_time(trainer: Trainer, steps: int, clock: _Clock) -> float:
    """Seconds per Trainer step: everything ``fit`` does per step (logging and checkpoints,
    which happen every so many steps, aside)."""
    start = clock()
    for _ in range(steps):
        trainer._train_step()
    return (clock() - start) / steps


def build(name: str, device: torch.device):
    torch.manual_seed(0)
    sde = VPSDE()
    if name == "mlp":
        model = ScoreModel(MLP(2, hidden=256, depth=4), sde, "eps")
        data = torch.randn(20_000, 2)
        batch = 512
    else:
        from sdegen.models import UNet

        net = UNet(1, channels=32, channel_mults=(1, 2), num_res_blocks=1)
        model = ScoreModel(net, sde, "eps")
        data = torch.rand(2_000, 1, 28, 28) * 2 - 1
        batch = 32
    model = model.to(device)
    x = torch.randn(batch, *data.shape[1:], device=device)
    t = torch.rand(batch, device=device) * (sde.T - sde.t_min) + sde.t_min
    return model, data, batch, x, t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per chunk (MLP)")
    parser.add_argument("--unet-steps", type=int, default=3, help="timed steps per chunk (U-Net)")
    parser.add_argument("--repeats", type=int, default=10, help="interleaved chunks")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", default="mlp,unet")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    print(f"device {device}, {torch.get_num_threads()} thread(s), torch {torch.__version__}\n")
    print("| model | batch | params | steps/s | step (ms) | fwd+bwd (ms) | outside fwd+bwd |")
    print("|---|---|---|---|---|---|---|")
    worst = 0.0
    for name in args.models.split(","):
        try:
            model, data, batch, x, t = build(name, device)
        except ImportError as e:
            print(f"| {name} | - | - | - | - | - | not available ({e}) |")
            continue
        steps = args.steps if name == "mlp" else args.unet_steps
        with tempfile.TemporaryDirectory() as out_dir:
            trainer = Trainer(
                model,
                DenoisingScoreMatching(model.sde),
                data,
                out_dir=out_dir,
                batch_size=batch,
                lr=1e-4,
                warmup_steps=10,
                progress=False,
                device=args.device,
                resume=False,
            )
            clock = _Clock(trainer.device)
            trainer_step_time(trainer, 3, clock)  # warm-up
            forward_backward_time(model, x, t, 3, clock)
            step_times, fb_times = [], []
            for _ in range(args.repeats):
                # Short interleaved chunks, so that a change of load hits both alike.
                step_times.append(trainer_step_time(trainer, steps, clock))
                fb_times.append(forward_backward_time(model, x, t, steps, clock))
        step, fb = statistics.median(step_times), statistics.median(fb_times)
        outside = 1 - fb / step
        worst = max(worst, outside)
        n_params = sum(p.numel() for p in model.parameters())
        print(
            f"| {name} | {batch} | {n_params:,} | {1 / step:.1f} | {1e3 * step:.2f} | "
            f"{1e3 * fb:.2f} | {100 * outside:.1f}% |"
        )
    print(
        f"\ntarget: at most 10% of a step outside the network's forward/backward: "
        f"{'met' if worst <= 0.10 else 'missed'} (worst {100 * worst:.1f}%)"
    )


if __name__ == "__main__":
    main()
