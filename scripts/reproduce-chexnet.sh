#!/usr/bin/env bash
# Reproduces CheXNet (Rajpurkar et al. 2017) on ChestX-ray14 with the chexnet
# CLI: a patient-level split, packs of the images, the 14-finding model and
# the pneumonia model trained with the paper's recipe, per-class AUROC with
# bootstrap CIs on the test part, and the reader study when radiologists'
# labels are given. Safe to rerun: finished steps are skipped, an interrupted
# training continues (chexnet train --resume). See --help.
set -euo pipefail

PROG=${0##*/}

usage() {
  cat <<EOF
usage: $PROG DATA_DIR [options]

Reproduces CheXNet on ChestX-ray14 with the chexnet command: split by patient,
prepare packs, train the 14-finding model and the pneumonia model with the
paper's recipe (DenseNet-121, Adam, batch 16, lr 1e-3 divided by 10 on a
validation-loss plateau), evaluate both on the test part (per-class AUROC,
bootstrap 95% CIs, mean AUROC) against the paper's Table 2, and run the
reader study when radiologists' labels are given.

DATA_DIR holds the ChestX-ray14 download: Data_Entry_2017*.csv[.gz] (the
newest name is used when there are several) and the images, in
images_001 ... images_012 or one images/ folder (searched recursively).
Optionally train_val_list.txt and test_list.txt, the official lists.

Rerunning skips finished steps (their records are in OUT/.steps) and
continues an interrupted training where its last checkpoint left it. A step
runs again when its command changed (other epochs, seed, split; not
--threads) or a step it depends on ran again after it.

options:
  --out DIR          results (default: ./chexnet-reproduction)
  --threads N        threads for every step (default: all cores)
  --seed S           split, initialisation, shuffling and bootstrap seed
                     (default 0)
  --official-lists   split from DATA_DIR/train_val_list.txt and test_list.txt
                     (validation: 12.5% of train_val by patient, seeded)
  --split-dir DIR    split from the lists in DIR: train.txt, val.txt,
                     test.txt or train_list.txt[.gz], val_list.txt,
                     test_list.txt ('IMAGE [L1 ... L14]'), e.g. the 70/10/20
                     split of public re-implementations
                     (default: random 70/10/20 by patient)
  --epochs N         training epochs of each model (default 10)
  --weights FILE     start both models from these weights, e.g. torchvision's
                     ImageNet DenseNet-121 converted with tools/convert.py,
                     as CheXNet did (the 1000-class head is replaced);
                     without it the models train from scratch
  --skip-pneumonia   train and evaluate only the 14-finding model
  --readers DIR      reader study: every DIR/*.csv is one radiologist's 0/1
                     labels (named by the file's stem) except truth.csv or
                     groundtruth.csv (a reference, optional); the model is
                     the pneumonia model for Pneumonia (unless
                     --skip-pneumonia), else the 14-finding model, on the
                     test part, which must hold the readers' images
  --readers-class C  the finding of the reader study (default Pneumonia)
  --readers-threshold T
                     the model is positive when its probability >= T
                     (default 0.5)
  --bootstrap N      bootstrap resamples of the evaluation (default 10000)
  --max-steps N      stop each training after N steps (a trial run; it counts
                     as finished)
  --batch N          training batch (default 16, the paper's)
  --chexnet PATH     the chexnet binary (default: \$CHEXNET, then the build
                     next to this script, then chexnet on PATH)
  --bench            with --dry-run: also time a training step and inference
                     on this machine (chexnet bench, a minute or more) and
                     estimate from those
  --dry-run          run only what needs the metadata: the split (written to
                     OUT/split), its counts and the check that no patient is in
                     two parts, label counts per class and part, the
                     pneumonia loss's class weights, the plan (every command
                     of the full run) and time and disk estimates; the
                     images are not needed
  -h, --help         this help

Exit status: 0 done, 1 a step failed, 2 a usage error, 130 a step was
interrupted (Ctrl-C or SIGTERM: rerun to continue).
EOF
}

die() { echo "$PROG: $*" >&2; exit 1; }
usage_error() { echo "$PROG: $*" >&2; echo "Try '$PROG --help'." >&2; exit 2; }

# ---------------------------------------------------------------- options
DATA=""
OUT="chexnet-reproduction"
THREADS=""
SEED=0
OFFICIAL=0
SPLIT_DIR=""
EPOCHS=10
SKIP_PNEUMONIA=0
READERS=""
READERS_CLASS="Pneumonia"
READERS_THRESHOLD=""
BOOTSTRAP=10000
MAX_STEPS=""
BATCH=16
CHEXNET=${CHEXNET:-}
WEIGHTS=""
BENCH=0
DRY=0

need_arg() { [ $# -ge 2 ] || usage_error "option $1 needs a value"; }
while [ $# -gt 0 ]; do
  opt=$1
  val=""
  case $opt in
    --*=*) val=${opt#*=}; opt=${opt%%=*}; set -- "$opt" "$val" "${@:2}" ;;
  esac
  case $opt in
    -h|--help) usage; exit 0 ;;
    --out) need_arg "$@"; OUT=$2; shift 2 ;;
    --threads) need_arg "$@"; THREADS=$2; shift 2 ;;
    --seed) need_arg "$@"; SEED=$2; shift 2 ;;
    --official-lists) OFFICIAL=1; shift ;;
    --split-dir) need_arg "$@"; SPLIT_DIR=$2; shift 2 ;;
    --epochs) need_arg "$@"; EPOCHS=$2; shift 2 ;;
    --weights) need_arg "$@"; WEIGHTS=$2; shift 2 ;;
    --skip-pneumonia) SKIP_PNEUMONIA=1; shift ;;
    --readers) need_arg "$@"; READERS=$2; shift 2 ;;
    --readers-class) need_arg "$@"; READERS_CLASS=$2; shift 2 ;;
    --readers-threshold) need_arg "$@"; READERS_THRESHOLD=$2; shift 2 ;;
    --bootstrap) need_arg "$@"; BOOTSTRAP=$2; shift 2 ;;
    --max-steps) need_arg "$@"; MAX_STEPS=$2; shift 2 ;;
    --batch) need_arg "$@"; BATCH=$2; shift 2 ;;
    --chexnet) need_arg "$@"; CHEXNET=$2; shift 2 ;;
    --bench) BENCH=1; shift ;;
    --dry-run) DRY=1; shift ;;
    --) shift; break ;;
    -*) usage_error "unknown option '$opt'" ;;
    *)
      [ -z "$DATA" ] || usage_error "one DATA_DIR only (got '$DATA' and '$opt')"
      DATA=$opt; shift ;;
  esac
done
if [ $# -gt 0 ]; then
  if [ -n "$DATA" ] || [ $# -ne 1 ]; then usage_error "one DATA_DIR only"; fi
  DATA=$1
fi
[ -n "$DATA" ] || usage_error "no DATA_DIR (the ChestX-ray14 download)"

is_uint() { case $1 in ''|*[!0-9]*) return 1 ;; *) return 0 ;; esac; }
for pair in "threads:$THREADS" "seed:$SEED" "epochs:$EPOCHS" "bootstrap:$BOOTSTRAP" \
            "max-steps:$MAX_STEPS" "batch:$BATCH"; do
  name=${pair%%:*} v=${pair#*:}
  if [ -n "$v" ] && ! is_uint "$v"; then
    usage_error "--$name wants a non-negative integer, got '$v'"
  fi
done
[ -z "$THREADS" ] || [ "$THREADS" -gt 0 ] || usage_error "--threads wants at least 1"
[ "$EPOCHS" -gt 0 ] || usage_error "--epochs wants at least 1"
[ "$BATCH" -gt 0 ] || usage_error "--batch wants at least 1"
[ -z "$MAX_STEPS" ] || [ "$MAX_STEPS" -gt 0 ] || usage_error "--max-steps wants at least 1"
[ $OFFICIAL = 0 ] || [ -z "$SPLIT_DIR" ] || usage_error "give --official-lists or --split-dir, not both"
[ $BENCH = 0 ] || [ $DRY = 1 ] || usage_error "--bench goes with --dry-run"
[ -z "$THREADS" ] && THREADS=$(nproc 2>/dev/null || echo 1)
if [ -n "$WEIGHTS" ] && [ ! -f "$WEIGHTS" ]; then
  die "--weights: no file '$WEIGHTS'"
fi

# ---------------------------------------------------------------- the binary
if [ -z "$CHEXNET" ]; then
  here=$(cd "$(dirname "$0")" && pwd)
  if [ -x "$here/../build/chexnet" ]; then
    CHEXNET="$(cd "$here/../build" && pwd)/chexnet"
  elif command -v chexnet >/dev/null 2>&1; then
    CHEXNET=$(command -v chexnet)
  else
    die "no chexnet binary: build it (cmake -S . -B build && cmake --build build), put it on PATH, or give --chexnet PATH"
  fi
fi
[ -x "$CHEXNET" ] || die "--chexnet: '$CHEXNET' is not an executable file"

# ---------------------------------------------------------------- the data
[ -d "$DATA" ] || die "DATA_DIR '$DATA' is not a folder"
# absolute paths, so that a step's record does not depend on the folder the
# script is run from
absdir() { (cd "$1" && pwd); }
absfile() { echo "$(absdir "$(dirname "$1")")/$(basename "$1")"; }
DATA=$(absdir "$DATA")
[ -z "$SPLIT_DIR" ] || [ ! -d "$SPLIT_DIR" ] || SPLIT_DIR=$(absdir "$SPLIT_DIR")
[ -z "$READERS" ] || [ ! -d "$READERS" ] || READERS=$(absdir "$READERS")
[ -z "$WEIGHTS" ] || WEIGHTS=$(absfile "$WEIGHTS")
META=""
for f in "$DATA"/Data_Entry_2017*.csv "$DATA"/Data_Entry_2017*.csv.gz; do
  [ -f "$f" ] || continue
  if [ -z "$META" ] || [[ ${f##*/} > ${META##*/} ]]; then META=$f; fi
done
[ -n "$META" ] || die "no Data_Entry_2017*.csv[.gz] in '$DATA' (the ChestX-ray14 metadata)"

IMAGES=""
for d in "$DATA"/images "$DATA"/images_[0-9]*; do
  if [ -d "$d" ]; then IMAGES=$DATA; break; fi
done

SPLIT_ARGS=()
SPLIT_DESC=""
list_in() { # DIR NAME...: the first DIR/NAME that exists
  local dir=$1 n
  shift
  for n in "$@"; do
    if [ -f "$dir/$n" ]; then echo "$dir/$n"; return 0; fi
  done
  return 1
}
if [ $OFFICIAL = 1 ]; then
  tv=$(list_in "$DATA" train_val_list.txt) || die "--official-lists: no train_val_list.txt in '$DATA'"
  te=$(list_in "$DATA" test_list.txt) || die "--official-lists: no test_list.txt in '$DATA'"
  SPLIT_ARGS=(--train "$tv" --test "$te" --val-fraction 0.125)
  SPLIT_DESC="the official lists (validation: 12.5% of train_val by patient, seed $SEED)"
elif [ -n "$SPLIT_DIR" ]; then
  [ -d "$SPLIT_DIR" ] || die "--split-dir '$SPLIT_DIR' is not a folder"
  tr=$(list_in "$SPLIT_DIR" train.txt train_list.txt train_list.txt.gz) ||
    die "--split-dir: no train.txt or train_list.txt[.gz] in '$SPLIT_DIR'"
  va=$(list_in "$SPLIT_DIR" val.txt val_list.txt val_list.txt.gz) ||
    die "--split-dir: no val.txt or val_list.txt[.gz] in '$SPLIT_DIR'"
  te=$(list_in "$SPLIT_DIR" test.txt test_list.txt test_list.txt.gz) ||
    die "--split-dir: no test.txt or test_list.txt[.gz] in '$SPLIT_DIR'"
  SPLIT_ARGS=(--train "$tr" --val "$va" --test "$te")
  SPLIT_DESC="the lists in $SPLIT_DIR"
else
  fractions=0.7,0.1,0.2
  SPLIT_ARGS=(--fractions "$fractions")
  SPLIT_DESC="random by patient, 70/10/20, seed $SEED"
fi

READER_ARGS=()
if [ -n "$READERS" ]; then
  [ -d "$READERS" ] || die "--readers '$READERS' is not a folder"
  nr=0
  for f in "$READERS"/*.csv; do
    [ -f "$f" ] || continue
    stem=${f##*/}
    stem=${stem%.csv}
    case $stem in
      truth|groundtruth) READER_ARGS+=(--truth "$f") ;;
      *) READER_ARGS+=(--reader "$stem=$f"); nr=$((nr + 1)) ;;
    esac
  done
  [ $nr -ge 2 ] || die "--readers: the reader study needs at least 2 readers' *.csv files in '$READERS' (found $nr)"
