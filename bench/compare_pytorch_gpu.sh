#!/usr/bin/env bash
# Axon vs PyTorch on one GPU: the same MLPs, batch sizes and precisions, trained for one epoch on
# synthetic Fashion-MNIST-shaped data that already lives on the GPU (60000 samples {784} f32
# uniform, labels in [0, 10), fixed seed, not shuffled), Adam lr 1e-3, in the same run.
#
# Usage: bench/compare_pytorch_gpu.sh [--build DIR] [--python PY] [--device cuda|cpu]
#          [--models "mlp mlp_big"] [--batch-sizes "128 1024"] [--precisions "f32 bf16"]
#          [--samples 60000] [--repeat 3] [--seed 42] [--results DIR] [--axon-ld-path PATH]
#          [--axon-epochs 2]
#
# PyTorch (bench/torch_gpu_train.py, one process for every configuration): eager with
# Adam(fused=True), and the whole step captured in a CUDA graph (Adam(capturable=True)); bf16 is
# torch.autocast. Axon: DIR/bin/fashion_mnist --synthetic N --device D --precision P [--cuda-graph]
# --model M --batch-size B --epochs 1 --no-progress, whose last stdout line is a JSON object with
# train_samples_per_s. An Axon run that rejects a flag is recorded as "not supported: <message>"
# and does not fail the benchmark; any other failure does (after the table is printed).
# Both sides time only steady-state training, best of --repeat runs: PyTorch leaves its warm-up
# steps and the capture untimed; Axon trains --axon-epochs epochs (default 2) and the last epoch's
# samples/s (JSON epoch_samples_per_s) is the result, the first having absorbed the warm-up (lazy
# CUDA module loading, cuBLAS heuristics, the graph capture). Axon's epoch also shuffles, trains the
# last partial batch and accumulates loss and accuracy on the device, which PyTorch's loop does not.
# Prints a Markdown table and writes every raw result to RESULTS/compare_pytorch_gpu-<date>.jsonl
# (default bench/results/). --device cpu (PyTorch eager only) is a slow smoke test without a GPU.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

build=build-gpu python=${PYTHON:-python3} device=cuda models="mlp mlp_big" batch_sizes="128 1024"
precisions="f32 bf16" samples=60000 repeat=3 seed=42 results=bench/results axon_ld_path="" axon_epochs=2
die() { echo "compare_pytorch_gpu: error: $*" >&2; exit 1; }
usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; }
while (($#)); do
  [[ $1 == -h || $1 == --help ]] && { usage; exit 0; }
  [[ $# -ge 2 ]] || { usage >&2; die "$1 needs a value (or is unknown)"; }
  case "$1" in
    --build) build=$2 ;;            --python) python=$2 ;;        --device) device=$2 ;;
    --models) models=$2 ;;          --batch-sizes) batch_sizes=$2 ;;
    --precisions) precisions=$2 ;;  --samples) samples=$2 ;;      --repeat) repeat=$2 ;;
    --seed) seed=$2 ;;              --results) results=$2 ;;      --axon-ld-path) axon_ld_path=$2 ;;
    --axon-epochs) axon_epochs=$2 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
  shift 2
done
[[ $repeat =~ ^[1-9][0-9]*$ ]] || die "--repeat must be a positive integer (got '$repeat')"
[[ $axon_epochs =~ ^[1-9][0-9]*$ ]] || die "--axon-epochs must be a positive integer (got '$axon_epochs')"
[[ $samples =~ ^[1-9][0-9]*$ ]] || die "--samples must be a positive integer (got '$samples')"
command -v "$python" >/dev/null || die "Python '$python' not found (--python or PYTHON)"
"$python" -c 'import torch' 2>/dev/null || die "'$python' cannot import torch (--python or PYTHON)"
axon_bin="$build/bin/fashion_mnist"
[[ -x $axon_bin ]] || die "$axon_bin not found: build first (scripts/gpu-check.sh, or scripts/build.sh $build -DAXON_WITH_CUDA=ON)"

mkdir -p "$results"
results_file="$results/compare_pytorch_gpu-$(date +%Y-%m-%d).jsonl"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
stamp=$(date -Iseconds)
failed=0

# ---- PyTorch: every configuration in one process ---------------------------------------------------
echo "compare_pytorch_gpu: PyTorch ($python), device $device ..." >&2
# shellcheck disable=SC2086  # word splitting of the lists is intended
"$python" bench/torch_gpu_train.py --device "$device" --models $models --batch-sizes $batch_sizes \
  --precisions $precisions --samples "$samples" --repeat "$repeat" --seed "$seed" >"$tmp/torch.jsonl" 2>"$tmp/torch.err" \
  || { cat "$tmp/torch.err" >&2; die "bench/torch_gpu_train.py failed (stderr above)"; }
"$python" -c 'import json, sys
for l in open(sys.argv[1]):
    if l.strip():
        d = json.loads(l); d["bench_date"] = sys.argv[2]; print(json.dumps(d))' "$tmp/torch.jsonl" "$stamp" >>"$results_file"

