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
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bad_input_cases import bad_input_cases  # noqa: E402  (bench/ is on the path when this script runs)

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


# --- 3. bad inputs (the cases: bad_input_cases.py) ----------------------------------------------------
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
    cases = bad_input_cases(data, root, base_args, cli)

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
