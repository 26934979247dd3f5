#!/usr/bin/env bash
# Runs a real vLLM OpenAI-compatible server (CPU build) on loopback, serving the tiny random
# Qwen2-VL, for interop tests.
#
#   scripts/vllm/serve.sh start    set up if needed, start, wait until ready; prints the base URL
#                                  (one line, `http://127.0.0.1:PORT`) on stdout, all else on stderr
#   scripts/vllm/serve.sh stop     stop the server (its whole process group) and wait for it
#   scripts/vllm/serve.sh status   print the URL and exit 0 if it is up and answering, else exit 1
#
# State lives in ${GEORAG_VLLM_HOME:-$HOME/.cache/georag-vllm}: venv/, tiny-qwen2vl/, server.pid,
# server.url, server.log. Exit 77 means skip (setup could not reach PyPI); any other non-zero
# exit is a failure. GEORAG_VLLM_READY_TIMEOUT (seconds, default 180) bounds the wait.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export GEORAG_VLLM_HOME="${GEORAG_VLLM_HOME:-$HOME/.cache/georag-vllm}"
GHOME="$GEORAG_VLLM_HOME"
PY="$GHOME/venv/bin/python"
MODEL="$GHOME/tiny-qwen2vl"
PIDF="$GHOME/server.pid"
URLF="$GHOME/server.url"
LOG="$GHOME/server.log"
NAME=tiny-qwen2vl
READY_TIMEOUT="${GEORAG_VLLM_READY_TIMEOUT:-180}"

log() { echo "[vllm-serve] $*" >&2; }

alive() { # the recorded server process (group leader) is running
  [ -f "$PIDF" ] && kill -0 "$(cat "$PIDF")" 2>/dev/null
}

answers() { # GET /v1/models on $1 answers 200
  curl -fsS --noproxy '*' --max-time 5 "$1/v1/models" >/dev/null 2>&1
}

free_port() {
  python3 - <<'EOF'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
EOF
}

stop() {
  if [ ! -f "$PIDF" ]; then
    rm -f "$URLF"
    return 0
  fi
  pid=$(cat "$PIDF")
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping server (process group $pid)"
    kill -TERM -- "-$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do
      # done when no process of the group is left
      kill -0 -- "-$pid" 2>/dev/null || break
      sleep 0.5
    done
    if kill -0 -- "-$pid" 2>/dev/null; then
      log "still running after 30 s; SIGKILL"
      kill -KILL -- "-$pid" 2>/dev/null || true
      for _ in $(seq 1 20); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.5; done
    fi
  fi
  rm -f "$PIDF" "$URLF"
}

start() {
  if alive && [ -f "$URLF" ] && answers "$(cat "$URLF")"; then
    log "already running"
    cat "$URLF"
    return 0
  fi
  stop
  rc=0
  "$HERE/setup.sh" || rc=$?
  [ "$rc" -eq 0 ] || exit "$rc"
  "$PY" "$HERE/make_tiny_qwen2vl.py" "$MODEL" >&2

  port=$(free_port)
  url="http://127.0.0.1:$port"
  log "starting vLLM on $url (log: $LOG)"
  t0=$(date +%s)
  # Loopback only: VLLM_HOST_IP / VLLM_LOOPBACK_IP keep vLLM's internal ZMQ sockets off the
  # machine's other addresses; usage stats and hub look-ups are off.
  env VLLM_TARGET_DEVICE=cpu \
      VLLM_CPU_KVCACHE_SPACE=1 \
      VLLM_HOST_IP=127.0.0.1 \
      VLLM_LOOPBACK_IP=127.0.0.1 \
      HF_HUB_OFFLINE=1 \
      TRANSFORMERS_OFFLINE=1 \
      VLLM_NO_USAGE_STATS=1 \
      DO_NOT_TRACK=1 \
      HF_HUB_DISABLE_TELEMETRY=1 \
      no_proxy='127.0.0.1,localhost' NO_PROXY='127.0.0.1,localhost' \
      setsid "$PY" -m vllm.entrypoints.openai.api_server \
        --model "$MODEL" \
        --served-model-name "$NAME" \
        --host 127.0.0.1 \
        --port "$port" \
        --max-model-len 1024 \
        --limit-mm-per-prompt '{"image": 1}' \
        --enforce-eager \
        >"$LOG" 2>&1 </dev/null &
  echo $! >"$PIDF"

  while :; do
    if ! alive; then
      log "server exited during start-up; last lines of $LOG:"
      tail -n 60 "$LOG" >&2 || true
      rm -f "$PIDF"
      exit 1
    fi
    if answers "$url"; then
      break
    fi
    if [ $(( $(date +%s) - t0 )) -ge "$READY_TIMEOUT" ]; then
      log "not ready after ${READY_TIMEOUT} s; last lines of $LOG:"
      tail -n 60 "$LOG" >&2 || true
      stop
      exit 1
    fi
    sleep 1
  done
  echo "$url" >"$URLF"
  log "ready in $(( $(date +%s) - t0 )) s (pid $(cat "$PIDF"))"
  echo "$url"
}

status() {
  if alive && [ -f "$URLF" ] && answers "$(cat "$URLF")"; then
    cat "$URLF"
    return 0
  fi
  log "not running"
  return 1
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
