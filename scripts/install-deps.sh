#!/usr/bin/env bash
# Installs the Debian packages georag needs when they are missing:
#   cmake, g++, libopenblas-dev  - to build the bundled FAISS (crate `faiss`, feature `static`)
#   nasm                         - libjpeg-turbo's SIMD code, built from the source vendored by
#                                  the `turbojpeg` crate with cmake (Debian 12's libturbojpeg0-dev
#                                  is 2.1, older than the TurboJPEG 3 API the crate needs)
#   fonts-dejavu-core            - a TTF for text in PNG plots (SVG plots need no font)
#   python3, python3-pip         - for the reference scripts (benches/, the geoclip wheel fetch)
#   python3-venv                 - cache virtualenvs (faiss-cpu for the FAISS interop test, ...)
#   with --bench also: bc, time  - arithmetic and peak RSS in the benches/ scripts (`make bench`)
# Needs root or sudo only when something is missing.
set -euo pipefail
need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v g++ >/dev/null 2>&1 || need+=(g++)
dpkg -s libopenblas-dev >/dev/null 2>&1 || need+=(libopenblas-dev)
command -v nasm >/dev/null 2>&1 || need+=(nasm)
dpkg -s fonts-dejavu-core >/dev/null 2>&1 || need+=(fonts-dejavu-core)
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
python3 -c "import ensurepip" >/dev/null 2>&1 || need+=(python3-venv)
if [ "${1:-}" = "--bench" ]; then
  command -v bc >/dev/null 2>&1 || need+=(bc)
  [ -x /usr/bin/time ] || need+=(time)
fi
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
echo "[georag] installing Debian packages: ${need[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
