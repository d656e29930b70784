#!/usr/bin/python3
"""Times torch.nn.LSTM forward + backward on the CPU, the counterpart of bench_rnn
(docs/benchmarks.md, "Recurrent layers"): x {batch, time, features} uniform in [-1, 1],
batch_first, zero initial state, loss sum(output * w), backward to x and every parameter, after
3 warm-up steps. Prints one JSON line (wall and CPU seconds per step).

Usage: /usr/bin/python3 bench/torch_lstm_step.py --threads 1 --steps 20
"""
import argparse
import json
import os
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--time", type=int, default=64)
    ap.add_argument("--features", type=int, default=64)
    ap.add_argument("--units", type=int, default=256)
    a = ap.parse_args()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(a.threads))
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    import torch

    torch.set_num_interop_threads(1)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    m = torch.nn.LSTM(a.features, a.units, batch_first=True)
    x = (torch.rand(a.batch, a.time, a.features) * 2 - 1).requires_grad_(True)
    w = torch.rand(a.batch, a.time, a.units) * 2 - 1

    def step():
        m.zero_grad(set_to_none=True)
        x.grad = None
        out, _ = m(x)
        (out * w).sum().backward()

    for _ in range(3):
        step()
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(a.steps):
        step()
    wall = (time.perf_counter() - w0) / a.steps
    cpu = (time.process_time() - c0) / a.steps
    print(json.dumps({"framework": "pytorch", "torch_version": torch.__version__, "threads": a.threads,
                      "batch": a.batch, "time": a.time, "features": a.features, "units": a.units, "steps": a.steps,
                      "wall_s_per_step": round(wall, 6), "cpu_s_per_step": round(cpu, 6),
                      "sequences_per_s_wall": round(a.batch / wall, 1)}), flush=True)


if __name__ == "__main__":
    main()
