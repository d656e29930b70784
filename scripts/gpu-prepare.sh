#!/usr/bin/env bash
# Gathers into .gpu-deps/ (git-ignored, repository root) everything the GPU check machine needs
# beyond its own software (CUDA 13, CMake, Ninja, g++, Python with PyTorch), because that machine
# has no network and none of the Debian development packages. Run it here, on a networked Debian 12
# machine (root, or sudo for `apt-get update`); then carry .gpu-deps/ with the checkout and run
# scripts/gpu-check.sh there.
#
#   .gpu-deps/root/usr/...      Debian packages unpacked with `dpkg-deb -x` (headers, CMake config
#                               files, libraries), pruned of what the build never reads
#   .gpu-deps/fashion-mnist/    the four Fashion-MNIST IDX .gz files (for the accuracy checks)
#   .gpu-deps/MANIFEST          package versions, the files stored compressed, the total size
#
# OpenBLAS's shared library alone is 36 MB and the data set 31 MB, over the 60 MiB budget together,
# so the OpenBLAS library is kept xz-compressed (4 MB); scripts/gpu-check.sh unpacks it into its
# build folder. Everything else is stored as Debian ships it.
#
# Idempotent: when .gpu-deps/MANIFEST already lists the same package versions, nothing is fetched.
# Usage: scripts/gpu-prepare.sh [--force]
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "gpu-prepare: error: $*" >&2; exit 1; }
force=0
case "${1:-}" in
  --force) force=1 ;;
  "") ;;
  -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) die "unknown argument: $1 (usage: scripts/gpu-prepare.sh [--force])" ;;
esac

limit_mib=60
deps=.gpu-deps
multiarch=x86_64-linux-gnu

# What the GPU build needs beyond the GPU machine (MPI is off there, so no Open MPI):
#   fmt, CLI11, nlohmann-json        find_package config files + headers (+ libfmt.so.9)
#   GoogleTest/GoogleMock            Debian 12 ships them prebuilt as static libraries in libgtest-dev /
#                                    libgmock-dev; their `googletest` dependency is only the sources
#   Google Benchmark                 bench/bench_core (AXON_BUILD_BENCH is on by default)
#   OpenBLAS (pthread flavour)       cblas.h at build time; Axon dlopens libopenblas.so.0 at run time,
#                                    which needs libgfortran5 -> libquadmath0 (apt-cache depends)
#   zlib, OpenSSL                    data/ reads gzip (zlib), train/ hashes parameters (libcrypto);
#                                    the GPU machine may have the runtime libraries but not the headers
packages=(
  libfmt-dev libfmt9
  libcli11-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev
  libbenchmark-dev libbenchmark1debian
  libopenblas-dev libopenblas-pthread-dev libopenblas0-pthread libgfortran5 libquadmath0
  zlib1g-dev zlib1g
  libssl-dev libssl3
)
fashion_files=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)

for tool in apt-get apt-cache dpkg-deb xz du; do
  command -v "$tool" >/dev/null || die "'$tool' not found: this script needs a Debian machine with $tool"
done

sudo_cmd=()
if [[ $(id -u) -ne 0 ]]; then sudo_cmd=(sudo); fi

# The candidate version of every package; an empty candidate means the package lists are missing or
# stale, so update them once and ask again.
candidate() { apt-cache policy "$1" 2>/dev/null | sed -n 's/^ *Candidate: //p'; }
versions=()
for p in "${packages[@]}"; do
  v=$(candidate "$p")
  if [[ -z "$v" || "$v" == "(none)" ]] && [[ -z "${updated:-}" ]]; then
    echo "gpu-prepare: package lists lack $p, running apt-get update once" >&2
    "${sudo_cmd[@]}" apt-get update -qq || die "apt-get update failed"
    updated=1
    v=$(candidate "$p")
  fi
  [[ -n "$v" && "$v" != "(none)" ]] || die "no installable version of Debian package '$p' (apt-cache policy $p)"
  versions+=("$p=$v")
done

manifest_head="$(printf '%s\n' "${versions[@]}")"
if ((!force)) && [[ -f $deps/MANIFEST ]] && [[ "$(sed -n '/^# packages$/,/^# end packages$/p' $deps/MANIFEST | sed '1d;$d')" == "$manifest_head" ]] \
   && [[ -d $deps/root/usr ]] && [[ -d $deps/fashion-mnist ]]; then
  echo "gpu-prepare: $deps is up to date ($(du -sm --apparent-size $deps | cut -f1) MiB); --force rebuilds it"
  exit 0
fi

# Download into a scratch folder (not counted in the budget), then unpack into a fresh tree, so a
# rerun never mixes old and new files.
work=$(mktemp -d)
chmod 755 "$work"  # apt-get download runs as the unprivileged _apt user where it can
trap 'rm -rf "$work" "$deps.new"' EXIT  # a failed run leaves no half-made tree
echo "gpu-prepare: downloading ${#versions[@]} Debian packages"
(cd "$work" && apt-get download -qq "${versions[@]}") || die "apt-get download failed for: ${versions[*]}"

