"""Helper run under torchrun by test_fsdp: train with FSDP, and SIGKILL rank 1 in the middle of the
sharded save of step KILL_AT_STEP, right after it wrote its shard (``.metadata`` is not written yet):
``fsdp_kill_during_save.py KILL_AT_STEP OVERRIDE...``."""

import os
import signal
import sys

import torch.distributed as dist
from torch.distributed.checkpoint.filesystem import FileSystemWriter

from sophia_train.__main__ import main
from sophia_train.checkpoint import sharded as sharded_checkpoint

kill_at = int(sys.argv.pop(1))
write_data = FileSystemWriter.write_data
save = sharded_checkpoint.save
saving = {}


def save_and_note_step(root, step, *args, **kwargs):
    saving["step"] = step
    return save(root, step, *args, **kwargs)


def write_then_die(self, plan, planner):
    done = write_data(self, plan, planner)
    done.wait()  # this rank's shard is on disk
    if saving.get("step") == kill_at and dist.get_rank() == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return done


sharded_checkpoint.save = save_and_note_step
FileSystemWriter.write_data = write_then_die

if __name__ == "__main__":
    main()
