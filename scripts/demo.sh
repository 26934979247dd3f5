#!/usr/bin/env bash
# `make demo`: start georag's SIMULATED LLM server on a free loopback port, run the demo config
# (retrieval baselines + RAG methods through the real OpenAI-compatible client), stop the server.
# Exit status: that of `georag run`, except that 2 (run completed, some samples failed) is the
# simulator's error model doing its job and counts as success here; the report counts them.
set -euo pipefail
BIN=${BIN:?set BIN to the georag binary}
OUT=${OUT:-results/demo}
mkdir -p results
url_file=results/.simulator.url
rm -f "$url_file"
"$BIN" simulate-server --port 0 --url-file "$url_file" &
sim=$!
trap 'kill "$sim" 2>/dev/null || true; rm -f "$url_file"' EXIT
for _ in $(seq 200); do
  [ -s "$url_file" ] && break
  kill -0 "$sim" 2>/dev/null || { echo "georag simulate-server exited" >&2; exit 1; }
  sleep 0.05
done
url=$(cat "$url_file")
# G3's geo-alignment heads for the `g3 (aligned geo_verify)` row (resumes / reuses when done).
"$BIN" align train configs/demo.yaml --out "${ALIGN_OUT:-results/demo-align}"
set +e
"$BIN" run configs/demo.yaml --set "generator.base_url=$url" --out "$OUT" "$@"
rc=$?
set -e
if [ "$rc" -eq 0 ] || [ "$rc" -eq 2 ]; then
  # G3's steps with the aligned retrieval embedding (configs/demo_g3.yaml), then one report
  # over both runs: the ablation table (no alignment / aligned retrieval / + RAG / + verification).
  set +e
  "$BIN" run configs/demo_g3.yaml --set "generator.base_url=$url" --out "${OUT}-g3"
  rc3=$?
  set -e
  [ "$rc3" -eq 0 ] || [ "$rc3" -eq 2 ] || exit "$rc3"
  "$BIN" report "$OUT" "${OUT}-g3" --out "${OUT}-g3-ablation" --no-published \
    --title "georag demo: what each G3 step adds on the synthetic world (simulated LLM)"
fi
if [ "$rc" -eq 2 ]; then
  echo "[georag] demo complete; some samples failed (refusals and prose from the simulator's error model), counted in the report"
  rc=0
fi
exit "$rc"
