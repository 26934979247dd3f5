#!/usr/bin/env bash
# images/s of `georag embed` (candle, CPU, f32) vs transformers (PyTorch CPU, 2 threads) on the
# same random-weight CLIP ViT-B/16 @ 224, same images, same batch size, preprocessing included on
# both sides. Python: scripts/pyref-venv.sh (pinned transformers + Pillow, torch CPU); photos:
# ../shared's sample.
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

PY="$("$ROOT/scripts/pyref-venv.sh")"
"$PY" "$ROOT/benches/hf_encoder_bench.py" make "$WORK/vitb16" 2>/dev/null
(cd "$ROOT" && cargo build --release --quiet --bin georag)
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/georag"

export GEORAG_QUIET=1 RAYON_NUM_THREADS=2
# georag's images/s covers the embedding stage (decode + preprocess + model + writing shards);
# the process wall time also includes loading the model and indexing the image directory.
/usr/bin/time -f 'georag peak RSS %M KB, wall %e s' "$BIN" embed --encoder "hf:$WORK/vitb16" --input "$WORK/images" --out "$WORK/warm" --batch-size "$BATCH" | tee "$WORK/georag.txt"
"$PY" "$ROOT/benches/hf_encoder_bench.py" run "$WORK/vitb16" "$WORK/images" "$BATCH" 2>/dev/null | tee "$WORK/hf.txt"
g=$(sed -n 's/.*images embedded in [0-9.]* s (\([0-9.]*\) images\/s.*/\1/p' "$WORK/georag.txt" | head -1)
t=$(sed -n 's/^transformers: .* = \([0-9.]*\) images\/s.*/\1/p' "$WORK/hf.txt" | head -1)
[ -n "$g" ] && [ -n "$t" ] || { echo "encoders_vs_transformers: could not read images/s (georag '$g', transformers '$t')" >&2; exit 1; }
python3 "$ROOT/benches/summary.py" record --stage embed --what "georag embed (candle, CPU, f32) vs transformers (PyTorch CPU, 2 threads), random-weight CLIP ViT-B/16 @ 224, decode + preprocess included" \
  --size "$(ls "$WORK/images" | wc -l) real photos, batch $BATCH" --unit "images/s" --georag "$g" --reference "$t" \
  --reference-name "transformers $("$PY" -c 'import transformers; print(transformers.__version__)')" --higher-is-better --command "benches/encoders_vs_transformers.sh"
