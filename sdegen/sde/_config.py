from __future__ import annotations

import inspect
from typing import Any

from .base import AbstractSDE
from .ou import OUSDE
from .ve import VESDE
from .vp import VPSDE, SubVPSDE

_REGISTRY: dict[str, type[AbstractSDE]] = {
    cls.__name__: cls for cls in (VESDE, VPSDE, SubVPSDE, OUSDE)
}


def sde_from_config(config: dict[str, Any]) -> AbstractSDE:
    """Rebuild an SDE from :meth:`AbstractSDE.config`'s dict.

    Example:
        >>> sde_from_config(VPSDE(beta_max=10.0).config())
        VPSDE(t_min=1e-05, T=1.0)

    Raises:
        ValueError: the dict has no known ``"class"`` or unknown keys (the keys are named).
    """
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict from sde.config(); got {type(config).__name__}")
    kwargs = dict(config)
    name = kwargs.pop("class", None)
    if name not in _REGISTRY:
        raise ValueError(
            f"config['class'] must be one of {sorted(_REGISTRY)}; got {name!r} (SDEs defined by "
            "Python code cannot be rebuilt from a config)"
        )
    cls = _REGISTRY[name]
    allowed = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ValueError(
            f"unknown key(s) {unknown} in the {name} config; allowed: {sorted(allowed)}"
        )
    return cls(**kwargs)
