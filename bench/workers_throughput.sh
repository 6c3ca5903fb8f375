#!/usr/bin/env bash
# Should benchmark workers be N one-thread processes or one N-thread process? Times the same 200-step
# tiny run (a) alone with 2 threads, (b) alone with 1 thread, (c) twice side by side with 1 thread each.
# Throughput of (c) over (a) = 2 * t(a) / t(c); t(c) ~ t(b) means a side-by-side run is not slowed.
# Run on an otherwise idle machine:  bash bench/workers_throughput.sh [PYTHON]
set -euo pipefail
PY=${1:-.venv/bin/python}
OUT=$(mktemp -d)
run() {
  "$PY" -m sophia_train +model=tiny optim=adamw train.max_steps=200 train.batch_size=8 train.seq_len=64 \
    train.eval_iters=8 train.eval_interval=200 train.log_interval=100 train.plot=false train.threads="$1" \
    train.out_dir="$OUT/$2" train.overwrite=true > "$OUT/$2.log" 2>&1
}
secs() { local t0; t0=$(date +%s.%N); "$@"; echo "$(date +%s.%N) - $t0" | bc; }
a=$(secs run 2 a)
b=$(secs run 1 b)
c=$(secs bash -c "$(declare -f run); PY=$PY OUT=$OUT; run 1 c & run 1 d; wait")
echo "2 threads alone:            ${a} s"
echo "1 thread alone:             ${b} s"
echo "two 1-thread side by side:  ${c} s"
echo "throughput, two workers / one 2-thread process: $(echo "scale=2; 2 * $a / $c" | bc)x"
rm -rf "$OUT"
