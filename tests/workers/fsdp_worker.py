"""Helper run by test_fsdp (under torchrun or alone): train several optimizers one after another in one
process group, each into OUT_ROOT/<optim>: ``fsdp_worker.py OUT_ROOT OPTIM[,OPTIM...] OVERRIDE...``."""

import sys
from pathlib import Path

from sophia_train.compose import compose_config
from sophia_train.distributed import destroy_process_group, dist_info_from_env
from sophia_train.trainer import Trainer

if __name__ == "__main__":
    root, optims, overrides = Path(sys.argv[1]), sys.argv[2].split(","), sys.argv[3:]
    for name in optims:
        cfg = compose_config([*overrides, f"optim={name}", f"train.out_dir={root / name}"])
        Trainer(cfg, dist_info_from_env()).fit()
    destroy_process_group()
