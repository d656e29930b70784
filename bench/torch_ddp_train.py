#!/usr/bin/python3
"""PyTorch DDP (gloo) training throughput: the peer of `axon-bench train`, for bench/scaling.sh.

`--nproc N` starts N ranks of itself on this machine with torchrun's variables (MASTER_ADDR,
MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK) — what torchrun does, without Debian 12's torchrun,
whose --redirects parsing fails on Python 3.11 (see bench/startup_time.py); under torchrun or
srun with those variables set, it runs as one rank. Each rank
trains the same MLP as Axon's --model (mlp: 784-128-10, mlp_big: 784-1024-1024-10) with Adam
(lr 1e-3) on its shard of --samples synthetic Fashion-MNIST-shaped samples (uniform pixels,
random labels), --batch-size per rank, one epoch, --threads intra-op threads per rank.
DistributedDataParallel with its defaults (25 MiB buckets, overlapped with backward).

Rank 0 prints one JSON line: {"peer": "pytorch_ddp", "ranks": N, "threads": T, "batch_size": B,
"samples": S, "samples_per_s": ..., "torch": "2.x"}, samples/s being all ranks' samples over the
slowest rank's training time (the timed loop starts after a barrier and two warm-up steps).
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import time

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def spawn(n):
    """Starts n ranks of this script with torchrun's variables; returns the first failing status."""
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [a for i, a in enumerate(sys.argv) if a != "--nproc" and (i == 0 or sys.argv[i - 1] != "--nproc")]
    procs = []
    for r in range(n):
        env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(r), WORLD_SIZE=str(n),
                   LOCAL_RANK=str(r), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        procs.append(subprocess.Popen([sys.executable] + argv, env=env))
    codes = [p.wait() for p in procs]
    return next((c for c in codes if c != 0), 0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=["mlp", "mlp_big"], default="mlp_big")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--samples", type=int, default=60000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--nproc", type=int, default=0, help="start this many ranks here (0: run as one rank)")
    args = ap.parse_args()
    if args.batch_size < 1 or args.samples < 1 or args.threads < 1 or args.nproc < 0:
        ap.error("--batch-size, --samples and --threads must be >= 1, --nproc >= 0")
    if args.nproc > 0:
        return spawn(args.nproc)

    torch.set_num_threads(args.threads)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    if args.model == "mlp":
        model = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    else:
        model = nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))
    ddp = nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.Adam(ddp.parameters(), lr=1e-3)

    per_rank = args.samples // world
    gen = torch.Generator().manual_seed(1 + rank)
    x_all = torch.rand(per_rank, 784, generator=gen)
    y_all = torch.randint(0, 10, (per_rank,), generator=gen)
    batches = [(x_all[i:i + args.batch_size], y_all[i:i + args.batch_size])
               for i in range(0, per_rank, args.batch_size)]

    def step(x, y):
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(ddp(x), y).backward()
        optimizer.step()

    for x, y in batches[:2]:  # warm-up: DDP's first iterations build its buckets
        step(x, y)
    dist.barrier()
    start = time.perf_counter()
    for x, y in batches:
        step(x, y)
    elapsed = torch.tensor([time.perf_counter() - start], dtype=torch.float64)
    dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
    if rank == 0:
        trained = len(batches) and sum(len(y) for _, y in batches) * world
        print(json.dumps({"peer": "pytorch_ddp", "model": args.model, "ranks": world, "threads": args.threads,
                          "batch_size": args.batch_size, "samples": trained,
                          "samples_per_s": trained / elapsed.item(), "torch": torch.__version__}), flush=True)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
