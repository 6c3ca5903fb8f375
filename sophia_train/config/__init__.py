"""Structured configs, the bottom layer: the schemas (``schema``, ``optimizers``), their range checks
(``checks``), whole-config validation and batch arithmetic (``validate``), and the paper's per-model
settings (``paper``). Nothing here imports the project but ``sophia_train.errors``."""

from sophia_train.config.checks import check_curvature_hook, finite, in_range, require
from sophia_train.config.optimizers import (
    OPTIM_SCHEMAS,
    AdaHessianConfig,
    AdamWConfig,
    KronConfig,
    LionConfig,
    MuonConfig,
    NormalizeConfig,
    OptimConfig,
    S3Config,
    SOAPConfig,
    SophiaConfig,
    SophiaHConfig,
    TorchOptimConfig,
)
from sophia_train.config.schema import Config, DataConfig, LoggerConfig, ModelConfig, TrainConfig, flatten
from sophia_train.config.validate import MAX_EVAL_ITERS, accum_per_rank, total_accum, validate
from sophia_train.errors import ConfigError, StoppedBySignal, TrainingDiverged

__all__ = [
    "MAX_EVAL_ITERS", "OPTIM_SCHEMAS", "AdaHessianConfig", "AdamWConfig", "Config", "ConfigError", "DataConfig", "KronConfig",
    "LionConfig", "LoggerConfig", "ModelConfig", "MuonConfig", "NormalizeConfig", "OptimConfig", "S3Config", "SOAPConfig",
    "SophiaConfig", "SophiaHConfig", "StoppedBySignal", "TorchOptimConfig", "TrainConfig", "TrainingDiverged",
    "accum_per_rank", "check_curvature_hook", "finite", "flatten", "in_range", "require", "total_accum", "validate",
]
