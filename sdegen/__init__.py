"""sdegen: score-based generative modelling through stochastic differential equations.

The public surface: forward SDEs, the closed-form Gaussian-mixture ground truth, the reverse-time
SDE (a torchsde object) and probability-flow ODE (a torchdiffeq function), and ``sample()``.
"""

from .analytic import GaussianMixture
from .reverse import ProbabilityFlowODE, ReverseSDE
from .sampling import SampleResult, StabilityWarning, sample
from .sde import (
    OUSDE,
    VESDE,
    VPSDE,
    AbstractLinearSDE,
    AbstractSDE,
    LinearSDE,
    SubVPSDE,
)

__version__ = "0.1.0"

__all__ = [
    "OUSDE",
    "VESDE",
    "VPSDE",
    "AbstractLinearSDE",
    "AbstractSDE",
    "GaussianMixture",
    "LinearSDE",
    "ProbabilityFlowODE",
    "ReverseSDE",
    "SampleResult",
    "StabilityWarning",
    "SubVPSDE",
    "sample",
]
