#!/usr/bin/env bash
# Runs Axon's batch scripts and srun on a real single-node Slurm started for the test
# (tests/slurm/local_slurm.sh), then stops it.
#
#   tests/slurm/test_slurm.sh BIN_DIR     # BIN_DIR: the build's bin folder (axonrun, fashion_mnist...)
#
# Exit 0: every check passed; 1: a check failed; 77: skipped, with the reason printed (not root,
# Slurm or munge not installed, no Fashion-MNIST data). ctest maps 77 to "skipped".
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
checkout=$(cd "$here/../.." && pwd)
bin=$(cd "${1:?usage: test_slurm.sh BIN_DIR}" && pwd)

skip() { echo "SKIP: $*"; exit 77; }
[[ $(id -u) -eq 0 ]] || skip "the daemons of a test Slurm (munged, slurmctld, slurmd) must run as root"
for tool in munged slurmctld slurmd sbatch srun scontrol sinfo; do
  command -v "$tool" >/dev/null || skip "$tool is not installed (scripts/install-deps.sh installs slurmctld slurmd slurm-client munge)"
done
for program in axonrun fashion_mnist rank_env_print rank_fault; do
  [[ -x $bin/$program ]] || { echo "FAIL: $bin/$program was not built"; exit 1; }
done
data=${AXON_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
[[ -d $data ]] || skip "no Fashion-MNIST data in $data (Debian package dataset-fashion-mnist)"

work=$(mktemp -d /tmp/axon-slurm-test-XXXXXX)
# shellcheck source=tests/slurm/local_slurm.sh
source "$here/local_slurm.sh"
cleanup() {
  slurm_stop
  rm -rf "$work"
}
trap cleanup EXIT

passed=0
failed=0
check() {  # check NAME CONDITION-COMMAND... : one result line
  local name=$1
  shift
  if "$@"; then
    echo "PASS: $name"
    passed=$((passed + 1))
  else
    echo "FAIL: $name"
    failed=$((failed + 1))
  fi
}

start=$SECONDS
slurm_start "$work/slurm" || { echo "FAIL: the test Slurm did not start"; exit 1; }
echo "test Slurm up in $((SECONDS - start)) s (SLURM_CONF=$SLURM_CONF)"

# Submits a batch job; prints its id. The jobs are submitted together and run side by side (the
# partition oversubscribes): each takes ~3 s of Slurm's own start and end, which would add up.
submit() {
  local out=$1
  shift
  sbatch --parsable --output="$out" "$@" 2>"$out.sbatch-err" || echo "sbatch failed: $(cat "$out.sbatch-err")" >&2
}
# Waits (at most 180 s) until job $1 has ended.
wait_job() {
  local state i
  for ((i = 0; i < 900; i++)); do
    state=$(scontrol show job "$1" 2>/dev/null | tr ' ' '\n' | sed -n 's/^JobState=//p')
    case $state in
      PENDING | CONFIGURING | RUNNING | COMPLETING) sleep 0.2 ;;
      *) return 0 ;;
    esac
  done
}
job_field() {  # job_field ID FIELD: e.g. JobState, ExitCode
  scontrol show job "$1" | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1
}
json_ok() {  # json_ok FILE WORLD_SIZE: the last line is the training JSON of that world, accuracy >= 0.80
  tail -n 1 "$1" | python3 -c '
import json, sys
j = json.loads(sys.stdin.read())
ok = j["world_size"] == int(sys.argv[1]) and j["test_accuracy"] >= 0.80 and j["epochs"] == 1
print("  json: world_size=%s test_accuracy=%s" % (j["world_size"], j["test_accuracy"]))
sys.exit(0 if ok else 1)' "$2"
}
show() {  # the output of a failed check
  echo "---- $1"
  cat "$1" "$1.sbatch-err" 2>/dev/null | tail -n 30
  echo "----"
}

# 1. `sbatch -n 2 slurm/train.sbatch` as it is: AXON_BIN defaults to the checkout's build/bin.
if [[ $bin == "$checkout/build/bin" ]]; then env_bin=(); else env_bin=(--export="ALL,AXON_BIN=$bin"); fi
train_id=$(submit "$work/train.out" -n 2 "${env_bin[@]}" "$checkout/slurm/train.sbatch")
# 2. multinode.sbatch, shrunk to the one node there is (1 node x 2 tasks).
multi_id=$(submit "$work/multi.out" --nodes=1 --ntasks-per-node=2 --export="ALL,AXON_BIN=$bin" "$checkout/slurm/multinode.sbatch")
# 3. A failing job: its exit state is the first failing rank's code (2: a usage error).
fail_id=$(submit "$work/fail.out" -n 2 --export="ALL,AXON_BIN=$bin,TRAIN_ARGS=--epochs 0" "$checkout/slurm/train.sbatch")
# 4. The watchdog under srun: axonrun inside the allocation starts srun; rank 1 hangs.
marker="slurm-watchdog-$$"
hang_id=$(submit "$work/hang.out" -n 2 --export="ALL,AXON_TEST_JOB=$marker" \
  --wrap="$bin/axonrun --timeout 4 $bin/rank_fault hang-outside 1")
