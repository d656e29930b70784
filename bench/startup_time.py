#!/usr/bin/python3
"""Start-up time: from launching a 2-rank job to the end of its first training step.

  bench/startup_time.py [--build DIR] [--ranks 2] [--repeat 5] [--no-torch]

Axon:    build/bin/axonrun -n R build/bin/fashion_mnist --synthetic 128*R --batch-size 128
         --epochs 1 --threads 1 --no-progress
         (128*R synthetic samples: exactly one step per rank; rank 0 prints its JSON line right
         after that step and the epoch's one summary all-reduce)
PyTorch: python3 -m torch.distributed.run --standalone --nproc_per_node R bench/torch_first_step.py
         (gloo process group, DDP over the same MLP, one Adam step on 128 samples per rank)

Each sample is the wall time from starting the launcher to the moment the first JSON line
reaches our pipe (the first step is done then), and the time until the launcher exits. Runs
alternate between the two, R times each; the median is reported. Prints a Markdown table and one
JSON line with every sample. Needs python3-torch for the PyTorch side (--no-torch skips it).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# torchrun as `python3 -m torch.distributed.run`, with one fix: Debian 12's torch 1.13.1 on
# Python 3.11 fails in Std.from_str (iterating an IntFlag no longer yields Std.NONE, so the
# default "--redirects 0" becomes None and torchrun dies before starting any rank). The fix
# maps the digits to Std directly; nothing else of torchrun changes.
TORCHRUN = """
import re, sys
from torch.distributed.elastic.multiprocessing import api
def _from_str(cls, vm):
    if re.match(api._VALUE_REGEX, vm):
        return cls(int(vm))
    if re.match(api._MAPPING_REGEX, vm):
        return {int(i): cls(int(v)) for i, v in (m.split(":") for m in vm.split(","))}
    raise ValueError(vm)
api.Std.from_str = classmethod(_from_str)
from torch.distributed.run import main
sys.exit(main())
"""


def measure(command, env):
    """(seconds to the first JSON line on stdout, seconds to exit) of one run."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    first = None
    for line in proc.stdout:
        if first is None and line.startswith("{"):
            first = time.perf_counter() - start
    err = proc.stderr.read()
    code = proc.wait()
    total = time.perf_counter() - start
    if code != 0 or first is None:
        sys.exit(f"startup_time: {' '.join(command)} failed (exit {code}, JSON line seen: {first is not None}):\n{err}")
    return first, total


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", default=os.path.join(REPO, "build"))
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args()

    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    for name in ("SLURM_JOB_ID", "AXON_BACKEND"):
        env.pop(name, None)
    bin_dir = os.path.join(args.build, "bin")
    axon = [os.path.join(bin_dir, "axonrun"), "-n", str(args.ranks), os.path.join(bin_dir, "fashion_mnist"),
            "--synthetic", str(128 * args.ranks), "--batch-size", "128", "--epochs", "1", "--threads", "1",
            "--no-progress"]
    torch = ["/usr/bin/python3", "-c", TORCHRUN, "--standalone", "--nproc_per_node", str(args.ranks),
             os.path.join(REPO, "bench", "torch_first_step.py")]
    runs = {"axon": [], "torch": []}
    measure(axon, env)  # warm the page cache once for each, untimed
    if not args.no_torch:
        measure(torch, env)
    for _ in range(args.repeat):
        runs["axon"].append(measure(axon, env))
        if not args.no_torch:
            runs["torch"].append(measure(torch, env))

    def median(name, i):
        return statistics.median(sample[i] for sample in runs[name])

    print("| launcher | ranks | launch → first step done (median) | launch → exit (median) |")
    print("|---|---|---|---|")
    print(f"| axonrun -n {args.ranks} | {args.ranks} | {median('axon', 0):.3f} s | {median('axon', 1):.3f} s |")
    if not args.no_torch:
        print(f"| torchrun --standalone --nproc_per_node {args.ranks} | {args.ranks} | {median('torch', 0):.3f} s | "
              f"{median('torch', 1):.3f} s |")
        print(f"\ntorchrun / axonrun to the first step: {median('torch', 0) / median('axon', 0):.1f}×")
    print(json.dumps({"ranks": args.ranks, "repeat": args.repeat,
                      "axon": runs["axon"], "torch": runs["torch"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
