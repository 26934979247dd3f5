#!/usr/bin/env bash
# Assemble a CUDA 13.4 (or 13.0) toolkit from NVIDIA's PyPI wheels, for `cargo build --features cuda` on a
# machine without a system CUDA toolkit. Not used by `make` or CI; a machine that has a real
# toolkit (/usr/local/cuda, nvcc on PATH) does not need it.
#
#   scripts/cuda-toolchain.sh [DIR]        # default DIR: ~/.cache/georag-cuda
#   eval "$(scripts/cuda-toolchain.sh --env [DIR])"
#   GEORAG_CUDA=13.0 scripts/cuda-toolchain.sh   # CUDA 13.0 instead (default DIR
#                                                # ~/.cache/georag-cuda-13.0), for a GPU whose
#                                                # driver supports no newer CUDA (the PTX candle
#                                                # embeds must not be newer than the driver)
#
# The result is a CUDA_HOME-style tree at DIR/nvidia/cu13 (bin/nvcc, include/, lib/):
# - nvcc 13.4 (cudarc 0.19 accepts CUDA 11.4-13.4; nvcc 13.5 is rejected) plus the headers,
#   cccl and the libraries candle links to (cudart, nvrtc, curand, cublas, cublasLt), with the
#   unversioned lib*.so links that `-l` needs;
# - lib/stubs/libcuda.so: candle links the driver library (cudarc `dynamic-linking`), which no
#   wheel ships. If the machine has the driver (libcuda.so.1) it is linked to; otherwise a stub
#   whose every entry point returns CUDA_ERROR_STUB_LIBRARY is built with the C compiler,
#   enough to link (not to run CUDA).
#
# Running the binary needs DIR/nvidia/cu13/lib on LD_LIBRARY_PATH (printed by --env), and a
# GPU driver new enough for CUDA 13.4 (nvidia-smi: "CUDA Version: 13.4" or higher).
set -euo pipefail

ENV_ONLY=0
if [ "${1:-}" = "--env" ]; then ENV_ONLY=1; shift; fi
case "${GEORAG_CUDA:-13.4}" in
  13.4) DEFAULT_DIR="$HOME/.cache/georag-cuda"
        PKGS=(nvidia-cuda-nvcc==13.4.92 nvidia-cuda-crt==13.4.92 nvidia-nvvm==13.4.92 nvidia-cuda-runtime==13.4.92
              nvidia-cuda-nvrtc==13.4.92 nvidia-cuda-cccl==13.2.86 nvidia-curand==10.4.4.72 nvidia-cublas==13.4.3.11) ;;
  13.0) DEFAULT_DIR="$HOME/.cache/georag-cuda-13.0"
        PKGS=(nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-runtime==13.0.88
              nvidia-cuda-nvrtc==13.0.88 nvidia-cuda-cccl==13.0.85 nvidia-curand==10.4.0.35 nvidia-cublas==13.0.2.14) ;;
  *) echo "cuda-toolchain: GEORAG_CUDA must be 13.4 or 13.0, not '${GEORAG_CUDA}'" >&2; exit 2 ;;
esac
REL="${GEORAG_CUDA:-13.4}"
DIR="${1:-$DEFAULT_DIR}"
CUDA_HOME_DIR="$DIR/nvidia/cu13"

print_env() {
  echo "export CUDA_HOME='$CUDA_HOME_DIR'"
  echo "export PATH='$CUDA_HOME_DIR/bin':\"\$PATH\""
  echo "export LD_LIBRARY_PATH='$CUDA_HOME_DIR/lib'\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
}
if [ "$ENV_ONLY" = 1 ]; then print_env; exit 0; fi

if ! "$CUDA_HOME_DIR/bin/nvcc" --version 2>/dev/null | grep -q "release $REL,"; then
  python3 -m pip install --quiet --no-deps --upgrade --target "$DIR" "${PKGS[@]}"
fi

cd "$CUDA_HOME_DIR/lib"
for l in cudart nvrtc curand cublas cublasLt; do
  so="$(ls "lib$l.so."* | grep -v builtins | head -1)"
  ln -sfn "$so" "lib$l.so"
done
ln -sfn lib "$CUDA_HOME_DIR/lib64"

mkdir -p stubs
driver="$(/sbin/ldconfig -p 2>/dev/null | awk '/libcuda\.so\.1 .*x86-64/ {print $NF; exit}')"
if [ -n "$driver" ]; then
  ln -sfn "$driver" stubs/libcuda.so
else
  # The driver entry points cudarc declares (its sources come with `cargo fetch`).
  cudarc="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.* 2>/dev/null | tail -1)"
  if [ -z "$cudarc" ]; then
    echo "cuda-toolchain: no libcuda.so.1 here and no cudarc sources: run \`cargo fetch\` first" >&2
    exit 1
  fi
  grep -ohE 'pub (unsafe )?fn cu[A-Za-z0-9_]+' "$cudarc/src/driver/sys/mod.rs" | awk '{print $NF}' | sort -u \
    | awk '{print "int " $1 "(void) { return 34; }"}' > stubs/libcuda_stub.c
  ${CC:-cc} -shared -fPIC -Wl,-soname,libcuda.so.1 -o stubs/libcuda.so stubs/libcuda_stub.c
fi

"$CUDA_HOME_DIR/bin/nvcc" --version | tail -2 >&2
echo "cuda-toolchain: CUDA_HOME=$CUDA_HOME_DIR (libcuda: ${driver:-link stub, no driver})" >&2
print_env
