#!/usr/bin/env bash
# Builds and runs every test: C unit tests (cmocka), the oracle tests
# against PyTorch/torchvision/PIL/scikit-learn/pydicom (tests/py), the server,
# viewer (headless chromium) and Orthanc tests, then the C tests again under
# AddressSanitizer + UBSan, and finally builds the library and the libFuzzer
# harnesses with clang and runs each harness briefly on its corpus
# (regression inputs included). Tests that need ../shared/data skip
# with a message when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh --test
# the browser test's driver (playwright-core from npm; the browser is Debian's
# chromium, nothing is downloaded besides the package in package-lock.json)
if ! (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error); then
  echo "warning: npm ci in tests/browser failed: the viewer test will be skipped" >&2
fi
JOBS=$(nproc)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DCX_BUILD_TESTS=ON >/dev/null
cmake --build build -j"$JOBS" 2>&1 | grep -E "warning|error" || true
cmake --build build -j"$JOBS" >/dev/null
(cd build && ctest --output-on-failure --timeout 1800)
echo "== C tests under AddressSanitizer + UBSan =="
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCX_SANITIZE=ON -DCX_BUILD_TESTS=ON >/dev/null
cmake --build build-asan -j"$JOBS" >/dev/null
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure -R '^test_')
echo "== clang: the library and the libFuzzer harnesses, a short run of each =="
scripts/fuzz.sh --smoke
