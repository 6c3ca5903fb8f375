#!/usr/bin/env python
"""``summary.md`` of a ``bench/device_check.sh`` run: every number of its raw files against its goal, the
command, the versions, and each step's exit code and seconds. Reads only the standard library.

    python bench/device_summary.py OUT --steps steps.tsv --command "bash bench/device_check.sh OUT" --seconds 512
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

GOAL_COPY, GOAL_FOREACH = 0.85, 1.5  # fused update: share of copy bandwidth; speed-up over foreach


def table_rows(path: Path) -> list[list[str]]:
    """The cells of every markdown table row of ``path`` after its header separator."""
    if not path.is_file():
        return []
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in path.read_text().splitlines()
            if line.startswith("| ") and not line.startswith("| ---")]
    return rows[1:] if rows and rows[0][0] == "params" else rows


def steps_section(steps: Path) -> list[str]:
    lines = ["| step | exit | seconds | limit |", "| --- | --- | --- | --- |"]
    for line in steps.read_text().splitlines() if steps.is_file() else []:
        name, rc, secs, limit = (line.split("\t") + ["", "", ""])[:4]
        note = {"0": "0 (ok)", "124": "124 (timed out)", "137": "137 (killed)", "skipped": "skipped (budget)"}.get(rc, rc)
        lines.append(f"| {name} | {note} | {secs} | {limit} |")
    return lines


def facts_section(facts: dict) -> list[str]:
    peak = facts.get("datasheet_bf16_tflops")
    measured = facts.get("matmul_bf16_tflops")
    share = f" ({measured / peak:.0%} of the datasheet's {peak:.0f})" if peak and measured else ""
    return [f"- device: {facts.get('device')}; {facts.get('memory_gib', '?')} GiB, {facts.get('sms', '?')} SMs, "
            f"{facts.get('capability', '')}",
            f"- versions: Python {facts.get('python')}, torch {facts.get('torch')} (CUDA {facts.get('cuda')}), "
            f"Triton {facts.get('triton')}; nvidia-smi: {facts.get('nvidia_smi', 'n/a')}",
            f"- device copy: {facts.get('copy_gbs')} GB/s (read + write, {facts.get('copy_bytes', 0) / 2**30:.3g} GiB copied)",
            f"- bf16 matmul {facts.get('matmul_n')}^3: {measured} TFLOP/s{share}"]


def update_section(path: Path, title: str) -> list[str]:
    rows = table_rows(path)
    if not rows:
        return [f"- {title}: no table (see {path.name})"]
    out = []
    for size in dict.fromkeys(r[0] for r in rows):
        mine = {r[1]: r for r in rows if r[0] == size}
        fused, foreach = mine.get("sophia fused (triton)"), mine.get("sophia foreach")
        if fused and foreach:
            speedup = float(foreach[3]) / float(fused[3])
            pct = fused[7] or "n/a"
            ok_copy = "met" if pct.endswith("%") and float(pct[:-1]) / 100 >= GOAL_COPY else "not met"
            out.append(f"- {title} {size}: fused {fused[3]} ms ({fused[4]} GB/s, {pct} of copy; goal >= 85 %: {ok_copy}), "
                       f"foreach {foreach[3]} ms ({foreach[2]} state): fused {speedup:.2f}x "
                       f"(goal >= 1.5x: {'met' if speedup >= GOAL_FOREACH else 'not met'})")
        e2e = [r for r in rows if r[0] == size and r[1].startswith("end-to-end")]
        if e2e:
            out.append(f"- {title} {size}: {e2e[0][1]} {e2e[0][3]} ms; {e2e[0][-1]}")
    return out


def step_time_section(path: Path) -> list[str]:
    if not path.is_file():
        return ["- no step-time output"]
    text = path.read_text()
    out = [f"    {line}" for line in text.splitlines()
           if re.match(r"^(optimizer|adamw|sophia\S*|lion|muon)\s", line)]
    out += [f"- {line}" for line in text.splitlines() if line.startswith(("GNB share", "device "))]
    return out or [f"- step time: no table (see {path.name})"]


def train_section(metrics: Path, facts: dict) -> list[str]:
    if not metrics.is_file():
        return ["- no training metrics"]
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    train = [r for r in rows if r.get("kind") == "train"]
    timed = [r for r in train if "compile_s" not in r and r.get("tokens_per_s") == r.get("tokens_per_s")]
    compile_s = next((r["compile_s"] for r in train if "compile_s" in r), None)
    if not timed:
        return [f"- training: {len(train)} logged windows, none after the compile step"]
    tok_s = statistics.mean(r["tokens_per_s"] for r in timed)
    line = f"- training (sophia_g, windows after the compile step: {len(timed)}): {tok_s:,.0f} tokens/s"
    mfus = [r["mfu"] for r in timed if "mfu" in r]
    if mfus:
        mfu = statistics.mean(mfus)
        peak, ceiling = facts.get("datasheet_bf16_tflops"), facts.get("matmul_bf16_tflops")
        vs = f", {mfu * peak / ceiling:.1%} of the measured matmul ceiling" if peak and ceiling else ""
        line += f"; MFU {mfu:.1%} of the datasheet peak{vs}"
    if compile_s is not None:
        line += f"; first step (compile) {compile_s:.1f} s, not counted"
    last = train[-1]
    return [line, f"- final logged train loss {last.get('loss', float('nan')):.4f} at step {last.get('step')}"]


def tests_section(path: Path) -> list[str]:
    if not path.is_file():
        return ["- tests: no output"]
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    verdict = next((line for line in reversed(lines) if re.search(r"\d+ (passed|failed|error)", line)), "no pytest summary")
    failed = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    return [f"- fused-kernel tests: {verdict.strip('= ')}", *[f"  - {line}" for line in failed[:12]]]


def summary(out: Path, steps: Path, command: str, seconds: int) -> str:
    """The markdown text of summary.md."""
    facts_path = out / "facts.json"
    facts = json.loads(facts_path.read_text()) if facts_path.is_file() else {}
    dry = " (DRY RUN on CPU: code paths only, no real figures)" if facts.get("dry_run") else ""
    parts = [f"# Device check {facts.get('date', '')}{dry}", "", f"Command: `{command}` ({seconds} s wall)", "",
             "## Steps", *steps_section(steps), "", "## Device and ceilings", *(facts_section(facts) if facts else ["- no facts.json"]),
             "", "## Fused kernels", *tests_section(out / "tests.txt"), "",
             "## Sophia update (goals: fused >= 85 % of copy bandwidth, >= 1.5x foreach)",
             *update_section(out / "update_fp32.txt", "fp32"), *update_section(out / "update_bf16.txt", "bf16"), "",
             "## Step time Sophia-G vs AdamW (goal: overhead <= GNB share + 1 %)", *step_time_section(out / "step_time.txt"), "",
             "## Training throughput (compile step excluded)", *train_section(out / "train_metrics.jsonl", facts), ""]
    return "\n".join(parts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--steps", type=Path, required=True, help="the step log (name, exit code, seconds, limit per line)")
    ap.add_argument("--command", default="bash bench/device_check.sh OUT")
    ap.add_argument("--seconds", type=int, default=0)
    args = ap.parse_args()
    text = summary(args.out, args.steps, args.command, args.seconds)
    (args.out / "summary.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
