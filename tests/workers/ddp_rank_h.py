"""Helper run under torchrun by test_ddp: train, then report how far each rank's Hessian EMA is from rank 0's."""

import json
import sys

import torch
import torch.distributed as dist

from sophia_train.compose import compose_config
from sophia_train.distributed import dist_info_from_env
from sophia_train.trainer import Trainer

if __name__ == "__main__":
    trainer = Trainer(compose_config(sys.argv[2:]), dist_info_from_env())
    trainer.fit()
    flat = torch.cat([s["h"].reshape(-1) for s in trainer.optimizer.state.values()])
    gathered = [torch.zeros_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, flat)
    if dist.get_rank() == 0:
        diff = max(float((g - gathered[0]).abs().max()) for g in gathered)
        with open(sys.argv[1], "w") as f:
            json.dump({"max_abs_diff": diff, "norm": float(flat.norm()), "ranks": len(gathered)}, f)
    dist.barrier()
    dist.destroy_process_group()
