#!/usr/bin/env bash
# The CUDA path on a real GPU, in two halves, because the GPU machine has no network and no Rust
# toolchain (its CUDA is 13.0 with PyTorch, transformers and nvidia-smi):
#
#   scripts/device-check.sh prepare    # here, once (needs PyPI and crates.io): a CUDA 13.0
#                                      # toolkit from PyPI (scripts/cuda-toolchain.sh), a
#                                      # `--features cuda` build of georag, the CUDA parity test
#                                      # binary and the alignment bench for CUDA_COMPUTE_CAP
#                                      # (default 90, the H100/H200), staged stripped and xz'd in
#                                      # .device/ (git-ignored) with the shared libraries they
#                                      # load and the 50 real sample photos; at most 56 MiB.
#   scripts/device-check.sh run        # there, from the repository root, with `.device` carried
#                                      # (the device tool: carry [".device"], timeout_s 600).
#
# `run` prints, and writes to $OUT/device-check.txt (or .device/out/): the GPU and driver; the
# CUDA parity tests (tiny CLIP and SigLIP on cuda:0 in f32, f16 and bf16 against the
# transformers fixtures, tests/encoders_parity.rs); then `georag embed` on the GPU in bf16
# against transformers bf16 on the same GPU, same photos (the 50 real ones, REPEAT copies),
# for random-weight CLIP ViT-B/16 @ 224 and SigLIP so400m/14 @ 384 at batch 64, 128 and 256:
# images/s end to end (decode and preprocessing included on both sides), transformers' model-only
# images/s, and peak GPU memory (nvidia-smi, sampled every 100 ms, above the idle reading; and
# torch's own peak); last, the G3 alignment-head training step on the GPU (f32, batch 256)
# against the same model in PyTorch (benches/align_reference.py), with the MP-16 epoch it
# projects. Planned to take under 8 minutes on one H200.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
STAGE="$ROOT/.device"
cd "$ROOT"