fi

if [ $DRY = 0 ] && [ -z "$IMAGES" ]; then
  die "no images in '$DATA' (images/ or images_001 ... images_012); --dry-run needs only the metadata"
fi
mkdir -p "$OUT/.steps" || die "cannot create '$OUT/.steps'"
OUT=$(absdir "$OUT")
# an output being written when the script stops (an error, Ctrl-C) is removed
TMPFILE=""
trap '[ -z "$TMPFILE" ] || rm -f "$TMPFILE"' EXIT

# ---------------------------------------------------------------- steps
# A step is done when OUT/.steps/NAME holds its command (runtime options such
# as --threads left out) and is newer than the records of the steps it
# depends on. The record is written after the command succeeded.
PLAN=()

# a command as a shell line: words quoted only where the shell needs it
quote() {
  local s="" a
  for a in "$@"; do
    if [[ $a =~ ^[A-Za-z0-9_./,=:+@%-]+$ ]]; then s+="$a "; else s+="$(printf '%q' "$a") "; fi
  done
  echo "${s% }"
}

step_done() { # NAME KEY DEP...
  local rec="$OUT/.steps/$1" key=$2 d
  shift 2
  [ -f "$rec" ] && [ "$(cat "$rec")" = "$key" ] || return 1
  for d in "$@"; do
    [ -f "$OUT/.steps/$d" ] && [ "$rec" -nt "$OUT/.steps/$d" ] || return 1
  done
  return 0
}

