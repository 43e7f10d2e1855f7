"""sdegen: score-based generative modelling through stochastic differential equations.

The public surface: forward SDEs, the closed-form Gaussian-mixture ground truth, the reverse-time
SDE (a torchsde object) and probability-flow ODE (a torchdiffeq function), ``sample()``, and
exact likelihoods (``log_likelihood``, ``bits_per_dim``, ``elbo``), score models and their
training (``ScoreModel``, ``DenoisingScoreMatching``, ``SlicedScoreMatching``, ``Trainer``,
``load_pretrained``). Subpackages: ``sdegen.data``, ``sdegen.guidance``, ``sdegen.models``,
``sdegen.plotting``, ``sdegen.testing``.
"""

from . import guidance
from .analytic import DequantizedCategorical, GaussianMixture
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
from .models import MLP, ScoreModel, UNet, net_from_config
from .reverse import ProbabilityFlowODE, ReverseSDE
from .sampling import SampleResult, SamplingMethod, StabilityWarning, methods, sample
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
from .training import (
    CheckpointError,
    CheckpointWarning,
    NonFiniteLossError,
    Trainer,
    TrainResult,
    load_pretrained,
)

__version__ = "0.1.0"

__all__ = [
    "MLP",
    "OUSDE",
    "VESDE",
    "VPSDE",
    "AbstractLinearSDE",
    "AbstractSDE",
    "BitsPerDim",
    "CheckpointError",
    "CheckpointWarning",
    "DenoisingScoreMatching",
    "DequantizedCategorical",
    "ElboResult",
    "GaussianMixture",
    "LikelihoodResult",
    "LinearSDE",
    "NonFiniteLossError",
    "ProbabilityFlowODE",
    "ReverseSDE",
    "SampleResult",
    "SamplingMethod",
    "ScoreModel",
    "SlicedScoreMatching",
    "StabilityWarning",
    "SubVPSDE",
    "TrainResult",
    "Trainer",
    "UNet",
    "bits_per_dim",
    "data_transform",
    "dequantize",
    "elbo",
    "guidance",
    "load_pretrained",
    "log_likelihood",
    "loss_from_config",
    "methods",
    "net_from_config",
    "sample",
    "sde_from_config",
]
