#!/usr/bin/env bash
# Re-record the CI replay baseline of configs/ci/demo_recorded.yaml into results/baselines/recorded/:
# 1. search the demo index for the config's 60 queries and pin the lists (similar.npy, dissimilar.npy);
# 2. answer every prompt once from georag's SIMULATED LLM (a fresh response store);
# 3. keep the store (responses.jsonl) and the run's metrics.json + per_image.csv as the baseline.
# Run it deliberately (a prompt, parser or selector change that is meant to move the numbers),
# review the diff of metrics.json, and commit the four files together.
set -euo pipefail
BIN=${BIN:?set BIN to the georag binary}
CFG=configs/ci/demo_recorded.yaml
DEST=results/baselines/recorded
tmp=$(mktemp -d)
trap 'kill "${sim:-}" 2>/dev/null || true; rm -rf "$tmp"' EXIT
mkdir -p "$DEST"
"$BIN" retrieve "$CFG" --set retrieval.import=null --set cache_dir="$tmp/cache" --export-npy --out "$tmp/retrieve"
cp "$tmp/retrieve/similar.npy" "$tmp/retrieve/dissimilar.npy" "$DEST/"
"$BIN" simulate-server --port 0 --url-file "$tmp/url" &
sim=$!
for _ in $(seq 200); do [ -s "$tmp/url" ] && break; sleep 0.05; done
set +e
"$BIN" run "$CFG" --set cache_dir="$tmp/cache" --set "generator.base_url=$(cat "$tmp/url")" --no-plots --out "$tmp/run"
rc=$?
set -e
[ "$rc" -eq 0 ] || [ "$rc" -eq 2 ] || exit "$rc"
cp "$tmp/cache/responses/responses.jsonl" "$DEST/responses.jsonl"
cp "$tmp/run/metrics.json" "$tmp/run/per_image.csv" "$DEST/"
echo "recorded $(wc -l < "$DEST/responses.jsonl") responses and the metrics into $DEST"
