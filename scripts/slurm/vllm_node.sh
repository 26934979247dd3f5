#!/usr/bin/env bash
# Start REPLICAS vLLM OpenAI-compatible servers on this node, replica k on GPUs
# [k*VLLM_TP, (k+1)*VLLM_TP) of the ones this job step sees and on port VLLM_PORT_BASE + k, and
# wait for them (stopping all of them when this script is signalled). generate_replicas.sbatch
# runs it once per node with srun; by hand:
#
#   VLLM_MODEL=/models/Qwen2-VL-7B-Instruct VLLM_SERVED_NAME=Qwen/Qwen2-VL-7B-Instruct \
#     scripts/slurm/vllm_node.sh 4
#
# Servers listen on all interfaces (the georag client runs on another node); set VLLM_API_KEY to
# make vLLM require a key (generate_replicas.sbatch then tells georag the variable's name through
# `generator.api_key_env`). Logs: $VLLM_LOG_DIR/vllm-<host>-<port>.log.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 REPLICAS" >&2; exit 2; }
replicas=$1
: "${VLLM_MODEL:?set VLLM_MODEL (what vLLM loads)}"
: "${VLLM_SERVED_NAME:?set VLLM_SERVED_NAME to the generator.model of the config}"
VLLM_SERVE=${VLLM_SERVE:-vllm serve}
VLLM_TP=${VLLM_TP:-1}
VLLM_PORT_BASE=${VLLM_PORT_BASE:-8000}
VLLM_GPU_MEM_UTIL=${VLLM_GPU_MEM_UTIL:-0.85}
VLLM_EXTRA_ARGS=${VLLM_EXTRA_ARGS:-}
VLLM_LOG_DIR=${VLLM_LOG_DIR:-results/slurm}
mkdir -p "$VLLM_LOG_DIR"

# The GPUs this step may use: CUDA_VISIBLE_DEVICES as Slurm set it, else all nvidia-smi lists.
if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
  IFS=, read -r -a gpus <<<"$CUDA_VISIBLE_DEVICES"
else
  mapfile -t gpus < <(nvidia-smi --query-gpu=index --format=csv,noheader)
fi
need=$((replicas * VLLM_TP))
if [ "${#gpus[@]}" -lt "$need" ]; then
  echo "vllm_node.sh: $(hostname) has ${#gpus[@]} GPUs visible (${gpus[*]:-none}), $replicas replicas x $VLLM_TP need $need" >&2
  exit 1
fi

read -r -a serve <<<"$VLLM_SERVE"
read -r -a extra <<<"$VLLM_EXTRA_ARGS"
key=()
[ -n "${VLLM_API_KEY:-}" ] && key=(--api-key "$VLLM_API_KEY")
pids=()
stop() {
  trap - TERM INT EXIT
  [ "${#pids[@]}" -gt 0 ] && kill "${pids[@]}" 2>/dev/null || true
  wait || true
}
trap stop TERM INT EXIT
for ((k = 0; k < replicas; k++)); do
  devs=$(IFS=,; echo "${gpus[*]:k*VLLM_TP:VLLM_TP}")
  port=$((VLLM_PORT_BASE + k))
  log_file="$VLLM_LOG_DIR/vllm-$(hostname -s)-$port.log"
  echo "[vllm_node $(hostname -s)] replica $k: GPUs $devs, port $port, log $log_file" >&2
  CUDA_VISIBLE_DEVICES=$devs "${serve[@]}" "$VLLM_MODEL" \
    --served-model-name "$VLLM_SERVED_NAME" \
    --host 0.0.0.0 --port "$port" \
    --tensor-parallel-size "$VLLM_TP" \
    --gpu-memory-utilization "$VLLM_GPU_MEM_UTIL" \
    ${key[@]+"${key[@]}"} ${extra[@]+"${extra[@]}"} \
    >"$log_file" 2>&1 </dev/null &
  pids+=($!)
done
# Exit (and stop the others) as soon as any replica exits.
wait -n
echo "[vllm_node $(hostname -s)] a replica exited; stopping the rest" >&2
