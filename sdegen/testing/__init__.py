"""Property tests for SDEs, kernels and scores, usable on your own SDEs."""

from .fokker_planck import assert_fokker_planck, fokker_planck_residual
from .samples import SampleCheck, assert_samples, check_samples
from .simulate import simulate_forward

__all__ = [
    "SampleCheck",
    "assert_fokker_planck",
    "assert_samples",
    "check_samples",
    "fokker_planck_residual",
    "simulate_forward",
]
