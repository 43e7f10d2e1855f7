"""Forward SDEs: the abstract contracts and the shipped linear SDEs."""

from .base import AbstractLinearSDE, AbstractSDE
from .linear import LinearSDE
from .ou import OUSDE
from .ve import VESDE
from .vp import VPSDE, SubVPSDE

__all__ = [
    "OUSDE",
    "VESDE",
    "VPSDE",
    "AbstractBetaSDE",
    "AbstractLinearSDE",
    "AbstractSDE",
    "LinearSDE",
    "SubVPSDE",
]
