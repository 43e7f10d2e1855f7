"""Training a score model: AdamW with warm-up and clipping, EMA weights, exact resume, DDP.

One step draws a global batch ``x0 ~ data`` (indices from the Trainer's seeded generator), lets
the loss draw ``t`` and the noise from a second seeded generator, averages the per-sample losses,
clips the gradient and updates the weights and their exponential moving average

    ``theta_ema <- decay * theta_ema + (1 - decay) * theta``.

Everything that decides the next step — weights, EMA, optimizer and scheduler state, the step,
every random number generator, the data order and the counters — is checkpointed, so a run that
is stopped and resumed continues bitwise as if it had never stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
import random
import re
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ._validation import check_scalar, check_tensor

__all__ = [
    "CheckpointError",
    "CheckpointWarning",
    "NonFiniteLossError",
    "TrainResult",
    "Trainer",
    "load_pretrained",
]

_FORMAT = 1
_CKPT_RE = re.compile(r"^checkpoint-(\d{8,})\.pt$")
_STATE_KEYS = ("model", "ema", "optimizer", "scheduler", "rng", "data", "counters")
_WEIGHTS_FILE = "model.safetensors"
_CONFIG_FILE = "config.json"


class CheckpointWarning(UserWarning):
    """A checkpoint in ``out_dir`` was unreadable (truncated, corrupt, no manifest) and skipped."""


class CheckpointError(RuntimeError):
    """A readable checkpoint does not fit the model or Trainer (e.g. a renamed parameter)."""


class NonFiniteLossError(RuntimeError):
    """Too many non-finite losses or gradients in a row."""


@dataclasses.dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns.

    Attributes:
        step: the global step reached (steps attempted, skipped ones included).
        losses: ``(n,)`` float64, the global mean loss of each step run by this call (as
            computed, so NaN or inf where that made the step skip); ``n`` is the number of
            steps this call ran.
        skipped: steps skipped for a non-finite loss or gradient, over the whole run.
        steps_per_second: training steps per second in this call (time spent writing
            checkpoints and in ``eval_fn`` excluded).
        resumed_from: the step of the checkpoint this call resumed from (``None``: fresh start).
        checkpoint: the last checkpoint written (``None`` off rank 0 or with checkpoints off).
        metrics_path: the JSONL metrics log.
    """

    step: int
    losses: Tensor
    skipped: int
    steps_per_second: float
    resumed_from: int | None
    checkpoint: Path | None
    metrics_path: Path


# --------------------------------------------------------------------------------------------
# Atomic files and checkpoint manifests


def _fsync_dir(directory: Path) -> None:
    # Make the rename itself durable; some platforms cannot open a directory, nothing to do there.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old file or the new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


def _manifest_path(ckpt: Path) -> Path:
    return ckpt.with_suffix(".json")


