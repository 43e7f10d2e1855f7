"""Sampling: one entry point, :func:`sample`, over torchsde and torchdiffeq solvers."""

from .brownian import StepBrownian
from .core import SampleResult, SamplingMethod, StabilityWarning, methods, sample

__all__ = [
    "SampleResult",
    "SamplingMethod",
    "StabilityWarning",
    "StepBrownian",
    "methods",
    "sample",
]
