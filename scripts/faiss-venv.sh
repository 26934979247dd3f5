#!/usr/bin/env bash
# Python FAISS (the `faiss-cpu` wheel from PyPI) in ~/.cache/georag-faiss, for the interop test
# (tests/index_python_faiss.rs: Python opens georag's index files and must agree on the top-10)
# and benches/index_vs_faiss.sh. Prints its python, or nothing (exit 0) when PyPI is unreachable:
# the interop test then skips with a printed, counted reason.
set -uo pipefail
V="${GEORAG_FAISS_VENV:-$HOME/.cache/georag-faiss}"
PINS=("faiss-cpu==1.12.0" "numpy")
if [ ! -x "$V/bin/python" ] || ! "$V/bin/python" -c "import faiss, numpy; assert faiss.__version__ == '1.12.0'" 2>/dev/null; then
  python3 -m venv "$V" >&2 || exit 0
  "$V/bin/pip" install --quiet "${PINS[@]}" >&2 || { echo "faiss-venv: pip install ${PINS[*]} failed (no PyPI?)" >&2; exit 0; }
fi
echo "$V/bin/python"
