#!/usr/bin/env bash
# Builds chexnet for 64-bit ARM (aarch64) with Debian's cross toolchain and
# runs the C test suite under qemu-user: the proof that the portable build,
# its NEON kernels and its run-time dispatch hold on ARM.
#   scripts/test-aarch64.sh [CTEST ARGS...]   e.g. -R test_backend_ops
# Installs what it needs (as root, or with sudo): crossbuild-essential-arm64,
# the :arm64 -dev packages (multiarch) and qemu-user. Emulation is slow: the
# whole suite takes tens of minutes on two cores.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  $SUDO dpkg --add-architecture arm64
fi
PKGS=(crossbuild-essential-arm64 cmake qemu-user libpng-dev:arm64 libjpeg-dev:arm64
      zlib1g-dev:arm64 libssl-dev:arm64 libcmocka-dev:arm64 libfreetype-dev:arm64)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
  $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}"
fi
B=build-aarch64
cmake -S . -B $B -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake \
      -DCMAKE_BUILD_TYPE=Release -DCX_BUILD_TESTS=ON >/dev/null
cmake --build $B -j"$(nproc)" 2>&1 | grep -E "warning|error" || true
cmake --build $B -j"$(nproc)" >/dev/null
qemu-aarch64 /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 \
  --library-path /usr/aarch64-linux-gnu/lib:/usr/lib/aarch64-linux-gnu $B/chexnet --version
(cd $B && ctest --output-on-failure --timeout 7200 -R '^test_' "$@")
