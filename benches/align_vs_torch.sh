#!/usr/bin/env bash
# Geo-alignment training on CPU: georag's G3 heads (candle, benches/align_throughput.rs) against
# the same model trained with PyTorch (benches/align_reference.py), on this machine, in the same
# run. Both build G3's shapes (768-d image inputs, the 3-capsule RFF location tower, MLP heads
# into a 768-d space, image-GPS contrastive loss, AdamW lr 3e-5 / wd 1e-6), draw random inputs,
# run 2 warm-up steps and time STEPS steps of batch BATCH in f32 with all cores (rayon / torch
# intra-op threads). The two alternate REPS times; the medians of samples/s are compared and
# recorded. The script fails if the two models' trainable parameter counts differ.
# Usage: benches/align_vs_torch.sh [STEPS] [BATCH] [REPS]   (defaults 10, 256, 3)
# Python: the reference venv of scripts/pyref-venv.sh (torch CPU).
set -euo pipefail
STEPS="${1:-10}"
BATCH="${2:-256}"
REPS="${3:-3}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="$("$ROOT/scripts/pyref-venv.sh")"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cd "$ROOT"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); load $(cut -d' ' -f1-3 /proc/loadavg)"
cargo bench --locked --quiet --bench align_throughput --no-run
rate() { sed -n 's/.*= \([0-9.]*\) samples\/s.*/\1/p' "$1"; }
params() { sed -n 's/.*: \([0-9]*\) trainable parameters.*/\1/p' "$1"; }
G=()
T=()
for r in $(seq 1 "$REPS"); do
  cargo bench --locked --quiet --bench align_throughput -- "$STEPS" "$BATCH" > "$WORK/georag$r.txt"
  "$PY" "$ROOT/benches/align_reference.py" "$STEPS" "$BATCH" > "$WORK/torch$r.txt"
  echo "run $r:"
  sed 's/^/  georag /' "$WORK/georag$r.txt"
  sed 's/^/  /' "$WORK/torch$r.txt"
  G+=("$(rate "$WORK/georag$r.txt")")
  T+=("$(rate "$WORK/torch$r.txt")")
done
pg="$(params "$WORK/georag1.txt")"
pt="$(params "$WORK/torch1.txt")"
if [ -z "$pg" ] || [ "$pg" != "$pt" ]; then
  echo "align_vs_torch: the models differ: georag has '$pg' trainable parameters, torch '$pt'" >&2
  exit 1
fi
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
g="$(median "${G[@]}")"
t="$(median "${T[@]}")"
tv="$("$PY" -c 'import torch; print(torch.__version__)')"
printf 'median samples/s: georag %.1f, torch %s %.1f; georag / torch %.2fx\n' "$g" "$tv" "$t" "$(echo "$g / $t" | bc -l)"
printf 'one MP-16 epoch (4,723,695 photos) projected: georag %.1f h, torch %.1f h on this CPU\n' \
  "$(echo "4723695 / $g / 3600" | bc -l)" "$(echo "4723695 / $t / 3600" | bc -l)"
python3 "$ROOT/benches/summary.py" record --stage align \
  --what "G3 alignment heads, training step (forward + backward + AdamW) on CPU, f32, vs the same model in PyTorch" \
  --size "$pg parameters, batch $BATCH, $STEPS steps, median of $REPS" --unit "samples/s" --georag "$g" --reference "$t" \
  --reference-name "PyTorch $tv" --higher-is-better --command "benches/align_vs_torch.sh"
