"""sdegen: score-based generative modelling through stochastic differential equations.

The public surface: forward SDEs, the closed-form Gaussian-mixture ground truth, the reverse-time
SDE (a torchsde object) and probability-flow ODE (a torchdiffeq function), ``sample()``, and
exact likelihoods (``log_likelihood``, ``bits_per_dim``, ``elbo``), score models and their
training (``ScoreModel``, ``DenoisingScoreMatching``, ``SlicedScoreMatching``, ``Trainer``,
``load_pretrained``). Subpackages: ``sdegen.data``, ``sdegen.models``, ``sdegen.plotting``,
``sdegen.testing``.
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
from .losses import DenoisingScoreMatching, SlicedScoreMatching, loss_from_config
from .models import ScoreModel
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
    sde_from_config,
)
from .training import Trainer, load_pretrained

__version__ = "0.1.0"

__all__ = [
    "OUSDE",
    "VESDE",
    "VPSDE",
    "AbstractLinearSDE",
    "AbstractSDE",
    "BitsPerDim",
    "DenoisingScoreMatching",
    "ElboResult",
    "GaussianMixture",
    "LikelihoodResult",
    "LinearSDE",
    "ProbabilityFlowODE",
    "ReverseSDE",
    "SampleResult",
    "ScoreModel",
    "SlicedScoreMatching",
    "StabilityWarning",
    "SubVPSDE",
    "Trainer",
    "bits_per_dim",
    "data_transform",
    "dequantize",
    "elbo",
    "load_pretrained",
    "log_likelihood",
    "loss_from_config",
    "sample",
    "sde_from_config",
]
