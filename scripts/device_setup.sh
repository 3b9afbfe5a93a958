#!/bin/bash
# On the GPU machine (no network): install the wheels carried in .whl/ and print the export line.
#
#   eval "$(bash scripts/device_setup.sh)"
#   python3 scripts/benchmark.py --workload lora_1b --compare-torchtune [--compare-hf]
#
# tuner's own wheels (omegaconf, typer, bitsandbytes, ...) go to /tmp/site ($SITE), on PYTHONPATH.
# torchtune 0.6.1 and what it needs beyond the GPU image (torchao 0.11.0, datasets, dill,
# multiprocess, torchdata, kagglehub) go to /tmp/site_tt ($SITE_TT), on TORCHTUNE_PYTHONPATH, which
# scripts/benchmark.py puts in front of PYTHONPATH for the torchtune subprocess only: with torchao
# 0.11 importable in the benchmark process, peft refuses to build LoRA layers (--compare-hf).
# The wheels are for Python 3.12 on manylinux x86_64 (docs/benchmarks.md, "How to run").
set -euo pipefail
cd "$(dirname "$0")/.."
site=${SITE:-/tmp/site}
site_tt=${SITE_TT:-/tmp/site_tt}
shopt -s nullglob
own=() tt=()
for w in .whl/*.whl; do
  case "$(basename "$w")" in
    torchtune-*|torchao-*|datasets-*|dill-*|multiprocess-*|torchdata-*|kagglehub-*) tt+=("$w") ;;
    *) own+=("$w") ;;
  esac
done
if [ ${#tt[@]} -eq 0 ]; then
  echo "error: no torchtune wheels in $(pwd)/.whl; download them first (docs/benchmarks.md, How to run)" >&2
  exit 1
fi
install() { python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$@" >&2; }
[ ${#own[@]} -eq 0 ] || install "$site" "${own[@]}"
install "$site_tt" "${tt[@]}"
echo "export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH} TORCHTUNE_PYTHONPATH=$site_tt"
