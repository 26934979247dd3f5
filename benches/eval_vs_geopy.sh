#!/usr/bin/env bash
# Time whole-process `georag eval --distance geodesic` against two Python scorers on the same
# file of N synthetic predictions (default 1,000,000), on this machine, in the same run:
#   - pandas.read_csv + pyproj.Geod.inv, vectorised (the fastest Python a user would write);
#   - csv module + geopy.distance.geodesic per row (the G3-style scorer).
# georag and pandas+pyproj run REPS times each (default 3), alternating; the median wall time of
# each is compared. geopy runs once (about two minutes a run). Accuracies of all three are
# printed and georag's are checked against pandas+pyproj's to 1e-9 percentage points.
# Usage: benches/eval_vs_geopy.sh [N] [REPS]
# Python: $GEORAG_BENCH_PYTHON, else the reference venv (~/.cache/georag-pyref) when it has
# pandas, pyproj and geopy, else a venv made in ~/.cache/georag-bench-py with the pins below.
set -euo pipefail
N="${1:-1000000}"
REPS="${2:-3}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

PINS=("pandas==3.1.1" "pyproj==3.7.2" "geopy==2.5.0" "numpy==2.4.6")
has_all() { "$1" -c "import pandas, pyproj, geopy, numpy" 2>/dev/null; }
PY="${GEORAG_BENCH_PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x "$HOME/.cache/georag-pyref/bin/python" ] && has_all "$HOME/.cache/georag-pyref/bin/python"; then
    PY="$HOME/.cache/georag-pyref/bin/python"
  else
    V="$HOME/.cache/georag-bench-py"
    if [ ! -x "$V/bin/python" ] || ! has_all "$V/bin/python"; then
      python3 -m venv "$V"
      "$V/bin/pip" install --quiet "${PINS[@]}"
    fi
    PY="$V/bin/python"
  fi
fi

echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
"$PY" -c 'import platform, pandas, pyproj, geopy, numpy; print(f"python {platform.python_version()}, pandas {pandas.__version__}, pyproj {pyproj.__version__} (PROJ {pyproj.proj_version_str}), numpy {numpy.__version__}, geopy {geopy.__version__}")'

"$PY" "$ROOT/benches/gen_predictions.py" "$N" "$WORK/pred.csv"
echo "predictions: $N rows, $(du -h "$WORK/pred.csv" | cut -f1)"

(cd "$ROOT" && cargo build --release --locked --quiet --bin georag)
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/georag"

now() { date +%s.%N; }
export GEORAG_QUIET=1
G=()
P=()
for r in $(seq 1 "$REPS"); do
  # Cold outputs each time: a fresh --out directory.
  t0=$(now)
  "$BIN" eval --predictions "$WORK/pred.csv" --out "$WORK/out$r" --distance geodesic --method synthetic --dataset synthetic --no-regions >"$WORK/georag$r.txt"
  t1=$(now)
  "$PY" "$ROOT/benches/pandas_pyproj_scorer.py" "$WORK/pred.csv" >"$WORK/pandas$r.txt"
  t2=$(now)
  G+=("$(echo "$t1 - $t0" | bc -l)")
  P+=("$(echo "$t2 - $t1" | bc -l)")
  printf 'run %d: georag eval %.2f s (%s); pandas+pyproj %.2f s (%s)\n' "$r" "${G[-1]}" \
    "$(grep '^wall-clock' "$WORK/georag$r.txt")" "${P[-1]}" \
    "$(grep -E 'import s|read s|score s' "$WORK/pandas$r.txt" | sed 's/pandas+pyproj //' | paste -sd, -)"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
GM=$(median "${G[@]}")
PM=$(median "${P[@]}")
cat "$WORK/georag1.txt"
cat "$WORK/pandas1.txt"

"$PY" - "$WORK/out1/metrics.json" "$WORK/pandas1.txt" <<'EOF'
import json, sys
row = json.load(open(sys.argv[1]))["rows"][0]
acc = [row["acc_pct"][k] for k in sorted(row["acc_pct"], key=float)]
line = next(l for l in open(sys.argv[2]) if l.startswith("pandas+pyproj exact acc"))
ref = [float(x) for x in line.split(":", 1)[1].split()]
diff = max(abs(a - b) for a, b in zip(acc, ref))
print("georag acc % (<):", " / ".join(f"{a:.4f}" for a in acc), f"(max |georag - pandas+pyproj| = {diff:.2e} points)")
sys.exit(0 if diff < 1e-9 else 1)
EOF

"$PY" "$ROOT/benches/geopy_scorer.py" "$WORK/pred.csv" >"$WORK/geopy.txt"
cat "$WORK/geopy.txt"
GEOPY_S=$(grep 'geopy total s' "$WORK/geopy.txt" | awk '{print $NF}')

printf 'georag eval, whole process (read, join, score, write metrics/per_image/tables/plots/report), median of %d: %.2f s\n' "$REPS" "$GM"
printf 'pandas+pyproj, whole process (interpreter start, imports, read_csv, Geod.inv, accuracies, median), median of %d: %.2f s\n' "$REPS" "$PM"
printf 'ratio pandas+pyproj / georag (whole process, medians; >= 1 means georag is as fast or faster): %.2f\n' "$(echo "$PM / $GM" | bc -l)"
printf 'ratio geopy / georag (geopy read+score, one run / georag median): %.1f\n' "$(echo "$GEOPY_S / $GM" | bc -l)"
python3 "$ROOT/benches/summary.py" record --stage eval --what "georag eval --distance geodesic (whole process) vs pandas + pyproj (whole process), medians" \
  --size "$N predictions, median of $REPS" --unit "s" --georag "$GM" --reference "$PM" \
  --reference-name "pandas + pyproj" --lower-is-better --command "benches/eval_vs_geopy.sh"
