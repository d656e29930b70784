#!/usr/bin/env bash
# Quick start, part 2: installs what is missing, builds, and runs the whole test suite with ctest
# (single-process tests and MPI tests under real `mpirun -np 2`), then again under ASan+UBSan.
#   scripts/test.sh                 both builds
#   scripts/test.sh --no-sanitize   the Release build only (faster, for local iteration)
set -euo pipefail
cd "$(dirname "$0")/.."

sanitize=1
[[ ${1:-} == --no-sanitize ]] && sanitize=0

scripts/install-deps.sh
jobs=$(nproc)

# Open MPI refuses to start as root without these; tests also set them per test.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

echo "== Release build (build/)"
scripts/build.sh build
(cd build && ctest -j "$jobs" --output-on-failure --timeout 600)

if ((sanitize)); then
  echo "== ASan+UBSan build (build-sanitize/)"
  # CUDA is left out here: its runtime and ASan's shadow memory do not mix; the Release build
  # above already compiles and tests it.
  # -g1 (line tables only) is all a sanitizer report needs, and compiles ~15% faster than -g.
  scripts/build.sh build-sanitize -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O2 -g1 -DNDEBUG" \
    -DAXON_SANITIZE=ON -DAXON_WITH_CUDA=OFF -DAXON_BUILD_BENCH=OFF
  (cd build-sanitize && ctest -j "$jobs" --output-on-failure --timeout 900)
fi
echo "axon: all tests passed"
