"""Run by tests/test_ddp.py under torchrun: the Trainer initialises the process group itself
from the environment torchrun sets (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, LOCAL_RANK).

Usage: ``torchrun --standalone --nproc_per_node=2 ddp_torchrun_worker.py OUT_DIR RESULT_FILE``
"""

import os
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_ddp import HALF, WORLD, flat, make_trainer


def main(out_dir: str, result_file: str) -> None:
    torch.set_num_threads(1)
    assert not dist.is_initialized()
    # distributed=None and WORLD_SIZE = 2: the Trainer calls init_process_group itself.
    trainer = make_trainer(out_dir)
    assert dist.is_initialized() and dist.get_backend() == "gloo"
    assert trainer.distributed and trainer.world_size == WORLD
    assert trainer.rank == int(os.environ["RANK"])
    try:
        result = trainer.fit(HALF)
        mine = (flat(trainer.model), flat(trainer.ema_model))
        everyone = [None] * WORLD
        dist.all_gather_object(everyone, mine)
        if trainer.rank == 0:
            torch.save({"everyone": everyone, "losses": result.losses}, result_file)
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
