#!/usr/bin/env bash
# Configures (once) and builds Axon. Usage: scripts/build.sh [BUILD_DIR] [extra cmake -D options...] [-- targets...]
set -euo pipefail
cd "$(dirname "$0")/.."

build_dir=${1:-build}
shift || true
cmake_args=()
targets=()
while (($#)); do
  if [[ $1 == -- ]]; then shift; targets=("$@"); break; fi
  cmake_args+=("$1"); shift
done

if [[ ! -f "$build_dir/build.ninja" || ${#cmake_args[@]} -gt 0 ]]; then
  mkdir -p "$build_dir"
  cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "${cmake_args[@]}" >"$build_dir/configure.log" 2>&1 || {
    cat "$build_dir/configure.log"; echo "axon: cmake configure failed (log above)" >&2; exit 1; }
fi
cmake --build "$build_dir" -j "$(nproc)" ${targets:+--target "${targets[@]}"}
