#!/usr/bin/env bash
# The Python the reference scripts use (tests/fixtures/make_real_photo_refs.py,
# tests/fixtures/make_decode_fixtures.py, benches/decode_limit.sh): a virtualenv in
# ~/.cache/georag-pyref with the versions the committed references were made with. Prints its
# python. torch (CPU) is taken from $TORCH_SITE (a site-packages directory that has it, e.g.
# ~/.cache/georag-vllm/venv/lib/python3.11/site-packages, which `make test-servers` creates) when
# set or found, else installed from PyPI.
set -euo pipefail
V="${GEORAG_PYREF:-$HOME/.cache/georag-pyref}"
PINS=("pillow==12.3.0" "transformers==5.23.0" "numpy==2.4.6" "safetensors" "pyarrow")
if [ ! -x "$V/bin/python" ] || ! "$V/bin/python" -c "import PIL, transformers, numpy, safetensors, pyarrow; assert PIL.__version__ == '12.3.0' and transformers.__version__ == '5.23.0'" 2>/dev/null; then
  python3 -m venv "$V" >&2
  "$V/bin/pip" install --quiet "${PINS[@]}" >&2
fi
if ! "$V/bin/python" -c "import torch" 2>/dev/null; then
  site="${TORCH_SITE:-$(ls -d "$HOME"/.cache/georag-vllm/venv/lib/python3*/site-packages 2>/dev/null | head -1 || true)}"
  if [ -n "$site" ] && [ -d "$site/torch" ]; then
    # appended to sys.path after the venv's own packages, so the pins above still win
    echo "$site" > "$("$V/bin/python" -c 'import site; print(site.getsitepackages()[0])')/zz_torch.pth"
  else
    "$V/bin/pip" install --quiet torch --index-url https://download.pytorch.org/whl/cpu >&2 || "$V/bin/pip" install --quiet torch >&2
  fi
fi
echo "$V/bin/python"