rm -rf "$deps.new"
mkdir -p "$deps.new/root" "$deps.new/fashion-mnist"
for deb in "$work"/*.deb; do
  dpkg-deb -x "$deb" "$deps.new/root" || die "dpkg-deb -x failed on $(basename "$deb")"
done

r=$deps.new/root
# Packages may hold absolute links (zlib1g-dev: usr/lib/.../libz.so -> /lib/.../libz.so.1.2.13). Unpacked
# here they would point into this machine's own /lib and dangle on the GPU machine, so point them at
# the unpacked file instead, relatively (the tree is copied elsewhere).
while IFS= read -r link; do
  target=$(readlink "$link")
  [[ -e "$r$target" ]] || die "$link points at $target, which no unpacked package provides"
  ln -sfn "$(realpath --relative-to="$(dirname "$link")" "$r$target")" "$link"
done < <(find "$r" -type l -lname '/*')

# ---- prune what the build never reads ----------------------------------------------------------
# usr/src: libgtest-dev links usr/src/gtest into the googletest sources package, which is not needed.
rm -rf "$r/usr/share/doc" "$r/usr/share/man" "$r/usr/share/lintian" "$r/usr/share/bug" "$r/usr/src"
# Static OpenBLAS (58 MB), the reference BLAS/LAPACK wrappers and static OpenSSL: Axon links none.
rm -f "$r/usr/lib/$multiarch/openblas-pthread/"*.a \
      "$r/usr/lib/$multiarch/openblas-pthread/libblas."* "$r/usr/lib/$multiarch/openblas-pthread/liblapack."* \
      "$r/usr/lib/$multiarch/libssl.a" "$r/usr/lib/$multiarch/libcrypto.a"

# ---- the OpenBLAS library, xz-compressed --------------------------------------------------------
openblas_real=$(cd "$r/usr/lib/$multiarch/openblas-pthread" && readlink -f libopenblas.so.0 || true)
[[ -n "$openblas_real" && -f "$openblas_real" ]] \
  || die "libopenblas0-pthread did not provide usr/lib/$multiarch/openblas-pthread/libopenblas.so.0"
echo "gpu-prepare: compressing $(basename "$openblas_real") ($(( $(stat -c %s "$openblas_real") / 1048576 )) MiB) with xz"
xz -6 -T2 "$openblas_real" || die "xz failed on $openblas_real"
compressed="usr/lib/$multiarch/openblas-pthread/$(basename "$openblas_real").xz"

# ---- Fashion-MNIST --------------------------------------------------------------------------------
# From the installed dataset-fashion-mnist package when present (dpkg -L says where it puts them),
# else from the downloaded package.
fashion_src=""
if dpkg-query -W -f='${Status}' dataset-fashion-mnist 2>/dev/null | grep -q "install ok installed"; then
  fashion_src=$(dirname "$(dpkg -L dataset-fashion-mnist | grep '/train-images-idx3-ubyte.gz$' | head -n1)")
else
  echo "gpu-prepare: dataset-fashion-mnist is not installed, downloading it" >&2
  (cd "$work" && apt-get download -qq dataset-fashion-mnist) || die "apt-get download dataset-fashion-mnist failed"
  dpkg-deb -x "$work"/dataset-fashion-mnist_*.deb "$work/fm"
  fashion_src=$(dirname "$(find "$work/fm" -name train-images-idx3-ubyte.gz | head -n1)")
fi
for f in "${fashion_files[@]}"; do
  [[ -f "$fashion_src/$f" ]] || die "Fashion-MNIST file $fashion_src/$f not found"
  cp "$fashion_src/$f" "$deps.new/fashion-mnist/"
done

# ---- sanity: every file the GPU build looks for is there -----------------------------------------
for f in usr/lib/$multiarch/cmake/fmt/fmt-config.cmake usr/share/cmake/CLI11/CLI11Config.cmake \
         usr/share/cmake/nlohmann_json/nlohmann_jsonConfig.cmake usr/lib/$multiarch/cmake/GTest/GTestConfig.cmake \
         usr/lib/$multiarch/libgtest.a usr/lib/$multiarch/libgmock.a usr/lib/$multiarch/cmake/benchmark/benchmarkConfig.cmake \
         usr/include/$multiarch/openblas-pthread/cblas.h "$compressed" usr/lib/$multiarch/libgfortran.so.5 \
         usr/lib/$multiarch/libquadmath.so.0 usr/include/zlib.h usr/lib/$multiarch/libz.so \
         usr/include/openssl/sha.h usr/lib/$multiarch/libcrypto.so; do
  [[ -e "$r/$f" ]] || die "expected $f in the unpacked packages, it is missing"
done

dangling=$(find "$r" -xtype l -print | grep -v 'openblas-pthread/libopenblas\.so' || true)  # those wait for the xz file
[[ -z $dangling ]] || die "links that resolve nowhere in the unpacked tree: $dangling"

size_kib=$(du -sk --apparent-size "$deps.new" | cut -f1)
{
  echo "# .gpu-deps, made by scripts/gpu-prepare.sh on $(date -Iseconds) ($(. /etc/os-release && echo "$PRETTY_NAME"))"
  echo "# packages"
  printf '%s\n' "${versions[@]}"
  echo "# end packages"
  echo "# compressed (xz; scripts/gpu-check.sh unpacks them into its build folder)"
  echo "root/$compressed"
  echo "# fashion-mnist from $fashion_src"
  echo "# size: $((size_kib / 1024)) MiB"
} >"$deps.new/MANIFEST"

rm -rf "$deps"
mv "$deps.new" "$deps"

size_mib=$(du -sm --apparent-size "$deps" | cut -f1)
echo "gpu-prepare: $deps is ${size_mib} MiB (limit ${limit_mib} MiB):"
du -sh --apparent-size "$deps"/root "$deps"/fashion-mnist
if ((size_kib > limit_mib * 1024)); then
  die "$deps is $((size_kib / 1024)) MiB, over the ${limit_mib} MiB limit: it cannot be carried to the GPU machine"
fi
