#!/usr/bin/env bash
# Installs the Debian packages Axon needs to build, test and run its demo.
# Idempotent: does nothing (and never touches the network) when all are present.
# Usage: scripts/install-deps.sh [--bench]   (--bench adds python3-torch for bench/compare_pytorch.sh)
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config
  libopenblas-dev openmpi-bin libopenmpi-dev
  zlib1g-dev libssl-dev
  libcli11-dev nlohmann-json3-dev libfmt-dev
  # Boost.Asio (header-only) for the TCP store: a rendezvous without MPI (distributed/src/tcp_store.cpp).
  libboost-dev
  # oneDNN (2.x) for the CPU convolution (tensor/src/cpu/onednn_conv.cpp); without it conv runs
  # im2col + OpenBLAS GEMM, 3-8x slower on the cnn's layers.
  libdnnl-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  dataset-fashion-mnist
  # Text for examples/char_lm.cpp, the character-level language model (/usr/share/games/fortunes).
  fortunes
  # Tests run small Python scripts (an independent TensorBoard reader, JSON checks in the Slurm test).
  python3
  # A real single-node Slurm for tests/slurm (srun, sbatch; munge authenticates the daemons).
  slurmctld slurmd slurm-client munge
)
if [[ "${1:-}" == "--bench" ]]; then
  packages+=(python3-torch python3-numpy)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  exit 0
fi

echo "axon: installing missing packages: ${missing[*]}"
sudo_cmd=()
if [[ $(id -u) -ne 0 ]]; then sudo_cmd=(sudo); fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
