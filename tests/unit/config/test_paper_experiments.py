"""Experiment configs: the paper's settings (Table 2 LRs, the 480-sequence global batch), ablations, sweeps."""

from __future__ import annotations

import pytest

from conftest import compose
from sophia_train.config import ConfigError, accum_per_rank, total_accum
from sophia_train.config.paper import PAPER_PEAK_LR


@pytest.mark.parametrize("model, optim", [(m, o) for m, row in PAPER_PEAK_LR.items() for o in row])
def test_paper_experiment_uses_table2(model, optim):
    cfg = compose([f"+model={model}", f"optim={optim}", "+experiment=paper"])
    assert cfg.optim.lr == PAPER_PEAK_LR[model][optim]
    t = cfg.train
    assert (t.global_batch, cfg.model.block_size, t.warmup_steps, t.min_lr_ratio, t.grad_clip, t.max_steps) == (480, 1024, 2000, 0.05, 1.0, 100000)
    big = model in ("gpt2_medium", "gpt2_540m", "gpt2_large", "gpt2_xl")
    assert cfg.model.attn_scale_by_layer == (big and optim in ("adamw", "lion"))
    assert cfg.data.name == "openwebtext"


def test_paper_experiment_without_a_table2_entry_says_so():
    with pytest.raises(ConfigError, match="gives no peak LR for optim=lion on model=gpt2_large"):
        compose(["+model=gpt2_large", "optim=lion", "+experiment=paper"])


@pytest.mark.parametrize("gpus, per_rank", [(1, 40), (2, 20), (4, 10), (8, 5)])
def test_global_batch_stays_480_for_any_gpu_count(gpus, per_rank):
    t = compose(["+model=gpt2_small", "optim=adamw", "+experiment=paper"]).train
    assert accum_per_rank(total_accum(t), gpus) == per_rank
    assert per_rank * gpus * t.batch_size == 480


def test_global_batch_indivisible_is_explained():
    t = compose(["+model=gpt2_small", "optim=adamw", "+experiment=paper", "train.batch_size=7"]).train
    with pytest.raises(ConfigError, match="not a multiple of train.batch_size=7"):
        total_accum(t)
    t = compose(["+model=gpt2_small", "optim=adamw", "+experiment=paper"]).train
    with pytest.raises(ConfigError, match="cannot be split evenly over 7 processes"):
        accum_per_rank(total_accum(t), 7)


def hydra_node(overrides):
    from hydra import compose as hcompose
    from hydra import initialize_config_dir

    from sophia_train.compose import config_dir, register_configs

    register_configs()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return hcompose(config_name="config", overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize(
    "experiment, model, sweep",
    [
        ("ablation_hess_interval", "gpt2_30m", {"optim.hess_interval": "1,10,100"}),
        ("ablation_preconditioner", "gpt2_30m", {"optim": "ef_clip,ah_clip,sophia_h,sophia_g"}),
        ("ablation_clipping", "gpt2_30m", {"optim": "clip,normalize,adahessian,gnb_noclip,sophia_g"}),
        ("sensitivity_gamma_beta2", "gpt2_30m", {"optim.rho": "0.005,0.01,0.02"}),
        ("s3_gpt2_medium", "gpt2_medium", {}),
    ],
)
def test_ablation_and_s3_experiments_compose(experiment, model, sweep):
    node = hydra_node([f"+experiment={experiment}"])
    assert node.model.name == model
    params = node.hydra.sweeper.params or {}
    for key, value in sweep.items():
        assert str(params[key]).replace(" ", "") == value
    cfg = compose([f"+experiment={experiment}"])
    assert cfg.train.global_batch == 480
    for opt in sweep.get("optim", "").split(",") if "optim" in sweep else []:
        assert compose([f"+experiment={experiment}", f"optim={opt}"]).optim.name == opt
    if experiment == "s3_gpt2_medium":
        o = cfg.optim
        assert (o.name, o.lr, o.beta, o.p, o.weight_decay, o.nesterov) == ("s3", 3e-3, 0.95, 3.0, 0.01, True)


def test_lr_grid_sweeps_the_papers_list():
    node = hydra_node(["+experiment=lr_grid", "+model=gpt2_small", "optim=adamw"])
    assert str(node.hydra.sweeper.params["optim.lr"]).startswith("6e-4,4e-4,3e-4")
