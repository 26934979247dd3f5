#!/usr/bin/env bash
# Run vLLM's offline batch runner (the `vllm run-batch` of the CPU build) on an OpenAI Batch
# input file with the tiny random-weight Qwen2-VL: `scripts/vllm/run_batch.sh IN.jsonl OUT.jsonl`.
# Needs scripts/vllm/setup.sh and the model (serve.sh start builds both). Loopback only, offline.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 IN.jsonl OUT.jsonl" >&2; exit 2; }
GHOME="${GEORAG_VLLM_HOME:-$HOME/.cache/georag-vllm}"
PY="$GHOME/venv/bin/python"
MODEL="$GHOME/tiny-qwen2vl"
[ -x "$PY" ] && [ -f "$MODEL/.complete" ] || { echo "run_batch: run scripts/vllm/serve.sh start once first (venv or model missing in $GHOME)" >&2; exit 1; }
exec env VLLM_TARGET_DEVICE=cpu VLLM_CPU_KVCACHE_SPACE=1 VLLM_HOST_IP=127.0.0.1 VLLM_LOOPBACK_IP=127.0.0.1 \
  HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 HF_HUB_DISABLE_TELEMETRY=1 \
  no_proxy='127.0.0.1,localhost' NO_PROXY='127.0.0.1,localhost' \
  "$PY" -m vllm.entrypoints.launchers.run_batch -i "$1" -o "$2" \
    --model "$MODEL" --served-model-name tiny-qwen2vl --max-model-len 1024 \
    --limit-mm-per-prompt '{"image": 1}' --enforce-eager </dev/null
