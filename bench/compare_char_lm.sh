#!/usr/bin/env bash
# char_lm against PyTorch, side by side in one run (docs/benchmarks.md): Axon's char_lm on one
# rank with --threads 1 and 2, then bench/torch_char_lm.py with 1 and 2 threads, same steps,
# model and data. Prints each program's JSON line.
#   bench/compare_char_lm.sh [build-dir] [steps]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
steps=${2:-300}
for t in 1 2; do
  "$build/bin/char_lm" --steps "$steps" --threads "$t" | tail -1 | sed "s/^/axon   threads=$t: /"
done
for t in 1 2; do
  /usr/bin/python3 bench/torch_char_lm.py --steps "$steps" --threads "$t" | tail -1 | sed "s/^/torch  threads=$t: /"
done
