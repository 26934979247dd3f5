#!/usr/bin/env bash
# Time `georag prepare` against the Python reference (PIL + pyarrow) on the same folder of
# N real-sized JPEGs (default 2000, 1024x768), on this machine, in the same run.
# Usage: benches/prepare_vs_python.sh [N]
set -euo pipefail
N="${1:-2000}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${BENCH_WORK:-$(mktemp -d)}"
python3 -c "import PIL, numpy, pyarrow" 2>/dev/null || python3 -m pip install --quiet pillow numpy pyarrow
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "python $(python3 -c 'import platform; print(platform.python_version())'), pillow $(python3 -c 'import PIL; print(PIL.__version__)'), pyarrow $(python3 -c 'import pyarrow; print(pyarrow.__version__)')"
if [ ! -f "$WORK/meta.csv" ]; then
  python3 "$ROOT/benches/gen_jpegs.py" "$N" "$WORK"
fi
echo "input: $N JPEGs, $(du -sh "$WORK/images" | cut -f1)"
(cd "$ROOT" && cargo build --release --quiet --bin georag)
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/georag"
# Warm the page cache once so both tools read from memory.
cat "$WORK"/images/* > /dev/null
rm -rf "$WORK/out-georag" "$WORK/out-python"
t0=$(date +%s.%N)
GEORAG_QUIET=1 "$BIN" prepare folder --metadata "$WORK/meta.csv" --images "$WORK/images" --out "$WORK/out-georag" >/dev/null
t1=$(date +%s.%N)
python3 "$ROOT/benches/prepare_reference.py" "$WORK/meta.csv" "$WORK/images" "$WORK/out-python"
t2=$(date +%s.%N)
g=$(echo "$t1 - $t0" | bc -l); p=$(echo "$t2 - $t1" | bc -l)
printf "georag prepare (full decode check): %.2f s (%.0f images/s)\n" "$g" "$(echo "$N / $g" | bc -l)"
printf "python reference (PIL + pyarrow):   %.2f s (%.0f images/s)\n" "$p" "$(echo "$N / $p" | bc -l)"
printf "ratio: %.2fx\n" "$(echo "$p / $g" | bc -l)"
