"""Controllable generation: conditional scores by Bayes' rule, classifier and classifier-free
guidance, inpainting by replacement, linear inverse problems, and a noise-conditional classifier.

Everything rests on Bayes' rule for scores: for a condition ``y`` and every ``t``,

    ``∇_x log p_t(x | y) = ∇_x log p_t(x) + ∇_x log p_t(y | x)``,

since ``p_t(y)`` does not depend on ``x``. Each combinator below returns an ordinary score
``score(x, t)`` (``x`` ``(batch, *event)``, ``t`` ``(batch,)``), so :func:`sdegen.sample`,
:func:`sdegen.log_likelihood` and everything else that takes a score take a guided one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ._utils import append_dims, step_noise
from ._validation import as_time, check_scalar, check_tensor
from .models.embeddings import GaussianFourierFeatures
from .reverse import CountedScore, ScoreFn
from .sampling import SampleResult, methods, sample
from .sampling.grids import needs_marginal
from .sde.base import AbstractSDE

# A guidance scale: a float, or a function of the (batch,) times returning a float or (batch,).
Scale = float | Callable[[Tensor], "Tensor | float"]
# (x, t) -> logits (batch, K): a time-dependent classifier p_t(y | x).
Classifier = Callable[[Tensor, Tensor], Tensor]


# Helpers -----------------------------------------------------------------------------------------


def _check_callable(name: str, fn: object, signature: str) -> None:
    if not callable(fn):
        raise TypeError(f"{name} must be callable as {signature}; got {type(fn).__name__}")


def _check_scale(name: str, scale: object, *, minimum: float) -> Scale:
    if callable(scale) and not isinstance(scale, Tensor):
        return scale
    value = check_scalar(name, scale)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum:g} (or a function of t); got {value}")
    return value


def _scale_at(scale: Scale, t: Tensor, x: Tensor) -> Tensor | float:
    """The scale as a float or a ``(batch, 1, ..., 1)`` tensor broadcasting over ``x``."""
    if not callable(scale):
        return scale
    w = scale(t)
    if isinstance(w, Tensor) and w.dim() > 0:
        if w.shape != (x.shape[0],):
            raise ValueError(
                f"a scale function must return a float or a (batch,) = ({x.shape[0]},) tensor; "
                f"got shape {tuple(w.shape)}"
            )
        return append_dims(w.to(dtype=x.dtype, device=x.device), x.dim())
    return float(w)


def _tracks_x(x: Tensor) -> bool:
    """Whether the caller differentiates through ``x`` (e.g. the likelihood's divergence): then
    gradients computed inside a score must themselves be differentiable (``create_graph``)."""
    return torch.is_grad_enabled() and x.requires_grad


def _grad_of(fn: Callable[..., Tensor], x: Tensor, *args: Tensor) -> Tensor:
    """``∇_x Σ_b fn(x, *args)_b`` for a per-sample ``fn: (batch, *event) -> (batch,)``, under
    ``enable_grad`` even inside ``no_grad``; detached unless the caller differentiates through
    ``x``, in which case the graph is kept so that second derivatives (divergences) are right."""
    if _tracks_x(x):
        return torch.autograd.grad(fn(x, *args).sum(), x, create_graph=True)[0]
    # Inference tensors cannot enter autograd; clones made outside inference mode can.
    with torch.inference_mode(False), torch.enable_grad():
        leaf = x.detach().clone().requires_grad_(True)
        args = tuple(a.clone() if a.is_inference() else a for a in args)
        return torch.autograd.grad(fn(leaf, *args).sum(), leaf)[0].detach()


def _labels(y: Tensor | int, batch: int, device: torch.device) -> Tensor:
    if isinstance(y, int) and not isinstance(y, bool):
        return torch.full((batch,), y, dtype=torch.long, device=device)
    return y.to(device)


def _check_labels(y: object) -> Tensor | int:
    if isinstance(y, bool) or not isinstance(y, (int, Tensor)):
        raise TypeError(f"y must be an int or an int64 tensor of shape (batch,); got {y!r}")
    if isinstance(y, int):
        if y < 0:
            raise ValueError(f"y must be a class index >= 0; got {y}")
        return y
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"y must be an integer tensor (int64); got dtype {y.dtype}")
    if y.dim() != 1:
        raise ValueError(f"y must have shape (batch,); got {tuple(y.shape)}")
    return y.long()


class _GuidedScore(nn.Module):
    """Base of the returned scores: a module, so that solvers collecting parameters see the
    networks inside (they are registered as submodules when they are modules)."""

    def extra_repr(self) -> str:
        scale = getattr(self, "scale", None)
        return "" if scale is None else f"scale={'<function of t>' if callable(scale) else scale}"


# Bayes' rule ------------------------------------------------------------------------------------


class _ConditionalScore(_GuidedScore):
    def __init__(self, score: ScoreFn, log_likelihood_grad: ScoreFn, scale: Scale) -> None:
        super().__init__()
        self.score, self.log_likelihood_grad, self.scale = score, log_likelihood_grad, scale

    def forward(self, x: Tensor, t: Tensor | float) -> Tensor:
        t = as_time("t", t, x.shape[0], x)
        return self.score(x, t) + _scale_at(self.scale, t, x) * self.log_likelihood_grad(x, t)


def conditional_score(
    score: ScoreFn, log_likelihood_grad: ScoreFn, *, scale: Scale = 1.0
) -> ScoreFn:
    """Bayes' rule for scores: ``∇log p_t(x | y) = ∇log p_t(x) + w(t) ∇log p_t(y | x)``.

    With ``w = 1`` (the default) the result is the exact conditional score whenever both terms
    are exact; ``w ≠ 1`` samples (approximately) ``p_t(x) p_t(y | x)^w``.

    Arguments:
        score: ``(x, t) -> ∇_x log p_t(x)``.
        log_likelihood_grad: ``(x, t) -> ∇_x log p_t(y | x)`` for the fixed condition ``y``,
            shaped like ``x``.
        scale: ``w``, a float or a function ``t -> w(t)`` (float or ``(batch,)``).

    Returns:
        A score ``(x, t) -> Tensor`` shaped like ``x`` (an ``nn.Module``).
    """
    _check_callable("score", score, "score(x, t)")
    _check_callable("log_likelihood_grad", log_likelihood_grad, "log_likelihood_grad(x, t)")
    return _ConditionalScore(score, log_likelihood_grad, _check_scale("scale", scale, minimum=0))


# Classifier guidance ----------------------------------------------------------------------------


class _ClassifierGrad(_GuidedScore):
    def __init__(self, classifier: Classifier, y: Tensor | int) -> None:
        super().__init__()
        self.classifier, self.y = classifier, y

    def forward(self, x: Tensor, t: Tensor | float) -> Tensor:
        t = as_time("t", t, x.shape[0], x)
        y = _labels(self.y, x.shape[0], x.device)

        def log_prob(x_: Tensor, t: Tensor, y: Tensor) -> Tensor:
            logits = self.classifier(x_, t)
            if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != x.shape[0]:
                got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
                raise ValueError(
                    f"classifier(x, t) must return logits of shape (batch, K) with batch = "
                    f"{x.shape[0]}; got {got}"
                )
            if int(y.max()) >= logits.shape[1]:
                raise ValueError(
                    f"y holds class {int(y.max())} but the classifier has {logits.shape[1]} classes"
                )
            return F.log_softmax(logits, dim=1).gather(1, y[:, None])[:, 0]

        return _grad_of(log_prob, x, t, y)


def classifier_log_prob_grad(classifier: Classifier, y: Tensor | int) -> ScoreFn:
    """``(x, t) -> ∇_x log softmax(classifier(x, t))[y]``: the gradient of a time-dependent
    classifier's log-probability of class ``y``, by autograd.

    The gradient is taken under ``torch.enable_grad`` (so it works inside ``torch.no_grad`` and
    ``torch.inference_mode``, as samplers run) and returned detached, unless the caller itself
    differentiates through ``x`` (as :func:`sdegen.log_likelihood` does for the divergence): then
    it is built with ``create_graph=True`` so that its Jacobian is exact. The classifier must
    treat samples independently (no batch statistics: call ``.eval()`` on BatchNorm nets).

    Arguments:
        classifier: ``(x, t) -> logits`` ``(batch, K)``, a model of ``p_t(y | x)``.
        y: the class, an int or a ``(batch,)`` int64 tensor.
    """
    _check_callable("classifier", classifier, "classifier(x, t) -> logits (batch, K)")
    return _ClassifierGrad(classifier, _check_labels(y))


def classifier_guidance(
    score: ScoreFn, classifier: Classifier, y: Tensor | int, scale: Scale = 1.0
) -> ScoreFn:
    """Classifier guidance (Song et al. 2021; Dhariwal & Nichol 2021):

        ``s(x, t) = ∇log p_t(x) + w(t) ∇_x log p_t(y | x)``,

    with ``p_t(y | x) = softmax(classifier(x, t))[y]`` a classifier trained on noisy inputs
    (see :class:`NoisyClassifier` and :func:`train_classifier`). At ``w = 1`` and with an exact
    classifier this is the exact conditional score, so samplers draw from ``p(x | y)``; ``w > 1``
    sharpens towards ``p(x) p(y | x)^w`` (only approximately: ``p_t(y | x)^w`` is not the
    diffusion of ``p_0(y | x)^w``).

    Arguments:
        score: the unconditional score ``(x, t) -> ∇log p_t(x)``.
        classifier: ``(x, t) -> logits`` ``(batch, K)``.
        y: the class to sample, an int or a ``(batch,)`` int64 tensor.
        scale: ``w >= 0``, a float or a function ``t -> w(t)``.

    Returns:
        A score ``(x, t) -> Tensor`` (an ``nn.Module``). The classifier term is detached when
        sampling; see :func:`classifier_log_prob_grad`.

    Example:
        >>> guided = classifier_guidance(model, classifier, y=3, scale=2.0)
        >>> sample(sde, guided, (64, 1, 8, 8), method="pc_reverse_diffusion")
    """
    _check_callable("score", score, "score(x, t)")
    grad = classifier_log_prob_grad(classifier, y)
    return _ConditionalScore(score, grad, _check_scale("scale", scale, minimum=0))


# Classifier-free guidance -----------------------------------------------------------------------


class _ClassifierFree(_GuidedScore):
    def __init__(self, cond_score: ScoreFn, uncond_score: ScoreFn, scale: Scale) -> None:
        super().__init__()
        self.cond_score, self.uncond_score, self.scale = cond_score, uncond_score, scale

    def forward(self, x: Tensor, t: Tensor | float) -> Tensor:
        t = as_time("t", t, x.shape[0], x)
        w = _scale_at(self.scale, t, x)
        cond = self.cond_score(x, t)
        if isinstance(w, float) and w == 0.0:
            return cond  # w = 0 is the conditional score itself: skip the second evaluation
        return (1 + w) * cond - w * self.uncond_score(x, t)


def classifier_free_guidance(cond_score: ScoreFn, uncond_score: ScoreFn, scale: Scale) -> ScoreFn:
    """Classifier-free guidance (Ho & Salimans 2021):

        ``s(x, t) = (1 + w) ∇log p_t(x | y) - w ∇log p_t(x)``,

    the score of ``p_t(x | y)^{1+w} p_t(x)^{-w} ∝ p_t(x) p_t(y | x)^{1+w}``: an implicit
    classifier at scale ``1 + w``. ``w = 0`` is the conditional score (and the unconditional one
    is then not evaluated). Note ``w`` here, not the ``1 + w`` some libraries call the "guidance
    scale". At ``w > 0`` sampling with it is not exactly sampling the tilted law
    ``p_0(x | y)^{1+w} p_0(x)^{-w}`` (the tilt does not commute with the noising; the two agree
    when both laws are Gaussian with the same covariance, see docs/guidance.md).

    With a class-conditional :class:`~sdegen.models.ScoreModel` trained with label dropout:
    ``classifier_free_guidance(model.bind(y), model.bind(None), w)`` (``None`` is the null label).

    Arguments:
        cond_score: ``(x, t) -> ∇log p_t(x | y)``.
        uncond_score: ``(x, t) -> ∇log p_t(x)``.
        scale: ``w >= -1``, a float or a function ``t -> w(t)``.

    Returns:
        A score ``(x, t) -> Tensor`` (an ``nn.Module``).
    """
    _check_callable("cond_score", cond_score, "cond_score(x, t)")
    _check_callable("uncond_score", uncond_score, "uncond_score(x, t)")
    return _ClassifierFree(cond_score, uncond_score, _check_scale("scale", scale, minimum=-1))


# Inpainting by replacement ----------------------------------------------------------------------


def _check_mask(mask: object, observed: Tensor) -> Tensor:
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a tensor (1 or True = observed); got {type(mask).__name__}")
    event = tuple(observed.shape[1:])
    if tuple(mask.shape) not in (event, tuple(observed.shape)):
        raise ValueError(
            f"mask must have the event shape {event} or observed's shape "
            f"{tuple(observed.shape)}; got {tuple(mask.shape)}"
        )
    m = mask.to(dtype=observed.dtype, device=observed.device)
    if not bool(((m == 0) | (m == 1)).all()):
        raise ValueError("mask must hold only 0/1 (or False/True) entries")
    return m.expand_as(observed)


class _Replacement:
    """The replacement step: put the observed coordinates back, noised to time ``t``,
    ``x_o(t) = m(t) y + c(t) + s(t) z``; then Langevin corrector steps on the unobserved
    coordinates with the observed ones held fixed, which target ``p_t(x_u | x_o(t))``."""

    def __init__(self, sde, score, observed, mask, corrector_steps, snr, generator) -> None:
        self.sde, self.score, self.observed, self.mask = sde, score, observed, mask
        self.corrector_steps, self.snr, self.generator = corrector_steps, snr, generator

    def noise(self, x: Tensor) -> Tensor:
        return step_noise(x.shape, generator=self.generator, dtype=x.dtype, device=x.device)

    def replace(self, x: Tensor, t: Tensor) -> Tensor:
        known = self.sde.marginal_mean(self.observed, t)
        known = known + append_dims(self.sde.marginal_std(t), x.dim()) * self.noise(x)
        return torch.where(self.mask > 0, known, x)

    def __call__(self, i: int, t: float, x: Tensor) -> Tensor:
        t_ = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
        x = self.replace(x, t_)
        free = 1 - self.mask
        for _ in range(self.corrector_steps):
            # Song et al.'s step size from the signal-to-noise ratio, with the norms taken over
            # the unobserved coordinates (the only ones that move) and averaged over the batch.
            score, z = self.score(x, t_) * free, self.noise(x) * free
            score_norm = score.flatten(1).norm(dim=1).mean()
            if not score_norm > 0:
                break
            eps = 2 * (self.snr * z.flatten(1).norm(dim=1).mean() / score_norm) ** 2
            x = x + eps * score + torch.sqrt(2 * eps) * z
        return x


def inpaint(
    sde: AbstractSDE,
    score: ScoreFn,
    observed: Tensor,
    mask: Tensor,
    *,
    method: str = "pc_reverse_diffusion",
    steps: int | None = None,
    corrector_steps: int = 1,
    snr: float = 0.16,
    generator: torch.Generator | None = None,
    x_T: Tensor | None = None,
    **sample_kwargs,
) -> SampleResult:
    """Inpainting / imputation by the replacement method (Song et al. 2021, appendix I).

    Sample the reverse process for the whole state, and after every step put back the observed
    coordinates ``x_o = y`` noised to the current time, ``x_o(t) = m(t) y + c(t) + s(t) z``
    (fresh ``z`` each step), followed by ``corrector_steps`` Langevin steps
    ``x_u ← x_u + ε ∇_u log p_t(x) + √(2ε) z`` on the unobserved coordinates with ``x_o(t)`` held
    fixed (``ε`` from the signal-to-noise ratio ``snr``, as in Song et al.). Since
    ``∇_u log p_t(x_u, x_o) = ∇_u log p_t(x_u | x_o)``, the corrector targets
    ``p_t(x_u | x_o(t))`` exactly. The method is approximate all the same: ``x_o(t)`` is drawn
    independently of the path, and ``p_t(x_u | x_o(t))`` is not ``p_t(x_u | x_o(0) = y)`` (a
    noisy ``x_o(t)`` says less about ``x_u`` than ``y``). Only at ``t → 0`` do they coincide; so
    when ``p(x_u | y)`` is multimodal, the mode weights chosen at large ``t`` lean towards the
    unconditional ones, and Langevin steps at small ``t`` rarely move mass between modes.
    Measured on Gaussian mixtures in tests/test_guidance.py and docs/guidance.md.

    Arguments:
        sde: a linear SDE (``has_marginal``), to noise the observations.
        score: the unconditional score ``(x, t) -> ∇log p_t(x)``.
        observed: ``(batch, *event)`` with the known values where ``mask`` is 1 (other entries
            are ignored).
        mask: ``(*event)`` or ``(batch, *event)``, 1 / True where observed.
        method: a :func:`sdegen.sample` method used as the predictor (for predictor–corrector
            methods its own corrector is switched off: the corrector here replaces it).
        steps: steps of the sampler (its default when ``None``).
        corrector_steps, snr: Langevin corrector steps per step and their signal-to-noise ratio
            (0 steps: replacement only).
        generator: seeds the prior draw, the sampler's noise and the replacement noise.
        x_T: the starting noise (default: drawn from the prior).
        sample_kwargs: passed on to :func:`sdegen.sample` (``time_grid``, ``progress``, ...).

    Returns:
        The :class:`~sdegen.sampling.SampleResult` with ``samples`` equal to ``observed`` where
        ``mask`` is 1, and ``nfe`` counting the corrector's evaluations too.
    """
    needs_marginal(sde, "inpaint (noising the observed coordinates)")
    _check_callable("score", score, "score(x, t)")
    observed = check_tensor("observed", observed, min_dim=2)
    full_mask = _check_mask(mask, observed)
    if isinstance(corrector_steps, bool) or not isinstance(corrector_steps, int):
        raise ValueError(f"corrector_steps must be an int >= 0; got {corrector_steps!r}")
    if corrector_steps < 0:
        raise ValueError(f"corrector_steps must be an int >= 0; got {corrector_steps}")
    snr = check_scalar("snr", snr, positive=True)
    spec = methods().get(method)
    if spec is None:
        raise ValueError(f"method must be one of {sorted(methods())}; got {method!r}")
    for key in ("callback", "shape", "corrector"):
        if key in sample_kwargs:
            raise ValueError(f"inpaint sets {key!r} itself; do not pass it")
    if spec.family == "pc":
        if spec.name == "annealed_langevin":
            raise ValueError("method 'annealed_langevin' has no predictor; use a pc_* method")
        sample_kwargs["corrector"] = "none"
    counted = CountedScore(score)
    replacement = _Replacement(sde, counted, observed, full_mask, corrector_steps, snr, generator)
    if x_T is None:
        x_T = sde.prior_sample(
            tuple(observed.shape), generator, dtype=observed.dtype, device=observed.device
        )
    result = sample(
        sde, counted, tuple(observed.shape), method=method, steps=steps, x_T=x_T,
        generator=generator, callback=replacement, **sample_kwargs,
    )  # fmt: skip
    # The last replacement noised y to t_min; the observed values themselves are what is known.
    samples = torch.where(full_mask > 0, observed, result.samples)
    return dataclasses.replace(result, samples=samples, nfe=counted.nfe)


# Linear inverse problems ------------------------------------------------------------------------

_MEASUREMENT_METHODS = ("gaussian", "dps")


class _MeasurementGrad(_GuidedScore):
    def __init__(self, score, sde, A, y, noise_std, data_var, method) -> None:
        super().__init__()
        self.score, self.sde, self.method = score, sde, method
        self.register_buffer("A", A)
        self.register_buffer("y", y)
        self.noise_var, self.data_var = noise_std**2, data_var

    def forward(self, x: Tensor, t: Tensor | float) -> Tensor:
        t = as_time("t", t, x.shape[0], x)
        return _grad_of(self._log_likelihood, x, t)

    def _log_likelihood(self, x: Tensor, t: Tensor) -> Tensor:
        """``log N(y; A x̂_0(x), σ_y^2 I + r_t^2 A A^T)`` up to a constant, ``(batch,)``."""
        n = x.dim()
        m = append_dims(self.sde.marginal_mean_coeff(t), n)
        s2 = append_dims(self.sde.marginal_var(t), n)
        c = self.sde.mean_offset(t)
        A, y = self.A.to(x), self.y.to(x)
        if self.method == "gaussian":
            # Cov(x_0 | x_t) = r^2 I with r^2 = (1/v + m^2/s^2)^{-1}, exact for p_0 = N(mu, v I).
            r2 = self.data_var * s2.flatten() / (s2.flatten() + m.flatten() ** 2 * self.data_var)
        else:
            r2 = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        eye = torch.eye(A.shape[0], dtype=x.dtype, device=x.device)
        chol = torch.linalg.cholesky(self.noise_var * eye + r2[:, None, None] * (A @ A.T))
        x_tilde = x if c is None else x - append_dims(c, n)
        x0 = (x_tilde + s2 * self.score(x, t)) / m  # Tweedie: E[x_0 | x_t]
        residual = y - x0.flatten(1) @ A.T
        white = torch.linalg.solve_triangular(chol, residual[:, :, None], upper=False)
        return -0.5 * white.pow(2).sum((1, 2))


def linear_inverse_score(
    sde: AbstractSDE,
    score: ScoreFn,
    A: Tensor,
    y: Tensor,
    noise_std: float,
    *,
    method: str = "gaussian",
    data_var: float = 1.0,
    scale: Scale = 1.0,
) -> ScoreFn:
    """The posterior score for linear measurements ``y = A x_0 + n``, ``n ~ N(0, σ_y^2 I)``:
    ``∇log p_t(x | y) = ∇log p_t(x) + w ∇log p(y | x_t)``, with the intractable
    ``p(y | x_t) = ∫ p(y | x_0) p(x_0 | x_t) dx_0`` replaced by a Gaussian around the denoiser
    ``x̂_0 = E[x_0 | x_t] = (x_t - c + s^2 ∇log p_t(x_t)) / m`` (Tweedie):

        ``p(y | x_t) ≈ N(y; A x̂_0(x_t), σ_y^2 I + r_t^2 A A^T)``,

    differentiated through ``x̂_0`` (and so through the score) by autograd.

    - ``method="gaussian"`` (the "ΠGDM" form of Song et al. 2023): ``r_t^2 = (1/v + m^2/s^2)^{-1}``,
      the posterior variance of ``x_0`` given ``x_t`` for data ``N(mu, v I)``, ``v = data_var``.
      **Exact** when ``p_0 = N(mu, v I)``: then ``x̂_0`` and ``Cov(x_0 | x_t) = r_t^2 I`` are
      exact and ``p(y | x_t)`` is exactly that Gaussian. For other data (mixtures, images) it
      is an approximation that is good at small ``t`` (``r_t → 0``) and at large ``t`` (guidance
      fades as ``r_t^2 → v``), and worst in between, where ``p(x_0 | x_t)`` is multimodal.
    - ``method="dps"`` (Chung et al. 2023): ``r_t = 0``, i.e. ``x_0 = x̂_0`` is treated as
      certain. Over-confident at large ``t`` (for small ``σ_y`` the gradient is huge and the
      reverse SDE needs small steps or a smaller ``scale``; Chung et al. normalise the step by
      ``‖y - A x̂_0‖`` instead). Not exact even for Gaussian data.

    Arguments:
        sde: a linear SDE (``has_marginal``).
        score: the unconditional score; it must be differentiable in ``x``.
        A: ``(M, d)`` measurement matrix, ``d = prod(event)`` (flattened in C order).
        y: ``(M,)`` or ``(batch, M)`` measurements.
        noise_std: ``σ_y > 0``.
        method: ``"gaussian"`` or ``"dps"``.
        data_var: ``v`` for ``"gaussian"``: the data's per-coordinate variance.
        scale: ``w``, multiplies the likelihood gradient (float or function of ``t``).

    Returns:
        A score ``(x, t) -> Tensor`` (an ``nn.Module``); costs one score evaluation and one
        vector-Jacobian product through it.
    """
    needs_marginal(sde, "linear_inverse_score")
    _check_callable("score", score, "score(x, t)")
    A = check_tensor("A", A, min_dim=2)
    if A.dim() != 2:
        raise ValueError(f"A must be an (M, d) matrix; got shape {tuple(A.shape)}")
    y = check_tensor("y", y, min_dim=1)
    if y.dim() > 2 or y.shape[-1] != A.shape[0]:
        raise ValueError(
            f"y must have shape (M,) or (batch, M) with M = {A.shape[0]} rows of A; "
            f"got {tuple(y.shape)}"
        )
    noise_std = check_scalar("noise_std", noise_std, positive=True)
    data_var = check_scalar("data_var", data_var, positive=True)
    if method not in _MEASUREMENT_METHODS:
        raise ValueError(f"method must be one of {_MEASUREMENT_METHODS}; got {method!r}")
    grad = _MeasurementGrad(score, sde, A, y, noise_std, data_var, method)
    return _ConditionalScore(score, grad, _check_scale("scale", scale, minimum=0))


# A noise-conditional classifier -----------------------------------------------------------------


class NoisyClassifier(nn.Module):
    """A small time-dependent classifier ``p_t(y | x)`` for classifier guidance: an MLP on the
    flattened, scaled input and Fourier features of the noise level.

    As in :class:`~sdegen.models.ScoreModel`, for a linear SDE with kernel
    ``x_t = m x_0 + c + s z`` the input is ``(x - c) / sqrt(m^2 sigma_data^2 + s^2)`` (about unit
    variance at every ``t``) and the noise feature is ``log(s / m) / 4``.

    Arguments:
        sde: a linear SDE (``has_marginal``).
        event_shape: the shape of one sample, e.g. ``(2,)`` or ``(1, 8, 8)``.
        num_classes: ``K``.
        hidden, depth: width and number of hidden layers.
        sigma_data: the data's standard deviation per coordinate.

    Shapes: ``forward(x, t)``: ``x`` ``(batch, *event)``, ``t`` ``(batch,)`` or a float ->
    logits ``(batch, K)``.
    """

    def __init__(
        self,
        sde: AbstractSDE,
        event_shape: Sequence[int],
        num_classes: int,
        *,
        hidden: int = 256,
        depth: int = 3,
        sigma_data: float = 0.5,
    ) -> None:
        super().__init__()
        needs_marginal(sde, "NoisyClassifier")
        for name, value, low in (("num_classes", num_classes, 2), ("hidden", hidden, 2)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}; got {value!r}")
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be an int >= 1; got {depth!r}")
        self.sde = sde
        self.event_shape = tuple(int(s) for s in event_shape)
        self.num_classes = num_classes
        self.sigma_data = check_scalar("sigma_data", sigma_data, positive=True)
        d = math.prod(self.event_shape)
        self.time_features = GaussianFourierFeatures(64)
        layers: list[nn.Module] = [nn.Linear(d + 64, hidden), nn.SiLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(hidden, hidden), nn.SiLU()]
        layers.append(nn.Linear(hidden, num_classes))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: Tensor, t: Tensor | float) -> Tensor:
        if tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(
                f"x must have shape (batch, *{self.event_shape}); got {tuple(x.shape)}"
            )
        t = as_time("t", t, x.shape[0], x)
        m, s = self.sde.marginal_mean_coeff(t), self.sde.marginal_std(t)
        c = self.sde.mean_offset(t)
        x_tilde = x.flatten(1) if c is None else x.flatten(1) - c[:, None]
        x_in = x_tilde / torch.sqrt(m**2 * self.sigma_data**2 + s**2)[:, None]
        c_noise = (torch.log(s) - self.sde.log_mean_coeff(t)) / 4
        features = self.time_features(c_noise).to(x.dtype)
        return self.mlp(torch.cat([x_in, features], dim=1))


@dataclasses.dataclass
class ClassifierTrainResult:
    """What :func:`train_classifier` returns: ``losses`` ``(steps,)`` (mean cross-entropy per
    step, nats) and ``accuracy`` ``(steps,)`` (fraction of the batch classified right)."""

    losses: Tensor
    accuracy: Tensor


def train_classifier(
    classifier: nn.Module,
    sde: AbstractSDE,
    data: Tensor,
    labels: Tensor,
    *,
    steps: int = 2000,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    t_min: float | None = None,
    generator: torch.Generator | None = None,
) -> ClassifierTrainResult:
    """Train a noise-conditional classifier ``p_t(y | x_t)`` by cross-entropy on noisy inputs:

        ``min E_{(x_0, y), t ~ U[t_min, T], z} [ -log softmax(classifier(x_t, t))[y] ]``,
        ``x_t = m(t) x_0 + c(t) + s(t) z``,

    whose minimiser is the exact ``p_t(y | x_t)`` of the noised data law. AdamW, one batch of
    ``batch_size`` random examples (with replacement) per step.

    Arguments:
        classifier: ``(x, t) -> logits (batch, K)``, e.g. :class:`NoisyClassifier`; trained in
            place (left in eval mode).
        sde: a linear SDE (``has_marginal``).
        data: ``(N, *event)`` float training data in model space; labels ``(N,)`` int64.
        steps, batch_size, lr, weight_decay: the optimisation.
        t_min: smallest training time (default ``sde.t_min``).
        generator: seeds batches, times and noise (on ``data``'s device).
    """
    needs_marginal(sde, "train_classifier")
    if not isinstance(classifier, nn.Module):
        raise TypeError(f"classifier must be an nn.Module; got {type(classifier).__name__}")
    data = check_tensor("data", data, min_dim=2)
    if not isinstance(labels, Tensor) or labels.shape != (data.shape[0],):
        got = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"labels must be a tensor of shape (N,) = ({data.shape[0]},); got {got}")
    labels = _check_labels(labels)
    for name, value in (("steps", steps), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int; got {value!r}")
    lr = check_scalar("lr", lr, positive=True)
    weight_decay = check_scalar("weight_decay", weight_decay, nonnegative=True)
    lo = sde.t_min if t_min is None else check_scalar("t_min", t_min, positive=True)
    if not sde.t_min <= lo < sde.T:
        raise ValueError(f"t_min must lie in [sde.t_min, T) = [{sde.t_min}, {sde.T}); got {lo}")
    opt = torch.optim.AdamW(classifier.parameters(), lr=lr, weight_decay=weight_decay)
    dev = data.device
    losses, accuracy = torch.empty(steps), torch.empty(steps)
    classifier.train()
    for step in range(steps):
        idx = torch.randint(0, data.shape[0], (batch_size,), generator=generator, device=dev)
        x0, y = data[idx], labels[idx].to(dev)
        u = torch.rand(batch_size, generator=generator, device=dev, dtype=torch.float64)
        t = (lo + (sde.T - lo) * u).to(data.dtype)
        z = torch.randn(x0.shape, generator=generator, device=dev, dtype=data.dtype)
        logits = classifier(sde.perturb(x0, t, z), t)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses[step] = loss.detach()
        accuracy[step] = (logits.argmax(1) == y).double().mean()
    classifier.eval()
    return ClassifierTrainResult(losses, accuracy)
