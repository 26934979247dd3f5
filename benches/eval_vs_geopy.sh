#!/usr/bin/env bash
# Time `georag eval --distance geodesic` against a geopy-based scorer on the same file of
# N synthetic predictions (default 1,000,000), on this machine, in the same run.
# Usage: benches/eval_vs_geopy.sh [N]
set -euo pipefail
N="${1:-1000000}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

python3 -c "import geopy" 2>/dev/null || python3 -m pip install --quiet geopy
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "geopy $(python3 -c 'import geopy; print(geopy.__version__)'), python $(python3 -c 'import platform; print(platform.python_version())')"

python3 "$ROOT/benches/gen_predictions.py" "$N" "$WORK/pred.csv"
echo "predictions: $N rows, $(du -h "$WORK/pred.csv" | cut -f1)"

(cd "$ROOT" && cargo build --release --quiet --bin georag)
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/georag"

export GEORAG_QUIET=1
t0=$(date +%s.%N)
"$BIN" eval --predictions "$WORK/pred.csv" --out "$WORK/out" --distance geodesic --method synthetic --dataset synthetic >"$WORK/georag.txt"
t1=$(date +%s.%N)
cat "$WORK/georag.txt"
GEORAG_S=$(echo "$t1 - $t0" | bc -l)
printf 'georag eval total s (read, score, write metrics/per_image/tables/plots): %.2f\n' "$GEORAG_S"

python3 "$ROOT/benches/geopy_scorer.py" "$WORK/pred.csv" | tee "$WORK/geopy.txt"
GEOPY_S=$(grep 'geopy total s' "$WORK/geopy.txt" | awk '{print $NF}')
printf 'ratio geopy total / georag eval total: %.1f\n' "$(echo "$GEOPY_S / $GEORAG_S" | bc -l)"
