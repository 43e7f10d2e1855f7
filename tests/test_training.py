"""Trainer: bitwise resume, each piece of state matters, corrupt checkpoints, non-finite steps,
metrics, export round trip and (slow) training to the true density of a Gaussian mixture."""

import hashlib
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from sdegen import VPSDE
from sdegen.training import (
    CheckpointError,
    CheckpointWarning,
    NonFiniteLossError,
    Trainer,
    load_pretrained,
)

N_STEPS = 6


class TinyScore(nn.Module):
    """``(x, t) -> score`` with dropout, so the global torch RNG matters too."""

    def __init__(self, d: int = 2, hidden: int = 32, dropout: float = 0.1):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(d + 1, hidden), nn.SiLU(), nn.Dropout(dropout), nn.Linear(hidden, d)
        )

    def forward(self, x, t, labels=None):
        return self.layers(torch.cat([x, t[:, None].to(x.dtype)], dim=1))


def ou_dsm(score, x0, *, labels=None, generator=None):
    """Denoising score matching under ``dx = -x dt + sqrt(2) dw``, sigma^2 weighting."""
    t = 1e-3 + (1 - 1e-3) * torch.rand(x0.shape[0], generator=generator, dtype=x0.dtype)
    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    mean, std = torch.exp(-t)[:, None], torch.sqrt(-torch.expm1(-2 * t))[:, None]
    x_t = mean * x0 + std * noise
    return ((std * score(x_t, t) + noise) ** 2).sum(1)


def make_data(n: int = 64, seed: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=g) * 0.5 + torch.tensor([1.0, -1.0])


def make_trainer(out_dir, *, loss=ou_dsm, model_seed=0, **kw):
    torch.manual_seed(model_seed)
    options = dict(
        batch_size=16,
        lr=1e-2,
        warmup_steps=100,
        ema_decay=0.9,
        checkpoint_every=N_STEPS,
        log_every=2,
        progress=False,
        device="cpu",
        seed=7,
    )
    options.update(kw)
    return Trainer(TinyScore(), loss, make_data(), out_dir=out_dir, **options)


def read_rows(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]


