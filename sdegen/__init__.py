"""sdegen: score-based generative modelling through stochastic differential equations.

The public surface: forward SDEs, the closed-form Gaussian-mixture ground truth, the reverse-time
SDE (a torchsde object) and probability-flow ODE (a torchdiffeq function), ``sample()``, and
exact likelihoods (``log_likelihood``, ``bits_per_dim``, ``elbo``).
"""

from .analytic import GaussianMixture
from .likelihood import (
    BitsPerDim,
    ElboResult,
    LikelihoodResult,
    bits_per_dim,
    data_transform,
    dequantize,
    elbo,
    log_likelihood,
)
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
    "BitsPerDim",
    "ElboResult",
    "GaussianMixture",
    "LikelihoodResult",
    "LinearSDE",
    "ProbabilityFlowODE",
    "ReverseSDE",
    "SampleResult",
    "StabilityWarning",
    "SubVPSDE",
    "bits_per_dim",
    "data_transform",
    "dequantize",
    "elbo",
    "log_likelihood",
    "sample",
]
