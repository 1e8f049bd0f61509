#!/usr/bin/env bash
# Prepares .gpu-carry/pack.tar.xz (git-ignored) on THIS machine for tools/gpu-check.sh on a GPU
# machine that has the NVIDIA driver and CUDA but not our other libraries and no network. The
# archive holds
#   build/  cpoison and cpoison-tests built for sm_90 (from BUILD, default build-gpu, configured
#           and built here when missing)
#   lib/    the non-CUDA shared libraries they link (HDF5, OpenBLAS, LAPACK(E), gfortran,
#           libaec/szip, libpng, libjpeg, libgomp, curl and friends, ...)
# The CUDA libraries (cudart, cuBLAS, cuDNN, cuSOLVER) and the C/C++ runtime are left out: the
# GPU machine has its own, matching its driver. Uncompressed this is ~80 MB (OpenBLAS alone is
# 35 MB), over the 64 MiB a carry may hold, hence the xz archive; gpu-check.sh unpacks it.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-gpu}
CARRY=.gpu-carry

if [ ! -f "$BUILD/build.ninja" ]; then
  PATH=/usr/local/cuda/bin:$PATH meson setup "$BUILD" -Dcuda=enabled -Dgpu_archs=90
fi
PATH=/usr/local/cuda/bin:$PATH ninja -C "$BUILD" cpoison cpoison-tests

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/build" "$STAGE/lib"
for exe in cpoison cpoison-tests; do
  cp "$BUILD/$exe" "$STAGE/build/"
  strip --strip-debug "$STAGE/build/$exe" 2>/dev/null || true
done

# Everything ldd resolves, except the CUDA stack, the driver and the base C/C++ runtime.
skip='^(libcuda|libcudart|libcublas|libcublasLt|libcudnn|libcusolver|libcusparse|libnvJitLink|libnvrtc|libc\.|libm\.|libdl\.|librt\.|libpthread\.|ld-linux|libstdc\+\+|libgcc_s|linux-vdso)'
for exe in "$STAGE"/build/*; do
  ldd "$exe" | awk '/=> \//{print $1, $3}'
done | sort -u | while read -r name path; do
  if ! [[ $name =~ $skip ]]; then
    cp -L "$path" "$STAGE/lib/$name"
  fi
done

rm -rf "$CARRY"
mkdir -p "$CARRY"
tar -C "$STAGE" -cJf "$CARRY/pack.tar.xz" build lib
echo "packed $(ls "$STAGE/lib" | wc -l) libraries and the two executables:"
ls -1 "$STAGE/lib" | tr '\n' ' '
echo
du -h "$CARRY/pack.tar.xz"
echo "carry .gpu-carry; on the GPU machine run tools/gpu-check.sh (it unpacks the archive itself)"
