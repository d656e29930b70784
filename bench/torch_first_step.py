#!/usr/bin/python3
"""PyTorch side of bench/startup_time.py: what a torchrun job does before its first training step.

Started by torchrun (python3 -m torch.distributed.run --standalone --nproc_per_node N); each rank joins the
gloo process group through torchrun's rendezvous (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE),
builds the same 784-128-10 MLP as Axon's `--model mlp`, wraps it in DistributedDataParallel,
and makes one Adam step on one batch of 128 random samples per rank. Rank 0 then prints one JSON
line, {"first_step_done": true, "world_size": N}, which is the moment bench/startup_time.py
measures.
"""
import json
import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def main():
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(784, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.Adam(ddp.parameters(), lr=1e-3)
    x = torch.rand(128, 784)
    y = torch.randint(0, 10, (128,))
    optimizer.zero_grad(set_to_none=True)
    F.cross_entropy(ddp(x), y).backward()
    optimizer.step()
    if dist.get_rank() == 0:
        print(json.dumps({"first_step_done": True, "world_size": dist.get_world_size()}), flush=True)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
