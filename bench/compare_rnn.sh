#!/bin/bash
# lstm forward + backward, Axon (bench_rnn) against PyTorch (torch_lstm_step.py), side by side in
# one run: for each thread count and repeat, Axon then PyTorch on the same shape. Appends the JSON
# lines to bench/results/rnn_steps-<date>.jsonl and prints them (docs/benchmarks.md).
#
#   bench/compare_rnn.sh [--build build-cpu] [--threads "1 2"] [--repeat 3] [--steps 20]
#                        [--size "--batch 32 --time 64 --features 64 --units 256"]  (the default shape)
set -euo pipefail
build=build-cpu threads="1 2" repeat=3 steps=20 size=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --repeat) repeat=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    *) echo "compare_rnn.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/bench/results/rnn_steps-$(date -u +%F).jsonl"
mkdir -p "$root/bench/results"
for r in $(seq "$repeat"); do
  for t in $threads; do
    "$root/$build/bin/bench_rnn" --threads "$t" --steps "$steps" $size --static "$([[ $r == 1 ]] && echo 1 || echo 0)" | tee -a "$out"
    /usr/bin/python3 "$root/bench/torch_lstm_step.py" --threads "$t" --steps "$steps" $size | tee -a "$out"
  done
done