def flat(module: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.state_dict().values()])


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted run of 2N steps: parameters, EMA and per-step losses."""
    trainer = make_trainer(tmp_path_factory.mktemp("straight"))
    result = trainer.fit(2 * N_STEPS)
    return flat(trainer.model), flat(trainer.ema_model), result.losses


def resumed_run(out_dir, **kw):
    first = make_trainer(out_dir)
    first.fit(N_STEPS)
    del first  # the process state that made it is gone; only out_dir remains
    # A different model seed: everything must come from the checkpoint.
    second = make_trainer(out_dir, model_seed=99, **kw)
    result = second.fit(2 * N_STEPS)
    return second, result


def test_resume_is_bitwise_exact(tmp_path, straight):
    params, ema, losses = straight
    trainer, result = resumed_run(tmp_path)
    assert result.resumed_from == N_STEPS
    assert torch.equal(flat(trainer.model), params)
    assert torch.equal(flat(trainer.ema_model), ema)
    # The losses after the restart, the first one included, are those of the straight run.
    assert torch.equal(result.losses, losses[N_STEPS:])
    # The metrics log reads like one run: each logged step once, in order.
    steps = [row["step"] for row in read_rows(tmp_path)]
    assert steps == list(range(2, 2 * N_STEPS + 1, 2))


def test_metrics_after_the_checkpoint_are_dropped_on_resume(tmp_path):
    make_trainer(tmp_path).fit(N_STEPS)
    with open(tmp_path / "metrics.jsonl", "a") as f:  # logged after the checkpoint, then a crash
        f.write(json.dumps({"step": N_STEPS + 2, "loss": 1.0}) + "\n" + '{"step": 1')
    trainer = make_trainer(tmp_path)
    assert [row["step"] for row in read_rows(tmp_path)] == list(range(2, N_STEPS + 1, 2))
    trainer.fit(N_STEPS + 2)
    assert read_rows(tmp_path)[-1]["step"] == N_STEPS + 2


@pytest.mark.parametrize("piece", ["optimizer", "ema", "rng", "scheduler", "data"])
def test_each_piece_of_state_is_needed(tmp_path, straight, piece):
    params, ema, losses = straight
    trainer, result = resumed_run(tmp_path, _restore_exclude={piece})
    if piece == "ema":
        assert torch.equal(flat(trainer.model), params)
        assert not torch.equal(flat(trainer.ema_model), ema)
    else:
        assert not torch.equal(flat(trainer.model), params)
        assert not torch.equal(flat(trainer.ema_model), ema)
    if piece in ("rng", "data"):
        # Other batches or noise: the very next loss already differs.
        assert result.losses[0] != losses[N_STEPS]


def test_killed_process_resumes_exactly(tmp_path, straight):
    """A child process is killed (os._exit, no clean-up) between checkpoints; a new process
    state resumes from the last checkpoint and ends where the straight run ended."""
    tests, out = str(Path(__file__).parent), str(tmp_path)
    code = (
        f"import sys; sys.path.insert(0, {tests!r}); import test_training as tt\n"
        f"trainer = tt.make_trainer({out!r}, loss=tt.exit_after({N_STEPS + 3}))\n"
        "trainer.fit(2 * tt.N_STEPS)\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=120)
    assert proc.returncode == 17, proc.stderr.decode()[-2000:]
    trainer = make_trainer(tmp_path, model_seed=5)
    assert trainer.step == N_STEPS
    trainer.fit(2 * N_STEPS)
    params, ema, _ = straight
    assert torch.equal(flat(trainer.model), params)
    assert torch.equal(flat(trainer.ema_model), ema)


def exit_after(calls: int):
    """``ou_dsm`` that kills its process on call number ``calls + 1``."""
    count = [0]

    def loss(score, x0, **kw):
        count[0] += 1
        if count[0] > calls:
            os._exit(17)
        return ou_dsm(score, x0, **kw)

    return loss


def _checkpoint(out_dir: Path, step: int) -> Path:
    return out_dir / f"checkpoint-{step:08d}.pt"


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "no_manifest", "garbage"])
def test_damaged_checkpoint_falls_back_to_previous(tmp_path, straight, damage):
    make_trainer(tmp_path).fit(2 * N_STEPS)
    newest = _checkpoint(tmp_path, 2 * N_STEPS)
    data = newest.read_bytes()
    if damage == "truncate":
        newest.write_bytes(data[: len(data) // 2])
    elif damage == "flip_byte":
        newest.write_bytes(data[:100] + bytes([data[100] ^ 1]) + data[101:])
    elif damage == "no_manifest":
        newest.with_suffix(".json").unlink()
    else:
        newest.write_bytes(b"not a checkpoint")
    with pytest.warns(CheckpointWarning, match=str(newest.name)):
        trainer = make_trainer(tmp_path, model_seed=11)
    assert trainer.step == N_STEPS
    trainer.fit(2 * N_STEPS)
    params, ema, _ = straight
    assert torch.equal(flat(trainer.model), params)
    assert torch.equal(flat(trainer.ema_model), ema)


def _rewrite_checkpoint(path: Path, payload: dict) -> None:
    """Write ``payload`` with a valid manifest, as the Trainer would."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    path.write_bytes(data)
    manifest = json.loads(path.with_suffix(".json").read_text())
    manifest.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    path.with_suffix(".json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("entry", ["model", "ema"])
def test_renamed_key_raises_naming_it(tmp_path, entry):
    make_trainer(tmp_path).fit(N_STEPS)
    path = _checkpoint(tmp_path, N_STEPS)
    payload = torch.load(path, weights_only=True)
    key = next(k for k in payload[entry] if k.endswith("layers.0.weight"))
    payload[entry][key.replace("layers.0", "layers.9")] = payload[entry].pop(key)
    _rewrite_checkpoint(path, payload)
    with pytest.raises(CheckpointError, match=r"layers\.9\.weight") as info:
        make_trainer(tmp_path)
    assert key in str(info.value)


def test_checkpoint_holds_only_plain_types_and_rng_tensors(tmp_path):
    make_trainer(tmp_path).fit(N_STEPS)
    payload = torch.load(_checkpoint(tmp_path, N_STEPS), weights_only=True)
    assert payload["step"] == N_STEPS
    for name in ("torch", "data_generator", "loss_generator"):
        assert isinstance(payload["rng"][name], torch.Tensor)
    assert isinstance(payload["rng"]["numpy"]["keys"], torch.Tensor)
    assert isinstance(payload["rng"]["python"]["internal"], torch.Tensor)


def test_keeps_last_k_checkpoints_and_no_temporary_files(tmp_path):
    make_trainer(tmp_path, checkpoint_every=2, keep_last=2).fit(9)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "checkpoint-00000008.json",
        "checkpoint-00000008.pt",
        "checkpoint-00000009.json",
        "checkpoint-00000009.pt",
        "metrics.jsonl",
    ]


def nan_on_calls(bad: set[int]):
    """``ou_dsm`` whose per-sample losses are NaN on the given (1-based) calls."""
    count = [0]

    def loss(score, x0, **kw):
        count[0] += 1
        out = ou_dsm(score, x0, **kw)
        return out * math.nan if count[0] in bad else out

    return loss


