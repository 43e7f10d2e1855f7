"""Score models: raw networks and the :class:`ScoreModel` adapter that turns their output into a
score (parameterizations eps / score / x0 / v, EDM-style input scaling)."""

from .embeddings import ClassEmbedding, GaussianFourierFeatures, SinusoidalEmbedding
from .mlp import MLP
from .score_model import PARAMETERIZATIONS, ScoreModel, net_from_config
from .unet import UNet

__all__ = [
    "MLP",
    "PARAMETERIZATIONS",
    "ClassEmbedding",
    "GaussianFourierFeatures",
    "ScoreModel",
    "SinusoidalEmbedding",
    "UNet",
    "net_from_config",
]
