#!/usr/bin/env bash
# A fuzzing campaign on the DICOM and HTTP paths (libFuzzer, clang, with
# AddressSanitizer and UBSan): tests/fuzz/fuzz_dicom.c and
# tests/fuzz/serve/fuzz_http.c, seeded from tests/fuzz/corpus/{dicom,http}.
#   scripts/fuzz-serve.sh [SECONDS]     each fuzzer runs SECONDS (default 600)
#   scripts/fuzz-serve.sh --smoke       a short run of each (scripts/test.sh)
# The growing corpora are kept in build-fuzz-serve/fuzz-work/NAME, crashes in
# build-fuzz-serve/fuzz-crashes/ (add a regression input to
# tests/fuzz/corpus/NAME/ once fixed). The last lines of each run are the
# campaign's figures (executions, rate, coverage, corpus, peak memory).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=600
SMOKE=0
if [ "${1:-}" = "--smoke" ]; then SMOKE=1; elif [ -n "${1:-}" ]; then SECS=$1; fi
B=build-fuzz-serve
CC=clang CXX=clang++ cmake -S . -B $B -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCX_FUZZ_DICOM_HTTP=ON \
  -DCX_BUILD_TESTS=OFF >/dev/null
cmake --build $B -j"$(nproc)" --target fuzz_dicom fuzz_http 2>&1 | grep -E " error|error:" || true
cmake --build $B -j"$(nproc)" --target fuzz_dicom fuzz_http >/dev/null
mkdir -p $B/fuzz-crashes
status=0
for name in dicom http; do
  work=$B/fuzz-work/$name
  mkdir -p "$work"
  if [ $SMOKE = 1 ]; then
    # every committed seed and regression input, then a few thousand mutations
    args=(-runs=2000)
  else
    args=(-max_total_time="$SECS")
  fi
  echo "== fuzz_$name ${args[*]}"
  if ! ASAN_OPTIONS=detect_leaks=1 $B/tests/fuzz/serve/fuzz_$name "${args[@]}" \
      -dict=tests/fuzz/dict/$name.dict -timeout=120 -rss_limit_mb=4096 -malloc_limit_mb=2048 \
      -print_final_stats=1 -artifact_prefix=$B/fuzz-crashes/$name- \
      "$work" tests/fuzz/corpus/$name > $B/fuzz-$name.log 2>&1; then
    status=1
    grep -E "ERROR|SUMMARY|Test unit" $B/fuzz-$name.log | head -5
  fi
  grep -E "^#[0-9]+ +(DONE|pulse|NEW|REDUCE)" $B/fuzz-$name.log | tail -1 || true
  grep -E "^stat::" $B/fuzz-$name.log || true
done
exit $status