def test_nonfinite_steps_are_skipped_and_counted(tmp_path):
    trainer = make_trainer(tmp_path, loss=nan_on_calls({3, 4, 7}), max_nonfinite=3)
    trainer.fit(2)
    before, ema_before = flat(trainer.model), flat(trainer.ema_model)
    opt_step_before = [s["step"].clone() for s in trainer.optimizer.state.values()]
    trainer.fit(4)  # steps 3 and 4 are NaN: nothing may change
    assert torch.equal(flat(trainer.model), before)
    assert torch.equal(flat(trainer.ema_model), ema_before)
    assert [s["step"] for s in trainer.optimizer.state.values()] == opt_step_before
    result = trainer.fit(10)
    assert result.skipped == 3
    assert torch.isnan(result.losses).sum() == 1  # this call ran steps 5..10: one NaN
    assert torch.isfinite(flat(trainer.model)).all()
    assert torch.isfinite(flat(trainer.ema_model)).all()
    rows = read_rows(tmp_path)
    assert rows[-1]["skipped"] == 3


def test_too_many_nonfinite_in_a_row_stops(tmp_path):
    trainer = make_trainer(tmp_path, loss=nan_on_calls({2, 3, 4, 5}), max_nonfinite=4)
    with pytest.raises(NonFiniteLossError, match="4 non-finite losses or gradients in a row"):
        trainer.fit(20)
    assert trainer.step == 5
    assert torch.isfinite(flat(trainer.model)).all()


def test_warmup_schedule_and_metrics_rows(tmp_path):
    seen = []

    def eval_fn(ema_model, step):
        assert not ema_model.training
        seen.append(step)
        return {"score_norm": ema_model(torch.zeros(3, 2), torch.full((3,), 0.5)).norm()}

    trainer = make_trainer(
        tmp_path, lr=0.1, warmup_steps=4, log_every=1, eval_every=3, eval_fn=eval_fn
    )
    trainer.fit(6)
    rows = read_rows(tmp_path)
    train_rows = [r for r in rows if "loss" in r]
    assert set(train_rows[0]) == {"step", "loss", "grad_norm", "lr", "steps_per_s", "skipped"}
    # After update k the learning rate for the next one is lr * min(1, (k + 1) / warmup).
    assert [r["lr"] for r in train_rows] == pytest.approx([0.05, 0.075, 0.1, 0.1, 0.1, 0.1])
    assert seen == [3, 6]
    assert [r["step"] for r in rows if "eval/score_norm" in r] == [3, 6]


def test_gradient_is_clipped(tmp_path):
    """With plain SGD-like behaviour hidden by Adam, check the clip on the gradients that
    reach the optimizer: their global norm is at most grad_clip."""
    trainer = make_trainer(tmp_path, grad_clip=1e-3)
    norms = []
    trainer.optimizer.register_step_pre_hook(
        lambda opt, args, kwargs: norms.append(
            torch.linalg.vector_norm(
                torch.stack([p.grad.norm() for p in trainer.model.parameters()])
            )
        )
    )
    trainer.fit(3)
    rows = read_rows(tmp_path)
    assert rows[0]["grad_norm"] > 1e-2  # the logged norm is the one before clipping
    assert len(norms) == 3 and all(float(n) <= 1e-3 * (1 + 1e-5) for n in norms)


def test_bf16_autocast_trains(tmp_path):
    result = make_trainer(tmp_path, bf16=True).fit(4)
    assert torch.isfinite(result.losses).all()