def _list_checkpoints(out_dir: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of the checkpoint files in ``out_dir``, newest first."""
    found = []
    for p in out_dir.iterdir() if out_dir.is_dir() else ():
        m = _CKPT_RE.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found, reverse=True)


def _read_checkpoint(path: Path) -> dict:
    """Read and verify one checkpoint: the manifest's size and SHA-256 must match the payload and
    ``torch.load(weights_only=True)`` must succeed. Raises ``ValueError`` saying what failed."""
    manifest_path = _manifest_path(path)
    if not manifest_path.exists():
        raise ValueError(f"its manifest {manifest_path.name} is missing (the write did not finish)")
    try:
        manifest = json.loads(manifest_path.read_text())
        expected_size, expected_sha = int(manifest["bytes"]), str(manifest["sha256"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"its manifest {manifest_path.name} is unreadable ({e})") from None
    data = path.read_bytes()
    if len(data) != expected_size:
        raise ValueError(f"it has {len(data)} bytes, its manifest says {expected_size} (truncated)")
    sha = hashlib.sha256(data).hexdigest()
    if sha != expected_sha:
        raise ValueError(
            f"its SHA-256 {sha[:12]}… differs from the manifest's {expected_sha[:12]}…"
        )
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # any unpickling failure means the same thing: unusable file
        raise ValueError(f"torch.load failed: {type(e).__name__}: {e}") from None
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise ValueError(f"it is not an sdegen checkpoint of format {_FORMAT}")
    return payload


# --------------------------------------------------------------------------------------------
# Random number generator states as tensors and ints (torch.load(weights_only=True) accepts only
# tensors and primitive containers; numpy scalars would not load).


def _numpy_state() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 (the global state users seed)
    return {
        "name": str(name),
        "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached),
    }


def _set_numpy_state(s: dict) -> None:
    keys = s["keys"].numpy().astype(np.uint32)
    np.random.set_state((s["name"], keys, s["pos"], s["has_gauss"], s["cached_gaussian"]))  # noqa: NPY002


def _python_state() -> dict:
    version, internal, gauss_next = random.getstate()
    return {
        "version": int(version),
        "internal": torch.tensor(internal, dtype=torch.int64),
        "gauss_next": gauss_next,
    }


def _set_python_state(s: dict) -> None:
    internal = tuple(int(v) for v in s["internal"].tolist())
    random.setstate((s["version"], internal, s["gauss_next"]))


# --------------------------------------------------------------------------------------------


class _LinearWarmup:
    """``lr(step) = lr * min(1, (step + 1) / warmup_steps)``; an object, not a closure, so that
    the scheduler's state dict records the warm-up length."""

    def __init__(self, warmup_steps: int) -> None:
        self.warmup_steps = warmup_steps

    def __call__(self, step: int) -> float:
        if self.warmup_steps <= 0:
            return 1.0
        return min(1.0, (step + 1) / self.warmup_steps)


class _ShardedScore:
    """The score seen by the loss on one rank.

    Every rank draws the *whole* global batch's ``t`` and noise from the shared loss generator
    (elementwise work, cheap next to the network) and runs the network only on its own slice of
    rows; the other rows get zeros, which carry no gradient, and their per-sample losses are
    discarded. So a run on W ranks follows exactly the random stream of one process with the
    same global batch, and the generator stays identical on all ranks.
    """

    def __init__(self, net: nn.Module, batch: int, rank: int, world: int) -> None:
        self.net, self.batch = net, batch
        per_rank = batch // world
        self.lo, self.hi = rank * per_rank, (rank + 1) * per_rank
        self.world = world

    def __call__(self, x: Tensor, t: Tensor | float, labels: Tensor | None = None) -> Tensor:
        if self.world == 1:
            return self.net(x, t) if labels is None else self.net(x, t, labels)
        if x.shape[0] != self.batch:
            raise ValueError(
                f"in a distributed run the loss must call the score once on the whole global "
                f"batch of {self.batch} rows; it called it with {x.shape[0]} rows"
            )
        sl = slice(self.lo, self.hi)
        t_part = t[sl] if isinstance(t, Tensor) and t.dim() > 0 else t
        args = (x[sl], t_part) if labels is None else (x[sl], t_part, labels[sl])
        out = self.net(*args)
        before = out.new_zeros((self.lo, *out.shape[1:]))
        after = out.new_zeros((self.batch - self.hi, *out.shape[1:]))
        return torch.cat([before, out, after])


def _adamw(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    # The fused kernel makes one pass over each parameter instead of about eight: on CPU it cut
    # the optimizer step of a 610k-parameter MLP from 7 ms to 1 ms (benchmarks/train.py).
    params = list(model.parameters())
    fused = all(
        p.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64) for p in params
    )
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)
    except (RuntimeError, ValueError):  # a device without a fused kernel
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def _resolve_device(device: str | torch.device, local_rank: int | None) -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank if local_rank is not None else 0)
        return torch.device("cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'auto' or a torch device; got {device!r}") from None


def _check_int(name: str, value: object, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int; got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value}")
    return value


