#!/usr/bin/env bash
# Installs what chexnet needs on Debian 12 (bookworm): the build toolchain and
# libraries, and for the tests the Python oracles (PyTorch, torchvision,
# scikit-learn, PIL). Run as root (or with sudo available).
#   scripts/deps.sh          build + run dependencies
#   scripts/deps.sh --test   also the test dependencies
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
PKGS=(build-essential cmake pkg-config libpng-dev libjpeg-dev zlib1g-dev
      libssl-dev libdcmtk-dev libmicrohttpd-dev libgd-dev
      libfreetype-dev fonts-dejavu-core  # the heat map legend's text
      libopenmpi-dev openmpi-bin)  # multi-process training (optional for the build)
if [ "${1:-}" = "--test" ]; then
  PKGS+=(libcmocka-dev python3 python3-numpy python3-torch python3-torchvision
         python3-sklearn python3-pil qemu-user
         dcmtk libgdcm-tools python3-pydicom python3-prometheus-client
         chromium orthanc dicom3tools
         clang libclang-rt-dev libomp-dev llvm  # the clang build and the fuzzers
         shellcheck)  # lints scripts/reproduce-chexnet.sh
  # node and npm drive chromium in the viewer test; a node from elsewhere
  # (nodesource) brings its own npm
  command -v npm >/dev/null 2>&1 || PKGS+=(nodejs npm)
fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
