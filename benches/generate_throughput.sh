#!/usr/bin/env bash
# Client throughput against the SIMULATED LLM server: `georag simulate-server --latency-ms 200
# --slots 64` allows at most 64 / 0.2 s = 320 requests/s. `georag generate` sends N requests
# (N/10 synthetic queries x 10 samples, one choice per request) with the response store on,
# max_in_flight 64. Prints requests/s, the share of the 320/s ceiling, and peak RSS.
# Usage: benches/generate_throughput.sh [N_REQUESTS]   (default 20000; the issue's memory
# check uses 100000)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20000}
Q=$(( N / 10 ))
BIN=${CARGO_TARGET_DIR:-$HOME/.cache/georag-target}/release/georag
W=$(mktemp -d /tmp/georag-genbench-XXXX)
trap 'kill $sim 2>/dev/null || true; rm -rf "$W"' EXIT
"$BIN" simulate-server --latency-ms 200 --slots 64 --url-file "$W/url" 2>"$W/sim.log" &
sim=$!
while [ ! -s "$W/url" ]; do sleep 0.05; done
cat > "$W/bench.yaml" <<YAML
name: genbench
cache_dir: $W/cache
database: {kind: synthetic, split: database, n: 2000}
queries: {kind: synthetic, split: queries, n: $Q}
encoder: {kind: im2gps}
index: {factory: "Flat", nprobe: 1, train_sample: 2000}
methods:
  - kind: mllm
    name: bench
    variants: [{prompt: street_rag, neighbours: {similar: 16, dissimilar: 16}, samples: 10}]
    sampling: {temperature: 1.0, max_tokens: 64, seed: 0, n_per_request: 1}
generator:
  kind: openai_compatible
  base_url: $(cat "$W/url")
  model: georag-simulator-v1 (simulated)
  max_in_flight: 64
YAML
# Materialise the datasets and embeddings first (not timed).
GEORAG_QUIET=1 "$BIN" embed "$W/bench.yaml" >/dev/null
start=$(date +%s.%N)
GEORAG_QUIET=1 /usr/bin/time -v "$BIN" generate "$W/bench.yaml" >"$W/out.txt" 2>"$W/time.txt" &
tpid=$!
# Resident memory of the georag process every 5 s (flat while requests stream = no growth per request).
: >"$W/rss.txt"
while kill -0 "$tpid" 2>/dev/null; do
  gp=$(pgrep -P "$tpid" -x georag || true)
  [ -n "$gp" ] && awk -v t="$(echo "$(date +%s.%N) - $start" | bc -l)" '/^VmRSS/ {printf "%.0f s: %d MB\n", t, $2/1024}' "/proc/$gp/status" >>"$W/rss.txt" 2>/dev/null || true
  sleep 5
done
wait "$tpid"
end=$(date +%s.%N)
echo "RSS over time: $(tr '\n' ';' <"$W/rss.txt")"
cat "$W/out.txt"
secs=$(echo "$end - $start" | bc -l)
rss=$(grep 'Maximum resident' "$W/time.txt" | awk '{print $NF}')
python3 - "$N" "$secs" "$rss" <<'PY'
import sys
n, s, rss = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
print(f"{n} requests in {s:.1f} s = {n/s:.1f} requests/s = {100*n/s/320:.1f} % of the 320/s the simulator allows; peak RSS {rss/1024:.0f} MB")
PY
python3 benches/summary.py record --stage generate --what "georag generate (whole process) against the SIMULATED server's limit (64 slots x 200 ms)" \
  --size "$N requests" --unit "requests/s" --georag "$(echo "$N / $secs" | bc -l)" --reference 320 \
  --reference-name "physical limit" --higher-is-better --command "benches/generate_throughput.sh"
