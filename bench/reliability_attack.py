#!/usr/bin/env python
"""The reliability audit, rerunnable: kills, stop signals and bad inputs against real processes.

    python bench/reliability_attack.py [--kills 16] [--signals 6] [--workers 2] [--out bench/results/reliability_attack.md]

1. **SIGKILL and resume**: a tiny run checkpointing every few steps is SIGKILLed at a random moment (up to
   twice), resumed each time, and finished; its final weights must equal an uninterrupted run's bit for
   bit, and every checkpoint left by a kill must load (integrity-checked) and be finite.
2. **Stop signals**: SIGTERM / SIGINT / SIGUSR1 at a random step, single process and 2-rank DDP/FSDP
   (gloo): exit 75, a `stopped` row, a checkpoint of that step, and a resumed run equal to the whole one.
3. **Bad inputs**: every case of the list below runs as a user would type it; each is *clean* (refused
   with one paragraph, exit 2 or 3, no traceback), a *traceback*, *silently accepted* (exit 0), or *other*.

Prints progress and writes a markdown report with the figures (and every case that is not clean).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sophia_train import checkpoint as ckpt  # noqa: E402
from sophia_train.metrics import read_metrics  # noqa: E402

PY = sys.executable


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    e.update(OMP_NUM_THREADS="1", PYTHONPATH=f"{REPO}{os.pathsep}{e.get('PYTHONPATH', '')}")
    return e


def prepare_data(root: Path) -> Path:
    """A byte-level dataset from $SOPHIA_TEST_CORPUS (or the embedded corpus)."""
    out = root / "data"
    corpus = os.environ.get("SOPHIA_TEST_CORPUS")
    cmd = [PY, "scripts/prepare_data.py", "corpus", "--out", str(out), *(["--corpus-file", corpus] if corpus else [])]
    subprocess.run(cmd, cwd=REPO, env=env(), check=True, capture_output=True)
    return out


def base_args(data: Path, out: Path, *extra: str, optim: str = "sophia_g") -> list[str]:
    return ["+model=nano", f"optim={optim}", f"data.dir={data}", f"train.out_dir={out}", "train.batch_size=4",
            "train.warmup_steps=2", "train.eval_interval=20", "train.eval_iters=2", "train.log_interval=1",
            "train.plot=false", "train.threads=1", *extra]


def cli(args: list[str], nproc: int = 1, timeout: float = 600) -> subprocess.CompletedProcess:
    launcher = [PY, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 else [PY]
    return subprocess.run([*launcher, "-m", "sophia_train", *args], cwd=REPO, env=env(), capture_output=True, text=True,
                          timeout=timeout)


def weights(run: Path) -> dict[str, torch.Tensor]:
    return ckpt.load_checkpoint(run)["model"]


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def wait_for_step(run: Path, step: int, proc: subprocess.Popen, timeout: float = 120) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        rows = read_metrics(run / "metrics.jsonl") if (run / "metrics.jsonl").exists() else []
        if any(r["kind"] == "train" and r["step"] >= step for r in rows):
            return True
        time.sleep(0.01)
    return False


# --- 1. SIGKILL ------------------------------------------------------------------------------------
def kill_trials(data: Path, root: Path, n: int, rng: random.Random) -> dict:
    steps = ("train.max_steps=80", "train.ckpt_interval=3")
    ref = root / "kill_ref"
    assert cli(base_args(data, ref, *steps)).returncode == 0
    want = weights(ref)
    survived = identical = torn = 0
    for i in range(n):
        run = root / f"kill{i}"
        kills = 0
        for attempt in range(rng.choice([1, 2])):
            resume = ["train.resume=true"] if (run / "ckpt.pt").exists() else []
            proc = subprocess.Popen([PY, "-m", "sophia_train", *base_args(data, run, *steps), *resume], cwd=REPO, env=env(),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            first = ckpt.load_checkpoint(run)["step"] if resume else 0
            if not wait_for_step(run, first + 1, proc):
                proc.wait()
                break
            time.sleep(rng.uniform(0.0, 0.4))  # anywhere in a step, an eval or a save
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            if (run / "ckpt.pt").exists():
                try:
                    state = ckpt.load_checkpoint(run / "ckpt.pt")
                    ok = all(bool(torch.isfinite(t).all()) for t in state["model"].values())
                except Exception:
                    ok = False
                torn += not ok
        resume = ["train.resume=true"] if (run / "ckpt.pt").exists() else ["train.overwrite=true"]
        done = cli([*base_args(data, run, *steps), *resume])
        survived += done.returncode == 0
        identical += done.returncode == 0 and same(weights(run), want)
        print(f"  kill trial {i + 1}/{n}: {kills} kill(s), resume exit {done.returncode}, "
              f"{'identical' if done.returncode == 0 and same(weights(run), want) else 'DIFFERENT'}", flush=True)
    return {"trials": n, "survived": survived, "identical": identical, "torn_or_nonfinite": torn}


# --- 2. stop signals -----------------------------------------------------------------------------------
def signal_trials(data: Path, root: Path, n: int, rng: random.Random) -> dict:
    cases = [(s, 1, "ddp") for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)] + [(signal.SIGTERM, 2, "ddp"),
                                                                                        (signal.SIGTERM, 2, "fsdp")]
    cases = (cases * ((n + len(cases) - 1) // len(cases)))[:n]
    refs: dict[tuple[int, str], dict] = {}
    good = 0
    for i, (sig, nproc, parallel) in enumerate(cases):
        steps = ("train.max_steps=300", "train.ckpt_interval=0", f"train.parallel={parallel}")
        if (nproc, parallel) not in refs:
            ref = root / f"sig_ref_{nproc}_{parallel}"
            assert cli(base_args(data, ref, *steps, optim="adamw"), nproc).returncode == 0
            refs[(nproc, parallel)] = weights(ref)
        run = root / f"sig{i}"
        launcher = [PY, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 else [PY]
        proc = subprocess.Popen([*launcher, "-m", "sophia_train", *base_args(data, run, *steps, optim="adamw")], cwd=REPO,
                                env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wait_for_step(run, rng.randint(2, 30), proc)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=300)
        stopped = [r for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "stopped"]
        ok = len(stopped) == 1 and (nproc > 1 or proc.returncode == 75) and ckpt.load_checkpoint(run)["step"] == stopped[0]["step"]
        done = cli([*base_args(data, run, *steps, optim="adamw"), "train.resume=true"], nproc)
        ok = ok and done.returncode == 0 and same(weights(run), refs[(nproc, parallel)])
        good += ok
        print(f"  {sig.name} to {nproc} process(es) ({parallel}): {'saved, resumed identical' if ok else 'FAILED'}", flush=True)
    return {"trials": len(cases), "saved_and_identical": good}


# --- 3. bad inputs ----------------------------------------------------------------------------------------
def bad_input_cases(data: Path, root: Path) -> list[tuple[str, list[str], str]]:
    """(label, argv after python, kind): kind 'train' runs ``-m sophia_train``, 'prepare' the data script."""
    cases: list[tuple[str, list[str], str]] = []

    def train(label: str, *extra: str, optim: str = "sophia_g", data_dir: Path = data) -> None:
        out = root / "bad" / f"c{len(cases)}"
        cases.append((label, base_args(data_dir, out, "train.max_steps=3", *extra, optim=optim), "train"))

    for value in ("-1", "0", "nan", "inf"):
        train(f"optim.lr={value}", f"optim.lr={value}")
    for key in ("rho", "eps"):
        for value in ("-1", "0", "nan", "inf"):
            train(f"optim.{key}={value}", f"optim.{key}={value}")
    for value in ("[0.9]", "[1.0,0.99]", "[-0.1,0.99]", "[0.9,nan]"):
        train(f"optim.betas={value}", f"optim.betas={value}")
    for key, value in (("weight_decay", "-1"), ("weight_decay", "nan"), ("hess_interval", "0"), ("hess_fraction", "0"),
                       ("hess_fraction", "1.5"), ("estimator", "fisherr"), ("denominator", "sqrt")):
        train(f"optim.{key}={value}", f"optim.{key}={value}")
    for optim, key, value in (("soap", "precondition_frequency", "0"), ("soap", "max_precond_dim", "-1"),
                              ("soap", "shampoo_beta", "1.5"), ("adahessian", "hessian_power", "-1"),
                              ("adahessian", "hessian_power", "2"), ("muon", "momentum", "nan"), ("muon", "momentum", "1.5"),
                              ("muon", "ns_steps", "0"), ("muon", "ns_steps", "-3"), ("s3", "p", "0.5"), ("s3", "beta", "1"),
                              ("normalize", "beta", "-0.5"), ("kron", "precond_lr", "0"), ("kron", "max_size_triangular", "0"),
                              ("lion", "betas", "[1.5,0.9]")):
        train(f"{optim} {key}={value}", f"optim.{key}={value}", optim=optim)
    for optim, kw in (("sgd", "+optim.kwargs.momentum=-1"), ("adadelta", "++optim.kwargs.rho=2"),
                      ("rmsprop", "++optim.kwargs.alpha=-1"), ("adam", "+optim.kwargs.amsgrad=maybe"),
                      ("sgd", "+optim.kwargs.nonsense=1"), ("sgd", "optim.torch_class=NoSuchOptimizer")):
        train(f"{optim} {kw}", kw, optim=optim)
    train("optim.fused=true on CPU", "optim.fused=true")
    for spelling in ("optim.rhoo=1", "+optim.rhoo=1", "++optim.rhoo=1", "+train.max_step=5", "++train.max_step=5",
                     "+model.n_layerz=2", "+foo=1", "train.nonsense=1"):
        train(spelling, spelling)
    for key, value in (("seed", "-1"), ("seed", "1180591620717411303424"), ("batch_size", "0"), ("batch_size", "-4"),
                       ("grad_accum", "0"), ("global_batch", "7"), ("seq_len", "0"), ("seq_len", "100000"),
                       ("max_steps", "0"), ("warmup_steps", "-1"), ("warmup_steps", "100"), ("min_lr_ratio", "2"),
                       ("grad_clip", "-1"), ("eval_iters", "0"), ("eval_iters", "1000000000"), ("eval_interval", "0"),
                       ("log_interval", "0"), ("ckpt_interval", "-1"), ("threads", "-2"), ("stop_after_step", "99"),
                       ("dtype", "float16"), ("parallel", "zero3"), ("device", "tpu"), ("device", "cuda:7"),
                       ("out_dir", "''"), ("max_skips_in_row", "0"), ("resume_allow", "[optim.rhoo]")):
        train(f"train.{key}={value}", f"train.{key}={value}")
    for key, value in (("n_layer", "0"), ("n_head", "3"), ("n_embd", "-8"), ("block_size", "0"), ("dropout", "1.5"),
                       ("activation", "relu"), ("vocab_size", "10")):
        train(f"model.{key}={value}", f"model.{key}={value}")
    train("a model too large for memory", "model.n_layer=2000", "model.n_embd=8192", "model.n_head=8", optim="adamw")
    train("fsdp with soap", "train.parallel=fsdp", optim="soap")
    train("train.resume=true with no checkpoint", "train.resume=true")
    train("+model=gpt5 (unknown model)", "+model=gpt5")
    cases.append(("model=tiny without +", ["model=tiny"], "train"))
    cases.append(("optim=adamx (unknown optimizer)", ["+model=tiny", "optim=adamx"], "train"))
    cases.append(("data=nope", ["+model=tiny", "data=nope"], "train"))
    cases.append(("optim.lr=abc", ["+model=tiny", "optim.lr=abc"], "train"))

    # damaged data folders
    def damaged(label: str, change) -> None:
        d = root / "bad" / f"data{len(cases)}"
        shutil.copytree(data, d)
        change(d)
        train(label, data_dir=d)

    def set_meta(**kv):
        def change(d: Path) -> None:
            meta = json.loads((d / "meta.json").read_text())
            meta.update(kv)
            (d / "meta.json").write_text(json.dumps(meta))
        return change

    damaged("meta.json not JSON", lambda d: (d / "meta.json").write_text("{not json"))
    damaged("meta.json dtype int16", set_meta(dtype="int16"))
    damaged("meta.json dtype float32", set_meta(dtype="float32"))
    damaged("meta.json dtype nonsense", set_meta(dtype="utf9"))
    damaged("meta.json vocab 50", set_meta(vocab_size=50))
    damaged("meta.json vocab 70000 in uint16", set_meta(vocab_size=70000))
    damaged("meta.json token count wrong", set_meta(num_tokens={"train": 5, "val": 5}))
    damaged("meta.json no vocab_size", lambda d: (d / "meta.json").write_text(json.dumps({"tokenizer": "byte"})))
    damaged("train.bin truncated", lambda d: os.truncate(d / "train.bin", 1001))
    damaged("val.bin missing", lambda d: (d / "val.bin").unlink())
    damaged("byte data without meta.json", lambda d: (d / "meta.json").unlink())
    damaged("a tiny dataset", lambda d: ((d / "val.bin").write_bytes(np.arange(5, dtype=np.uint16).tobytes()),
                                         set_meta(num_tokens={"train": json.loads((d / "meta.json").read_text())["num_tokens"]["train"],
                                                              "val": 5})(d)))
    train("data.dir missing", data_dir=root / "nowhere")

    # damaged checkpoints (each resumed)
    source = root / "bad" / "ckpt_source"
    assert cli(base_args(data, source, "train.max_steps=6", "train.stop_after_step=3")).returncode == 0

    def broken_ckpt(label: str, change, *extra: str) -> None:
        run = root / "bad" / f"run{len(cases)}"
        shutil.copytree(source, run)
        change(run / "ckpt.pt")
        cases.append((label, base_args(data, run, "train.max_steps=6", "train.resume=true", *extra), "train"))

    def edit_state(fn):
        def change(path: Path) -> None:
            state = torch.load(path, weights_only=True)
            fn(state)
            ckpt.save_checkpoint(state, path)
        return change

    def flip(path: Path) -> None:
        blob = bytearray(path.read_bytes())
        for j in range(64):
            blob[len(blob) // 2 + j] ^= 0xFF
        path.write_bytes(bytes(blob))

    broken_ckpt("ckpt.pt 0 bytes", lambda p: p.write_bytes(b""))
    broken_ckpt("ckpt.pt truncated", lambda p: p.write_bytes(p.read_bytes()[:1000]))
    broken_ckpt("ckpt.pt 64 flipped bytes", flip)
    broken_ckpt("ckpt.pt not a checkpoint", lambda p: p.write_bytes(b"hello" * 100))
    broken_ckpt("ckpt.pt without optimizer", edit_state(lambda s: s.pop("optimizer")))
    broken_ckpt("ckpt.pt step -1", edit_state(lambda s: s.update(step=-1)))
    broken_ckpt("ckpt.pt wrong weight shape", edit_state(lambda s: s["model"].update({next(iter(s["model"])): torch.zeros(3, 3)})))
    broken_ckpt("ckpt.pt all NaN", edit_state(lambda s: [v.fill_(float("nan")) for v in s["model"].values()]))
    broken_ckpt("ckpt.pt of another model", lambda p: None, "model.n_embd=64")
    broken_ckpt("ckpt.pt of another optimizer", lambda p: None, "optim=adamw")
    broken_ckpt("resume with a changed seed", lambda p: None, "train.seed=7")
    broken_ckpt("resume changing the denominator", lambda p: None, "optim.denominator=max", "train.resume_allow=[optim.denominator]")
    broken_ckpt("resume on another corpus", lambda p: None, f"data.dir={root / 'bad' / 'data_other'}")
    other = root / "bad" / "data_other"
    shutil.copytree(data, other)
    ids = np.fromfile(other / "train.bin", dtype=np.uint16)
    ids[-50:] = ids[-50:][::-1]
    ids.tofile(other / "train.bin")
    (root / "bad" / "afile").write_text("x")
    train("out_dir under a file", f"train.out_dir={root / 'bad' / 'afile' / 'run'}")

    # prepare_data.py
    src = root / "bad" / "src"
    src.mkdir()
    (src / "empty.txt").write_text("")
    (src / "blank.txt").write_text("  \n\n ")
    (src / "one.txt").write_text("a single paragraph")
    (src / "broken.jsonl").write_text('{"text": "ok"}\n{"text": oops\n')
    (src / "list.jsonl").write_text('["not", "an", "object"]\n')
    (src / "nofield.jsonl").write_text('{"body": "text"}\n{"body": "more"}\n')
    (src / "book.pdf").write_bytes(b"%PDF-1.4")
    (src / "latin1.txt").write_bytes("caf\xe9\n\nbr\xfbl\xe9e".encode("latin-1"))
    (src / "good.txt").write_text("\n\n".join(f"paragraph {i}" for i in range(40)))
    out = root / "bad" / "prep"
    for label, argv in (("files: empty .txt", ["files", "x", str(src / "empty.txt")]),
                        ("files: blank .txt", ["files", "x", str(src / "blank.txt")]),
                        ("files: one paragraph", ["files", "x", str(src / "one.txt")]),
                        ("files: broken .jsonl", ["files", "x", str(src / "broken.jsonl")]),
                        ("files: .jsonl of lists", ["files", "x", str(src / "list.jsonl")]),
                        ("files: .jsonl without the field", ["files", "x", str(src / "nofield.jsonl")]),
                        ("files: a .pdf", ["files", "x", str(src / "book.pdf")]),
                        ("files: not UTF-8", ["files", "x", str(src / "latin1.txt")]),
                        ("files: missing file", ["files", "x", str(src / "nope.txt")]),
                        ("files: --out is a file", ["files", "x", str(src / "good.txt"), "--out", str(src / "good.txt")]),
                        ("corpus: --val-fraction 1.5", ["corpus", "--val-fraction", "1.5"]),
                        ("corpus: missing --corpus-file", ["corpus", "--corpus-file", str(src / "nope.txt")])):
        if "--out" not in argv:
            argv = [*argv, "--out", str(out / str(len(cases)))]
        cases.append((label, ["scripts/prepare_data.py", *argv, "--tokenizer", "byte"], "prepare"))
    return cases


def classify(done: subprocess.CompletedProcess) -> str:
    err = done.stderr.strip()
    if "Traceback" in done.stderr or "HYDRA_FULL_ERROR" in done.stderr:
        return "traceback"
    if done.returncode == 0:
        return "silently accepted"
    errors = [ln for ln in err.splitlines() if ln.startswith("error:") or ": error: " in ln]  # ours, or argparse's
    if done.returncode in (2, 3) and len(errors) == 1:
        return "clean"
    return "other"


def bad_inputs(data: Path, root: Path, workers: int) -> dict:
    cases = bad_input_cases(data, root)

    def run(case):
        label, argv, kind = case
        cmd = [PY, "-m", "sophia_train", *argv] if kind == "train" else [PY, *argv]
        try:
            done = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            return label, "other (timed out)", ""
        return label, classify(done), (done.stderr.strip().splitlines() or [""])[-1][:300]

    results = []
    with ThreadPoolExecutor(workers) as pool:
        for i, res in enumerate(pool.map(run, cases), 1):
            results.append(res)
            if i % 10 == 0 or i == len(cases):
                print(f"  bad inputs: {i}/{len(cases)}", flush=True)
    counts: dict[str, int] = {}
    for _, kind, _ in results:
        counts[kind] = counts.get(kind, 0) + 1
    return {"tried": len(cases), "counts": counts, "not_clean": [r for r in results if r[1] != "clean"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=16)
    ap.add_argument("--signals", type=int, default=6)
    ap.add_argument("--workers", type=int, default=2, help="bad-input cases run this many at a time")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "reliability_attack.md"))
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="attack-") as tmp:
        root = Path(tmp)
        data = prepare_data(root)
        print(f"1. {args.kills} SIGKILL trials", flush=True)
        kills = kill_trials(data, root, args.kills, rng)
        print(f"2. {args.signals} stop-signal trials", flush=True)
        signals = signal_trials(data, root, args.signals, rng)
        print("3. bad inputs", flush=True)
        bad = bad_inputs(data, root, args.workers)
    minutes = (time.perf_counter() - t0) / 60
    lines = [
        "# Reliability attack", "",
        f"{time.strftime('%Y-%m-%d')}, `python bench/reliability_attack.py --kills {args.kills} --signals {args.signals} "
        f"--seed {args.seed}`, CPU ({os.cpu_count()} cores), torch {torch.__version__}, {minutes:.1f} min.", "",
        "| what | result |", "| --- | --- |",
        f"| SIGKILL at random moments (1-2 per run), then resume | {kills['survived']}/{kills['trials']} finished, "
        f"{kills['identical']}/{kills['trials']} bit-identical to the uninterrupted run, {kills['torn_or_nonfinite']} torn or "
        f"non-finite checkpoints |",
        f"| SIGTERM/SIGINT/SIGUSR1 (single, 2-rank DDP and FSDP on gloo) | {signals['saved_and_identical']}/{signals['trials']} "
        f"saved the step, exited as documented, resumed bit-identical |",
        f"| bad inputs | {bad['tried']} tried: " + ", ".join(f"{v} {k}" for k, v in sorted(bad["counts"].items())) + " |",
    ]
    if bad["not_clean"]:
        lines += ["", "Not clean:", "", "| input | outcome | last line of stderr |", "| --- | --- | --- |"]
        lines += [f"| {label} | {kind} | {last.replace('|', '/')} |" for label, kind, last in bad["not_clean"]]
    report = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
