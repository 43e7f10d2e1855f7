"""Forward SDEs: the abstract contracts and the shipped linear SDEs."""

from ._config import sde_from_config
from .base import AbstractLinearSDE, AbstractSDE
from .linear import LinearSDE
from .ou import OUSDE
from .ve import VESDE
from .vp import VPSDE, AbstractBetaSDE, SubVPSDE

__all__ = [
    "OUSDE",
    "VESDE",
    "VPSDE",
    "AbstractBetaSDE",
    "AbstractLinearSDE",
    "AbstractSDE",
    "LinearSDE",
    "SubVPSDE",
    "sde_from_config",
]
