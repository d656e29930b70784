#!/usr/bin/env bash
# Where the GPU time of a training step goes: runs fashion_mnist on synthetic data under Nsight
# Systems (nsys, when the machine has it) and prints the per-kernel summary (cuda_gpu_kern_sum),
# kernels inside CUDA graphs included. Run after scripts/gpu-check.sh (it uses build-gpu/).
#
# Usage: scripts/gpu-profile.sh [fashion_mnist flags...]   (default: mlp_big, batch 1024, --cuda-graph)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
nsys=$(command -v nsys || ls -1 /usr/local/cuda/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys \
  /usr/local/cuda/nsight-systems-*/bin/nsys 2>/dev/null | head -n 1)
[[ -n $nsys ]] || { echo "gpu-profile: nsys (Nsight Systems) not found: nothing to profile with"; exit 0; }
args=("$@")
((${#args[@]})) || args=(--model mlp_big --batch-size 1024 --cuda-graph)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
ld="build-gpu/deps-lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "gpu-profile: $nsys, fashion_mnist --synthetic 20000 --device cuda --no-progress ${args[*]}"
LD_LIBRARY_PATH=$ld timeout 120 "$nsys" profile -o "$out/prof" --force-overwrite true --cuda-graph-trace=node \
  build-gpu/bin/fashion_mnist --synthetic 20000 --device cuda --no-progress "${args[@]}" >"$out/run.txt" 2>&1 \
  || { echo "gpu-profile: nsys profile failed:"; tail -n 20 "$out/run.txt"; exit 1; }
tail -n 1 "$out/run.txt"
timeout 60 "$nsys" stats --report cuda_gpu_kern_sum --format table "$out/prof.nsys-rep" 2>&1 | head -n 45