# run_step NAME STDOUT_FILE|- "DEP ..." KEY_ARGC ARG... : the first KEY_ARGC
# arguments are the command's identity, the rest runtime options.
run_step() {
  local name=$1 outfile=$2 deps=$3 nkey=$4
  shift 4
  local -a cmd=("$@") depv=()
  read -r -a depv <<<"$deps"
  local key
  key=$(quote "${cmd[@]:0:nkey}")
  local line
  line=$(quote "${cmd[@]}")
  [ "$outfile" = - ] || line+=" > $(printf '%q' "$outfile")"
  if step_done "$name" "$key" "${depv[@]}"; then
    PLAN+=("[$name] (done) $line")
    [ $DRY = 1 ] || echo "== $name: done earlier, skipped ($OUT/.steps/$name)"
    return 0
  fi
  # the split needs only the metadata: the dry run makes it too
  if [ $DRY = 1 ] && [ "$name" != split ]; then
    PLAN+=("[$name] $line")
    return 0
  fi
  if [ $DRY = 1 ]; then PLAN+=("[$name] (run by this dry run) $line"); else PLAN+=("[$name] $line"); fi
  echo "== $name"
  echo "\$ $line"
  local t0=$SECONDS
  local rc=0
  if [ "$outfile" = - ]; then
    "${cmd[@]}" || rc=$?
  else
    TMPFILE="$(dirname "$outfile")/.$(basename "$outfile").tmp-$$"
    "${cmd[@]}" >"$TMPFILE" || rc=$?
    [ $rc != 0 ] || { mv -f "$TMPFILE" "$outfile"; TMPFILE=""; }
  fi
  if [ $rc = 130 ]; then
    echo "$PROG: step $name interrupted; rerun the same command to continue (finished steps are kept, a training resumes from its checkpoint)" >&2
    exit 130
  elif [ $rc != 0 ]; then
    die "step $name failed (status $rc); fix the cause and rerun: finished steps are kept"
  fi
  printf '%s\n' "$key" >"$OUT/.steps/.$name.tmp-$$"
  mv -f "$OUT/.steps/.$name.tmp-$$" "$OUT/.steps/$name"
  echo "   ($name took $((SECONDS - t0)) s)"
}

