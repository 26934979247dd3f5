#!/usr/bin/env bash
# Fetch the geoclip wheel from PyPI once (weights for the GeoCLIP parity tests) and unpack it
# into $GEORAG_GEOCLIP_DIR (default ~/.cache/georag/geoclip). Never fails the build: without
# pip or PyPI it prints why and the GeoCLIP tests skip.
set -u
DEST="${GEORAG_GEOCLIP_DIR:-$HOME/.cache/georag/geoclip}"
if [ -f "$DEST/geoclip/model/weights/location_encoder_weights.pth" ]; then
  exit 0
fi
PY="$(command -v python3 || true)"
if [ -z "$PY" ] || ! "$PY" -m pip --version >/dev/null 2>&1; then
  echo "fetch-geoclip: skipped (python3 -m pip not available); GeoCLIP tests will skip" >&2
  exit 0
fi
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
if ! "$PY" -m pip download --no-deps --quiet --dest "$TMP" geoclip==1.3.0 >"$TMP/log" 2>&1; then
  echo "fetch-geoclip: skipped (pip could not download geoclip from PyPI: $(tail -1 "$TMP/log")); GeoCLIP tests will skip" >&2
  exit 0
fi
mkdir -p "$DEST"
"$PY" -m zipfile -e "$TMP"/geoclip-*.whl "$DEST" && echo "fetch-geoclip: unpacked into $DEST"
