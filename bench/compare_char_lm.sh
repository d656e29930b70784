#!/usr/bin/env bash
# char_lm against PyTorch, side by side in one run (docs/benchmarks.md): Axon's char_lm on one
# rank and bench/torch_char_lm.py, each with 1 and 2 threads, same steps, model and data,
# alternating, `repeat` times. Prints one line per run: the framework, the threads, its JSON.
#   bench/compare_char_lm.sh [build-dir] [steps] [repeat] [model: transformer|lstm]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
steps=${2:-300}
repeat=${3:-1}
model=${4:-transformer}
for ((r = 1; r <= repeat; r++)); do
  for t in 1 2; do
    echo "axon  threads=$t $("$build/bin/char_lm" --model "$model" --steps "$steps" --threads "$t" | tail -1)"
    echo "torch threads=$t $(OPENBLAS_NUM_THREADS=$t /usr/bin/python3 bench/torch_char_lm.py --model "$model" --steps "$steps" --threads "$t" | tail -1)"
  done
done
