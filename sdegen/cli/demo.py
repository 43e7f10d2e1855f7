"""``sdegen demo``: the main job on the embedded data (scikit-learn's 8×8 digits).

It trains a score model, samples it with a few-step deterministic sampler and with the
predictor–corrector sampler, computes held-out bits/dim with its standard error against the
uniform and per-pixel categorical baselines, and writes a Markdown report with the figures into
the output folder. Re-running resumes training from the folder's checkpoints.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import torch

from .. import data as datasets
from .. import plotting
from .config import RunConfig, apply_overrides, config_from_dict, config_to_dict, load_config
from .run import (
    draw_samples,
    evaluate_likelihood,
    save_samples,
    train,
)

#: The demo's defaults, chosen on held-out data (the digits are few: 1 438 training images, so
#: longer training or a larger network overfits; weight decay helps a little). About a minute
#: of training on one CPU core.
DEMO_CONFIG: dict = {
    "out_dir": "runs/demo",
    "data": {"name": "digits", "dequantize_copies": 8},
    "sde": {"class": "VPSDE"},
    "model": {
        "net": "mlp",
        "parameterization": "eps",
        "base": "categorical",
        "options": {"hidden": 256, "depth": 3},
    },
    "loss": {"kind": "dsm", "weighting": "g2", "t_sampling": "importance"},
    "train": {
        "steps": 4000,
        "batch_size": 128,
        "lr": 1e-3,
        "weight_decay": 0.1,
        "warmup_steps": 200,
        "ema_decay": 0.999,
        "checkpoint_every": 1000,
        "log_every": 100,
    },
    "sample": {"method": "unipc", "nfe": 20, "n": 64},
    "likelihood": {"n": 359, "repeats": 2},
}

#: Samplers shown in the report: (label, method, keyword arguments).
DEMO_SAMPLERS = [
    ("few-step deterministic (20 NFE)", "unipc", {"nfe": 20}),
    ("predictor-corrector (200 x 2 NFE)", "pc_reverse_diffusion", {"steps": 200}),
]


def _loss_curve(metrics_path: Path, path: Path) -> Path | None:
    if not metrics_path.is_file():
        return None
    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "loss" in r and math.isfinite(r["loss"])]
    if not rows:
        return None
    plt = plotting._pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 3.0))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], lw=1)
    ax.set(xlabel="step", ylabel="training loss (likelihood weighting)", title="training loss")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run_demo(cfg: RunConfig) -> dict:
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    print(f"sdegen demo: {cfg.data.name} -> {out}")

    trainer, result, prepared = train(cfg)
    timings["train"] = time.perf_counter() - start
    model = trainer.ema_model
    model.eval()

    baselines = {
        "uniform": datasets.uniform_bits_per_dim(prepared.levels),
        "categorical": datasets.categorical_bits_per_dim(
            prepared.train_levels, prepared.test, prepared.levels
        ),
    }

    figures: dict[str, str] = {}
    sampler_rows = []
    trajectories = {}
    for label, method, kwargs in DEMO_SAMPLERS:
        t0 = time.perf_counter()
        res = draw_samples(
            cfg,
            model,
            prepared,
            method=method,
            steps=kwargs.get("steps"),
            nfe=kwargs.get("nfe"),
            n=cfg.sample.n,
            seed=cfg.sample.seed,
            return_trajectory=True,
        )
        elapsed = time.perf_counter() - t0
        trajectories[method] = (res.times, res.trajectory)
        png = save_samples(cfg, prepared, res.samples, out / f"samples_{method}.png")
        figures[label] = png.name
        sampler_rows.append(
            {"sampler": label, "method": method, "nfe": res.nfe, "seconds": elapsed}
        )
        print(f"  {label:<36} NFE {res.nfe:>5}  {elapsed:6.1f} s  -> {png}")
    timings["sample"] = sum(r["seconds"] for r in sampler_rows)

    # The forward diffusion of a few test digits, as the model sees them.
    x0 = prepared.train[:8]
    times = torch.linspace(model.sde.t_min, model.sde.T, 8, dtype=torch.float64)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0), dtype=x0.dtype)
    states = torch.stack(
        [
            model.sde.perturb(x0, float(t) * torch.ones(len(x0), dtype=x0.dtype), noise)
            for t in times
        ]
    )
    images = states.reshape(len(times), len(x0), *prepared.image_shape).clamp(-1, 1)
    strip = plotting.trajectory_strip(times, images, out / "forward_diffusion.png", scale=4)
    figures["forward diffusion (t = t_min ... T, one column per time)"] = strip.name

    # The reverse process: the few-step sampler's path from noise to digits, as a strip and a GIF.
    method = DEMO_SAMPLERS[0][1]
    times, path = trajectories[method]
    shown = path[:, :8].reshape(len(times), -1, *prepared.image_shape).clamp(-1, 1)
    strip = plotting.trajectory_strip(times, shown, out / "reverse_trajectory.png", scale=4)
    figures[f"reverse process ({method}: t = T ... t_min, one column per step)"] = strip.name
    plotting.trajectory_gif(
        path[:, :16].reshape(len(times), -1, *prepared.image_shape).clamp(-1, 1),
        out / "reverse_trajectory.gif",
        scale=4,
    )

    t0 = time.perf_counter()
    lk = cfg.likelihood
    likelihood = evaluate_likelihood(
        cfg,
        model,
        prepared,
        n=lk.n,
        repeats=lk.repeats,
        seed=lk.seed,
        divergence=lk.divergence,
        rtol=lk.rtol,
        atol=lk.atol,
    )
    timings["likelihood"] = time.perf_counter() - t0
    curve = _loss_curve(result.metrics_path, out / "loss.png")
    if curve is not None:
        figures["training loss"] = curve.name
    timings["total"] = time.perf_counter() - start

    summary = {
        "config": config_to_dict(cfg),
        "train": {
            "step": result.step,
            "steps_per_second": result.steps_per_second,
            "skipped": result.skipped,
            "resumed_from": result.resumed_from,
        },
        "samplers": sampler_rows,
        "bits_per_dim": likelihood,
        "baselines_bits_per_dim": baselines,
        "seconds": timings,
        "figures": figures,
    }
    (out / "demo.json").write_text(json.dumps(summary, indent=2))
    _write_report(out / "report.md", summary)
    bpd = likelihood
    print(
        f"held-out bits/dim: {bpd['value']:.3f} ± {bpd['std_error']:.3f} (n = {bpd['n']}, "
        f"{bpd['repeats']} dequantization draws; per-pixel categorical "
        f"{baselines['categorical']:.3f}, uniform {baselines['uniform']:.3f})"
    )
    print(f"total {timings['total']:.0f} s; report in {out / 'report.md'}")
    return summary


def _write_report(path: Path, s: dict) -> None:
    bpd, base = s["bits_per_dim"], s["baselines_bits_per_dim"]
    cfg = s["config"]
    lines = [
        "# sdegen demo: scikit-learn digits",
        "",
        f"Model: `{cfg['model']['net']}` {cfg['model']['options']}, parameterization "
        f"`{cfg['model']['parameterization']}`, SDE `{cfg['sde']}`; trained "
        f"{s['train']['step']} steps at {s['train']['steps_per_second']:.1f} steps/s.",
        "",
        "## Held-out bits/dim (K = 17 levels, uniform dequantization)",
        "",
        "| model | bits/dim |",
        "|---|---|",
        f"| sdegen (probability flow, exact likelihood) | {bpd['value']:.3f} "
        f"± {bpd['std_error']:.3f} |",
        f"| independent per-pixel categorical | {base['categorical']:.3f} |",
        f"| uniform over 17 levels | {base['uniform']:.3f} |",
        "",
        f"{bpd['n']} test images, {bpd['repeats']} dequantization draws each, {bpd['nfe']} score "
        f"evaluations, {bpd['seconds']:.0f} s. ± is one standard error over test images.",
        "",
        "## Samplers",
        "",
        "| sampler | method | NFE | seconds |",
        "|---|---|---|---|",
        *[
            f"| {r['sampler']} | `{r['method']}` | {r['nfe']} | {r['seconds']:.1f} |"
            for r in s["samplers"]
        ],
        "",
        "## Figures",
        "",
        *[f"### {label}\n\n![{label}]({name})\n" for label, name in s["figures"].items()],
        "## Time",
        "",
        *[f"- {k}: {v:.0f} s" for k, v in s["seconds"].items()],
        "",
    ]
    path.write_text("\n".join(lines))


def add_parser(sub) -> None:
    p = sub.add_parser(
        "demo", help="the main job: train on the embedded digits, sample, held-out bits/dim, report"
    )
    p.add_argument("config", nargs="?", default=None, help="optional config overriding the demo's")
    p.add_argument("--out", default=None, help="output folder (default runs/demo)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--print-config", action="store_true")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    values = apply_overrides(DEMO_CONFIG, [])
    for key, value in load_config(args.config).items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            values[key] = {**values[key], **value}
        else:
            values[key] = value
    overrides = list(args.overrides) + ([f"out_dir={args.out}"] if args.out else [])
    cfg = config_from_dict(apply_overrides(values, overrides))
    if cfg.data.name != "digits":
        print("sdegen demo runs on the embedded digits; use `sdegen train` for other data")
        return 2
    if args.print_config:
        import yaml

        print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), end="")
        return 0
    if "OMP_NUM_THREADS" not in os.environ:
        # Small tensors: a second OpenMP thread gains little, and on a busy core its
        # spin-waiting made steps 30x slower; set OMP_NUM_THREADS to choose otherwise.
        torch.set_num_threads(1)
    run_demo(cfg)
    return 0
