#!/usr/bin/env bash
# The main job: install dependencies, build, and read the sample chest X-rays
# with the shipped pneumonia model: a table of probabilities on stdout and
# class activation map overlays in out/cam/.
#   BUILD_DIR (default build) and OUT_DIR (default out) may be set.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
OUT_DIR=${OUT_DIR:-out}
scripts/deps.sh
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DCX_BUILD_TESTS=OFF >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)" >/dev/null
mkdir -p "$OUT_DIR"
if [ -f models/chexnet-pneumonia.safetensors ]; then
  "$BUILD_DIR"/chexnet predict --format table --cam "$OUT_DIR/cam" samples/
  echo "heatmaps (class activation maps) written to $OUT_DIR/cam/"
else
  # no trained model in this checkout: describe a freshly initialised one
  "$BUILD_DIR"/chexnet init --arch densenet121 --classes 14 --seed 0 -o "$OUT_DIR/densenet121-init.safetensors"
  "$BUILD_DIR"/chexnet info "$OUT_DIR/densenet121-init.safetensors"
fi
