#!/usr/bin/env bash
# Axon vs PyTorch on Fashion-MNIST: same model, batch 128, Adam lr 1e-3, seed, thread count.
#
# Usage: bench/compare_pytorch.sh [--build DIR] [--models "mlp mlp_big"] [--threads "1 2"]
#                                 [--epochs 1] [--repeat 1] [--seed 42]
# Models: mlp, mlp_big and cnn (fashion_mnist --model cnn; nn.Conv2d/MaxPool2d in PyTorch).
#
# For every (model, threads) pair it runs build/bin/fashion_mnist and
# bench/torch_fashion_mnist.py back to back (R times each with --repeat R, keeping the best
# samples/s), prints a Markdown table and appends every raw result line to
# bench/results/compare_pytorch-<date>.jsonl. Both sides time only their training loop.
# PYTHON overrides the interpreter for the PyTorch side (default: /usr/bin/python3, Debian's torch).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

build_dir="build"
models="mlp mlp_big"
threads_list="1 2"
epochs=1
repeat=1
seed=42
batch_size=128
optimizer="adam"
lr="1e-3"
python="${PYTHON:-/usr/bin/python3}"

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "compare_pytorch: error: $*" >&2; exit 1; }

while (($#)); do
  case "$1" in
    --build)   [[ $# -ge 2 ]] || die "--build needs a value"; build_dir="$2"; shift 2 ;;
    --models)  [[ $# -ge 2 ]] || die "--models needs a value"; models="$2"; shift 2 ;;
    --threads) [[ $# -ge 2 ]] || die "--threads needs a value"; threads_list="$2"; shift 2 ;;
    --epochs)  [[ $# -ge 2 ]] || die "--epochs needs a value"; epochs="$2"; shift 2 ;;
    --repeat)  [[ $# -ge 2 ]] || die "--repeat needs a value"; repeat="$2"; shift 2 ;;
    --seed)    [[ $# -ge 2 ]] || die "--seed needs a value"; seed="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
# Numbers are checked here, before anything is built or run, with the rules and messages of
# Axon's examples/cli; usage errors exit 2.
usage_error() { echo "compare_pytorch: error: $*" >&2; exit 2; }
[[ "$repeat" =~ ^[1-9][0-9]*$ && ${#repeat} -le 6 ]] || usage_error "--repeat: expected an integer in [1, 999999], got '$repeat'"
[[ "$epochs" =~ ^[1-9][0-9]*$ && ${#epochs} -le 6 && $epochs -le 100000 ]] ||
  usage_error "--epochs: expected an integer in [1, 100000], got '$epochs'"
[[ -n "$threads_list" ]] || usage_error "--threads: expected integers in [1, 1024], got ''"
for t in $threads_list; do
  [[ "$t" =~ ^[1-9][0-9]*$ && ${#t} -le 4 && $t -le 1024 ]] || usage_error "--threads: expected integers in [1, 1024], got '$t'"
done
# Up to 2^64 - 1: compared as strings of equal length, since bash arithmetic is 64-bit signed.
[[ "$seed" =~ ^(0|[1-9][0-9]*)$ ]] && { ((${#seed} < 20)) || [[ ${#seed} -eq 20 && ! "$seed" > "18446744073709551615" ]]; } ||
  usage_error "--seed: expected an integer in [0, 18446744073709551615], got '$seed'"

# --- dependencies and build ---------------------------------------------------------------
scripts/install-deps.sh --bench

axon_bin="$build_dir/bin/fashion_mnist"
if [[ ! -x "$axon_bin" ]]; then
  echo "compare_pytorch: $axon_bin not found, building (Release) in $build_dir ..." >&2
  cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release
  cmake --build "$build_dir" -j2
  [[ -x "$axon_bin" ]] || die "build finished but $axon_bin does not exist"
fi
torch_script="bench/torch_fashion_mnist.py"

mkdir -p bench/results
results_file="bench/results/compare_pytorch-$(date +%Y-%m-%d).jsonl"
log_dir="$(mktemp -d)"
trap 'rm -rf "$log_dir"' EXIT

# --- helpers ------------------------------------------------------------------------------

# json_field JSON KEY -> prints the value (numbers as-is, null as "null").
json_field() {
  python3 -c 'import json, sys; v = json.loads(sys.argv[1])[sys.argv[2]]; print("null" if v is None else v)' "$1" "$2"
}

# run_side NAME THREADS CMD... -> runs CMD with the thread env pinned, prints its last
# stdout line (validated JSON with the required keys) and appends it to the results file.
run_side() {
  local name="$1" threads="$2"; shift 2
  local out="$log_dir/$name.out" err="$log_dir/$name.err" rc=0
  OMP_NUM_THREADS="$threads" OPENBLAS_NUM_THREADS="$threads" "$@" >"$out" 2>"$err" || rc=$?
  if ((rc != 0)); then
    {
      echo "compare_pytorch: $name failed (exit $rc): $*"
      echo "--- last lines of stderr:"; tail -n 20 "$err"
      echo "--- last lines of stdout:"; tail -n 5 "$out"
    } >&2
    exit 1
  fi
  local line
  line="$(grep -v '^[[:space:]]*$' "$out" | tail -n 1 || true)"
  if ! python3 -c '
import json, sys
try:
    d = json.loads(sys.argv[1])
except ValueError as e:
    sys.exit("not JSON: %s" % e)
if not isinstance(d, dict):
    sys.exit("not a JSON object")
missing = [k for k in ("model", "test_accuracy", "test_loss", "train_samples_per_s") if k not in d]
if missing:
    sys.exit("missing keys: %s" % ", ".join(missing))
' "$line" 2>"$log_dir/parse.err"; then
    die "$name: last stdout line is not the expected JSON result ($(cat "$log_dir/parse.err")): '$line' (command: $*)"
  fi
  # Tag the line so the .jsonl is self-describing (keys the program already set are kept).
  python3 -c '
import json, sys
d = json.loads(sys.argv[1])
d.setdefault("framework", sys.argv[2])
d.setdefault("threads", int(sys.argv[3]))
d["bench_date"] = sys.argv[4]
print(json.dumps(d))' "$line" "$name" "$threads" "$(date -Iseconds)" >>"$results_file"
  printf '%s\n' "$line"
}

# gt A B: succeeds when float A > float B
gt() { python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) > float(sys.argv[2]) else 1)' "$1" "$2"; }

# --- benchmark ----------------------------------------------------------------------------
rows=()
for model in $models; do
  for t in $threads_list; do
    best_axon=0; best_torch=0; acc_axon=""; acc_torch=""
    for ((r = 1; r <= repeat; r++)); do
      echo "compare_pytorch: model=$model threads=$t run $r/$repeat: axon ..." >&2
      line="$(run_side axon "$t" "$axon_bin" --model "$model" --epochs "$epochs" \
        --batch-size "$batch_size" --optimizer "$optimizer" --lr "$lr" \
        --threads "$t" --seed "$seed" --no-progress)"
      sps="$(json_field "$line" train_samples_per_s)"
      if gt "$sps" "$best_axon"; then
        best_axon="$sps"; acc_axon="$(json_field "$line" test_accuracy)"
      fi

      echo "compare_pytorch: model=$model threads=$t run $r/$repeat: pytorch ..." >&2
      line="$(run_side pytorch "$t" "$python" "$torch_script" --model "$model" --epochs "$epochs" \
        --batch-size "$batch_size" --optimizer "$optimizer" --lr "$lr" \
        --threads "$t" --seed "$seed" --no-progress)"
      sps="$(json_field "$line" train_samples_per_s)"
      if gt "$sps" "$best_torch"; then
        best_torch="$sps"; acc_torch="$(json_field "$line" test_accuracy)"
      fi
    done
    rows+=("$(python3 -c '
import sys
m, t, a, p, aa, pa = sys.argv[1:]
a, p = float(a), float(p)
ratio = "%.2fx" % (a / p) if p > 0 else "n/a"
fmt_acc = lambda s: "%.4f" % float(s) if s not in ("", "null") else "n/a"
print("| %s | %s | %.0f | %.0f | %s | %s | %s |" % (m, t, a, p, ratio, fmt_acc(aa), fmt_acc(pa)))
' "$model" "$t" "$best_axon" "$best_torch" "$acc_axon" "$acc_torch")")
  done
done

echo
echo "Fashion-MNIST, batch $batch_size, $optimizer lr $lr, $epochs epoch(s), seed $seed, best of $repeat run(s)"
echo
echo "| model | threads | Axon samples/s | PyTorch samples/s | Axon/PyTorch | Axon test acc | PyTorch test acc |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
echo "raw results appended to $results_file"
