"""Distributed training: the torchrun environment and collectives (``env``), applying DDP/FSDP and the
sharding-aware gradient helpers (``parallel``), and stop signals across ranks (``stop_signals``)."""

from sophia_train.distributed.env import (
    DistInfo,
    all_ranks_agree,
    all_reduce_mean_,
    check_weights_fit,
    destroy_process_group,
    dist_info_from_env,
    free_memory,
    init_process_group,
    pick_device,
    pick_dtype,
)

__all__ = ["DistInfo", "all_ranks_agree", "all_reduce_mean_", "check_weights_fit", "destroy_process_group", "dist_info_from_env",
           "free_memory", "init_process_group", "pick_device", "pick_dtype"]
