#!/usr/bin/env bash
# images/s of `georag embed` (candle, CPU, f32) vs transformers (PyTorch CPU, 2 threads) on the
# same random-weight CLIP ViT-B/16 @ 224, same images, same batch size, preprocessing included on
# both sides. Needs python3 with torch + transformers + pillow (pip) and ../shared's sample photos.
# Usage: benches/encoders_vs_transformers.sh [BATCH] [REPEAT]   (REPEAT copies of the 50 photos)
set -euo pipefail
BATCH="${1:-32}"
REPEAT="${2:-2}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SRC="$ROOT/../shared/datasets/im2gps3k_sample50/images"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
[ -d "$SRC" ] || { echo "no $SRC"; exit 1; }
mkdir -p "$WORK/images"
for r in $(seq 1 "$REPEAT"); do for f in "$SRC"/*; do cp "$f" "$WORK/images/r${r}_$(basename "$f")"; done; done
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); $(ls "$WORK/images" | wc -l) images, batch $BATCH"

python3 "$ROOT/benches/hf_encoder_bench.py" make "$WORK/vitb16" 2>/dev/null
(cd "$ROOT" && cargo build --release --quiet --bin georag)
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/georag"

export GEORAG_QUIET=1 RAYON_NUM_THREADS=2
# georag's images/s covers the embedding stage (decode + preprocess + model + writing shards);
# the process wall time also includes loading the model and indexing the image directory.
/usr/bin/time -f 'georag peak RSS %M KB, wall %e s' "$BIN" embed --encoder "hf:$WORK/vitb16" --input "$WORK/images" --out "$WORK/warm" --batch-size "$BATCH"
python3 "$ROOT/benches/hf_encoder_bench.py" run "$WORK/vitb16" "$WORK/images" "$BATCH" 2>/dev/null
