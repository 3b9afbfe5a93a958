#!/bin/bash
# On the GPU machine: unsloth side by side with tuner (issue #26) in two device calls on ONE warm machine.
# The carried wheels (~92 MiB with bitsandbytes) exceed one call's 64 MiB, so group a travels in call 1 and
# group b in call 2; both install into /tmp/tuner_unsloth/site, which the machine keeps only while
# it stays warm (30 s after a call): make call 2 right after call 1 returns. Results and logs in $OUT (default /tmp/gpu_out).
#
#   call 1 (carry .whl_unsloth/a):  bash scripts/gpu_unsloth.sh call1
#       install group a; check the image's versions against it; write the random-init 8B folder (16 GB,
#       /tmp/tuner_unsloth/model); tuner's qlora_8b speed point (2 x 2048, 6 steps) on this machine, for the ratio
#   call 2 (carry .whl_unsloth/b):  bash scripts/gpu_unsloth.sh call2 [BUDGET_S]
#       install group b (refused on a fresh machine: call 1's state is gone); check every requirement
#       against what is installed; import unsloth (one line if it cannot); unsloth's speed point on the
#       same shape; its longest context at 16 and 24 GiB (goal first: tuner's figures, then unsloth's own)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gpu_out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=${TUNER_UNSLOTH_WORK:-/tmp/tuner_unsloth}/site${PYTHONPATH:+:$PYTHONPATH}
run() { python3 scripts/gpu_unsloth.py "$@"; }
speed=(--seq-len 2048 --batch-size 2 --steps 6 --warmup 2)  # tuner's qlora_8b workload, as measured in session 8

case ${1:?usage: gpu_unsloth.sh call1 | call2 [BUDGET_S]} in
  call1)
    run install .whl_unsloth/a || exit 1
    python3 -m benchmarks.wheel_set .whl_unsloth/a --installed | grep -v '^assumed' | tee "$out/wheels_a.txt"
    timeout 240 python3 scripts/gpu_unsloth.py prepare >"$out/prepare.log" 2>&1 || { tail -5 "$out/prepare.log"; exit 1; }
    tail -1 "$out/prepare.log"
    timeout 200 python3 scripts/benchmark.py --workload qlora_8b "${speed[@]}" >"$out/tuner_speed.json" 2>"$out/tuner_speed.log"
    echo "tuner qlora_8b: exit $?"; tail -c 400 "$out/tuner_speed.json" ;;
  call2)
    deadline=$(($(date +%s) + ${2:-560}))
    left() { echo $((deadline - $(date +%s))); }
    run install .whl_unsloth/b --after a || exit 1
    python3 -m benchmarks.wheel_set .whl_unsloth/b --installed | grep -v '^assumed' | tee "$out/wheels_b.txt"
    timeout 150 python3 scripts/gpu_unsloth.py probe --config llama3_1/8B_qlora_single_device "${speed[@]}" \
      >"$out/unsloth_speed.json" 2>"$out/unsloth_speed.log"
    echo "unsloth speed: exit $?"; tail -3 "$out/unsloth_speed.log"; tail -c 600 "$out/unsloth_speed.json"
    # Ranges chosen so that the bisection's second probe is unsloth's published figure when the goal does
    # not fit: 16 GiB: 61,440 (goal; tuner trained it), then 40,960; 24 GiB: 118,784 (goal), then 81,920.
    for job in 16:24576:98304 24:49152:196608; do
      IFS=: read -r cap lo hi <<<"$job"
      t=$(left)
      if [ "$t" -lt 60 ]; then echo "context $cap: skipped, out of time"; continue; fi
      own=$((cap == 16 ? t / 2 : t - 20))
      timeout -k 5 "$t" python3 scripts/gpu_unsloth.py max-context "$cap" --context-range "$lo:$hi" \
        --time-budget "$own" --probe-timeout "$((t - 10))" >"$out/unsloth_context_$cap.json" 2>"$out/unsloth_context_$cap.log"
      echo "context $cap: exit $?"; grep '^probe: ' "$out/unsloth_context_$cap.log" | cut -c1-300
    done ;;
  *) echo "error: unknown step $1. Fix: call1 or call2" >&2; exit 2 ;;
esac
