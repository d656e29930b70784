#!/usr/bin/env bash
# Weak and strong scaling of data-parallel training on this machine: `axon-bench train` under
# axonrun at world sizes 1, 2, 4, 8, 16 (those that fit the cores: ranks x threads <= CPUs), then
# one process using all those cores, printed as two tables with speedup and efficiency against
# the 1-rank run of the same sweep.
#
#   bench/scaling.sh                                  # build/bin, mlp_big, 1 thread per rank
#   bench/scaling.sh --bin build-cpu/bin --ranks 1,2 --samples 20000 --out scaling.jsonl
#
#   weak scaling:   --batch samples per rank at every world size (global batch grows)
#   strong scaling: --global-batch samples per step in all, split over the ranks
# efficiency = samples/s / (ranks x the 1-rank samples/s); comm = share of each rank's training
# time inside the gradient collectives (mean over ranks). Options:
#   --bin DIR           where axon-bench and axonrun are (default: build/bin next to this script)
#   --model M           mlp or mlp_big (default mlp_big)
#   --threads T         threads per rank (default 1)
#   --batch B           weak scaling: batch per rank (default 128)
#   --global-batch G    strong scaling: global batch (default 128)
#   --samples S         synthetic training samples, one epoch (default 60000)
#   --ranks LIST        world sizes (default: 1,2,4,8,16 up to the CPUs / T)
#   --out FILE          also append every JSON row there
# Exit status: 0, or the first failing run's.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
bin="$here/../build/bin"
model=mlp_big threads=1 batch=128 global_batch=128 samples=60000 ranks="" out=""
usage() { sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --global-batch) global_batch=$2; shift 2 ;;
    --samples) samples=$2; shift 2 ;;
    --ranks) ranks=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "scaling.sh: error: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
for v in "$threads" "$batch" "$global_batch" "$samples"; do
  case "$v" in ''|*[!0-9]*|0) echo "scaling.sh: error: expected a positive integer, got '$v'" >&2; exit 2 ;; esac
done
[ -x "$bin/axon-bench" ] && [ -x "$bin/axonrun" ] || {
  echo "scaling.sh: error: no axon-bench and axonrun in $bin (build first, or give --bin)" >&2; exit 2; }

cpus=$(nproc)
if [ -z "$ranks" ]; then
  ranks=""
  for n in 1 2 4 8 16; do
    [ $((n * threads)) -le "$cpus" ] && ranks="$ranks${ranks:+,}$n"
  done
  [ -n "$ranks" ] || ranks=1
fi
IFS=, read -r -a sizes <<<"$ranks"
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}

# field NAME JSON: the value of a number field of one JSON row.
field() { sed -n "s/.*\"$1\":\([-0-9.e+]*\).*/\1/p" <<<"$2"; }

# run N BATCH THREADS [BASELINE]: one measurement; prints its JSON row.
run() {
  local n=$1 b=$2 t=$3 base=${4:-}
  local args=(train --model "$model" --threads "$t" --batch-size "$b" --samples "$samples" --json)
  [ -n "$base" ] && args+=(--baseline-samples-per-s "$base")
  local row
  row=$("$bin/axonrun" -n "$n" "$bin/axon-bench" "${args[@]}" | grep '^{' | tail -n 1)
  [ -n "$row" ] || { echo "scaling.sh: error: no result from $n rank(s), batch $b" >&2; return 1; }
  [ -n "$out" ] && echo "$row" >>"$out"
  echo "$row"
}

echo "# $(uptime)"
echo "# $cpus CPUs; $model, $threads thread(s) per rank, $samples synthetic samples (1 epoch); world sizes $ranks"
table() {  # table TITLE: reads "n global_batch sps comm" lines; the first n=1 row is the baseline
  echo
  echo "$1"
  printf '%6s %13s %12s %9s %11s %8s\n' ranks "global batch" samples/s speedup efficiency comm
  awk '{ if ($1 == 1 && base == "") base = $3;
         if (base != "") printf "%6s %13s %12.0f %8.2fx %10.1f%% %7.1f%%\n", $5, $2, $3, $3 / base, 100 * $3 / base / $1, 100 * $4;
         else printf "%6s %13s %12.0f %9s %11s %7.1f%%\n", $5, $2, $3, "-", "-", 100 * $4 }'
}

weak=() strong=()
base=""
for n in "${sizes[@]}"; do
  row=$(run "$n" "$batch" "$threads" "$base")
  [ "$n" = 1 ] && base=$(field samples_per_s "$row")
  weak+=("$n $(field global_batch "$row") $(field samples_per_s "$row") $(field comm_share "$row") $n")
done
# The same cores in one process: what data parallelism over ranks competes with.
biggest=${sizes[${#sizes[@]}-1]}
if [ "$biggest" -gt 1 ]; then
  row=$(run 1 $((batch * biggest)) $((threads * biggest)) "$base")
  one_process="$biggest $(field global_batch "$row") $(field samples_per_s "$row") $(field comm_share "$row") 1x$((threads * biggest))thr"
fi
printf '%s\n' "${weak[@]}" ${one_process:+"$one_process"} |
  table "Weak scaling: batch $batch per rank (last row, if any: 1 process with all the threads, batch $batch x $biggest; efficiency against $biggest x 1 rank)"

base=""
for n in "${sizes[@]}"; do
  if [ $((global_batch % n)) -ne 0 ]; then
    echo "scaling.sh: note: global batch $global_batch is not divisible by $n ranks: skipped" >&2
    continue
  fi
  row=$(run "$n" $((global_batch / n)) "$threads" "$base")
  [ "$n" = 1 ] && base=$(field samples_per_s "$row")
  strong+=("$n $(field global_batch "$row") $(field samples_per_s "$row") $(field comm_share "$row") $n")
done
printf '%s\n' "${strong[@]}" | table "Strong scaling: global batch $global_batch"
