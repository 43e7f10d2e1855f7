"""Run configurations for the command line: typed dataclasses read from YAML or TOML, with
``section.key=value`` overrides. Unknown keys and wrong types fail at once, naming the key.

Configuration stays at this edge: library functions take explicit arguments, and only the
command line turns a config into calls.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "ConfigError",
    "DataConfig",
    "LikelihoodConfig",
    "LossConfig",
    "ModelConfig",
    "RunConfig",
    "SampleConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "load_config",
]


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the key."""


@dataclass
class DataConfig:
    """Which data set, and how it is split and scaled into model space."""

    name: str = "digits"  # digits | mnist5k | mnist-idx | cifar10 | image-folder | toy
    path: str | None = None  # file or folder for mnist-idx, cifar10, image-folder
    labels_path: str | None = None  # mnist-idx labels file
    toy: str = "moons"  # the 2-D set when name = toy
    toy_samples: int = 20000
    test_fraction: float = 0.2
    split_seed: int = 0
    image_size: int | None = None  # image-folder: resize to this square size
    grayscale: bool = False  # image-folder
    data_range: str = "[-1,1]"
    dequantize_copies: int = 8  # uniform-dequantization draws of each training image


@dataclass
class ModelConfig:
    """The network (``net`` and its keyword ``options``) and the score parameterization."""

    net: str = "unet"  # unet | mlp
    parameterization: str = "eps"
    base: str | None = None  # categorical: learn a residual on the per-pixel categorical model
    options: dict = field(default_factory=dict)


@dataclass
class LossConfig:
    kind: str = "dsm"  # dsm | ssm
    weighting: str = "sigma2"
    t_sampling: str = "uniform"
    options: dict = field(default_factory=dict)


@dataclass
class TrainConfig:
    steps: int = 3000
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.0
    warmup_steps: int = 100
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    bf16: bool = False
    compile: bool = False
    device: str = "auto"
    seed: int = 0
    checkpoint_every: int = 500
    keep_last: int = 3
    log_every: int = 50
    progress: bool = True


@dataclass
class SampleConfig:
    method: str = "unipc"
    steps: int | None = None
    nfe: int | None = None
    n: int = 64
    seed: int = 0


@dataclass
class LikelihoodConfig:
    split: str = "test"
    n: int = 256
    repeats: int = 2
    divergence: str = "auto"
    rtol: float = 1e-5
    atol: float = 1e-5
    seed: int = 0


@dataclass
class RunConfig:
    """Everything ``sdegen train`` needs; ``sample`` and ``likelihood`` read it back from the run
    folder."""

    out_dir: str = "runs/digits"
    data: DataConfig = field(default_factory=DataConfig)
    sde: dict = field(default_factory=lambda: {"class": "VPSDE"})
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    likelihood: LikelihoodConfig = field(default_factory=LikelihoodConfig)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(key, value, option)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping of settings; got {value!r}")
        return _build(tp, value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is dict:
        if isinstance(value, dict):
            return dict(value)
    else:  # pragma: no cover - a schema error, not a user error
        raise TypeError(f"unsupported config type {tp!r} for {key}")
    raise ConfigError(f"{key} must be {_type_name(tp)}; got {value!r} ({type(value).__name__})")


def _build(cls: type, values: dict, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        dotted = ", ".join(repr(f"{prefix}.{k}" if prefix else k) for k in unknown)
        raise ConfigError(f"unknown config key(s) {dotted}; allowed here: {', '.join(names)}")
    kwargs = {k: _coerce(f"{prefix}.{k}" if prefix else k, v, hints[k]) for k, v in values.items()}
    return cls(**kwargs)


def config_from_dict(values: dict) -> RunConfig:
    """Build a :class:`RunConfig` from nested dicts, filling in defaults.

    Raises:
        ConfigError: unknown keys or wrong types, naming the dotted key.
    """
    if not isinstance(values, dict):
        raise ConfigError(
            f"a config must be a mapping at the top level; got {type(values).__name__}"
        )
    return _build(RunConfig, values, "")


def config_to_dict(config: RunConfig) -> dict:
    return dataclasses.asdict(config)


def _toml():
    try:
        import tomllib
    except ModuleNotFoundError as err:  # Python 3.10
        raise ConfigError("TOML configs need Python >= 3.11; use a .yaml config") from err
    return tomllib


def load_config(path: str | Path | None) -> dict:
    """Read a YAML (``.yaml``/``.yml``) or TOML (``.toml``) file into nested dicts (an empty dict
    for ``None``)."""
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            values = _toml().loads(text)
        elif path.suffix in (".yaml", ".yml"):
            values = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"config file {str(path)!r} must end in .yaml, .yml or .toml")
    except (yaml.YAMLError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"cannot parse config file {str(path)!r}: {err}") from err
    if not isinstance(values, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping at the top level")
    return values


def apply_overrides(values: dict, overrides: list[str]) -> dict:
    """Apply ``section.key=value`` overrides (values parsed as YAML scalars: ``100``, ``1e-3``,
    ``true``, ``null``, ``[1, 2]``) to a nested dict, returning a new dict."""
    result = yaml.safe_load(yaml.safe_dump(values)) or {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        node = result
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        try:
            node[parts[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: cannot parse the value: {err}") from err
    return result
