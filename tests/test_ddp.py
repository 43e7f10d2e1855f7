"""Distributed data parallel training on CPU (gloo, 2 processes): the run with global batch B
equals the single-process run with batch B, the EMA is identical on every rank, rank 0 alone
writes checkpoints and logs, and a distributed run resumes from its checkpoint."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sdegen import VPSDE
from sdegen.training import Trainer

WORLD = 2
HALF = 3
STEPS = 2 * HALF


def make_trainer(out_dir, **kw):
    from sdegen.losses import DenoisingScoreMatching
    from sdegen.models import MLP, ScoreModel

    # Different initial weights on each rank: DDP must start everyone from rank 0's.
    seed = int(os.environ.get("RANK", "0"))
    torch.manual_seed(seed)
    model = ScoreModel(MLP(2, hidden=32, depth=2, num_classes=3), VPSDE(), "eps")
    data_gen = torch.Generator().manual_seed(5)
    data = torch.randn(64, 2, generator=data_gen)
    labels = torch.randint(0, 3, (64,), generator=data_gen)
    loss = DenoisingScoreMatching(VPSDE(), label_dropout=0.25, num_classes=3)
    return Trainer(
        model,
        loss,
        data,
        labels=labels,
        out_dir=out_dir,
        batch_size=16,
        lr=1e-2,
        warmup_steps=2,
        ema_decay=0.8,
        checkpoint_every=HALF,
        log_every=1,
        progress=False,
        device="cpu",
        seed=3,
        **kw,
    )


def flat(module):
    return torch.cat([p.detach().flatten() for p in module.state_dict().values()])


def _worker(rank: int, init_file: str, out_dir: str, result_file: str) -> None:
    torch.set_num_threads(1)
    # A file rendezvous rather than a TCP port: no race for a free port with other processes.
    # RANK as torchrun sets it (make_trainer seeds each rank differently from it).
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD))
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        # distributed=None: the Trainer finds the initialised group of size 2 and uses it.
        first = make_trainer(out_dir)
        assert first.distributed and first.world_size == WORLD and first.rank == rank
        first.fit(HALF)
        del first
        resumed = make_trainer(out_dir)
        assert resumed.step == HALF
        result = resumed.fit(STEPS)
        mine = (flat(resumed.model), flat(resumed.ema_model))
        everyone = [None] * WORLD
        dist.all_gather_object(everyone, mine)
        if rank == 0:
            torch.save({"everyone": everyone, "losses": result.losses}, result_file)
        # Both ranks leave their last collective before either tears the group down: gloo
        # aborts a rank ("terminate called without an active exception") otherwise.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_ddp_matches_single_process(tmp_path):
    result_file = tmp_path / "ranks.pt"
    ddp_dir = tmp_path / "ddp"
    init_file = tmp_path / "rendezvous"
    mp.spawn(
        _worker, args=(str(init_file), str(ddp_dir), str(result_file)), nprocs=WORLD, join=True
    )
    out = torch.load(result_file, weights_only=True)
    (params0, ema0), (params1, ema1) = out["everyone"]
    # Identical weights and EMA on every rank, bit for bit.
    assert torch.equal(params0, params1)
    assert torch.equal(ema0, ema1)

    single = make_trainer(tmp_path / "single", distributed=False)
    single.fit(HALF)
    single_losses = single.fit(STEPS).losses
    # Same global batches, same t and noise: equal up to the order of floating-point sums.
    print(
        "max |DDP - single|: losses "
        f"{float((out['losses'] - single_losses).abs().max()):.2e}, weights "
        f"{float((params0 - flat(single.model)).abs().max()):.2e}, EMA "
        f"{float((ema0 - flat(single.ema_model)).abs().max()):.2e}"
    )
    torch.testing.assert_close(out["losses"], single_losses, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(params0, flat(single.model), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ema0, flat(single.ema_model), rtol=1e-4, atol=1e-5)
    assert not torch.equal(params0, flat(make_trainer(tmp_path / "fresh").model))

    # Rank 0 alone wrote the log (each step once) and the checkpoints.
    steps = [
        json.loads(line)["step"] for line in (ddp_dir / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == list(range(1, STEPS + 1))
    assert sorted(p.name for p in ddp_dir.glob("*.pt")) == [
        "checkpoint-00000003.pt",
        "checkpoint-00000006.pt",
    ]


@pytest.mark.slow
def test_trainer_initialises_the_group_from_the_torchrun_environment(tmp_path):
    """Under torchrun nothing initialises torch.distributed but the Trainer: it reads
    WORLD_SIZE > 1, calls init_process_group (gloo on CPU) from the environment, and trains
    as the file-rendezvous run above does: the same weights on both ranks, equal to a
    single-process run with the global batch."""
    worker = Path(__file__).with_name("ddp_torchrun_worker.py")
    result_file = tmp_path / "ranks.pt"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={WORLD}", str(worker), str(tmp_path / "run"), str(result_file),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    out = torch.load(result_file, weights_only=True)
    (params0, ema0), (params1, ema1) = out["everyone"]
    assert torch.equal(params0, params1) and torch.equal(ema0, ema1)
    single = make_trainer(tmp_path / "single", distributed=False)
    single_losses = single.fit(HALF).losses
    torch.testing.assert_close(out["losses"], single_losses, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(params0, flat(single.model), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ema0, flat(single.ema_model), rtol=1e-4, atol=1e-5)