def test_device_auto(tmp_path):
    trainer = make_trainer(tmp_path, device="auto")
    assert trainer.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert trainer.ema_model(torch.zeros(2, 2), torch.full((2,), 0.5)).device == trainer.device


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"batch_size": 65}, "batch_size must be <= len"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"ema_decay": 1.0}, r"ema_decay must lie in \[0, 1\)"),
        ({"lr": -1.0}, "lr must be > 0"),
        ({"eval_every": 3}, "eval_every is set but eval_fn is None"),
        ({"device": "nonsense"}, "device must be 'auto' or a torch device"),
    ],
)
def test_bad_arguments_are_named(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_trainer(tmp_path, **kwargs)


def test_nonfinite_data_and_bad_loss_shape_are_rejected(tmp_path):
    data = make_data()
    data[3, 0] = math.nan
    with pytest.raises(ValueError, match="data contains 1 NaN"):
        Trainer(TinyScore(), ou_dsm, data, out_dir=tmp_path, progress=False)
    trainer = make_trainer(tmp_path, loss=lambda score, x0, **kw: ou_dsm(score, x0, **kw).mean())
    with pytest.raises(ValueError, match=r"per-sample losses of shape \(batch,\) = \(16,\)"):
        trainer.fit(1)


def make_score_model(num_classes=None):
    from sdegen.models import MLP, ScoreModel

    torch.manual_seed(0)
    return ScoreModel(MLP(2, hidden=32, depth=2, num_classes=num_classes), VPSDE(), "eps")


@pytest.mark.parametrize("ema", [True, False])
def test_export_round_trip_gives_identical_scores(tmp_path, ema):
    from sdegen.losses import DenoisingScoreMatching

    labels = torch.arange(64) % 3
    trainer = Trainer(
        make_score_model(num_classes=3),
        DenoisingScoreMatching(VPSDE(), label_dropout=0.2, num_classes=3),
        make_data(),
        labels=labels,
        out_dir=tmp_path,
        batch_size=16,
        lr=1e-2,
        warmup_steps=0,
        ema_decay=0.5,
        progress=False,
    )
    trainer.fit(5)
    exported = trainer.export(tmp_path / "final", ema=ema)
    loaded = load_pretrained(exported)
    source = trainer.ema_model if ema else trainer.model
    source.eval()
    x = torch.randn(10, 2, generator=torch.Generator().manual_seed(0))
    t = torch.linspace(0.01, 1.0, 10)
    with torch.no_grad():
        for lab in (None, torch.arange(10) % 4):
            assert torch.equal(loaded(x, t, lab), source(x, t, lab))
    assert loaded.config() == source.config()
    assert not loaded.training
    assert json.loads((exported / "config.json").read_text())["weights"] == (
        "ema" if ema else "model"
    )
    # The EMA differs from the raw weights, so the choice is visible.
    assert not torch.equal(flat(trainer.ema_model), flat(trainer.model))


def test_load_pretrained_rejects_mismatched_weights(tmp_path):
    from safetensors.torch import load_file, save_file

    from sdegen.losses import DenoisingScoreMatching

    trainer = Trainer(
        make_score_model(),
        DenoisingScoreMatching(VPSDE()),
        make_data(),
        out_dir=tmp_path,
        batch_size=16,
        progress=False,
    )
    exported = trainer.export(tmp_path / "final")
    weights = load_file(exported / "model.safetensors")
    weights["net.renamed.weight"] = weights.pop("net.input.weight")
    save_file(weights, exported / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"net\.renamed\.weight"):
        load_pretrained(exported)
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        load_pretrained(tmp_path)


@pytest.mark.slow
def test_trains_to_the_true_density(tmp_path):
    """An MLP score model trained for about 2 CPU minutes on the 8-component Gaussian ring: its
    negative log-likelihood by the probability-flow ODE is within 0.05 nats of the true entropy,
    both estimated on the same 1 000 held-out points (the difference of per-point values has a
    small spread, so the comparison is much sharper than either estimate)."""
    from sdegen import log_likelihood
    from sdegen.data import eight_gaussians_mixture
    from sdegen.losses import DenoisingScoreMatching
    from sdegen.models import MLP, ScoreModel

    gm = eight_gaussians_mixture()
    sde = VPSDE()
    data = gm.sample(100_000, generator=torch.Generator().manual_seed(0)).float()
    test = gm.sample(1_000, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    trainer = Trainer(
        ScoreModel(MLP(2, hidden=128, depth=3), sde, "eps"),
        DenoisingScoreMatching(sde, weighting="g2", t_sampling="importance"),
        data,
        out_dir=tmp_path,
        batch_size=512,
        lr=2e-3,
        warmup_steps=200,
        ema_decay=0.999,
        checkpoint_every=5_000,
        log_every=1_000,
        progress=False,
    )
    trainer.fit(11_000)
    model = load_pretrained(trainer.export(tmp_path / "final"))
    nll = -log_likelihood(sde, model, test.float(), divergence="exact").log_prob.double()
    true_nll = -gm.log_prob(test)  # its mean estimates the entropy
    gap = nll - true_nll
    mean, se = float(gap.mean()), float(gap.std() / math.sqrt(len(gap)))
    print(
        f"entropy {float(true_nll.mean()):.4f}, NLL {float(nll.mean()):.4f}, gap {mean:.4f} ± {se:.4f}"
    )
    assert abs(mean) < 0.05


def test_compile_keeps_state_dict_keys_and_resume(tmp_path, straight):
    """torch.compile of the network (eager backend here, to stay fast on CPU) changes neither
    the checkpoint's keys nor the numbers: resuming with it matches the straight run."""
    make_trainer(tmp_path).fit(N_STEPS)
    trainer = make_trainer(tmp_path, compile={"backend": "eager"})
    payload = torch.load(_checkpoint(tmp_path, N_STEPS), weights_only=True)
    assert set(trainer.model.state_dict()) == set(payload["model"])
    trainer.fit(2 * N_STEPS)
    params, ema, _ = straight
    assert torch.equal(flat(trainer.model), params)
    assert torch.equal(flat(trainer.ema_model), ema)