X=$CHEXNET
SPLIT=$OUT/split
PACK=$OUT/pack
mkdir -p "$SPLIT" "$PACK"

# 1. the split (run in the dry run too: it needs only the metadata)
SPLIT_CMD=("$X" split --labels "$META" "${SPLIT_ARGS[@]}" --seed "$SEED" --out "$SPLIT" --tsv)
run_step split "$SPLIT/summary.tsv" "" ${#SPLIT_CMD[@]} "${SPLIT_CMD[@]}"
[ -f "$SPLIT/summary.tsv" ] || die "the split summary $SPLIT/summary.tsv is missing"

tsv() { # WHAT PART CLASS: the value from the split summary
  awk -F'\t' -v w="$1" -v p="$2" -v c="$3" '$1 == w && $2 == p && $3 == c { print $4; f = 1 } END { exit !f }' \
    "$SPLIT/summary.tsv"
}
N_TRAIN=$(tsv images train "") N_VAL=$(tsv images val "") N_TEST=$(tsv images test "")
P_TRAIN=$(tsv patients train "") P_VAL=$(tsv patients val "") P_TEST=$(tsv patients test "")
CROSSING=$(tsv crossing_patients "" "")
UNASSIGNED=$(tsv unassigned_images "" "")
CLASSES=()
while IFS= read -r c; do CLASSES+=("$c"); done < <(awk -F'\t' '$1 == "positives" && $2 == "train" { print $3 }' "$SPLIT/summary.tsv")

# 2. packs: train + val for training, test for evaluation
run_step prepare-trainval - "split" 12 \
  "$X" prepare --labels "$META" --image-dir "$DATA" --only "$SPLIT/train.txt" \
  --only "$SPLIT/val.txt" -o "$PACK/trainval.cxpack" --threads "$THREADS"
run_step prepare-test - "split" 10 \
  "$X" prepare --labels "$META" --image-dir "$DATA" --only "$SPLIT/test.txt" \
  -o "$PACK/test.cxpack" --threads "$THREADS"

# 3. training, 4. predictions on the test pack, 5. evaluation
MODELS=(all14)
[ $SKIP_PNEUMONIA = 1 ] || MODELS+=(pneumonia)
for task in "${MODELS[@]}"; do
  run=$OUT/$task
  mkdir -p "$run"
  tcmd=("$X" train --labels "$PACK/trainval.cxpack" --train-list "$SPLIT/train.txt"
        --val-list "$SPLIT/val.txt" --task "$task" --epochs "$EPOCHS" --batch "$BATCH"
        --seed "$SEED" --out "$run")
  [ -z "$WEIGHTS" ] || tcmd+=(--weights "$WEIGHTS")
  [ -z "$MAX_STEPS" ] || tcmd+=(--max-steps "$MAX_STEPS")
  nkey=${#tcmd[@]}
  tcmd+=(--threads "$THREADS")
  [ ! -f "$run/last.safetensors" ] || tcmd+=(--resume)
  run_step "train-$task" - "split prepare-trainval" "$nkey" "${tcmd[@]}"
  run_step "predict-$task" "$run/test-pred.csv" "train-$task prepare-test" 6 \
    "$X" predict --model "$run/best.safetensors" --format csv "$PACK/test.cxpack" \
    --threads "$THREADS"
  run_step "evaluate-$task" "$run/test-eval.txt" "predict-$task" 14 \
    "$X" evaluate --pred "$run/test-pred.csv" --labels "$SPLIT/test.txt" \
    --bootstrap "$BOOTSTRAP" --seed "$SEED" --json "$run/test-eval.json" --report "$run/report" \
    --threads "$THREADS"
done

# 6. the reader study
if [ -n "$READERS" ]; then
  # the pneumonia model for pneumonia, else the 14-finding model
  model=all14
  if [ $SKIP_PNEUMONIA = 0 ] && [ "${READERS_CLASS,,}" = pneumonia ]; then model=pneumonia; fi
  rcmd=("$X" readers --class "$READERS_CLASS" "${READER_ARGS[@]}"
        --model "chexnet=$OUT/$model/test-pred.csv")
  [ -z "$READERS_THRESHOLD" ] || rcmd+=(--threshold "$READERS_THRESHOLD")
  rcmd+=(--bootstrap "$BOOTSTRAP" --seed "$SEED" --json "$OUT/readers/readers.json"
         --report "$OUT/readers/report")
  nkey=${#rcmd[@]}
  rcmd+=(--threads "$THREADS")
  mkdir -p "$OUT/readers"
  run_step readers "$OUT/readers/readers.txt" "predict-$model" "$nkey" "${rcmd[@]}"
fi

# ---------------------------------------------------------------- reports
# CheXNet's per-class test AUROCs (Rajpurkar et al. 2017, arXiv:1711.05225,
# Table 2; the same values are quoted in arnoweng/CheXNet's and
# jrzech/reproduce-chexnet's READMEs); its mean is 0.841.
paper_auroc() {
  case $1 in
    Atelectasis) echo 0.8094 ;; Cardiomegaly) echo 0.9248 ;; Effusion) echo 0.8638 ;;
    Infiltration) echo 0.7345 ;; Mass) echo 0.8676 ;; Nodule) echo 0.7802 ;;
    Pneumonia) echo 0.7680 ;; Pneumothorax) echo 0.8887 ;; Consolidation) echo 0.7901 ;;
    Edema) echo 0.8878 ;; Emphysema) echo 0.9371 ;; Fibrosis) echo 0.8047 ;;
    Pleural_Thickening) echo 0.8062 ;; Hernia) echo 0.9164 ;; *) echo - ;;
  esac
}

