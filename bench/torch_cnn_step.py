#!/usr/bin/python3
"""Times PyTorch's training step of Axon's fashion_mnist --model cnn (docs/benchmarks.md,
"The CNN"), the counterpart of bench_conv's BM_CnnTrainStep: batch 128 of random {1, 28, 28}
images, forward, F.cross_entropy, backward, Adam (lr 1e-3), after 3 warm-up steps.

Prints one JSON line: threads, steps, wall and CPU seconds per step, and samples/s by each. On a
loaded machine the CPU time of a 1-thread run is the steadier measure of the work a step takes.

Usage: /usr/bin/python3 bench/torch_cnn_step.py --threads 1 --steps 20
"""
import argparse
import json
import os
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--padding", choices=["same", "valid"], default="same")
    args = ap.parse_args()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(args.threads))
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.set_num_interop_threads(1)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    same = args.padding == "same"  # the cnn's default; 'valid' is the model of the 2026-11-30 tables
    model = nn.Sequential(nn.Conv2d(1, 32, 3, padding=args.padding), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(32, 64, 3, padding=args.padding), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(3136 if same else 1600, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(128, 1, 28, 28)
    y = torch.arange(128) % 10

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    for _ in range(3):
        step()
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(args.steps):
        step()
    wall = (time.perf_counter() - w0) / args.steps
    cpu = (time.process_time() - c0) / args.steps
    print(json.dumps({"framework": "pytorch", "torch_version": torch.__version__, "threads": args.threads,
                      "steps": args.steps, "padding": args.padding, "wall_s_per_step": wall, "cpu_s_per_step": cpu,
                      "samples_per_s_wall": 128 / wall, "samples_per_s_cpu": 128 / cpu}))


if __name__ == "__main__":
    sys.exit(main())
