#!/usr/bin/env bash
# Quick start, part 1: installs what is missing, builds Release in build/, and trains the MLP on
# Fashion-MNIST for one epoch on 2 MPI ranks through Axon's launcher. Prints the test accuracy.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
scripts/build.sh build -- fashion_mnist axonrun readme_model

echo
build/bin/readme_model
echo
# Per-rank batch 128 (global 256), as in PyTorch DDP; one BLAS thread per rank on this 2-rank run.
out=$(build/bin/axonrun -n 2 build/bin/fashion_mnist --model mlp --epochs 1 --batch-size 128 --optimizer adam --threads 1 "$@")
echo "$out"
accuracy=$(tail -n 1 <<<"$out" | sed -n 's/.*"test_accuracy":\([0-9.eE+-]*\).*/\1/p')
echo
echo "axon demo: test accuracy after 1 epoch on 2 ranks: ${accuracy:-unknown}"