class Trainer:
    """Trains a score model on an in-memory data tensor.

    Optimisation: AdamW with a linear learning-rate warm-up over ``warmup_steps`` updates and
    gradient-norm clipping at ``grad_clip``; EMA weights with ``torch.optim.swa_utils``
    (``theta_ema <- decay theta_ema + (1 - decay) theta`` after every update, buffers included);
    optional bf16 autocast and ``torch.compile`` of the network (off by default).

    A step whose global loss or gradient norm is not finite changes nothing (no optimizer,
    scheduler or EMA update), is counted in ``skipped`` and logged; ``max_nonfinite`` such
    steps in a row stop training with :class:`NonFiniteLossError`.

    Checkpoints ``out_dir/checkpoint-<step>.pt`` hold the weights, the EMA, the optimizer and
    scheduler states, the step, every RNG state (torch CPU and CUDA, the Trainer's data and loss
    generators, numpy and Python ``random``), the data order and the counters. Each is written
    atomically (temporary file, fsync, rename, fsync of the directory) with a manifest
    ``checkpoint-<step>.json`` holding its size and SHA-256; the newest ``keep_last`` are kept.
    A new Trainer on the same ``out_dir`` resumes from the newest checkpoint that verifies,
    warning (:class:`CheckpointWarning`) about each one it has to skip; a checkpoint whose
    state does not fit the model (a missing or renamed key) raises :class:`CheckpointError`.

    Distributed data parallel: with ``distributed=True`` (or ``None`` and ``WORLD_SIZE > 1``,
    as set by ``torchrun``) the model is wrapped in ``DistributedDataParallel``. The global batch
    ``batch_size`` is split evenly across the ranks (each takes its slice of the same global
    permutation), every rank draws the global batch's ``t`` and noise from the shared generator
    and keeps its slice, and the gradients are averaged: the run equals a single-process run
    with the same ``batch_size`` up to floating-point rounding. Rank 0 alone writes checkpoints,
    logs and runs ``eval_fn``.

    Arguments:
        model: the score model (an ``nn.Module`` called as ``model(x, t)`` or
            ``model(x, t, labels)``, normally a ``ScoreModel``).
        loss: ``loss(score, x0, *, labels=None, generator=None) -> (batch,)`` per-sample losses
            (e.g. ``DenoisingScoreMatching``) drawing ``t`` and noise from ``generator``.
        data: ``(N, *event)`` float training set in model space.
        labels: optional ``(N,)`` int64 class labels passed to the loss.
        out_dir: directory for checkpoints, ``metrics.jsonl`` and exports (created).
        batch_size: global batch size (divisible by the number of ranks).
        lr, weight_decay: AdamW's learning rate and decoupled weight decay.
        warmup_steps: linear warm-up length in optimizer updates (0: none).
        grad_clip: maximum global gradient norm (``None``: no clipping; the norm is still logged).
        ema_decay: EMA decay in [0, 1).
        bf16: run the forward pass and loss under bf16 autocast.
        compile: ``torch.compile`` the network (``model.net`` when present) in place; a dict
            is passed to ``torch.compile`` as options (e.g. ``{"mode": "max-autotune"}``).
        device: ``"auto"`` (CUDA when available, else CPU) or a device.
        seed: seeds the data-order generator (``seed``) and the loss generator (``seed + 1``).
        checkpoint_every: steps between checkpoints (a final one is written at the end of fit).
        keep_last: how many checkpoints to keep.
        log_every: steps between metric rows (step, loss, grad_norm, lr, steps_per_s, skipped).
        eval_every, eval_fn: every ``eval_every`` steps ``eval_fn(ema_model, step) -> dict`` of
            numbers, logged with an ``eval/`` prefix.
        max_nonfinite: consecutive non-finite steps that stop training.
        progress: show a tqdm bar with the loss and steps/s.
        distributed: use ``torch.distributed`` (``None``: when ``WORLD_SIZE > 1`` or a process
            group of size > 1 is initialised). An uninitialised group is initialised from the
            environment (``nccl`` on CUDA, ``gloo`` otherwise).
        resume: resume from ``out_dir`` when it holds a checkpoint.

    Example:
        >>> trainer = Trainer(ScoreModel(MLP(2), VPSDE()), DenoisingScoreMatching(VPSDE()),
        ...                   data, out_dir="runs/ring", batch_size=512, lr=2e-3)
        >>> result = trainer.fit(20_000)      # re-running resumes where it stopped
        >>> trainer.export("runs/ring/final")  # safetensors + config.json
        >>> model = load_pretrained("runs/ring/final")
    """

    def __init__(
        self,
        model: nn.Module,
        loss: Callable[..., Tensor],
        data: Tensor,
        *,
        labels: Tensor | None = None,
        out_dir: str | os.PathLike,
        batch_size: int = 128,
        lr: float = 2e-4,
        weight_decay: float = 0.0,
        warmup_steps: int = 1000,
        grad_clip: float | None = 1.0,
        ema_decay: float = 0.999,
        bf16: bool = False,
        compile: bool | dict = False,
        device: str | torch.device = "auto",
        seed: int = 0,
        checkpoint_every: int = 1000,
        keep_last: int = 3,
        log_every: int = 100,
        eval_every: int | None = None,
        eval_fn: Callable[[nn.Module, int], dict] | None = None,
        max_nonfinite: int = 10,
        progress: bool = True,
        distributed: bool | None = None,
        resume: bool = True,
        _restore_exclude: Iterable[str] = (),
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
        if not callable(loss):
            raise TypeError(
                "loss must be callable as loss(score, x0, *, labels=None, generator=None); "
                f"got {type(loss).__name__}"
            )
        data = check_tensor("data", data, min_dim=2)
        n = data.shape[0]
        self.batch_size = _check_int("batch_size", batch_size, minimum=1)
        if self.batch_size > n:
            raise ValueError(f"batch_size must be <= len(data) = {n}; got {batch_size}")
        if labels is not None:
            if not isinstance(labels, Tensor) or labels.dtype != torch.int64:
                raise TypeError("labels must be an int64 tensor of shape (N,) or None")
            if labels.shape != (n,):
                raise ValueError(f"labels must have shape (N,) = ({n},); got {tuple(labels.shape)}")
        self.lr = check_scalar("lr", lr, positive=True)
        self.weight_decay = check_scalar("weight_decay", weight_decay, nonnegative=True)
        self.warmup_steps = _check_int("warmup_steps", warmup_steps, minimum=0)
        self.grad_clip = (
            None if grad_clip is None else check_scalar("grad_clip", grad_clip, positive=True)
        )
        self.ema_decay = check_scalar("ema_decay", ema_decay, nonnegative=True)
        if not self.ema_decay < 1:
            raise ValueError(f"ema_decay must lie in [0, 1); got {ema_decay}")
        self.checkpoint_every = _check_int("checkpoint_every", checkpoint_every, minimum=1)
        self.keep_last = _check_int("keep_last", keep_last, minimum=1)
        self.log_every = _check_int("log_every", log_every, minimum=1)
        if eval_every is not None:
            _check_int("eval_every", eval_every, minimum=1)
            if eval_fn is None:
                raise ValueError("eval_every is set but eval_fn is None; pass both or neither")
        if eval_fn is not None and not callable(eval_fn):
            raise TypeError("eval_fn must be callable as eval_fn(ema_model, step) -> dict")
        self.eval_every, self.eval_fn = eval_every, eval_fn
        self.max_nonfinite = _check_int("max_nonfinite", max_nonfinite, minimum=1)
        self.seed = _check_int("seed", seed, minimum=0)
        self.bf16, self.progress = bool(bf16), bool(progress)
        unknown = set(_restore_exclude) - set(_STATE_KEYS)
        if unknown:
            raise ValueError(f"_restore_exclude names unknown state {sorted(unknown)}")
        self._restore_exclude = frozenset(_restore_exclude)

        # Distributed set-up first: the device depends on the local rank.
        self.distributed = self._init_distributed(distributed)
        self.rank = dist.get_rank() if self.distributed else 0
        self.world_size = dist.get_world_size() if self.distributed else 1
        if self.batch_size % self.world_size:
            raise ValueError(
                f"batch_size must be divisible by the number of ranks {self.world_size}; "
                f"got {batch_size}"
            )
        local_rank = int(os.environ.get("LOCAL_RANK", self.rank)) if self.distributed else None
        self.device = _resolve_device(device, local_rank)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)

        self.out_dir = Path(out_dir)
        if self.rank == 0:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.out_dir / "metrics.jsonl"

        self.model = model.to(self.device)
        dtype = next(iter(model.parameters()), torch.empty(0)).dtype
        self._data = data.to(device=self.device, dtype=dtype)
        self._labels = None if labels is None else labels.to(self.device)
        self.loss = loss

        if self.distributed:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            # DDP broadcasts rank 0's weights, so the EMA copied next starts equal on all ranks.
            self._train_model: nn.Module = nn.parallel.DistributedDataParallel(
                model, device_ids=device_ids
            )
        else:
            self._train_model = model
        self._score = _ShardedScore(self._train_model, self.batch_size, self.rank, self.world_size)

        self._ema = AveragedModel(
            model, multi_avg_fn=get_ema_multi_avg_fn(self.ema_decay), use_buffers=True
        )
        self._ema.eval()
        # The average is written by update_parameters only; no gradients are needed for it.
        self._ema.requires_grad_(False)
        if compile:
            # In place, after the EMA copy (which stays eager): the state-dict keys stay those
            # of the plain network, so checkpoints and exports do not depend on this flag.
            options = compile if isinstance(compile, dict) else {}
            getattr(model, "net", model).compile(**options)
        self.optimizer = _adamw(model, self.lr, self.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _LinearWarmup(self.warmup_steps)
        )

        self._data_gen = torch.Generator().manual_seed(self.seed)
        self._loss_gen = torch.Generator(device=self.device).manual_seed(self.seed + 1)
        self._perm: Tensor | None = None
        self._pos = 0
        self.step = 0
        self.skipped = 0
        self._nonfinite_streak = 0
        self.resumed_from: int | None = None
        self.last_checkpoint: Path | None = None
        if resume:
            self._resume()

    # ---------------------------------------------------------------------------------------

    @staticmethod
    def _init_distributed(distributed: bool | None) -> bool:
        if distributed is None:
            if dist.is_available() and dist.is_initialized():
                return dist.get_world_size() > 1
            distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
        if not distributed:
            return False
        if not dist.is_available():
            raise RuntimeError("distributed=True but torch.distributed is not available")
        if not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            dist.init_process_group(backend=backend)  # reads MASTER_ADDR, RANK, ... from env
        return True

    @property
    def ema_model(self) -> nn.Module:
        """The EMA weights as a model of the trained class (in eval mode), usable as a score."""
        return self._ema.module

    @property
    def lr_now(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    # ---------------------------------------------------------------------------------------
    # Data order: one global permutation per epoch from the data generator; a batch is the next
    # batch_size indices (an epoch's tail shorter than a batch is dropped).

    def _next_indices(self) -> Tensor:
        n = self._data.shape[0]
        if self._perm is None or self._pos + self.batch_size > n:
            self._perm = torch.randperm(n, generator=self._data_gen)
            self._pos = 0
        idx = self._perm[self._pos : self._pos + self.batch_size]
        self._pos += self.batch_size
        return idx

    def _train_step(self) -> tuple[float, float]:
        """One optimisation step; returns the global mean loss and gradient norm (possibly
        non-finite, in which case nothing was updated)."""
        idx = self._next_indices().to(self.device)
        x0 = self._data.index_select(0, idx)
        labels = None if self._labels is None else self._labels.index_select(0, idx)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            per_sample = self.loss(self._score, x0, labels=labels, generator=self._loss_gen)
        if not isinstance(per_sample, Tensor) or per_sample.shape != (self.batch_size,):
            shape = tuple(per_sample.shape) if isinstance(per_sample, Tensor) else None
            raise ValueError(
                f"loss must return per-sample losses of shape (batch,) = ({self.batch_size},); "
                f"got {shape if shape is not None else type(per_sample).__name__}"
            )
        # Mean over this rank's rows; DDP averages gradients over ranks, so the update follows
        # the mean over the global batch.
        local = per_sample[self._score.lo : self._score.hi].float().mean()
        self.optimizer.zero_grad(set_to_none=True)
        local.backward()
        loss = local.detach()
        if self.distributed:
            dist.all_reduce(loss)
            loss = loss / self.world_size
        params = [p for p in self.model.parameters() if p.grad is not None]
        grad_norm = nn.utils.get_total_norm([p.grad for p in params])
        loss_value, norm_value = float(loss), float(grad_norm)
        if math.isfinite(loss_value) and math.isfinite(norm_value):
            if self.grad_clip is not None and norm_value > self.grad_clip:
                # Scale only when needed (clip_grad_norm_ multiplies every gradient by 1
                # otherwise, an extra pass over the weights on every step).
                nn.utils.clip_grads_with_norm_(params, self.grad_clip, grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self._ema.update_parameters(self.model)
            self._nonfinite_streak = 0
        else:
            self.optimizer.zero_grad(set_to_none=True)
            self.skipped += 1
            self._nonfinite_streak += 1
        self.step += 1
        if self._nonfinite_streak >= self.max_nonfinite:
            raise NonFiniteLossError(
                f"training stopped at step {self.step}: {self._nonfinite_streak} non-finite "
                f"losses or gradients in a row (max_nonfinite={self.max_nonfinite}; last loss "
                f"{loss_value}, gradient norm {norm_value}). The weights were not updated on "
                "those steps. Check the data and the loss, lower lr or enable grad_clip."
            )
        return loss_value, norm_value

    # ---------------------------------------------------------------------------------------

    def fit(self, steps: int) -> TrainResult:
        """Train until the global step reaches ``steps`` (a total, so re-running the same
        script after an interruption resumes and stops at the same place).

        Returns:
            A :class:`TrainResult`.

        Raises:
            NonFiniteLossError: after ``max_nonfinite`` non-finite steps in a row.
        """
        steps = _check_int("steps", steps, minimum=0)
        from tqdm.auto import tqdm

        start = self.step
        losses: list[float] = []
        bar = tqdm(
            total=steps,
            initial=min(start, steps),
            disable=not (self.progress and self.rank == 0),
            unit="step",
            dynamic_ncols=True,
        )
        window_loss: list[float] = []
        window_norm: list[float] = []
        t_call = t_window = time.perf_counter()
        window_start = self.step
        self.model.train()
        try:
            while self.step < steps:
                loss, norm = self._train_step()
                losses.append(loss)
                bar.update(1)
                if math.isfinite(loss) and math.isfinite(norm):
                    window_loss.append(loss)
                    window_norm.append(norm)
                if self.step % self.log_every == 0 or self.step == steps:
                    now = time.perf_counter()
                    rate = (self.step - window_start) / max(now - t_window, 1e-12)
                    row = {
                        "step": self.step,
                        "loss": float(np.mean(window_loss)) if window_loss else math.nan,
                        "grad_norm": float(np.mean(window_norm)) if window_norm else math.nan,
                        "lr": self.lr_now,
                        "steps_per_s": rate,
                        "skipped": self.skipped,
                    }
                    self._log(row)
                    bar.set_postfix(loss=f"{row['loss']:.4g}", steps_per_s=f"{rate:.1f}")
                    window_loss, window_norm = [], []
                    t_window, window_start = now, self.step
                if self.eval_every is not None and self.step % self.eval_every == 0:
                    paused = time.perf_counter()
                    self._evaluate()
                    t_window += time.perf_counter() - paused
                    t_call += time.perf_counter() - paused
                if self.step % self.checkpoint_every == 0:
                    paused = time.perf_counter()
                    self.save_checkpoint()
                    t_window += time.perf_counter() - paused
                    t_call += time.perf_counter() - paused
        finally:
            bar.close()
        elapsed = time.perf_counter() - t_call
        if self.step > start and self.step % self.checkpoint_every != 0:
            self.save_checkpoint()
        return TrainResult(
            step=self.step,
            losses=torch.tensor(losses, dtype=torch.float64),
            skipped=self.skipped,
            steps_per_second=(self.step - start) / elapsed if elapsed > 0 else math.nan,
            resumed_from=self.resumed_from,
            checkpoint=self.last_checkpoint,
            metrics_path=self.metrics_path,
        )

    def _evaluate(self) -> None:
        if self.rank == 0:
            result = self.eval_fn(self.ema_model, self.step)
            if not isinstance(result, dict):
                raise TypeError(
                    f"eval_fn must return a dict of numbers; got {type(result).__name__}"
                )
            row: dict[str, Any] = {"step": self.step}
            for k, v in result.items():
                row[f"eval/{k}"] = float(v.item() if isinstance(v, Tensor) else v)
            self._log(row)
        if self.distributed:
            dist.barrier()

    def _log(self, row: dict) -> None:
        if self.rank != 0:
            return
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(row) + "\n")

    # ---------------------------------------------------------------------------------------
    # Checkpoints

    def state_dict(self) -> dict:
        """The full training state (what a checkpoint holds)."""
        rng: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "data_generator": self._data_gen.get_state(),
            "loss_generator": self._loss_gen.get_state(),
            "numpy": _numpy_state(),
            "python": _python_state(),
        }
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        if self.distributed:
            # Each rank's own global torch RNG (dropout masks differ across ranks).
            per_rank: list[Any] = [None] * self.world_size
            dist.all_gather_object(per_rank, {k: rng[k] for k in ("torch", "cuda") if k in rng})
            rng["per_rank"] = per_rank
        return {
            "format": _FORMAT,
            "step": self.step,
            "world_size": self.world_size,
            "model": self.model.state_dict(),
            "ema": self._ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng,
            "data": {
                "perm": self._perm if self._perm is not None else torch.empty(0, dtype=torch.int64),
                "pos": self._pos,
            },
            "counters": {"skipped": self.skipped, "nonfinite_streak": self._nonfinite_streak},
        }

    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoint-<step>.pt`` and its manifest atomically (rank 0) and prune old
        ones; returns the path (``None`` on other ranks)."""
        state = self.state_dict()  # collective in distributed runs: every rank calls it
        if self.rank != 0:
            return None
        buf = io.BytesIO()
        torch.save(state, buf)
        payload = buf.getvalue()
        path = self.out_dir / f"checkpoint-{self.step:08d}.pt"
        _atomic_write(path, payload)
        manifest = {
            "format": _FORMAT,
            "step": self.step,
            "bytes": len(payload),
            "sha256": hashlib.sha256(payload).hexdigest(),
        }
        # The manifest goes last: a checkpoint without one is an unfinished write.
        _atomic_write(_manifest_path(path), json.dumps(manifest).encode())
        self.last_checkpoint = path
        for _, old in _list_checkpoints(self.out_dir)[self.keep_last :]:
            old.unlink(missing_ok=True)
            _manifest_path(old).unlink(missing_ok=True)
        return path

    def _find_good_checkpoint(self) -> tuple[Path, dict] | None:
        for _, path in _list_checkpoints(self.out_dir):
            try:
                return path, _read_checkpoint(path)
            except (ValueError, OSError) as e:
                warnings.warn(
                    f"checkpoint {path} is unusable: {e}; falling back to the previous one",
                    CheckpointWarning,
                    stacklevel=4,
                )
        return None

    def _resume(self) -> None:
        found = self._find_good_checkpoint() if self.rank == 0 else None
        if self.distributed:
            # Rank 0 reads and verifies; the others receive the same state (no shared
            # filesystem needed).
            box = [found]
            dist.broadcast_object_list(box, src=0)
            found = box[0]
        if found is None:
            return
        path, state = found
        self.load_state_dict(state, source=str(path))
        self.resumed_from = self.step
        self.last_checkpoint = path if self.rank == 0 else None
        self._trim_metrics()

    def load_state_dict(self, state: dict, *, source: str = "state") -> None:
        """Restore the full training state (strict: every entry and every key must match)."""
        missing = [k for k in _STATE_KEYS if k not in state]
        if missing:
            raise CheckpointError(f"{source} lacks the entries {missing}")
        skip = self._restore_exclude
        if "model" not in skip:
            _load_strict(self.model, state["model"], f"{source}: model")
        if "ema" not in skip:
            _load_strict(self._ema, state["ema"], f"{source}: ema")
        if "optimizer" not in skip:
            try:
                self.optimizer.load_state_dict(state["optimizer"])
            except (ValueError, KeyError) as e:
                raise CheckpointError(f"{source}: optimizer state does not fit: {e}") from None
        if "scheduler" not in skip:
            self.scheduler.load_state_dict(state["scheduler"])
        if "rng" not in skip:
            rng = state["rng"]
            own = rng
            per_rank = rng.get("per_rank")
            if self.distributed and per_rank is not None and len(per_rank) == self.world_size:
                own = per_rank[self.rank]
            torch.set_rng_state(own["torch"])
            if self.device.type == "cuda" and "cuda" in own:
                torch.cuda.set_rng_state(own["cuda"], self.device)
            self._data_gen.set_state(rng["data_generator"])
            self._loss_gen.set_state(rng["loss_generator"])
            _set_numpy_state(rng["numpy"])
            _set_python_state(rng["python"])
        if "data" not in skip:
            perm = state["data"]["perm"]
            if perm.numel() and perm.numel() != self._data.shape[0]:
                raise CheckpointError(
                    f"{source}: the data order covers {perm.numel()} rows but data has "
                    f"{self._data.shape[0]}; resume with the same training set"
                )
            self._perm = perm if perm.numel() else None
            self._pos = int(state["data"]["pos"])
        if "counters" not in skip:
            self.skipped = int(state["counters"]["skipped"])
            self._nonfinite_streak = int(state["counters"]["nonfinite_streak"])
        self.step = int(state["step"])

    def _trim_metrics(self) -> None:
        # Rows logged after the checkpoint will be logged again by the resumed run.
        if self.rank != 0 or not self.metrics_path.exists():
            return
        kept = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:  # a line cut short by the interruption
                continue
            if isinstance(row, dict) and row.get("step", 0) <= self.step:
                kept.append(line)
        _atomic_write(self.metrics_path, "".join(line + "\n" for line in kept).encode())

    # ---------------------------------------------------------------------------------------
    # Export

    def export(self, path: str | os.PathLike, *, ema: bool = True) -> Path:
        """Write the final weights (the EMA ones by default) as ``model.safetensors`` and a
        ``config.json`` that rebuilds the model and its SDE, into the directory ``path``.
        :func:`load_pretrained` reads it back. Rank 0 writes; returns the directory."""
        source = self.ema_model if ema else self.model
        if not callable(getattr(source, "config", None)):
            raise TypeError(
                f"export needs a model with config() (a ScoreModel); got {type(source).__name__}"
            )
        directory = Path(path)
        if self.rank == 0:
            directory.mkdir(parents=True, exist_ok=True)
            config = {
                "format": _FORMAT,
                "weights": "ema" if ema else "model",
                "step": self.step,
                "model": source.config(),
            }
            _save_safetensors(source, directory / _WEIGHTS_FILE)
            _atomic_write(directory / _CONFIG_FILE, json.dumps(config, indent=2).encode())
        if self.distributed:
            dist.barrier()
        return directory


def _load_strict(module: nn.Module, state: dict, what: str) -> None:
    expected = set(module.state_dict())
    got = set(state)
    if expected != got:
        missing, unexpected = sorted(expected - got), sorted(got - expected)
        raise CheckpointError(
            f"{what} does not match the model: missing keys {missing}, unexpected keys "
            f"{unexpected}. The checkpoint was written for a different model definition."
        )
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:  # shapes differ
        raise CheckpointError(f"{what} does not match the model: {e}") from None


def _save_safetensors(module: nn.Module, path: Path) -> None:
    from safetensors.torch import save as st_save

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    _atomic_write(path, st_save(tensors, metadata={"format": "pt"}))


def load_pretrained(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a ``ScoreModel`` (network, SDE, parameterisation) from a directory written by
    :meth:`Trainer.export` and load its weights (strictly), in eval mode.

    Raises:
        FileNotFoundError: ``path`` lacks ``config.json`` or ``model.safetensors``.
        CheckpointError: the weights do not match the configured model.
    """
    from safetensors.torch import load_file

    from .models import ScoreModel

    directory = Path(path)
    for name in (_CONFIG_FILE, _WEIGHTS_FILE):
        if not (directory / name).exists():
            raise FileNotFoundError(
                f"path must be a directory written by Trainer.export; {directory / name} is missing"
            )
    config = json.loads((directory / _CONFIG_FILE).read_text())
    model = ScoreModel.from_config(config["model"])
    tensors = load_file(directory / _WEIGHTS_FILE)
    _load_strict(model, tensors, str(directory / _WEIGHTS_FILE))
    return model.to(device).eval()
