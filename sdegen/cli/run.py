"""``sdegen train``, ``sdegen sample`` and ``sdegen likelihood``: a run folder built from a config.

A run folder holds ``config.yaml`` (the resolved configuration), the Trainer's checkpoints and
``metrics.jsonl``, ``final/`` (exported weights: ``model.safetensors`` and ``config.json``), and
what ``sample`` and ``likelihood`` write. ``train`` resumes from the folder's newest good
checkpoint on its own.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from torch import Tensor

from .. import data as datasets
from ..analytic import DequantizedCategorical
from ..likelihood import bits_per_dim, log_likelihood
from ..losses import loss_from_config
from ..models import ScoreModel, net_from_config
from ..sampling import sample
from ..sde import sde_from_config
from .config import (
    ConfigError,
    RunConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
)

CONFIG_FILE = "config.yaml"
FINAL_DIR = "final"
_NETS = {"mlp": "MLP", "unet": "UNet"}


@dataclass
class Prepared:
    """A data set in the shapes the model sees.

    ``train`` is in model space (dequantized copies for images); ``test`` holds integer levels
    (images, for bits/dim) or points (2-D sets, for nats). ``image_shape`` is ``(C, H, W)`` for
    display when the model sees flattened images.
    """

    train: Tensor
    train_labels: Tensor | None
    test: Tensor
    test_labels: Tensor | None
    levels: int | None
    image_shape: tuple[int, ...] | None
    num_classes: int | None
    train_levels: Tensor | None = None  # integer training images, shaped like the model's input

    @property
    def event_shape(self) -> tuple[int, ...]:
        return tuple(self.train.shape[1:])


def _image_dataset(cfg: RunConfig, split: str) -> datasets.ImageDataset:
    d = cfg.data
    if d.name == "digits":
        return datasets.load_digits(split, test_fraction=d.test_fraction, seed=d.split_seed)
    if d.name == "mnist5k":
        return datasets.load_mnist_5k(split, test_fraction=d.test_fraction, seed=d.split_seed)
    if d.path is None:
        raise ConfigError(f"data.path must be set for data.name = {d.name!r}")
    if not Path(d.path).exists():
        raise ConfigError(f"data.path {d.path!r} does not exist")
    if d.name == "mnist-idx":
        full = datasets.load_mnist_idx(d.path, d.labels_path)
    elif d.name == "cifar10":
        return datasets.load_cifar10(d.path, split)
    elif d.name == "image-folder":
        full = datasets.load_image_folder(d.path, size=d.image_size, grayscale=d.grayscale)
    else:  # pragma: no cover - checked in prepare_data
        raise AssertionError(d.name)
    index = datasets.split_indices(
        len(full), split, labels=full.labels, test_fraction=d.test_fraction, seed=d.split_seed
    )
    return full.subset(index)


_DATA_NAMES = ("digits", "mnist5k", "mnist-idx", "cifar10", "image-folder", "toy")


def prepare_data(cfg: RunConfig, *, train: bool = True) -> Prepared:
    """Load ``cfg.data`` and map it to model space (train split) and to levels or points (test)."""
    d = cfg.data
    if d.name not in _DATA_NAMES:
        raise ConfigError(f"data.name must be one of {list(_DATA_NAMES)}; got {d.name!r}")
    if d.dequantize_copies < 1:
        raise ConfigError(f"data.dequantize_copies must be >= 1; got {d.dequantize_copies}")
    gen = torch.Generator().manual_seed(d.split_seed)
    if d.name == "toy":
        if d.toy not in datasets.TOY_2D_NAMES:
            raise ConfigError(
                f"data.toy must be one of {list(datasets.TOY_2D_NAMES)}; got {d.toy!r}"
            )
        n_test = max(1, int(d.toy_samples * d.test_fraction))
        points = datasets.toy_2d(d.toy, d.toy_samples + n_test, generator=gen)
        return Prepared(points[n_test:], None, points[:n_test], None, None, None, None)
    test_set = _image_dataset(cfg, "test")
    if train:
        train_set = _image_dataset(cfg, "train")
        copies = [
            datasets.to_model_space(
                train_set.images, train_set.levels, data_range=d.data_range, generator=gen
            )
            for _ in range(d.dequantize_copies)
        ]
        x = torch.cat(copies)
        labels = None if train_set.labels is None else train_set.labels.repeat(d.dequantize_copies)
        train_levels = train_set.images
    else:
        x = torch.empty(0, *test_set.images.shape[1:])
        labels = train_levels = None
    test = test_set.images
    image_shape = tuple(test.shape[1:])
    if cfg.model.net == "mlp":  # a vector network sees flattened images
        x, test = x.flatten(1), test.flatten(1)
        train_levels = None if train_levels is None else train_levels.flatten(1)
    return Prepared(
        x,
        labels,
        test,
        test_set.labels,
        test_set.levels,
        image_shape,
        test_set.num_classes,
        train_levels,
    )


def build_model(cfg: RunConfig, prepared: Prepared) -> ScoreModel:
    """The ``ScoreModel`` that ``cfg.model`` and ``cfg.sde`` describe, sized for the data."""
    m = cfg.model
    if m.net not in _NETS:
        raise ConfigError(f"model.net must be one of {sorted(_NETS)}; got {m.net!r}")
    options = dict(m.options)
    event = prepared.event_shape
    if m.net == "mlp":
        options.setdefault("dim", event[0])
    else:
        if len(event) != 3:
            raise ConfigError(
                f"model.net = 'unet' needs image data (C, H, W); got event shape {event}; "
                "use model.net = 'mlp' for vector data"
            )
        options.setdefault("in_channels", event[0])
    base = None
    if m.base is not None:
        if m.base != "categorical":
            raise ConfigError(f"model.base must be null or 'categorical'; got {m.base!r}")
        if prepared.train_levels is None:
            raise ConfigError("model.base = 'categorical' needs image data (integer levels)")
        base = DequantizedCategorical.fit(
            prepared.train_levels, prepared.levels, data_range=cfg.data.data_range
        )
    try:
        sde = sde_from_config(cfg.sde)
        net = net_from_config({"class": _NETS[m.net], **options})
        return ScoreModel(net, sde, m.parameterization, base=base)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"model/sde config: {err}") from err


def build_loss(cfg: RunConfig, sde):
    kinds = {"dsm": "DenoisingScoreMatching", "ssm": "SlicedScoreMatching"}
    if cfg.loss.kind not in kinds:
        raise ConfigError(f"loss.kind must be one of {sorted(kinds)}; got {cfg.loss.kind!r}")
    values = {
        "class": kinds[cfg.loss.kind],
        "weighting": cfg.loss.weighting,
        "t_sampling": cfg.loss.t_sampling,
        **cfg.loss.options,
    }
    try:
        return loss_from_config(values, sde=sde)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"loss config: {err}") from err


def resolve_config(path: str | None, overrides: list[str]) -> RunConfig:
    return config_from_dict(apply_overrides(load_config(path), overrides))


def train(cfg: RunConfig, *, out_dir: Path | None = None):
    """Train (or resume) the run ``cfg`` describes; returns ``(trainer, result, prepared)``."""
    from ..training import Trainer

    out = Path(out_dir or cfg.out_dir)
    prepared = prepare_data(cfg)
    model = build_model(cfg, prepared)
    loss = build_loss(cfg, model.sde)
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_FILE).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    t = cfg.train
    trainer = Trainer(
        model,
        loss,
        prepared.train,
        labels=prepared.train_labels if model_is_conditional(cfg) else None,
        out_dir=out,
        batch_size=min(t.batch_size, len(prepared.train)),
        lr=t.lr,
        weight_decay=t.weight_decay,
        warmup_steps=t.warmup_steps,
        grad_clip=t.grad_clip,
        ema_decay=t.ema_decay,
        bf16=t.bf16,
        compile=t.compile,
        device=t.device,
        seed=t.seed,
        checkpoint_every=t.checkpoint_every,
        keep_last=t.keep_last,
        log_every=t.log_every,
        progress=t.progress,
    )
    result = trainer.fit(t.steps)
    trainer.export(out / FINAL_DIR)
    return trainer, result, prepared


def model_is_conditional(cfg: RunConfig) -> bool:
    return cfg.model.options.get("num_classes") is not None


def load_run(run_dir: str | Path) -> tuple[RunConfig, ScoreModel]:
    """The resolved config and the exported (EMA) model of a trained run folder."""
    from ..training import load_pretrained

    run = Path(run_dir)
    if not (run / CONFIG_FILE).is_file():
        raise ConfigError(
            f"{str(run)!r} is not a run folder (no {CONFIG_FILE}); run `sdegen train`"
        )
    cfg = config_from_dict(yaml.safe_load((run / CONFIG_FILE).read_text()))
    if not (run / FINAL_DIR / "config.json").is_file():
        raise ConfigError(
            f"{str(run)!r} has no exported model in {FINAL_DIR}/; finish `sdegen train`"
        )
    return cfg, load_pretrained(run / FINAL_DIR)


def draw_samples(
    cfg: RunConfig,
    model: ScoreModel,
    prepared: Prepared,
    *,
    method: str,
    steps: int | None,
    nfe: int | None,
    n: int,
    seed: int,
    **kwargs,
):
    """``n`` samples in model space, shaped like the data the model sees."""
    score = model.score
    with torch.no_grad():
        return sample(
            model.sde,
            score,
            (n, *prepared.event_shape),
            method=method,
            steps=steps,
            nfe=nfe,
            generator=torch.Generator().manual_seed(seed),
            **kwargs,
        )


def save_samples(
    cfg: RunConfig, prepared: Prepared, samples: Tensor, path: Path, *, title: str | None = None
) -> Path:
    """An image grid (images) or a scatter over the data (2-D sets) as a PNG."""
    from .. import plotting

    if prepared.levels is None:
        return plotting.scatter_2d(
            {title or "samples": samples}, path, reference=prepared.train[: len(samples)]
        )
    images = samples.reshape(len(samples), *prepared.image_shape)
    levels = datasets.from_model_space(images, prepared.levels, data_range=cfg.data.data_range)
    return plotting.save_image_grid(levels, path, levels=prepared.levels)


def evaluate_likelihood(
    cfg: RunConfig,
    model: ScoreModel,
    prepared: Prepared,
    *,
    n: int,
    repeats: int,
    seed: int,
    **kwargs,
) -> dict:
    """Held-out bits/dim (images) or nats per point (2-D sets), with standard errors."""
    x = prepared.test[:n]
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    if prepared.levels is not None:
        res = bits_per_dim(
            model.sde,
            model.score,
            x,
            levels=prepared.levels,
            data_range=cfg.data.data_range,
            repeats=repeats,
            generator=gen,
            **kwargs,
        )
        return {
            "metric": "bits/dim",
            "value": res.mean,
            "std_error": res.std_error,
            "n": len(x),
            "repeats": repeats,
            "nfe": res.nfe,
            "seconds": time.perf_counter() - start,
            "uniform_bits_per_dim": datasets.uniform_bits_per_dim(prepared.levels),
        }
    res = log_likelihood(model.sde, model.score, x, generator=gen, **kwargs)
    nll = -res.log_prob.double()
    return {
        "metric": "nats/point",
        "value": float(nll.mean()),
        "std_error": float(nll.std() / math.sqrt(len(nll))),
        "n": len(x),
        "nfe": res.nfe,
        "seconds": time.perf_counter() - start,
        "divergence": res.divergence,
    }


# ------------------------------------------------------------------------------------------
# Commands


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config entry, e.g. --set train.steps=200 (repeatable)",
    )
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved config and exit"
    )


def _cmd_train(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    if args.out is not None:
        overrides.append(f"out_dir={args.out}")
    cfg = resolve_config(args.config, overrides)
    if args.print_config:
        print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), end="")
        return 0
    _, result, _ = train(cfg)
    resumed = f" (resumed from step {result.resumed_from})" if result.resumed_from else ""
    losses = result.losses[torch.isfinite(result.losses)]
    last = float(losses[-min(len(losses), 50) :].mean()) if len(losses) else float("nan")
    print(
        f"trained to step {result.step}{resumed}: {result.steps_per_second:.1f} steps/s, "
        f"recent loss {last:.4f}, skipped {result.skipped}; "
        f"model in {Path(cfg.out_dir) / FINAL_DIR}"
    )
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    cfg, model = load_run(args.run_dir)
    s = cfg.sample
    method = args.method or s.method
    steps = args.steps if args.steps is not None else s.steps
    nfe = args.nfe if args.nfe is not None else s.nfe
    n = args.n if args.n is not None else s.n
    prepared = prepare_data(cfg, train=cfg.data.name == "toy")
    start = time.perf_counter()
    result = draw_samples(
        cfg, model, prepared, method=method, steps=steps, nfe=nfe, n=n, seed=args.seed
    )
    elapsed = time.perf_counter() - start
    out = Path(args.out or Path(args.run_dir) / "samples")
    out.mkdir(parents=True, exist_ok=True)
    torch.save(result.samples, out / f"{method}.pt")
    png = save_samples(cfg, prepared, result.samples, out / f"{method}.png", title=method)
    print(f"{n} samples with {method}: NFE {result.nfe}, {elapsed:.2f} s; wrote {png}")
    return 0


def _cmd_likelihood(args: argparse.Namespace) -> int:
    cfg, model = load_run(args.run_dir)
    if args.split != "test":
        raise ConfigError("--split must be 'test' (held-out data); training data flatter the model")
    lk = cfg.likelihood
    prepared = prepare_data(cfg, train=False)
    report = evaluate_likelihood(
        cfg,
        model,
        prepared,
        n=args.n or lk.n,
        repeats=args.repeats or lk.repeats,
        seed=lk.seed,
        divergence=lk.divergence,
        rtol=lk.rtol,
        atol=lk.atol,
    )
    path = Path(args.run_dir) / "likelihood.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"{'split':<8}{'n':>6}{report['metric']:>12}{'std err':>10}{'NFE':>9}{'time (s)':>10}")
    print(
        f"{args.split:<8}{report['n']:>6}{report['value']:>12.4f}{report['std_error']:>10.4f}"
        f"{report['nfe']:>9}{report['seconds']:>10.1f}"
    )
    print(f"wrote {path}")
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("train", help="train a score model from a YAML/TOML config (resumes)")
    p.add_argument(
        "config",
        nargs="?",
        default=None,
        help="config file (.yaml/.toml); omitted: the defaults (digits)",
    )
    p.add_argument("--out", default=None, help="run folder (overrides out_dir)")
    _add_config_args(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("sample", help="sample a trained run; writes a PNG and the tensor")
    p.add_argument("run_dir")
    p.add_argument("--method", default=None, help="a name from sdegen.sampling.methods()")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--nfe", type=int, default=None, help="score-evaluation budget")
    p.add_argument("--n", type=int, default=None, help="number of samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output folder (default RUN_DIR/samples)")
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser("likelihood", help="held-out bits/dim (images) or nats (2-D) of a run")
    p.add_argument("run_dir")
    p.add_argument("--split", default="test")
    p.add_argument("--n", type=int, default=None, help="test points")
    p.add_argument("--repeats", type=int, default=None, help="dequantization draws per point")
    p.set_defaults(func=_cmd_likelihood)
