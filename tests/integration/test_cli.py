"""The command line as users type it: composition of every config, the bare command, real short runs."""

from __future__ import annotations

import subprocess

import pytest
import torch

from conftest import CONFIG_DIR, PYTHON, REPO, compose, python_env, tiny_overrides
from sophia_train.config import OPTIM_SCHEMAS, AdamWConfig, ConfigError, SophiaConfig, TorchOptimConfig
from sophia_train.metrics import read_metrics
from sophia_train.model import GPT, GPTConfig

MODELS = sorted(p.stem for p in (CONFIG_DIR / "model").glob("*.yaml"))
OPTIMS = sorted(p.stem for p in (CONFIG_DIR / "optim").glob("*.yaml"))
TABLE2 = {  # Sophia paper Table 2: (d_model, n_head, depth), nominal size
    "gpt2_30m": ((384, 6, 6), 30e6),
    "gpt2_small": ((768, 12, 12), 125e6),
    "gpt2_medium": ((1024, 16, 24), 355e6),
    "gpt2_540m": ((1152, 18, 30), 540e6),
    "gpt2_large": ((1280, 20, 36), 770e6),
    "gpt2_xl": ((1536, 24, 48), 1.5e9),
}


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("optim", OPTIMS)
def test_user_command_line_composes(model, optim):
    cfg = compose([f"+model={model}", f"optim={optim}"])
    assert cfg.model.name == model and cfg.optim.name == optim
    assert type(cfg.optim) in OPTIM_SCHEMAS.values()
    expected = {"adamw": AdamWConfig, "sophia_g": SophiaConfig, "sophia_h": SophiaConfig, "sgd": TorchOptimConfig}
    if optim in expected:
        assert isinstance(cfg.optim, expected[optim])
    assert cfg.run_name == f"{model}-{optim}-{cfg.data.name}-s{cfg.train.seed}"
    assert cfg.train.out_dir == f"runs/{cfg.run_name}"
    if model.startswith("gpt2_"):
        assert cfg.data.name == "openwebtext" and cfg.model.block_size == 1024
    else:
        assert cfg.data.name == "corpus"


@pytest.mark.parametrize("model", sorted(TABLE2))
def test_gpt2_sizes_match_table2(model):
    (d, heads, depth), nominal = TABLE2[model]
    m = compose([f"+model={model}"]).model
    assert (m.n_embd, m.n_head, m.n_layer) == (d, heads, depth)
    with torch.device("meta"):
        gpt = GPT(GPTConfig(n_layer=depth, n_head=heads, n_embd=d, block_size=1024, vocab_size=50304))
    n = gpt.num_params(non_embedding=False)
    assert 0.75 * nominal < n < 1.25 * nominal, f"{model}: {n / 1e6:.0f}M vs nominal {nominal / 1e6:.0f}M"


def test_overrides_reach_the_typed_config():
    cfg = compose(["+model=tiny", "optim=sophia_g", "optim.lr=3e-4", "optim.rho=0.03", "train.max_steps=200", "model.attn_scale_by_layer=true"])
    assert cfg.optim.lr == 3e-4 and cfg.optim.rho == 0.03 and cfg.train.max_steps == 200
    assert cfg.model.attn_scale_by_layer is True


@pytest.mark.parametrize("typo", ["optim.rhoo=1", "+optim.rhoo=1", "++optim.rhoo=1"])
def test_typo_in_a_field_is_refused(typo):
    with pytest.raises(ConfigError, match=r"optim.rhoo is not a setting: .* Did you mean optim.rho\?"):
        compose(["+model=tiny", typo])


def run_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "sophia_train", *args], cwd=REPO, env=python_env(), capture_output=True, text=True, timeout=timeout)


def test_bare_command_lists_models():
    out = run_cli()
    assert out.returncode == 0, out.stderr
    for m in MODELS:
        assert m in out.stdout
    assert "+model=" in out.stdout


