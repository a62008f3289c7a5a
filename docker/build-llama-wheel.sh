#!/bin/sh
# Build llama-cpp-python as a wheel with the CUDA backend, in an nvidia/cuda *devel* stage, so
# only the wheel (no compiler, no CUDA toolkit) reaches the runtime image.
#
#   build-llama-wheel.sh OUT_DIR
#
# The version is the one requirements/lock.txt pins (LLAMA_CPP_VERSION overrides). Flags:
#   -DGGML_CUDA=on                      the CUDA backend
#   -DCMAKE_CUDA_ARCHITECTURES=$CUDA_ARCHITECTURES (default "86;89;90": Ampere A40/A5000/3090,
#                                       Ada L4/L40S/4090, Hopper H100; add 80 for A100, 120 for
#                                       RTX 5090 with CUDA >= 12.8); fewer = faster build
#   -DGGML_NATIVE=OFF                   never -march=native: the build machine's CPU is not the
#                                       RunPod host's (AVX2/FMA/F16C baseline instead)
#   -DGGML_CUDA_NCCL=OFF                one GPU per worker: no NCCL dependency
# The driver library libcuda.so.1 is absent at build time; the toolkit's stub satisfies the link
# and the real one is mounted by the NVIDIA container toolkit at run time.
#
# Environment: PYTHON (default python3.12), CUDA_HOME (default /usr/local/cuda), CUDA_ARCHITECTURES, LLAMA_CPP_VERSION, CMAKE_EXTRA
# (more -D flags), CMAKE_BUILD_PARALLEL_LEVEL (default: all CPUs), DRY_RUN=1 (print the pip
# command and exit), SRC_ROOT (folder with requirements/lock.txt; default: this script's parent).
set -eu

[ "$#" -eq 1 ] || { echo "usage: build-llama-wheel.sh OUT_DIR" >&2; exit 64; }
out=$1
here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
root=${SRC_ROOT:-$(dirname -- "$here")}
python=${PYTHON:-python3.12}
archs=${CUDA_ARCHITECTURES:-86;89;90}

version=${LLAMA_CPP_VERSION:-}
if [ -z "$version" ]; then
    version=$(sed -n -E 's/^llama[-_]cpp[-_]python==([^[:space:]#]+).*/\1/p' "$root/requirements/lock.txt" | head -n 1)
fi
[ -n "$version" ] || { echo "build-llama-wheel: no llama_cpp_python pin in $root/requirements/lock.txt (set LLAMA_CPP_VERSION)" >&2; exit 66; }
case $archs in
    *[!0-9\;a-z]* | '') echo "build-llama-wheel: CUDA_ARCHITECTURES must look like 86;89;90, got '$archs'" >&2; exit 64 ;;
esac

CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=$archs -DGGML_NATIVE=OFF -DGGML_CUDA_NCCL=OFF -DLLAMA_CURL=OFF ${CMAKE_EXTRA:-}"
export CMAKE_ARGS
CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc 2>/dev/null || echo 4)}
export CMAKE_BUILD_PARALLEL_LEVEL

if [ "${DRY_RUN:-0}" = 1 ]; then
    echo "CMAKE_ARGS=$CMAKE_ARGS"
    echo "$python -m pip wheel --no-deps --no-binary llama-cpp-python --wheel-dir $out llama-cpp-python==$version"
    exit 0
fi

cuda_home=${CUDA_HOME:-/usr/local/cuda}
if ! command -v nvcc >/dev/null 2>&1 && [ -x "$cuda_home/bin/nvcc" ]; then
    PATH=$cuda_home/bin:$PATH
    export PATH
fi
command -v nvcc >/dev/null 2>&1 || {
    echo "build-llama-wheel: nvcc (the CUDA compiler) was not found on PATH or in $cuda_home/bin: run this in an nvidia/cuda:<version>-devel image" >&2
    exit 69
}
stubs=""
for d in "$cuda_home/lib64/stubs" "$cuda_home/targets/x86_64-linux/lib/stubs"; do
    [ -f "$d/libcuda.so" ] && stubs=$d && break
done
if [ -n "$stubs" ]; then
    # Some linkers ask for the driver's soname at link time; the stub stands in for it.
    [ -e "$stubs/libcuda.so.1" ] || ln -s libcuda.so "$stubs/libcuda.so.1"
    LIBRARY_PATH="$stubs${LIBRARY_PATH:+:$LIBRARY_PATH}"
    export LIBRARY_PATH
fi

mkdir -p "$out"
echo "build-llama-wheel: llama-cpp-python==$version, CUDA $(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'), archs $archs, $CMAKE_BUILD_PARALLEL_LEVEL jobs"
"$python" -m pip wheel --no-deps --no-binary llama-cpp-python --wheel-dir "$out" "llama-cpp-python==$version"

wheel=$(find "$out" -maxdepth 1 -name "llama_cpp_python-$version-*.whl" | head -n 1)
[ -n "$wheel" ] || { echo "build-llama-wheel: pip produced no wheel in $out" >&2; exit 1; }
if ! "$python" -m zipfile -l "$wheel" | grep -q 'llama_cpp/lib/libggml-cuda.so'; then
    echo "build-llama-wheel: $wheel has no libggml-cuda.so: the CUDA backend was not built (see the CMake log above)" >&2
    exit 1
fi
echo "build-llama-wheel: $wheel ($(du -h "$wheel" | cut -f1))"
