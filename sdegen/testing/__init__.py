"""Property tests for SDEs, kernels and scores, usable on your own SDEs.

- :func:`fokker_planck_residual` / :func:`assert_fokker_planck`: does ``log p_t`` solve the
  Fokker–Planck equation of the SDE's drift and diffusion?
- :func:`probability_flow_residual`: does a probability-flow drift carry ``p_t`` along?
- :func:`check_transition_kernel`: does a claimed kernel or marginal match a torchsde simulation?
- :func:`check_chapman_kolmogorov`: do kernels compose?
- :func:`check_marginal_limits`: does ``p_t`` start at the data and end at the prior?
- :func:`check_score`: is a score the gradient of its log-density?
- :func:`convergence_order`: a solver's empirical order with a confidence interval.
- :func:`check_samples`: goodness of fit to a Gaussian mixture at a family-wise level.
- :mod:`sdegen.testing.strategies`: hypothesis strategies.
"""

from .convergence import OrderReport, convergence_order
from .fokker_planck import (
    assert_fokker_planck,
    fokker_planck_residual,
    probability_flow_residual,
)
from .kernels import (
    LimitsReport,
    assert_transition_kernel,
    check_chapman_kolmogorov,
    check_marginal_limits,
    check_transition_kernel,
    linear_kernel,
)
from .samples import SampleCheck, SmallSampleWarning, assert_samples, check_samples
from .scores import ScoreCheck, assert_score, check_score
from .simulate import simulate_forward

__all__ = [
    "LimitsReport",
    "OrderReport",
    "SampleCheck",
    "ScoreCheck",
    "SmallSampleWarning",
    "assert_fokker_planck",
    "assert_samples",
    "assert_score",
    "assert_transition_kernel",
    "check_chapman_kolmogorov",
    "check_marginal_limits",
    "check_samples",
    "check_score",
    "check_transition_kernel",
    "convergence_order",
    "fokker_planck_residual",
    "linear_kernel",
    "probability_flow_residual",
    "simulate_forward",
]
