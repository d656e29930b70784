#!/usr/bin/env python3
"""PyTorch side of bench/compare_pytorch_gpu.sh: MLP training throughput on one GPU.

The same models as Axon's examples/fashion_mnist.cpp (mlp = 784-128 relu-10, mlp_big =
784-1024 relu-1024 relu-10; nn.Linear is Axon's dense), Adam lr 1e-3, on synthetic
Fashion-MNIST-shaped data made directly on the device with a fixed seed: inputs {N, 784} f32
uniform in [0, 1), labels int64 uniform in [0, 10). The data is NOT shuffled: step i trains on
rows [i*B, (i+1)*B). Only full batches are trained (the CUDA graph needs one static shape), so one
epoch is floor(N/B)*B samples, and samples/s counts exactly those.

Modes, for every (model, batch size, precision):
  eager       the usual loop, torch.optim.Adam(fused=True) (fused needs CUDA; plain Adam on CPU)
  cuda_graph  the documented whole-network capture (torch.cuda.graph): static input/target
              tensors, warm-up on a side stream, Adam(capturable=True), the step (forward, loss,
              backward, optimizer step; gradients are reset by the capture itself: zero_grad with
              set_to_none before capture makes the graph's backward write, not accumulate, them)
              captured once and replayed per batch after copying the batch into the static tensors
  precision   f32, or bf16 = torch.autocast(device, dtype=torch.bfloat16) around forward and loss
              (with cache_enabled=False inside graphs, as the CUDA-graph docs require)

Timing excludes model creation, warm-up and capture: torch.cuda.synchronize() before starting and
before stopping the clock. Each configuration trains a fresh model --repeat times; the best
samples/s is reported. One JSON object per configuration is printed on its own line.

--device cpu runs the eager mode only (no graphs), for a slow smoke test without a GPU.
"""
import argparse
import json
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def build_model(name):
    if name == "mlp":
        return nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    if name == "mlp_big":
        return nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))
    raise ValueError(f"unknown model {name!r}")


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device, precision, in_graph=False):
    # enabled=False keeps one code path for f32.
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=(precision == "bf16"),
                          cache_enabled=False if in_graph else None)


def make_optimizer(params, lr, device, capturable=False):
    if capturable:
        return torch.optim.Adam(params, lr=lr, capturable=True)
    if device.type == "cuda":
        return torch.optim.Adam(params, lr=lr, fused=True)
    return torch.optim.Adam(params, lr=lr)


def run_eager(args, device, model_name, bs, precision, x, y, seed):
    torch.manual_seed(seed)
    model = build_model(model_name).to(device)
    opt = make_optimizer(model.parameters(), args.lr, device)
    steps = x.shape[0] // bs

    def step(i):
        xb, yb = x[i * bs:(i + 1) * bs], y[i * bs:(i + 1) * bs]
        opt.zero_grad(set_to_none=True)
        with autocast(device, precision):
            loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        return loss

    for i in range(min(args.warmup, steps)):  # warm-up: kernels, cuBLAS handles, allocator
        step(i)
    sync(device)
    t0 = time.perf_counter()
    for i in range(steps):
        loss = step(i)
    sync(device)
    dt = time.perf_counter() - t0
    return steps * bs, dt, float(loss.detach().float().item())


def run_graph(args, device, model_name, bs, precision, x, y, seed):
    torch.manual_seed(seed)
    model = build_model(model_name).to(device)
    opt = make_optimizer(model.parameters(), args.lr, device, capturable=True)
    steps = x.shape[0] // bs
    static_x = x[:bs].clone()
    static_y = y[:bs].clone()

    # Warm-up on a side stream, as the recipe requires before capture.
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(max(3, args.warmup)):
            opt.zero_grad(set_to_none=True)
            with autocast(device, precision, in_graph=True):
                loss = F.cross_entropy(model(static_x), static_y)
            loss.backward()
            opt.step()
    torch.cuda.current_stream(device).wait_stream(side)

    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        with autocast(device, precision, in_graph=True):
            static_loss = F.cross_entropy(model(static_x), static_y)
        static_loss.backward()
        opt.step()

    sync(device)
    t0 = time.perf_counter()
    for i in range(steps):
        static_x.copy_(x[i * bs:(i + 1) * bs])
        static_y.copy_(y[i * bs:(i + 1) * bs])
        graph.replay()
    sync(device)
    dt = time.perf_counter() - t0
    return steps * bs, dt, float(static_loss.detach().float().item())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (cpu: eager only, for smoke tests)")
    ap.add_argument("--models", nargs="+", default=["mlp", "mlp_big"], choices=["mlp", "mlp_big"])
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[128, 1024])
    ap.add_argument("--precisions", nargs="+", default=["f32", "bf16"], choices=["f32", "bf16"])
    ap.add_argument("--modes", nargs="+", default=["eager", "cuda_graph"], choices=["eager", "cuda_graph"])
    ap.add_argument("--samples", type=int, default=60000, help="training samples per epoch (Fashion-MNIST: 60000)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per configuration; the best is reported")
    ap.add_argument("--warmup", type=int, default=10, help="untimed steps before each timed epoch")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit(f"torch_gpu_train: error: --device {args.device}, but torch.cuda.is_available() is False "
                 f"(torch {torch.__version__}, built for CUDA {torch.version.cuda})")
    modes = args.modes
    if device.type != "cuda" and "cuda_graph" in modes:
        print("torch_gpu_train: --device cpu: CUDA graphs left out, eager only", file=sys.stderr)
        modes = [m for m in modes if m != "cuda_graph"]
    if any(b <= 0 or b > args.samples for b in args.batch_sizes):
        sys.exit("torch_gpu_train: error: every batch size must be in [1, --samples]")

    gen = torch.Generator(device=device).manual_seed(args.seed)
    x = torch.rand(args.samples, 784, device=device, generator=gen, dtype=torch.float32)
    y = torch.randint(0, 10, (args.samples,), device=device, generator=gen, dtype=torch.int64)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None

    for model_name in args.models:
        for bs in args.batch_sizes:
            for precision in args.precisions:
                for mode in modes:
                    runner = run_eager if mode == "eager" else run_graph
                    runs = []
                    for r in range(args.repeat):
                        samples, dt, loss = runner(args, device, model_name, bs, precision, x, y, args.seed + r)
                        if loss != loss:  # NaN: a broken step, not a benchmark result
                            sys.exit(f"torch_gpu_train: error: {model_name} batch {bs} {precision} {mode}: loss is NaN")
                        runs.append({"samples": samples, "seconds": dt, "samples_per_s": samples / dt, "final_loss": loss})
                    best = max(runs, key=lambda r: r["samples_per_s"])
                    print(json.dumps({
                        "framework": "pytorch", "mode": mode, "model": model_name, "batch_size": bs,
                        "precision": precision, "device": str(device), "gpu": gpu,
                        "samples": best["samples"], "train_samples_per_s": best["samples_per_s"],
                        "final_loss": best["final_loss"], "best_of": args.repeat, "runs": runs,
                        "shuffled": False, "optimizer": "adam", "lr": args.lr, "seed": args.seed,
                        "torch_version": torch.__version__, "cuda_version": torch.version.cuda,
                        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
                    }), flush=True)


if __name__ == "__main__":
    main()