# ---- Axon: one process per run ----------------------------------------------------------------------
# axon_run MODEL BATCH PRECISION GRAPH(0|1) -> appends one JSON line to $tmp/axon.jsonl: the best
# run, or {"error": ...} / {"not_supported": ...}.
axon_run() {
  local model=$1 bs=$2 prec=$3 graph=$4 r out rc line
  local cmd=("$axon_bin" --synthetic "$samples" --device "$device" --precision "$prec" --model "$model"
             --batch-size "$bs" --epochs "$axon_epochs" --seed "$seed" --no-progress)
  ((graph)) && cmd+=(--cuda-graph)
  local best=""
  for ((r = 1; r <= repeat; r++)); do
    echo "compare_pytorch_gpu: Axon $model batch $bs $prec$( ((graph)) && echo ' cuda-graph') run $r/$repeat" >&2
    rc=0
    out=$(LD_LIBRARY_PATH="${axon_ld_path:-${LD_LIBRARY_PATH:-}}" timeout 300 "${cmd[@]}" 2>"$tmp/axon.err") || rc=$?
    if ((rc != 0)); then
      local msg; msg=$(grep -v '^[[:space:]]*$' "$tmp/axon.err" | head -n 3 | tr '\n' ' ')
      msg=${msg%%Run with --help*}; msg=${msg%%Run \'*}  # the usage hint adds nothing to a table cell
      # A rejected flag: a usage error (exit 2 with "Run '... --help' for usage", or CLI11's own codes
      # 100-127, "The following arguments were not expected"), or a message saying so.
      if ((rc == 2 || (rc >= 100 && rc <= 127))) || grep -qiE 'not expected|unknown (flag|option)|not supported|not implemented|for usage' "$tmp/axon.err"; then
        "$python" -c 'import json, sys; print(json.dumps({"not_supported": sys.argv[1]}))' "$msg (exit $rc)"
      else
        "$python" -c 'import json, sys; print(json.dumps({"error": sys.argv[1]}))' "exit $rc: $msg"
      fi
      return
    fi
    line=$(grep -v '^[[:space:]]*$' <<<"$out" | tail -n 1)
    if ! "$python" -c 'import json, sys; float(json.loads(sys.argv[1])["train_samples_per_s"])' "$line" 2>/dev/null; then
      "$python" -c 'import json, sys; print(json.dumps({"error": "last stdout line is not JSON with train_samples_per_s: " + sys.argv[1][:200]}))' "$line"
      return
    fi
    best=$("$python" -c '
import json, sys
new = json.loads(sys.argv[1])
if new.get("epoch_samples_per_s"):  # the last epoch: steady state, as PyTorch times it
    new["whole_run_samples_per_s"] = new["train_samples_per_s"]
    new["train_samples_per_s"] = new["epoch_samples_per_s"][-1]
old = json.loads(sys.argv[2]) if sys.argv[2] else None
print(json.dumps(new if old is None or new["train_samples_per_s"] > old["train_samples_per_s"] else old))' "$line" "$best")
  done
  echo "$best"
}

for model in $models; do
  for bs in $batch_sizes; do
    for prec in $precisions; do
      for graph in 0 1; do
        res=$(axon_run "$model" "$bs" "$prec" "$graph")
        "$python" -c '
import json, sys
d = json.loads(sys.argv[1])
d.update({"framework": "axon", "mode": "cuda_graph" if sys.argv[5] == "1" else "eager", "model": sys.argv[2],
          "batch_size": int(sys.argv[3]), "precision": sys.argv[4], "device": sys.argv[6], "samples": int(sys.argv[7]),
          "best_of": int(sys.argv[8]), "shuffled": None, "bench_date": sys.argv[9]})
print(json.dumps(d))' "$res" "$model" "$bs" "$prec" "$graph" "$device" "$samples" "$repeat" "$stamp" | tee -a "$results_file" >>"$tmp/axon.jsonl"
      done
    done
  done
done

# ---- table ---------------------------------------------------------------------------------------
"$python" - "$tmp/torch.jsonl" "$tmp/axon.jsonl" "$device" "$samples" "$repeat" <<'EOF' || failed=1
import json, sys
torch_rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
axon_rows = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
device, samples, repeat = sys.argv[3:]
key = lambda d: (d["model"], d["batch_size"], d["precision"])
t = {(key(d), d["mode"]): d for d in torch_rows}
a = {(key(d), d["mode"]): d for d in axon_rows}
gpu = next((d.get("gpu") for d in torch_rows if d.get("gpu")), None) or device
tv = torch_rows[0]["torch_version"] if torch_rows else "?"

def sps(d):
    if d is None: return None, "n/a"
    if "not_supported" in d: return None, "not supported: " + d["not_supported"]
    if "error" in d: return None, "FAILED: " + d["error"]
    return d["train_samples_per_s"], f'{d["train_samples_per_s"]:,.0f}'

print(f"\n{gpu}, PyTorch {tv}: synthetic Fashion-MNIST-shaped data on the device ({samples} samples, not shuffled),"
      f" Adam lr 1e-3, samples/s of one timed epoch after warm-up (Axon: the last of its epochs), best of {repeat}\n")
print("| model | batch | precision | PyTorch eager | PyTorch CUDA graph | Axon | Axon CUDA graph | Axon / best PyTorch |")
print("|---|---|---|---|---|---|---|---|")
bad = 0
for k in sorted({key(d) for d in torch_rows + axon_rows}, key=lambda k: (k[0], k[1], k[2] != "f32")):
    te, tes = sps(t.get((k, "eager"))); tg, tgs = sps(t.get((k, "cuda_graph")))
    ae, aes = sps(a.get((k, "eager"))); ag, ags = sps(a.get((k, "cuda_graph")))
    bad += sum(1 for s in (aes, ags) if s.startswith("FAILED"))
    best_t = max([v for v in (te, tg) if v] or [0]); best_a = max([v for v in (ae, ag) if v] or [0])
    ratio = f"**{best_a / best_t:.2f}x**" if best_t and best_a else "n/a"
    print(f"| {k[0]} | {k[1]} | {k[2]} | {tes} | {tgs} | {aes} | {ags} | {ratio} |")
sys.exit(1 if bad else 0)
EOF
echo
echo "raw results appended to $results_file"
((failed == 0)) || die "some Axon runs failed (FAILED in the table above)"