# auroc_of EVAL.json KEY: "V [LO, HI]" of a class's AUROC (KEY: its name) or
# of the mean (KEY: mean_auroc) in chexnet evaluate's JSON; "undefined" for
# null. Line breaks and spaces in the JSON do not matter.
auroc_of() {
  awk -v key="$2" 'BEGIN { RS = "\001" } { s = s $0 } END {
    if (key != "mean_auroc") {
      i = index(s, "\"auroc\""); if (!i) exit 1; s = substr(s, i + 7)
    }
    i = index(s, "\"" key "\""); if (!i) exit 1; s = substr(s, i + length(key) + 2)
    if (!match(s, /"value": *[^,}]*/)) exit 1
    v = substr(s, RSTART, RLENGTH); sub(/"value": */, "", v)
    if (v == "null") { print "undefined"; exit 0 }
    if (!match(s, /"ci95": *\[[^]]*\]/)) { printf "%.4f\n", v; exit 0 }
    ci = substr(s, RSTART, RLENGTH); sub(/"ci95": *\[/, "", ci); sub(/\]/, "", ci)
    split(ci, lh, / *, */)
    if (lh[1] == "null") printf "%.4f\n", v
    else printf "%.4f [%.4f, %.4f]\n", v, lh[1], lh[2]
  }' "$1"
}

