#!/usr/bin/env bash
# bench/README.md's checklist for a session that is lent a GPU, in one command.
#   bash bench/gpu_checklist.sh OUT_DIR
# Needs torch with CUDA, triton, hydra-core (and a prepared data/corpus_gpt2 for the trainer runs).
# Each step writes its own file under OUT_DIR; a failing step is reported and the next one still runs.
set -uo pipefail
OUT=${1:?usage: bash bench/gpu_checklist.sh OUT_DIR}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
STEPS=${CHECKLIST_STEPS:-tests fp32 bf16 step mfu}

step() {  # step NAME CMD...: run CMD, tee its output to OUT/NAME.txt, time it
  local name=$1; shift
  echo "=== $name: $*"
  local t0=$SECONDS
  "$@" 2>&1 | tee "$OUT/$name.txt"
  echo "=== $name: exit ${PIPESTATUS[0]} after $((SECONDS - t0)) s"
}

{
  date -u +%F
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
} 2>&1 | tee "$OUT/device.txt"

for s in $STEPS; do
  case $s in
    tests) step tests env SOPHIA_TEST_DEVICE=cuda python3 -m pytest -q -p no:cacheprovider tests/unit/optim/test_fused_sophia.py ;;
    fp32) step update_fp32 python3 bench/bench_sophia_update.py --sizes 124 355 --e2e ;;
    bf16) step update_bf16 python3 bench/bench_sophia_update.py --sizes 124 355 --dtype bfloat16 ;;
    step) step step_time python3 scripts/bench_step_time.py +model=gpt2_small data=corpus_gpt2 train.compile=true \
            train.batch_size=16 train.grad_accum=1 --optims adamw sophia_g --steps 40 --rounds 3 --warmup 12 ;;
    mfu) for o in adamw sophia_g; do
           step "mfu_$o" python3 -m sophia_train +model=gpt2_small "optim=$o" data=corpus_gpt2 train.compile=true \
             train.batch_size=16 train.grad_accum=2 train.max_steps=120 train.warmup_steps=10 train.log_interval=20 \
             train.eval_interval=1000 train.eval_iters=5 train.ckpt_interval=0 train.plot=false \
             "train.out_dir=/tmp/mfu_$o" train.overwrite=true
           cp "/tmp/mfu_$o/metrics.jsonl" "$OUT/mfu_$o.jsonl" 2>/dev/null
         done ;;
  esac
done