prepare() {
  local target="${GEORAG_CUDA_TARGET:-$HOME/.cache/georag-target-cuda}"
  local cap="${CUDA_COMPUTE_CAP:-90}"
  # Seed the CUDA build directory from the CPU one: the crates without a `cuda` feature (FAISS,
  # arrow, polars, ...) are then not rebuilt.
  if [ ! -d "$target" ] && [ -d "${CARGO_TARGET_DIR:-$HOME/.cache/georag-target}" ]; then
    cp -a "${CARGO_TARGET_DIR:-$HOME/.cache/georag-target}" "$target"
  fi
  cargo fetch --locked >/dev/null
  eval "$(GEORAG_CUDA=13.0 scripts/cuda-toolchain.sh)"
  export CARGO_TARGET_DIR="$target" CUDA_COMPUTE_CAP="$cap"
  cargo build --release --locked --features cuda --bin georag
  local parity align
  parity="$(cargo test --release --locked --features cuda --test encoders_parity --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import json,sys; print(next(m["executable"] for m in map(json.loads, sys.stdin) if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "encoders_parity"))')"
  align="$(cargo bench --locked --features cuda --bench align_throughput --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import json,sys; print(next(m["executable"] for m in map(json.loads, sys.stdin) if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "align_throughput"))')"
  rm -rf "$STAGE" && mkdir -p "$STAGE/bin" "$STAGE/lib" "$STAGE/images"
  for pair in "georag:$target/release/georag" "encoders_parity:$parity" "align_throughput:$align"; do
    strip -o "$STAGE/bin/${pair%%:*}" "${pair#*:}"
    xz -T0 -6 "$STAGE/bin/${pair%%:*}"
  done
  # The shared libraries the binaries load that a CUDA image may lack (OpenBLAS for FAISS, its
  # Fortran runtime, OpenMP); glibc, libstdc++ and the CUDA libraries are the machine's.
  ldd "$target/release/georag" | awk '/=> \// {print $3}' \
    | grep -E 'lib(openblas|blas|lapack|gfortran|quadmath|gomp)' | while read -r so; do
      cp -L "$so" "$STAGE/lib/"
    done
  xz -T0 -6 "$STAGE"/lib/*
  local photos="$ROOT/../shared/datasets/im2gps3k_sample50/images"
  if [ -d "$photos" ]; then cp "$photos"/* "$STAGE/images/"; else echo "device-check: no $photos; the embedding benchmark will have no photos" >&2; fi
  # Where the test binary looks for its fixtures (env!("CARGO_MANIFEST_DIR") at build time).
  echo "$ROOT" > "$STAGE/manifest_dir"
  git describe --always --dirty --abbrev=40 > "$STAGE/commit"
  "$CUDA_HOME/bin/nvcc" --version | grep -o "release [0-9.]*, V[0-9.]*" > "$STAGE/nvcc"
  echo "$cap" > "$STAGE/compute_cap"
  local mib
  mib=$(du -sm "$STAGE" | cut -f1)
  echo "device-check: staged $(ls "$STAGE/bin" | wc -l) binaries, $(ls "$STAGE/lib" | wc -l) libraries, $(ls "$STAGE/images" | wc -l) photos in .device ($mib MiB; commit $(cat "$STAGE/commit"), $(cat "$STAGE/nvcc"), compute capability $cap)"
  [ "$mib" -le 56 ] || { echo "device-check: .device is $mib MiB; with the 5-6 MiB tree that is over the 64 MiB the device tool carries" >&2; exit 1; }
}

run() {
  [ -f "$STAGE/commit" ] || { echo "device-check: no .device/ (run \`scripts/device-check.sh prepare\` first, then carry .device)" >&2; exit 1; }
  local out="${OUT:-$STAGE/out}" work="/tmp/georag-device-check"
  mkdir -p "$out" && rm -rf "$work" && mkdir -p "$work/bin" "$work/lib"
  exec > >(tee "$out/device-check.txt") 2>&1
  local t0=$SECONDS
  echo "== device check: commit $(cat "$STAGE/commit"), built with $(cat "$STAGE/nvcc") for compute capability $(cat "$STAGE/compute_cap"), $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  for f in "$STAGE"/bin/*.xz; do xz -dc "$f" > "$work/bin/$(basename "$f" .xz)"; chmod +x "$work/bin/$(basename "$f" .xz)"; done
  for f in "$STAGE"/lib/*.xz; do xz -dc "$f" > "$work/lib/$(basename "$f" .xz)"; done
  # CUDA libraries: PyTorch's wheels (cuBLAS, cuRAND, NVRTC, cudart), the system toolkit, the driver.
  local site cudalibs
  site="$(python3 -c 'import site; print(site.getsitepackages()[0])')"
  cudalibs="$(ls -d "$site"/nvidia/*/lib "$site"/nvidia/cu13/lib 2>/dev/null | sort -u | paste -sd:)"
  export LD_LIBRARY_PATH="$work/lib:$cudalibs:/usr/local/cuda/lib64:/usr/local/nvidia/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  # The parity tests read tests/fixtures under the directory they were built in.
  local built_in
  built_in="$(cat "$STAGE/manifest_dir")"
  if [ ! -d "$built_in/tests/fixtures" ]; then mkdir -p "$(dirname "$built_in")" && ln -sfn "$ROOT" "$built_in"; fi
  local bin="$work/bin/georag" status=0
  export GEORAG_QUIET=1

  echo "== CUDA parity tests (tiny CLIP / SigLIP on cuda:0, f32 / f16 / bf16, against transformers)"
  (cd "$ROOT" && "$work/bin/encoders_parity" cuda --test-threads 1) || status=1

  echo "== embedding on the GPU: georag embed (candle, bf16) vs transformers (PyTorch $(python3 -c 'import torch; print(torch.__version__)'), bf16)"
  local repeat="${REPEAT:-20}"
  mkdir -p "$work/images"
  for r in $(seq 1 "$repeat"); do for f in "$STAGE"/images/*; do ln -s "$f" "$work/images/r${r}_$(basename "$f")"; done; done
  local n
  n=$(ls "$work/images" | wc -l)
  echo "images: $n ($repeat copies of $(ls "$STAGE/images" | wc -l) real photos)"
  python3 benches/hf_encoder_bench.py make clip "$work/clip-vitb16"
  python3 benches/hf_encoder_bench.py make siglip "$work/siglip-so400m"
  local idle
  idle=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
  peak() { # peak GPU memory (MiB above idle) while "$@" runs
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$work/mem.log" &
    local poll=$!
    local rc=0
    "$@" || rc=$?
    kill "$poll" 2>/dev/null; wait "$poll" 2>/dev/null || true
    local max
    max=$(sort -n "$work/mem.log" | tail -1)
    echo "peak GPU memory (nvidia-smi): $(( ${max:-$idle} - idle )) MiB above idle"
    return $rc
  }
  for model in clip-vitb16 siglip-so400m; do
    for batch in 64 128 256; do
      echo "-- $model, batch $batch"
      rm -rf "$work/emb"
      peak "$bin" embed --encoder "hf:$work/$model" --input "$work/images" --out "$work/emb" --device cuda:0 --dtype bf16 --batch-size "$batch" \
        | grep -E "images embedded|peak GPU" | sed 's/^/georag: /' || status=1
      peak python3 benches/hf_encoder_bench.py run "$work/$model" "$work/images" "$batch" cuda bf16 | sed "/^peak GPU/s/^/transformers: /" || status=1
    done
  done

  echo "== G3 alignment heads, one training step on the GPU (f32, batch 256): georag vs PyTorch"
  "$work/bin/align_throughput" 50 256 cuda:0 || status=1
  python3 benches/align_reference.py 50 256 cuda || status=1
  echo "== done in $((SECONDS - t0)) s; status $status"
  return $status
}

case "${1:-}" in
  prepare) prepare ;;
  run) run ;;
  *) echo "usage: scripts/device-check.sh prepare | run" >&2; exit 2 ;;
esac