if [ $DRY = 0 ]; then
  echo
  echo "== results on the test part ($N_TEST images, $P_TEST patients; split: $SPLIT_DESC)"
  echo "initial weights: ${WEIGHTS:-none, from scratch}"
  for task in "${MODELS[@]}"; do
    ev=$OUT/$task/test-eval.json
    [ -f "$ev" ] || continue
    echo
    echo "-- $task model ($OUT/$task/best.safetensors); report: $OUT/$task/report/report.html"
    printf '%-20s %-30s %s\n' class "AUROC [95% CI]" "CheXNet (paper, 14 findings)"
    for c in "${CLASSES[@]}"; do
      a=$(auroc_of "$ev" "$c") || continue
      printf '%-20s %-30s %s\n' "$c" "$a" "$(paper_auroc "$c")"
    done
    m=$(auroc_of "$ev" mean_auroc) || m=""
    if [ "$task" = all14 ]; then
      printf '%-20s %-30s %s\n' "mean AUROC" "${m:-see $ev}" "0.841 (public re-implementations: 0.838-0.843)"
    fi
  done
  if [ -n "$READERS" ] && [ -f "$OUT/readers/readers.txt" ]; then
    echo
    echo "-- reader study ($READERS_CLASS): $OUT/readers/report/report.html"
    cat "$OUT/readers/readers.txt"
  fi
  exit 0
