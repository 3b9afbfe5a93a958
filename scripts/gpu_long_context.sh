#!/bin/bash
# On the GPU machine: issue #26's long-context measurements in one call, within BUDGET seconds.
#
#   bash scripts/gpu_long_context.sh BUDGET_S JOB...     # results and logs in $OUT (default /tmp/gpu_out)
#
# Jobs, run in the order given, each with the time left (none starts with less than 30 s left):
#   gpu_tests            the @pytest.mark.gpu tests of tests/training/test_long_context.py (the CUDA path)
#   speed                qlora_8b at 2 x 2048 tokens, 6 steps: checkpoints kept on the GPU, then offloaded
#   context:CAP:LO:HI[:S] --max-context CAP (GiB; 0 = the whole GPU) over multiples of 4096 in LO:HI, goal
#                        first; no probe starts after S seconds (default: the time left)
#   peak:LEN[:LAYERS]    one uncapped step of qlora_8b_r32_all at LEN tokens (peak GPU and host memory,
#                        tokens/s); LAYERS: the 8B shape with that many layers (activations offloaded per
#                        layer do not grow with depth: a short model measures a long sequence's activations)
# Every job writes $OUT/<job>.json and $OUT/<job>.log; max-context prints each probe as it ends.
set -uo pipefail
cd "$(dirname "$0")/.."
budget=${1:?usage: gpu_long_context.sh BUDGET_S JOB...}
shift
out=${OUT:-/tmp/gpu_out}
mkdir -p "$out"
deadline=$(($(date +%s) + budget))
export PYTHONUNBUFFERED=1
left() { echo $((deadline - $(date +%s))); }

for job in "$@"; do
  t=$(left)
  name=${job//:/_}
  if [ "$t" -lt 30 ]; then echo "$name: skipped, out of time" | tee -a "$out/jobs.txt"; continue; fi
  start=$(date +%s)
  case $job in
    gpu_tests)
      timeout -k 5 "$t" python3 -m pytest -q -m gpu tests/training/test_long_context.py >"$out/$name.log" 2>&1 ;;
    speed)
      for offload in False True; do
        timeout -k 5 "$(left)" python3 scripts/benchmark.py --workload qlora_8b --seq-len 2048 --batch-size 2 \
          --steps 6 --warmup 2 enable_activation_offloading=$offload >>"$out/$name.json" 2>>"$out/$name.log"
      done ;;
    context:*)
      IFS=: read -r _ cap lo hi own <<<"$job"
      own=${own:-$t}
      timeout -k 5 "$t" python3 scripts/benchmark.py --workload qlora_8b_r32_all --steps 1 --max-context "$cap" \
        --context-range "$lo:$hi" --context-multiple 4096 --time-budget "$((own < t - 15 ? own : t - 15))" \
        --probe-timeout "$((t - 10))" >"$out/$name.json" 2>"$out/$name.log" ;;
    peak:*)
      IFS=: read -r _ len layers <<<"$job"
      shape=()
      if [ -n "$layers" ]; then
        shape=(model._component_=tuner.models.llama3_1.qlora_llama3_1 model.vocab_size=128256 "model.num_layers=$layers"
          model.num_heads=32 model.num_kv_heads=8 model.embed_dim=4096 model.intermediate_dim=14336)
      fi
      timeout -k 5 "$t" python3 scripts/benchmark.py --workload qlora_8b_r32_all --seq-len "$len" --batch-size 1 \
        --steps 1 --warmup 0 "model.max_seq_len=$len" "${shape[@]}" >"$out/$name.json" 2>"$out/$name.log" ;;
    *) echo "unknown job $job" >&2 ;;
  esac
  echo "$name: exit $? after $(($(date +%s) - start)) s" | tee -a "$out/jobs.txt"
  tail -n 3 "$out/$name.log"
done