for id in $train_id $multi_id $fail_id $hang_id; do wait_job "$id"; done

id=$train_id
state=$(job_field "$id" JobState) code=$(job_field "$id" ExitCode)
echo "train.sbatch: job $id $state exit $code"
check "train.sbatch -n 2 completes with exit 0:0" test "$state/$code" = "COMPLETED/0:0"
check "train.sbatch: the last output line is the training JSON (2 ranks, accuracy >= 0.80)" json_ok "$work/train.out" 2 ||
  show "$work/train.out"

id=$multi_id
state=$(job_field "$id" JobState) code=$(job_field "$id" ExitCode)
echo "multinode.sbatch: job $id $state exit $code"
check "multinode.sbatch (1 node x 2 tasks) completes" test "$state/$code" = "COMPLETED/0:0"
check "multinode.sbatch: training JSON last" json_ok "$work/multi.out" 2 || show "$work/multi.out"

id=$fail_id
state=$(job_field "$id" JobState) code=$(job_field "$id" ExitCode)
echo "train.sbatch with --epochs 0: job $id $state exit $code"
check "a failing training job ends FAILED with exit 2:0" test "$state/$code" = "FAILED/2:0"
check "the failing job's output names the bad option" grep -q -- "--epochs" "$work/fail.out"

id=$hang_id
state=$(job_field "$id" JobState) code=$(job_field "$id" ExitCode)
echo "hung job: $id $state exit $code"
check "a hung rank under srun: the watchdog ends the job with 124" test "$state/$code" = "FAILED/124:0"
check "the watchdog names rank 1 as stuck" grep -q "job stopped by the watchdog: rank 1 is stuck" "$work/hang.out" ||
  show "$work/hang.out"
left=$(grep -l "AXON_TEST_JOB=$marker" /proc/[0-9]*/environ 2>/dev/null | wc -l)
check "no process of the hung job is left" test "$left" -eq 0

# 5. srun directly: PMIx where this Slurm has it (srun --mpi=list), else what it has.
mpi=$(srun --mpi=list 2>&1 | awk '{print $NF}' | grep -x -m 1 pmix || true)
if [[ -z $mpi ]]; then
  mpi=$(srun --mpi=list 2>&1 | awk '{print $NF}' | grep -x -m 1 -E 'pmi2|none')
  echo "note: this Slurm has no PMIx plugin; srun uses --mpi=$mpi"
fi
timeout -k 10 120 srun --mpi="$mpi" -n 2 "$bin/rank_env_print" >"$work/env.out" 2>&1
sort "$work/env.out" >"$work/env.sorted"
cat >"$work/env.expected" <<EXPECTED
source=slurm rank=0 world_size=2 local_rank=0 local_world_size=2 node_rank=0 num_nodes=1
source=slurm rank=1 world_size=2 local_rank=1 local_world_size=2 node_rank=0 num_nodes=1
EXPECTED
check "srun --mpi=$mpi -n 2: each rank reads its place from Slurm's variables" cmp -s "$work/env.sorted" "$work/env.expected" ||
  show "$work/env.out"
timeout -k 10 180 srun --mpi="$mpi" -n 2 "$bin/fashion_mnist" --epochs 1 --no-progress >"$work/srun.out" 2>"$work/srun.err"
status=$?
check "srun --mpi=$mpi -n 2 fashion_mnist exits 0" test "$status" -eq 0 || show "$work/srun.err"
check "srun --mpi=$mpi -n 2 fashion_mnist: training JSON (2 ranks, accuracy >= 0.80)" json_ok "$work/srun.out" 2

# 6. Without axonrun: the in-rank collective timeout under srun ends the step.
marker2="slurm-collective-timeout-$$"
start_hang=$SECONDS
AXON_TEST_JOB=$marker2 AXON_COLLECTIVE_TIMEOUT=3 timeout -k 10 60 srun --mpi="$mpi" --kill-on-bad-exit=1 -n 2 \
  "$bin/rank_fault" hang-outside 1 >"$work/ct.out" 2>&1
