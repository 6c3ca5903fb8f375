"""Downstream evaluation with EleutherAI's lm-evaluation-harness on a run's exported model.

``sophia-evaluate RUN --preset sophia_fig5`` exports the run as a Hugging Face GPT-2 (``RUN/hf``),
runs the harness on that folder and writes ``RUN/eval/<label>.json`` and ``.md``. The ``sophia_fig5``
preset is the Sophia paper's few-shot SuperGLUE setting (App. C.3, Fig. 5): BoolQ, CB, COPA and RTE,
2-shot, accuracy on the validation split averaged over 5 draws of the exemplars (the harness's default
prompts, not the paper's Fig. 11 wording). ``--local-task FILE.jsonl`` defines a multiple-choice task
from a local file (one ``{"query": ..., "choices": [...], "gold": i}`` per line), so nothing needs the
network; ``--local-task example`` is a 16-question cloze shipped with the package (``example_task.jsonl``), a
check that the pipeline works offline rather than a benchmark. ``--compare RUN ...`` tabulates and plots several runs' results on the same tasks.
Needs ``pip install 'sophia_train[eval]'``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from pathlib import Path
from typing import Any

from sophia_train.atomic import atomic_savefig, atomic_write_text
from sophia_train.checkpoint.load_run import checkpoint_file, load_run, resolve_device
from sophia_train.errors import ConfigError
from sophia_train.hints import install_command
from sophia_train.interop.hf import export_hf

PRESETS: dict[str, dict[str, Any]] = {
    "sophia_fig5": {"tasks": ["boolq", "cb", "copa", "sglue_rte"], "num_fewshot": 2, "fewshot_seeds": 5},
}
EVAL_DIR = "eval"
#: ``--local-task example``: the cloze task shipped with the package.
EXAMPLE_TASK = Path(__file__).resolve().parent / "example_task.jsonl"


def local_task(jsonl: str | os.PathLike, include_dir: Path) -> str:
    """Write an lm-eval task config for a local multiple-choice JSONL file into ``include_dir``; returns the task name."""
    path = EXAMPLE_TASK if str(jsonl) == "example" else Path(jsonl).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"--local-task {jsonl}: no such file.")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            ok = isinstance(row["query"], str) and isinstance(row["choices"], list) and 0 <= int(row["gold"]) < len(row["choices"])
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            raise ConfigError(f"--local-task {path}, line {n}: expected {{\"query\": str, \"choices\": [str, ...], \"gold\": index}}.")
        rows.append(row)
    if not rows:
        raise ConfigError(f"--local-task {path} holds no examples.")
    name = "local_" + "".join(c if c.isalnum() else "_" for c in path.stem)
    include_dir.mkdir(parents=True, exist_ok=True)
    task = {
        "task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(path)}},
        "test_split": "test", "output_type": "multiple_choice", "doc_to_text": "{{query}}", "doc_to_choice": "{{choices}}",
        "doc_to_target": "{{gold}}", "target_delimiter": "",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                        {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}],
    }
    atomic_write_text(include_dir / f"{name}.yaml", json.dumps(task, indent=1))  # JSON is YAML
    return name


def summarize(per_seed: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """``{task: {metric: mean, metric_sd: sd over few-shot seeds, metric_stderr: harness stderr (one seed)}}``."""
    out: dict[str, dict[str, float]] = {}
    for task in per_seed[0]:
        row: dict[str, float] = {}
        for key, value in per_seed[0][task].items():
            if not isinstance(value, (int, float)) or "," not in key or "stderr" in key:  # "acc,none": metric,filter
                continue
            metric = key.split(",")[0]
            values = [float(r[task][key]) for r in per_seed]
            row[metric] = statistics.fmean(values)
            if len(values) > 1:
                row[f"{metric}_sd"] = statistics.stdev(values)
            stderr = per_seed[0][task].get(key.replace(",", "_stderr,", 1))
            if isinstance(stderr, (int, float)) and math.isfinite(stderr):
                row[f"{metric}_stderr"] = float(stderr)
        out[task] = row
    return out


def markdown_table(label: str, results: dict[str, dict[str, float]], meta: dict[str, Any]) -> str:
    """The results as a Markdown table (one row per task and metric)."""
    lines = [f"# {label}", "", f"{meta['run']} (step {meta['step']}, val loss {meta['val_loss']:.4f}); "
             f"{meta['num_fewshot']}-shot, {meta['fewshot_seeds']} exemplar draw(s), limit {meta['limit']}", "",
             "| task | metric | value | sd over draws | stderr (harness) |", "| --- | --- | --- | --- | --- |"]
    for task, row in results.items():
        for metric in [k for k in row if not k.endswith(("_sd", "_stderr"))]:
            sd, se = row.get(f"{metric}_sd"), row.get(f"{metric}_stderr")
            lines.append(f"| {task} | {metric} | {row[metric]:.4f} | {'' if sd is None else f'{sd:.4f}'} | "
                         f"{'' if se is None else f'{se:.4f}'} |")
    return "\n".join(lines) + "\n"


def evaluate_run(run: str | os.PathLike, tasks: list[str], num_fewshot: int = 0, *, limit: int | float | None = None,
                 fewshot_seeds: int = 1, batch_size: int = 8, device: str = "auto", local_tasks: list[str] = (),
                 include_path: list[str] = (), label: str | None = None) -> Path:
    """Export ``run``, run the harness on the export, write ``eval/<label>.json`` and ``.md``; returns the JSON path."""
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError as e:
        need = install_command("eval", "lm-eval[hf] transformers safetensors")
        raise ConfigError(f"evaluation needs lm-evaluation-harness: {need} ({e}).") from None

    ckpt = checkpoint_file(run)
    folder = ckpt.parent
    loaded = load_run(ckpt)
    hf_dir = export_hf(ckpt, folder / ("hf" if ckpt.stem == "ckpt" else f"hf_{ckpt.stem}"))
    include_dir = folder / EVAL_DIR / "tasks"
    tasks = [*tasks, *(local_task(p, include_dir) for p in local_tasks)]
    if not tasks:
        raise ConfigError("no tasks: give --tasks, --preset or --local-task.")
    manager = TaskManager(include_path=[str(include_dir), *include_path] if (local_tasks or include_path) else None)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise ConfigError(f"unknown lm-eval task(s) {', '.join(unknown)}; list them with `lm-eval ls tasks`.")
    spec_name = loaded.tokenizer_spec.get("name")
    prefix = None if spec_name == "gpt2" else 10  # no end-of-text token: a newline starts the context (byte and char vocabularies)
    if spec_name == "char":
        prefix = loaded.tokenizer_spec["chars"].index("\n") if "\n" in loaded.tokenizer_spec["chars"] else 0
    lm = HFLM(pretrained=str(hf_dir), tokenizer=str(hf_dir), device=resolve_device(device), batch_size=batch_size,
              max_length=loaded.model.config.block_size, prefix_token_id=prefix, dtype="float32")
    per_seed = []
    for seed in range(fewshot_seeds):
        try:
            res = lm_eval.simple_evaluate(model=lm, tasks=tasks, num_fewshot=num_fewshot, limit=limit, task_manager=manager,
                                          fewshot_random_seed=seed, log_samples=False, bootstrap_iters=1000)
        except Exception as e:
            if _hub_unreachable(e):
                raise ConfigError(_offline_message(tasks, e)) from None
            raise
        per_seed.append(res["results"])
    results = summarize(per_seed)
    label = label or f"{'_'.join(tasks)[:60]}-{num_fewshot}shot" + ("" if ckpt.stem == "ckpt" else f"-{ckpt.stem}")
    meta = {"run": str(folder), "checkpoint": str(ckpt), "step": loaded.step, "val_loss": loaded.val_loss,
            "optim": loaded.config["optim"]["name"], "tasks": tasks, "num_fewshot": num_fewshot,
            "fewshot_seeds": fewshot_seeds, "limit": limit, "lm_eval_version": getattr(lm_eval, "__version__", "?")}
    out = folder / EVAL_DIR / f"{label}.json"
    atomic_write_text(out, json.dumps({"meta": meta, "results": results, "per_seed": per_seed}, indent=2, default=str) + "\n")
    atomic_write_text(out.with_suffix(".md"), markdown_table(label, results, meta))
    return out


def _hub_unreachable(e: BaseException) -> bool:
    """Whether ``e`` (or what caused it) is the Hugging Face Hub being out of reach (no network, offline mode)."""
    while e is not None:
        name = type(e).__name__
        if isinstance(e, ConnectionError) or name in ("LocalEntryNotFoundError", "OfflineModeIsEnabled", "ConnectTimeout", "ConnectionError"):
            return True
        e = e.__cause__ or e.__context__
    return False


def _offline_message(tasks: list[str], e: BaseException) -> str:
    return (f"the Hugging Face Hub is unreachable ({type(e).__name__}: {str(e)[:200]}), and lm-eval downloads each task's "
            f"dataset from it on first use ({', '.join(tasks)}). Offline, evaluate on a local file instead: "
            f"`--local-task example` (a 16-question cloze shipped with the package) or `--local-task FILE.jsonl` with one "
            f'{{"query": ..., "choices": [...], "gold": i}} per line; or run once where the Hub is reachable, so the datasets '
            f"land in the Hugging Face cache (HF_DATASETS_CACHE), then set HF_DATASETS_OFFLINE=1 here.")


def compare(result_files: list[str | os.PathLike], out: str | os.PathLike, metric: str = "acc") -> tuple[Path, Path]:
    """Table (Markdown) and grouped bar plot (PNG) of several runs' results on their common tasks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loaded = []
    for f in result_files:
        p = Path(f)
        if p.is_dir():  # a run folder: its newest result
            found = sorted((p / EVAL_DIR).glob("*.json"), key=lambda q: q.stat().st_mtime)
            if not found:
                raise ConfigError(f"{p} has no evaluation results under {EVAL_DIR}/; run sophia-evaluate on it first.")
            p = found[-1]
        loaded.append(json.loads(p.read_text()))
    tasks = [t for t in loaded[0]["results"] if all(t in r["results"] for r in loaded)]
    if not tasks:
        raise ConfigError("the results share no task.")
    names = [f"{r['meta']['optim']} ({Path(r['meta']['run']).name})" for r in loaded]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["| run | val loss | " + " | ".join(tasks) + " |", "| --- | --- | " + " | ".join("---" for _ in tasks) + " |"]
    for name, r in zip(names, loaded):
        cells = []
        for t in tasks:
            v, sd = r["results"][t].get(metric, math.nan), r["results"][t].get(f"{metric}_sd")
            cells.append(f"{v:.4f}" + (f" ± {sd:.4f}" if sd is not None else ""))
        lines.append(f"| {name} | {r['meta']['val_loss']:.4f} | " + " | ".join(cells) + " |")
    table = out / "eval_comparison.md"
    atomic_write_text(table, f"{metric} per task (mean ± sd over exemplar draws)\n\n" + "\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(tasks)), 3.6))
    width = 0.8 / len(loaded)
    for i, (name, r) in enumerate(zip(names, loaded)):
        vals = [r["results"][t].get(metric, math.nan) for t in tasks]
        errs = [r["results"][t].get(f"{metric}_sd", 0.0) for t in tasks]
        ax.bar([j + i * width for j in range(len(tasks))], vals, width, yerr=errs, label=name, capsize=2)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(tasks))], tasks)
    ax.set_ylabel(metric)
    ax.legend(fontsize=8)
    fig.tight_layout()
    png = out / "eval_comparison.png"
    atomic_savefig(fig, png, dpi=120)
    plt.close(fig)
    return table, png


