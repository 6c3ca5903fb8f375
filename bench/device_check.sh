#!/usr/bin/env bash
# The whole GPU checklist in one command of at most 9 minutes, from a plain checkout (nothing of the project
# installed). Run `make device-prep` here first: it fills .device/ (hydra-core/omegaconf/antlr4 wheels, the
# GPT-2 corpus, the tiktoken cache), which travels with the working tree (see bench/README.md for the call).
#
#   bash bench/device_check.sh OUT                     # on the GPU machine
#   DEVICE_DRY_RUN=1 bash bench/device_check.sh OUT    # rehearsal on CPU: nano sizes, no compile, Triton interpreter
#
# Steps, most valuable first; each has its own time limit (cut to what is left of DEVICE_BUDGET_S), and a step
# that fails or times out does not stop the others. OUT receives at most 8 plain files: summary.md (every number,
# the command, the versions, each step's exit code and seconds), facts.json, tests.txt, update_fp32.txt,
# step_time.txt, train.txt, train_metrics.jsonl, update_bf16.txt.
# Environment: PYTHON (default python3), DEVICE_CARRY (default .device), DEVICE_BUDGET_S (default 530),
# DEVICE_STEPS (default "facts tests update_fp32 step_time train update_bf16").
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:?usage: bash bench/device_check.sh OUT}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
cd "$REPO" || exit 1
PY=${PYTHON:-python3}
DRY=${DEVICE_DRY_RUN:-0}
CARRY=${DEVICE_CARRY:-$REPO/.device}
BUDGET=${DEVICE_BUDGET_S:-530}
STEPS=${DEVICE_STEPS:-facts tests update_fp32 step_time train update_bf16}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/device_check.XXXXXX")
START=$SECONDS
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1

# The wheels the image lacks, unpacked into a private site folder (pure-Python wheels: unpacking is installing).
SITE=$WORK/site
mkdir -p "$SITE"
if compgen -G "$CARRY/wheels/*.whl" >/dev/null; then
  for whl in "$CARRY"/wheels/*.whl; do "$PY" -m zipfile -e "$whl" "$SITE" || echo "could not unpack $whl"; done
else
  echo "no wheels in $CARRY/wheels: run 'make device-prep' before the device call (hydra-core is needed by the trainer)"
fi
export PYTHONPATH="$REPO:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export SOPHIA_DATA_DIR=$CARRY/data
[ -d "$CARRY/tiktoken_cache" ] && export TIKTOKEN_CACHE_DIR=$CARRY/tiktoken_cache

if [ "$DRY" = 1 ]; then  # the same code paths at CPU sizes
  export TRITON_INTERPRET=1 CUDA_VISIBLE_DEVICES=""
  DEV=(--device cpu --interpret); SIZES=(1); REPS=1
  MODEL=(+model=nano train.batch_size=4 train.compile=false); BENCH=(--steps 2 --rounds 1 --warmup 2)
  TRAIN=(train.max_steps=12 train.log_interval=4 train.eval_interval=12 train.eval_iters=2)
  TEST_ENV=(); FACTS=(--dry-run); TESTS=(-k "trainer and sophia_g")  # the suite runs the rest in the interpreter
else
  DEV=(); SIZES=(124 355); REPS=5
  MODEL=(+model=gpt2_small train.batch_size=16 train.grad_accum=1 train.compile=true); BENCH=(--steps 30 --rounds 3 --warmup 12)
  TRAIN=(train.max_steps=140 train.log_interval=20 train.eval_interval=1000 train.eval_iters=5)
  TEST_ENV=(SOPHIA_TEST_DEVICE=cuda); FACTS=(); TESTS=()
fi

step() {  # step NAME LIMIT_S OUTFILE CMD...: run CMD under its limit, output to OUTFILE, result to steps.tsv
  local name=$1 limit=$2 file=$3; shift 3
  local left=$((BUDGET - (SECONDS - START) - 10))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 5 ]; then
    printf '%s\tskipped\t0\t0\n' "$name" >>"$WORK/steps.tsv"; echo "=== $name: skipped (budget spent)"; return
  fi
  echo "=== $name (limit ${limit} s): $*"
  local t0=$SECONDS
  timeout -k 5 "$limit" "$@" >"$file" 2>&1
  local rc=$?
  tail -n 4 "$file"
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" "$limit" >>"$WORK/steps.tsv"
  echo "=== $name: exit $rc after $((SECONDS - t0)) s"
}

for s in $STEPS; do
  case $s in
    facts) step facts 60 "$WORK/facts.log" "$PY" bench/device_facts.py "${FACTS[@]}" --out "$OUT/facts.json" ;;
    tests) step tests 120 "$OUT/tests.txt" env "${TEST_ENV[@]}" "$PY" -m pytest -q -p no:cacheprovider -rfE \
             tests/unit/optim/test_fused_sophia.py "${TESTS[@]}" ;;
    update_fp32) step update_fp32 90 "$OUT/update_fp32.txt" "$PY" bench/bench_sophia_update.py "${DEV[@]}" \
                   --sizes "${SIZES[@]}" --reps "$REPS" --e2e ;;
    step_time) step step_time 150 "$OUT/step_time.txt" "$PY" bench/bench_step_time.py "${MODEL[@]}" data=corpus_gpt2 \
                 --optims adamw sophia_g sophia_g+nognb "${BENCH[@]}" ;;
    train) step train 110 "$OUT/train.txt" "$PY" -m sophia_train "${MODEL[@]}" optim=sophia_g data=corpus_gpt2 \
             "${TRAIN[@]}" train.warmup_steps=10 train.ckpt_interval=0 train.plot=false "train.out_dir=$WORK/train" \
             train.overwrite=true
           cp "$WORK/train/metrics.jsonl" "$OUT/train_metrics.jsonl" 2>/dev/null ;;
    update_bf16) step update_bf16 60 "$OUT/update_bf16.txt" "$PY" bench/bench_sophia_update.py "${DEV[@]}" \
                   --sizes "${SIZES[@]}" --reps "$REPS" --dtype bfloat16 ;;
    *) echo "unknown step $s (known: facts tests update_fp32 step_time train update_bf16)" ;;
  esac
done

"$PY" bench/device_summary.py "$OUT" --steps "$WORK/steps.tsv" --command "${DEVICE_DRY_RUN:+DEVICE_DRY_RUN=$DRY }bash bench/device_check.sh OUT" \
  --seconds "$((SECONDS - START))" || echo "the summary failed; the raw files are in $OUT"
rm -rf "$WORK"
echo "device check done in $((SECONDS - START)) s; $(find "$OUT" -type f | wc -l) files in $OUT"
