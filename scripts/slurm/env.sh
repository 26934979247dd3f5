# scripts/slurm/env.sh: settings shared by every job in scripts/slurm/, sourced by each job after
# it has changed into the working directory. Export a variable before `submit_all.sh` (sbatch
# passes the submitting environment on) or edit the defaults here.
#
# Every job must run in the same working directory on a shared filesystem: the config's relative
# paths (datasets, models, `cache_dir`, by default results/cache) resolve against it, and the
# jobs hand their work to each other only through that cache (embedding store, index parts,
# response store).

# The georag binary. For `encoder.device: cuda:N` it must be a `cuda` build (README, "CUDA"),
# which needs the NVIDIA driver even to start: run it on GPU nodes only.
GEORAG=${GEORAG:-georag}
# The experiment config, relative to the working directory.
CONFIG=${CONFIG:?set CONFIG to the experiment config, e.g. CONFIG=configs/examples/rag_vllm.yaml}
# Extra `--set KEY=VALUE` overrides for every georag command, separated by spaces (no spaces
# inside a value; put such values in the config instead). Not glob-expanded.
GEORAG_SETS=${GEORAG_SETS:-}
# Batch files of the `vllm run-batch` flow.
BATCH_DIR=${BATCH_DIR:-results/batch}

# The vLLM side (generate_replicas.sbatch, vllm_node.sh, batch_run_array.sbatch).
# VLLM_MODEL: what vLLM loads (a local directory or a Hugging Face id your nodes can read).
# VLLM_SERVED_NAME: the name it serves; must equal the config's `generator.model`, which georag
# sends in every request and checks against GET /v1/models (`generator.check_model`).
VLLM_MODEL=${VLLM_MODEL:-}
VLLM_SERVED_NAME=${VLLM_SERVED_NAME:-}
VLLM_SERVE=${VLLM_SERVE:-vllm serve}
VLLM_RUN_BATCH=${VLLM_RUN_BATCH:-vllm run-batch}
# GPUs per vLLM engine (its --tensor-parallel-size).
VLLM_TP=${VLLM_TP:-1}
VLLM_PORT_BASE=${VLLM_PORT_BASE:-8000}
# Share of each GPU vLLM takes; the rest is left for georag's own encoder on the client's node
# (georag generate builds the config's encoder before it opens the cached embeddings).
VLLM_GPU_MEM_UTIL=${VLLM_GPU_MEM_UTIL:-0.85}
# Anything else for vLLM, e.g. VLLM_EXTRA_ARGS="--max-model-len 4096 --limit-mm-per-prompt {\"image\":1}"
VLLM_EXTRA_ARGS=${VLLM_EXTRA_ARGS:-}
VLLM_READY_TIMEOUT=${VLLM_READY_TIMEOUT:-1800}
# Exported: srun passes them to vllm_node.sh on the other nodes.
export VLLM_MODEL VLLM_SERVED_NAME VLLM_SERVE VLLM_RUN_BATCH VLLM_TP VLLM_PORT_BASE VLLM_GPU_MEM_UTIL \
  VLLM_EXTRA_ARGS VLLM_READY_TIMEOUT

# --set arguments as an array (read -a splits on whitespace and does not glob, so values such
# as `generator.base_urls=[...]` survive).
read -r -a _georag_sets <<<"$GEORAG_SETS"
SET_ARGS=()
for _kv in ${_georag_sets[@]+"${_georag_sets[@]}"}; do
  SET_ARGS+=(--set "$_kv")
done
unset _kv _georag_sets

# Explicit --worker/--workers for an array task when WORKERS is given. Without it georag reads
# SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN of SLURM_ARRAY_TASK_COUNT itself, which is right for
# a contiguous array (0-31, 1-32) but not for a resubmission of some tasks (--array=5,17 has a
# count of 2): resubmit those with WORKERS set to the original array size (0-based task ids,
# as submit_all.sh submits them: --array=0-(N-1)).
WORKER_ARGS=()
if [ -n "${WORKERS:-}" ] && [ -n "${SLURM_ARRAY_TASK_ID:-}" ]; then
  WORKER_ARGS=(--worker "$SLURM_ARRAY_TASK_ID" --workers "$WORKERS")
fi

log() { echo "[slurm $(date -u +%H:%M:%SZ) ${SLURM_JOB_ID:-nojob}${SLURM_ARRAY_TASK_ID:+_$SLURM_ARRAY_TASK_ID}] $*" >&2; }

# Run a command, printing it first.
run() {
  log "+ $*"
  "$@"
}
