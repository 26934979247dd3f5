#!/usr/bin/env bash
# Ingest at the decode limit, on real photos, in one run:
#  1. the decode limit of this machine: cores / (single-core libjpeg-turbo full-decode time per
#     image) on the JPEGs of DIR (benches/decode_limit.rs; zune-jpeg beside it for comparison);
#  2. `georag prepare folder` (full decode check) on those photos, each repeated COPIES times under
#     new names so that the run lasts long enough to time (copies live in a temp dir, never the repo;
#     prepare counts them as duplicate bytes and keeps them);
#  3. benches/prepare_reference.py (PIL + pyarrow, single process) on the same files, with the
#     pinned Pillow of scripts/pyref-venv.sh.
# Usage: benches/decode_limit.sh [DIR] [COPIES]
#   DIR defaults to ../shared/datasets/im2gps3k_sample50/images; COPIES to 40.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${1:-$ROOT/../shared/datasets/im2gps3k_sample50/images}"
COPIES="${2:-40}"
[ -d "$DIR" ] || { echo "SKIP: $DIR not found"; exit 0; }
DIR="$(cd "$DIR" && pwd)"
PY="$("$ROOT/scripts/pyref-venv.sh")"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cd "$ROOT"
cargo build --release --locked --quiet --bin georag
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/georag"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "python $("$PY" -c 'import platform; print(platform.python_version())'), pillow $("$PY" -c 'import PIL; print(PIL.__version__)'), pyarrow $("$PY" -c 'import pyarrow; print(pyarrow.__version__)')"
cat "$DIR"/* > /dev/null
out="$(cargo bench --locked --quiet --bench decode_limit -- "$DIR" --reps 5)"
echo "$out" | grep -v '^LIMIT_'
limit="$(echo "$out" | sed -n 's/^LIMIT_IMAGES_PER_S=//p')"
mkdir -p "$WORK/images"
echo "IMG_ID,LAT,LON" > "$WORK/meta.csv"
n=0
for c in $(seq 1 "$COPIES"); do
  for f in "$DIR"/*.jpg "$DIR"/*.jpeg "$DIR"/*.JPG; do
    [ -f "$f" ] || continue
    name="c${c}_$(basename "$f")"
    ln "$f" "$WORK/images/$name" 2>/dev/null || cp "$f" "$WORK/images/$name"
    echo "$name,$(( (n % 120) - 60 )).5,$(( (n % 340) - 170 )).25" >> "$WORK/meta.csv"
    n=$((n + 1))
  done
done
echo "input: $n files ($COPIES copies of each photo of $DIR), $(du -shL "$WORK/images" | cut -f1)"
cat "$WORK"/images/* > /dev/null
t0=$(date +%s.%N)
GEORAG_QUIET=1 "$BIN" prepare folder --metadata "$WORK/meta.csv" --images "$WORK/images" --out "$WORK/out-georag" >/dev/null
t1=$(date +%s.%N)
"$PY" "$ROOT/benches/prepare_reference.py" "$WORK/meta.csv" "$WORK/images" "$WORK/out-python"
t2=$(date +%s.%N)
g=$(echo "$t1 - $t0" | bc -l); p=$(echo "$t2 - $t1" | bc -l)
gr=$(echo "$n / $g" | bc -l); pr=$(echo "$n / $p" | bc -l)
printf "decode limit (libjpeg-turbo):        %.0f images/s\n" "$limit"
printf "georag prepare (full decode check):  %.2f s, %.0f images/s = %.0f %% of the limit\n" "$g" "$gr" "$(echo "100 * $gr / $limit" | bc -l)"
printf "python reference (PIL + pyarrow):    %.2f s, %.0f images/s = %.0f %% of the limit\n" "$p" "$pr" "$(echo "100 * $pr / $limit" | bc -l)"
printf "georag / python: %.2fx\n" "$(echo "$p / $g" | bc -l)"
photos=$(find "$DIR" -maxdepth 1 -type f \( -name '*.jpg' -o -name '*.jpeg' -o -name '*.JPG' \) | wc -l)
python3 "$ROOT/benches/summary.py" record --stage prepare --what "georag prepare (full decode check) vs a PIL + pyarrow script, real photos" \
  --size "$n files ($COPIES copies of $photos photos)" --unit "images/s" --georag "$gr" --reference "$pr" \
  --reference-name "PIL + pyarrow" --higher-is-better --command "benches/decode_limit.sh"
python3 "$ROOT/benches/summary.py" record --stage decode-limit --what "georag prepare's share of the decode limit (cores / single-core libjpeg-turbo decode time)" \
  --size "$n files ($COPIES copies of $photos photos)" --unit "images/s" --georag "$gr" --reference "$limit" \
  --reference-name "decode limit" --higher-is-better --command "benches/decode_limit.sh"