def main(argv: list[str] | None = None) -> None:
    """Command line of ``scripts/evaluate.py`` / ``sophia-evaluate``."""
    ap = argparse.ArgumentParser(description="Evaluate a run with lm-evaluation-harness (on its Hugging Face export), or compare runs.")
    ap.add_argument("runs", nargs="+", help="run folder(s) or checkpoint file(s); with --compare: run folders or result JSON files")
    ap.add_argument("--preset", choices=sorted(PRESETS), help="sophia_fig5: BoolQ, CB, COPA, RTE, 2-shot, 5 exemplar draws (paper Fig. 5)")
    ap.add_argument("--tasks", default="", help="comma-separated lm-eval task names")
    ap.add_argument("--local-task", action="append", default=[],
                    help="a JSONL file of {query, choices, gold} rows, or `example` (the shipped cloze); repeatable")
    ap.add_argument("--include-path", action="append", default=[], help="a folder of extra lm-eval task YAMLs (repeatable)")
    ap.add_argument("--num-fewshot", type=int, default=None)
    ap.add_argument("--fewshot-seeds", type=int, default=None, help="draws of the few-shot exemplars to average over")
    ap.add_argument("--limit", type=float, default=None, help="examples per task (a fraction when < 1); for quick checks")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--compare", metavar="OUT_DIR", help="tabulate and plot the runs' results into OUT_DIR instead of evaluating")
    args = ap.parse_args(argv)
    try:
        if args.compare:
            table, png = compare(args.runs, args.compare)
            print(table.read_text())
            print(f"wrote {table} and {png}")
            return
        preset = PRESETS.get(args.preset or "", {})
        tasks = [*preset.get("tasks", []), *(t for t in args.tasks.split(",") if t)]
        shots = args.num_fewshot if args.num_fewshot is not None else preset.get("num_fewshot", 0)
        seeds = args.fewshot_seeds or preset.get("fewshot_seeds", 1)
        limit = int(args.limit) if args.limit is not None and args.limit >= 1 else args.limit
        for run in args.runs:
            out = evaluate_run(run, tasks, shots, limit=limit, fewshot_seeds=seeds, batch_size=args.batch_size, device=args.device,
                               local_tasks=args.local_task, include_path=args.include_path, label=args.preset)
            print(out.with_suffix(".md").read_text())
            print(f"wrote {out} and {out.with_suffix('.md')}")
    except ConfigError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