status=$?
check "srun: AXON_COLLECTIVE_TIMEOUT=3 ends a hung step within 15 s (exit $status)" \
  test "$status" -ne 0 -a $((SECONDS - start_hang)) -lt 15
check "srun: the waiting rank names its collective" grep -q "collective #4 (allreduce) has waited" "$work/ct.out" ||
  show "$work/ct.out"
sleep 1
left=$(grep -l "AXON_TEST_JOB=$marker2" /proc/[0-9]*/environ 2>/dev/null | wc -l)
check "srun: no process of the step is left" test "$left" -eq 0

# 7. requeue.sbatch: SIGUSR1 to the batch script (what --signal=B:USR1@60 sends before the time
#    limit) reaches the ranks, which checkpoint and exit 4; the script requeues the job, and the
#    second run resumes and finishes with the parameters of an uninterrupted run.
rq_args="--synthetic 3000 --batch-size 16 --threads 1 --seed 3 --epochs 12 --no-progress --checkpoint-every 5"
rq_ck="$work/rq-ck"
rq_id=$(submit "$work/rq.out" -n 2 --export="ALL,AXON_BIN=$bin,TRAIN_ARGS=$rq_args,CHECKPOINT_DIR=$rq_ck" \
  "$checkout/slurm/requeue.sbatch")
for ((i = 0; i < 1200; i++)); do [[ -d $rq_ck/step-000000005 ]] && break; sleep 0.1; done
scancel --signal=USR1 --batch "$rq_id"
rq_start=$SECONDS
rq_released=0
for ((i = 0; i < 1500; i++)); do  # until the requeued (second) run has ended (300 s at most)
  rq_state=$(job_field "$rq_id" JobState)
  rq_restarts=$(job_field "$rq_id" Restarts)
  # Slurm holds a requeued job back for two minutes: once the first run's processes are gone
  # (a new step must not start while the old one is still being torn down), start it now.
  if [[ $rq_state == PENDING && $rq_released == 0 && $rq_restarts == 1 ]]; then
    for ((j = 0; j < 300; j++)); do
      pgrep -f "fashion_mnist.*$rq_ck" >/dev/null || pgrep -f "slurmstepd: \[$rq_id" >/dev/null ||
        [[ -n $(squeue -h -s -j "$rq_id" 2>/dev/null) ]] || break
      sleep 0.1
    done
    sleep 5
    scontrol update JobId="$rq_id" StartTime=now && rq_released=1
  fi
  if [[ $rq_restarts == 1 ]] && grep -q "run 2;" "$work/rq.out" 2>/dev/null; then
    case $rq_state in COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL) break ;; esac
  fi
  sleep 0.2
done
echo "requeue.sbatch: job $rq_id $rq_state after $((SECONDS - rq_start)) s exit $(job_field "$rq_id" ExitCode), restarts $(job_field "$rq_id" Restarts)"
check "requeue.sbatch: SIGUSR1 checkpoints, the job requeues once and completes" \
  test "$rq_state/$(job_field "$rq_id" Restarts)" = "COMPLETED/1" || show "$work/rq.out"
check "requeue.sbatch: the ranks were preempted with a checkpoint" grep -q "fashion_mnist: preempted by signal 10" "$work/rq.out"
# shellcheck disable=SC2086
"$bin/axonrun" -n 2 -- "$bin/fashion_mnist" ${rq_args/--checkpoint-every 5/} >"$work/rq-straight.out" 2>"$work/rq-straight.err"
check "requeue.sbatch: the resumed run ends with the parameters of an uninterrupted one" python3 -c '
import json, sys
def last_json(f):
    lines = [l for l in open(f).read().splitlines() if l.startswith("{")]
    if not lines:
        sys.exit("  no training JSON in %s:\n%s" % (f, open(f).read()[-2000:]))
    return json.loads(lines[-1])
a, b = (last_json(f) for f in sys.argv[1:])
print("  params_sha256 %s (requeued) vs %s (straight)" % (a["params_sha256"][:16], b["params_sha256"][:16]))
sys.exit(0 if a["params_sha256"] == b["params_sha256"] and a["resumed_from"] else 1)' "$work/rq.out" "$work/rq-straight.out" ||
  { show "$work/rq.out"; show "$work/rq-straight.err"; }

echo "gpu.sbatch: not run here: this test Slurm has no GPUs (no gres); scripts/gpu-check.sh covers GPU training"
echo "slurm test: $((SECONDS - start)) s"
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
