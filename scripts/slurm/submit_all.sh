#!/usr/bin/env bash
# Submit the whole experiment as a chain of SLURM jobs, each starting only when the one before
# it succeeded (sbatch --dependency=afterok:ID, --kill-on-invalid-dep=yes so a failure cancels
# what depends on it instead of leaving it pending):
#
#   embed_array (EMBED_WORKERS GPUs) -afterany-> embed_finish -> index_train
#     -> index_parts_array (INDEX_WORKERS tasks) -> index_merge
#     -> live:  generate_replicas (REPLICA_NODES nodes of vLLM replicas, one georag client)
#        batch: batch_export -> batch_run_array (BATCH_PARTS vllm run-batch tasks) -> batch_import
#     -> score (georag run --replay)
#
#   CONFIG=configs/examples/rag_vllm.yaml VLLM_MODEL=/models/Qwen2-VL-7B-Instruct \
#   VLLM_SERVED_NAME=Qwen/Qwen2-VL-7B-Instruct scripts/slurm/submit_all.sh live
#
# Run it from the working directory (the config's relative paths, the cache and the logs in
# results/slurm/ resolve against it, on a filesystem every node shares).
#
# Settings (environment; see also scripts/slurm/env.sh):
#   EMBED_WORKERS=32      array tasks (GPUs) of the embedding stage
#   INDEX_WORKERS=8       partial indexes built in parallel (and merged)
#   REPLICA_NODES=1       live: nodes of vLLM replicas (GPUS_PER_NODE / VLLM_TP replicas each)
#   BATCH_PARTS=4         batch: vllm run-batch tasks
#   START_AT=embed        or index, generate, score: skip the stages before (their caches are
#                         complete; rerunning a complete embedding array makes every task read
#                         the whole store again)
#   GPU_OPTS=--gres=gpu:1 sbatch options for the georag jobs that build the config's encoder
#                         without embedding anything (index, batch export/import, score): empty
#                         when `encoder.device: cpu` (docs/scaling.md, "Where each job runs")
#   SBATCH_OPTS=          sbatch options for every job (e.g. --account=... --partition=...)
#   DRY_RUN=1             print the sbatch commands (job ids shown as <name>), submit nothing
#   SKIP_VALIDATE=1       do not run `georag validate` here first
set -euo pipefail
mode=${1:-live}
case "$mode" in
  live | batch) ;;
  *) echo "usage: $0 [live|batch]" >&2; exit 2 ;;
esac
here=scripts/slurm
[ -f "$here/env.sh" ] || { echo "$0: run from the georag working directory (no $here/env.sh here)" >&2; exit 2; }
source "$here/env.sh"

EMBED_WORKERS=${EMBED_WORKERS:-32}
INDEX_WORKERS=${INDEX_WORKERS:-8}
REPLICA_NODES=${REPLICA_NODES:-1}
BATCH_PARTS=${BATCH_PARTS:-4}
START_AT=${START_AT:-embed}
GPU_OPTS=${GPU_OPTS---gres=gpu:1}
read -r -a gpu_opts <<<"$GPU_OPTS"
read -r -a common <<<"${SBATCH_OPTS:-}"
case "$START_AT" in
  embed) level=0 ;; index) level=1 ;; generate) level=2 ;; score) level=3 ;;
  *) echo "$0: START_AT=$START_AT: expected embed, index, generate or score" >&2; exit 2 ;;
esac
if [ "$level" -le 2 ]; then
  : "${VLLM_MODEL:?set VLLM_MODEL (what vLLM loads on the GPU nodes)}"
  : "${VLLM_SERVED_NAME:?set VLLM_SERVED_NAME to the generator.model of the config}"
fi
export CONFIG GEORAG GEORAG_SETS BATCH_DIR INDEX_WORKERS BATCH_PARTS
# WORKERS is for resubmitting single array tasks by hand (env.sh); a whole chain uses the arrays.
unset WORKERS
mkdir -p results/slurm

# Check the config's local inputs (datasets, model snapshots, weights, files it names) before
# anything is queued. A `cuda` build does not start on a login node without the NVIDIA driver:
# then validate is skipped with a note (or give GEORAG a CPU build for this line).
if [ "${SKIP_VALIDATE:-0}" != 1 ]; then
  if "$GEORAG" --version >/dev/null 2>&1; then
    "$GEORAG" validate "$CONFIG" ${SET_ARGS[@]+"${SET_ARGS[@]}"} || { echo "$0: georag validate found missing pieces (above); nothing submitted" >&2; exit 1; }
  else
    echo "$0: note: \`$GEORAG --version\` does not run here; config not validated (SKIP_VALIDATE=1 hides this)" >&2
  fi
fi

# sb NAME [sbatch options...] SCRIPT: submit, print "NAME ID" to stderr, the id on stdout.
sb() {
  local name=$1
  shift
  local cmd=(sbatch --parsable --kill-on-invalid-dep=yes ${common[@]+"${common[@]}"} "$@")
  if [ "${DRY_RUN:-0}" = 1 ]; then
    echo "[dry run] ${cmd[*]}" >&2
    echo "<$name>" # stands for the job id in the commands that depend on it
    return
  fi
  local id
  id=$("${cmd[@]}")
  id=${id%%;*} # "id;cluster" on multi-cluster sites
  echo "$name: job $id" >&2
  echo "$id"
}
after() { [ -n "${1:-}" ] && echo "--dependency=afterok:$1" || true; }

prev=""
if [ "$level" -le 0 ]; then
  embed=$(sb embed --array="0-$((EMBED_WORKERS - 1))" "$here/embed_array.sbatch")
  # afterany: the finishing job embeds whatever shards failed array tasks left behind.
  prev=$(sb embed-finish --dependency="afterany:$embed" "$here/embed_finish.sbatch")
fi
if [ "$level" -le 1 ]; then
  train=$(sb index-train $(after "$prev") ${gpu_opts[@]+"${gpu_opts[@]}"} "$here/index_train.sbatch")
  parts=$(sb index-parts --dependency="afterok:$train" --array="0-$((INDEX_WORKERS - 1))" \
    ${gpu_opts[@]+"${gpu_opts[@]}"} "$here/index_parts_array.sbatch")
  prev=$(sb index-merge --dependency="afterok:$parts" ${gpu_opts[@]+"${gpu_opts[@]}"} "$here/index_merge.sbatch")
fi
if [ "$level" -le 2 ]; then
  if [ "$mode" = live ]; then
    prev=$(sb generate $(after "$prev") --nodes="$REPLICA_NODES" "$here/generate_replicas.sbatch")
  else
    export_id=$(sb batch-export $(after "$prev") ${gpu_opts[@]+"${gpu_opts[@]}"} "$here/batch_export.sbatch")
    runs=$(sb batch-run --dependency="afterok:$export_id" --array="0-$((BATCH_PARTS - 1))" \
      --gres="gpu:$VLLM_TP" "$here/batch_run_array.sbatch")
    prev=$(sb batch-import --dependency="afterok:$runs" ${gpu_opts[@]+"${gpu_opts[@]}"} "$here/batch_import.sbatch")
  fi
fi
last=$(sb score $(after "$prev") ${gpu_opts[@]+"${gpu_opts[@]}"} "$here/score.sbatch")
if [ "${DRY_RUN:-0}" = 1 ]; then
  echo "dry run: nothing submitted" >&2
else
  echo "submitted; the report is written when job $last ends (squeue -u \$USER; logs in results/slurm/)" >&2
fi