@pytest.mark.parametrize("optim", OPTIMS)
def test_short_real_run_of_tiny_for_each_optimizer(byte_data, tmp_path, optim):
    out = run_cli(
        "+model=tiny", f"optim={optim}", f"data.dir={byte_data}", f"train.out_dir={tmp_path}", "train.max_steps=12",
        "train.eval_interval=6", "train.eval_iters=2", "train.log_interval=3", "train.batch_size=4",
        "train.warmup_steps=2", "optim.hess_interval=5" if optim == "sophia_g" else "train.seed=1",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "parameters" in out.stdout and "tok/s" in out.stdout and "ETA" in out.stdout
    assert (tmp_path / "metrics.jsonl").stat().st_size > 0
    assert (tmp_path / "ckpt.pt").is_file() and (tmp_path / "loss_curve.png").is_file()


def test_multirun_gives_each_job_a_folder_named_by_its_swept_values(byte_data, tmp_path):
    """``-m`` with two swept keys: four jobs, four folders; nothing lands in the caller's directory but the sweep record."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    out = subprocess.run(
        [PYTHON, "-m", "sophia_train", "-m", "+model=nano", "optim=adamw,lion", "optim.lr=1e-3,2e-3", f"data.dir={byte_data}",
         f"train.out_dir={tmp_path / 'out'}", "train.max_steps=2", "train.warmup_steps=1", "train.eval_interval=2",
         "train.eval_iters=1", "train.batch_size=2", "train.plot=false", "train.threads=1"],
        cwd=cwd, env=python_env(), capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert jobs == ["job0-optim=adamw,optim.lr=0.001", "job1-optim=adamw,optim.lr=0.002",
                    "job2-optim=lion,optim.lr=0.001", "job3-optim=lion,optim.lr=0.002"]
    assert all((tmp_path / "out" / j / "ckpt.pt").is_file() for j in jobs)
    assert not list((tmp_path / "out").glob("*/run.lock"))  # finished runs leave no lock file
    assert [p.name for p in cwd.iterdir()] == ["runs"]
    assert list(cwd.glob("runs/sweeps/*/multirun.yaml"))
    # a "job N/M" line as each job starts, and a table of all of them at the end (printed and written)
    for n, j in enumerate(jobs, 1):
        assert f"multirun job {n}/4: " in out.stdout and f"-> {tmp_path / 'out' / j}" in out.stdout, out.stdout[-3000:]
    (summary,) = cwd.glob("runs/sweeps/*/summary.md")
    table = summary.read_text()
    assert table.startswith("4 job(s) finished") and table in out.stdout
    finals = {r["step"]: r for r in read_metrics(tmp_path / "out" / jobs[2] / "metrics.jsonl") if r["kind"] == "end"}
    assert f"| 2 | optim=lion optim.lr=0.001 | 2 | {finals[2]['final_val_loss']:.4f}" in table
    assert table.count("(lowest)") == 1


def test_multirun_refuses_to_nest_its_jobs_in_a_run_folder(byte_data, tmp_path):
    run = tmp_path / "run"
    first = subprocess.run([PYTHON, "-m", "sophia_train", *tiny_overrides(byte_data, run, "train.max_steps=2")], cwd=tmp_path,
                           env=python_env(), capture_output=True, text=True, timeout=300)
    assert first.returncode == 0 and (run / "ckpt.pt").is_file()
    out = subprocess.run([PYTHON, "-m", "sophia_train", "-m", *tiny_overrides(byte_data, run, "train.max_steps=2", "optim.lr=1e-3,2e-3")],
                         cwd=tmp_path, env=python_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"train.out_dir={run} holds a run (ckpt.pt, metrics.jsonl)" in out.stderr, out.stderr[-2000:]
    assert not list(run.glob("job*"))


def test_sweep_size_counts_the_jobs():
    from sophia_train.multirun import sweep_size

    assert sweep_size(["-m", "+model=nano", "optim=adamw,lion", "optim.lr=1e-3,2e-3,3e-3"], None) == 6
    assert sweep_size(["train.seed=range(0,3)"], {"optim.lr": "6e-4,3e-4"}) == 6
    assert sweep_size(["optim.lr=1e-3"], {"optim.lr": "6e-4,3e-4"}) == 1  # the command line wins over the experiment
    assert sweep_size(["optim=glob(s*)"], None) is None
    assert sweep_size([], None, n_trials=20) == 20


def test_swept_keys_come_from_the_command_line_and_the_experiment():
    from sophia_train.multirun import swept_keys

    argv = ["-m", "+model=nano", "optim=adamw,lion", "train.seed=range(0,3)", "optim.lr=1e-3"]
    assert swept_keys(argv, None) == {"optim", "train.seed"}
    assert swept_keys(["+model=nano"], {"optim.lr": "6e-4,3e-4"}) == {"optim.lr"}


def test_optimizer_defaults_live_in_one_place():
    """Schemas hold the defaults: class signatures take theirs from them, and no YAML restates one."""
    import dataclasses
    import inspect
    import re

    import yaml

    from sophia_train import config as C
    from sophia_train.optim import AdaHessian, Lion, MuonAdamW, NormalizedMomentum, SoftSignSGD, SophiaG, SophiaH

    pairs = [(SophiaG, C.SophiaConfig), (SophiaH, C.SophiaHConfig), (AdaHessian, C.AdaHessianConfig), (Lion, C.LionConfig),
             (SoftSignSGD, C.S3Config), (NormalizedMomentum, C.NormalizeConfig), (MuonAdamW, C.MuonConfig)]
    for cls, schema in pairs:
        defaults = {f.name: f.default for f in dataclasses.fields(schema)}
        for name, param in inspect.signature(cls.__init__).parameters.items():
            if name in defaults and param.default is not inspect.Parameter.empty:
                assert param.default == defaults[name], f"{cls.__name__}({name}={param.default!r}) but {schema.__name__}.{name}={defaults[name]!r}"
    for path in sorted((REPO / "configs" / "optim").glob("*.yaml")):
        text = path.read_text()
        schema = C.OPTIM_SCHEMAS[re.search(r"/schema/optim/(\w+)@_here_", text).group(1)]
        defaults = {f.name: f.default for f in dataclasses.fields(schema) if f.name != "name"}
        for key, value in (yaml.safe_load(text) or {}).items():
            if key in defaults and key != "defaults":
                d = defaults[key]
                same = float(value) == d if isinstance(d, float) else (list(d) if isinstance(d, tuple) else d) == value
                assert not same, f"{path.name} restates {schema.__name__}.{key} = {d!r}"
