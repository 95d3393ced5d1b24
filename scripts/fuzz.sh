#!/usr/bin/env bash
# Runs chexnet's libFuzzer harnesses (tests/fuzz/), one fuzzer process at a
# time, and prints per harness: executions, coverage (libFuzzer's cov: edges
# and ft: features of chexnet's own code), corpus size and findings.
#
#   scripts/fuzz.sh [-t SECONDS] [--smoke] [--no-build] [NAME...]
#
#   -t SECONDS   time per harness (default 600; --smoke: 15)
#   --smoke      the quick regression run of scripts/test.sh: the committed
#                corpus (regression inputs included) and the seeds, new inputs
#                kept only for the run
#   --no-build   use build-fuzz as it is
#   NAME...      harnesses to run (default all: safetensors model png jpeg csv
#                labels predictions dataset json pack readers boxes dicom http)
#
# Builds build-fuzz with clang (-DCX_FUZZ=ON: the library instrumented with
# -fsanitize=fuzzer-no-link,address,undefined). A campaign keeps its corpus in
# build-fuzz/fuzz-work/NAME (runs continue from it) and writes crashing inputs
# to build-fuzz/fuzz-crashes/; copy each one, minimised, into
# tests/fuzz/corpus/NAME/ as a regression input once it is fixed. The summary
# is also written to build-fuzz/fuzz-summary.txt. Exit status 1 when a
# harness found something (crash, leak, sanitizer report, out-of-memory,
# timeout).
set -euo pipefail
cd "$(dirname "$0")/.."
T=""
SMOKE=0
BUILD=1
NAMES=()
while [ $# -gt 0 ]; do
  case "$1" in
    -t) T="$2"; shift 2 ;;
    --smoke) SMOKE=1; shift ;;
    --no-build) BUILD=0; shift ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) NAMES+=("$1"); shift ;;
  esac
done
[ -n "$T" ] || T=$([ $SMOKE = 1 ] && echo 15 || echo 600)
[ ${#NAMES[@]} -gt 0 ] || NAMES=(safetensors model png jpeg csv labels predictions dataset json
                                 pack readers boxes dicom http)
B=build-fuzz
if [ $BUILD = 1 ]; then
  nice -n 19 cmake -S . -B $B -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCX_FUZZ=ON -DCX_BUILD_TESTS=OFF >/dev/null
  nice -n 19 cmake --build $B -j"$(nproc)" >/dev/null
fi
dict_of() {
  case "$1" in
    safetensors|model) echo safetensors ;;
    csv|labels|predictions|dataset|readers|boxes) echo csv ;;
    *) echo "$1" ;;
  esac
}
mkdir -p $B/fuzz-logs $B/fuzz-crashes
export ASAN_OPTIONS="detect_leaks=1:allocator_may_return_null=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
export OMP_NUM_THREADS=1
SUMMARY=$B/fuzz-summary.txt
printf "%-12s %10s %8s %8s %8s %8s  %s\n" harness executions exec/s cov ft corpus findings \
  | tee $SUMMARY
status=0
for n in "${NAMES[@]}"; do
  bin=$B/tests/fuzz/fuzz_$n
  [ "$n" = http ] && bin=$B/tests/fuzz/serve/fuzz_$n
  # DCMTK and the server's model (a small DenseNet) allocate more than the
  # other parsers may
  mem=(-rss_limit_mb=2048 -malloc_limit_mb=512)
  case "$n" in dicom|http) mem=(-rss_limit_mb=4096 -malloc_limit_mb=2048) ;; esac
  [ -x "$bin" ] || { echo "fuzz.sh: no $bin" >&2; exit 2; }
  if [ $SMOKE = 1 ]; then
    work=$(mktemp -d "${TMPDIR:-/tmp}/cxfuzz-$n.XXXXXX")
  else
    work=$B/fuzz-work/$n
    mkdir -p "$work"
  fi
  dirs=("$work")
  [ -d tests/fuzz/corpus/$n ] && dirs+=("tests/fuzz/corpus/$n")
  [ -d $B/fuzz-seeds/$n ] && dirs+=("$B/fuzz-seeds/$n")
  log=$B/fuzz-logs/$n.log
  before=$(ls $B/fuzz-crashes | grep "^$n-" | grep -vc -- "-slow-unit-" || true)
  rc=0
  # -timeout: an input running two minutes is a hang (wall time: on a shared,
  # loaded machine a niced fuzzer can stall for a minute)
  nice -n 19 "$bin" -max_total_time="$T" -print_final_stats=1 -timeout=120 \
    -report_slow_units=100000 \
    "${mem[@]}" -dict=tests/fuzz/dict/$(dict_of $n).dict \
    -artifact_prefix=$B/fuzz-crashes/$n- "${dirs[@]}" >"$log" 2>&1 || rc=$?
  after=$(ls $B/fuzz-crashes | grep "^$n-" | grep -vc -- "-slow-unit-" || true)
  execs=$(awk '/stat::number_of_executed_units:/ {v = $2} END {print v}' "$log")
  rate=$(awk '/stat::average_exec_per_sec:/ {v = $2} END {print v}' "$log")
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | awk '{print $2}')
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | awk '{print $2}')
  corp=$(ls "$work" | wc -l)
  found="none"
  if [ $rc != 0 ] || [ "$after" -gt "$before" ]; then
    found="$(grep -m1 -oE 'ERROR: [A-Za-z]+: [^(]*|runtime error: .*' "$log" | head -c 120 \
             || true)"
    found="${found:-exit $rc} (see $log)"
    status=1
  fi
  printf "%-12s %10s %8s %8s %8s %8s  %s\n" "$n" "${execs:-?}" "${rate:-?}" "${cov:-?}" \
    "${ft:-?}" "$corp" "$found" | tee -a $SUMMARY
  [ $SMOKE = 1 ] && rm -rf "$work"
done
exit $status