fi

# ---------------------------------------------------------------- dry run
echo "dataset: $META"
if [ -n "$IMAGES" ]; then
  echo "images:  under $DATA (searched recursively)"
else
  echo "images:  none under $DATA (images/ or images_001 ... images_012); the dry run does not need them, the full run does"
fi
echo "chexnet: $X"
if [ -n "$WEIGHTS" ]; then
  echo "initial weights: $WEIGHTS"
else
  echo "initial weights: none, from scratch (CheXNet started from ImageNet weights: see --weights)"
fi
echo
echo "== split: $SPLIT_DESC -> $SPLIT/{train,val,test}.txt"
printf '%-20s %10s %10s %10s %10s\n' "" train val test total
printf '%-20s %10s %10s %10s %10s\n' patients "$P_TRAIN" "$P_VAL" "$P_TEST" $((P_TRAIN + P_VAL + P_TEST))
printf '%-20s %10s %10s %10s %10s\n' images "$N_TRAIN" "$N_VAL" "$N_TEST" $((N_TRAIN + N_VAL + N_TEST))
[ "$UNASSIGNED" = 0 ] || echo "images in no part: $UNASSIGNED"
if [ "$CROSSING" = 0 ]; then
  echo "patients in two parts: 0 (chexnet split, by the Patient ID column)"
else
  echo "patients in two parts: $CROSSING: the split is not patient-level" >&2
fi
echo
echo "== positive images per class"
printf '%-20s %10s %10s %10s %10s\n' "" train val test total
for c in "${CLASSES[@]}"; do
  a=$(tsv positives train "$c") b=$(tsv positives val "$c") e=$(tsv positives test "$c")
  printf '%-20s %10s %10s %10s %10s\n' "$c" "$a" "$b" "$e" $((a + b + e))
done
echo
if [ $SKIP_PNEUMONIA = 0 ]; then
  wp=$(tsv w_pos train Pneumonia) wn=$(tsv w_neg train Pneumonia)
  pp=$(tsv positives train Pneumonia)
  echo "== pneumonia loss (weighted BCE on the train part, $pp positives of $N_TRAIN):"
  echo "w+ = |N|/(|P|+|N|) = $wp"
  echo "w- = |P|/(|P|+|N|) = $wn"
  echo "(the 14-finding model: the plain sum of the 14 BCEs)"
  echo
fi

echo "== plan (the full run's commands; (done): recorded in $OUT/.steps and skipped)"
for p in "${PLAN[@]}"; do echo "$p"; done
echo

# ---- estimates
# Figures measured with the project's benchmark (bench/bench.py; README,
# sections Performance and bf16 inference), per hardware class:
#   NAME|MACHINE|training step s (batch 16)|inference s (batch 16)|threads|how
HW=(
  "avx512|2-vCPU AMD EPYC (Zen 4, AVX-512) VM|1.65|0.4997|2|bench/bench.py --repeat 10 --rounds 3"
  "avx2|the same VM capped to AVX2 (stand-in for AVX2 CPUs)|1.72|0.5245|2|bench/bench.py --isa avx2 --repeat 6 --rounds 2"
  "amx|2-core Xeon (AMX) VM, fp32|-|0.400|2|bench/bench.py --repeat 10 (40 images/s)"
)
# Decoding and resizing one 1024x1024 NIH PNG into a pack took 11 ms of CPU
# time (chexnet prepare on the 22 NIH PNGs of ../shared/data/nih/images,
# user + sys under /usr/bin/time, on the AVX-512 VM above); used for every
# class. A pack stores a grey image as 224 x 224 bytes plus its index entry:
# 1,105,519 bytes for those 22 images, 50,251 bytes per image.
PREP_CPU_S=0.011
PACK_BYTES=50251
# a checkpoint (model + Adam moments) and the best model, per training run
CKPT_BYTES=84135432
BEST_BYTES=28293088

