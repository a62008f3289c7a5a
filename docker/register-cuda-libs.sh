#!/bin/sh
# Put the library folders of NVIDIA's CUDA wheels (SITE_PACKAGES/nvidia/*/lib: cuDNN, cuBLAS,
# cudart, ...) on the dynamic loader's search path, so onnxruntime-gpu's CUDA provider and
# llama.cpp's CUDA backend find the same single copy torch uses (torch finds it via RPATH).
#
#   register-cuda-libs.sh SITE_PACKAGES [CONF_FILE]
#
# Writes CONF_FILE (default /etc/ld.so.conf.d/000-python-nvidia.conf: read before the base
# image's own entries) and runs ldconfig ($LDCONFIG overrides, e.g. for tests). Fails when
# SITE_PACKAGES holds no nvidia/*/lib folder, or one of $REQUIRED (default: cudnn cublas
# cuda_runtime) is missing.
set -eu

[ "$#" -ge 1 ] && [ "$#" -le 2 ] || { echo "usage: register-cuda-libs.sh SITE_PACKAGES [CONF_FILE]" >&2; exit 64; }
site=$1
conf=${2:-/etc/ld.so.conf.d/000-python-nvidia.conf}
required=${REQUIRED:-cudnn cublas cuda_runtime}

[ -d "$site/nvidia" ] || { echo "register-cuda-libs: $site/nvidia does not exist: install the nvidia-*-cu12 wheels first" >&2; exit 66; }
for pkg in $required; do
    [ -d "$site/nvidia/$pkg/lib" ] || { echo "register-cuda-libs: $site/nvidia/$pkg/lib is missing (pip package nvidia-$(echo "$pkg" | tr _ -)-cu12)" >&2; exit 66; }
done
dirs=$(find "$site/nvidia" -mindepth 2 -maxdepth 2 -type d -name lib | LC_ALL=C sort)
[ -n "$dirs" ] || { echo "register-cuda-libs: no nvidia/*/lib folder under $site" >&2; exit 66; }

mkdir -p "$(dirname -- "$conf")"
printf '%s\n' "$dirs" > "$conf"
${LDCONFIG:-ldconfig}
echo "register-cuda-libs: $(printf '%s\n' "$dirs" | wc -l | tr -d ' ') folders -> $conf"