if [ $BENCH = 1 ]; then
  echo "timing this machine (chexnet bench, $THREADS threads) ..." >&2
  median() { sed -n 's/.*"median_s": *\([0-9.eE+-]*\).*/\1/p'; }
  bt=$("$X" bench --train --batch 16 --repeat 3 --warmup 1 --threads "$THREADS" --json | median)
  bi=$("$X" bench --batch 16 --repeat 3 --warmup 1 --threads "$THREADS" --json | median)
  if [ -z "$bt" ] || [ -z "$bi" ]; then die "chexnet bench gave no timing"; fi
  HW+=("here|this machine, measured now|$bt|$bi|$THREADS|chexnet bench --train and chexnet bench, batch 16, --repeat 3")
fi

NTV=$((N_TRAIN + N_VAL))
NTR=${#MODELS[@]}
echo "== disk (besides the downloaded images)"
awk -v ntv="$NTV" -v nte="$N_TEST" -v pb="$PACK_BYTES" -v ck="$CKPT_BYTES" -v be="$BEST_BYTES" -v nm="$NTR" 'BEGIN {
  g = 1e9
  printf "packs:  %.2f GB train+val (%d images) + %.2f GB test (%d images), %d bytes per image\n", ntv * pb / g, ntv, nte * pb / g, nte, pb
  printf "models: %.2f GB (%d runs: last.safetensors %.0f MB with the Adam moments, best.safetensors %.0f MB)\n", nm * (ck + be) / g, nm, ck / 1e6, be / 1e6
  printf "total:  about %.1f GB\n", (ntv + nte) * pb / g + nm * (ck + be) / g
}'
echo
echo "== time, by hardware class ($EPOCHS epochs, batch $BATCH; train $N_TRAIN, val $N_VAL, test $N_TEST images)"
echo "figures measured with the project's benchmark (README: Performance); GPU: no GPU backend yet"
echo "prepare: ${PREP_CPU_S} s of CPU per 1024x1024 PNG (chexnet prepare of the 22 NIH PNGs on the avx512 VM), reading from disk not counted"
for h in "${HW[@]}"; do
  IFS='|' read -r name machine step inf thr how <<<"$h"
  if [ "$step" = - ]; then st="not measured"; else st="$step s"; fi
  echo "-- $name: $machine, $thr threads ($how): training step $st, inference $inf s per 16 images"
  awk -v ntv="$NTV" -v ntr="$N_TRAIN" -v nva="$N_VAL" -v nte="$N_TEST" -v ep="$EPOCHS" -v b="$BATCH" \
      -v step="$step" -v inf="$inf" -v thr="$thr" -v pc="$PREP_CPU_S" -v nm="$NTR" -v ms="$MAX_STEPS" '
    function hm(s) { s = int(s + 0.5); return sprintf("%d h %02d min", s / 3600, (s % 3600) / 60) }
    function ceil(x) { return x == int(x) ? x : int(x) + 1 }
    BEGIN {
      prep = (ntv + nte) * pc / thr
      printf "%-37s%s\n", "  prepare (both packs, decoding):", hm(prep)
      if (step == "-") { printf "%-37s%s\n", "  training:", "not measured on this class"; exit }
      steps = ceil(ntr / b) * ep
      if (ms != "" && ms + 0 < steps) steps = ms
      # the step time scales with the batch; validation every epoch
      tr = steps * step * b / 16 + ep * ceil(nva / 16) * inf
      printf "%-37s%s (%d steps; %s per epoch)\n", "  train, per model:", hm(tr), steps, hm(tr / ep)
      ev = ceil(nte / 16) * inf
      printf "%-37s%s\n", "  predict the test part, per model:", hm(ev)
      printf "%-37s%s\n", "  total (" nm " model" (nm > 1 ? "s" : "") "):", hm(prep + nm * (tr + ev))
    }'
done
echo "(evaluation itself, 10000 bootstrap resamples of 22,424 images and 14 classes: about 13 s)"
