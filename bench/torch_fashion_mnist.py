#!/usr/bin/python3
"""PyTorch reference for Axon's Fashion-MNIST benchmark (build/bin/fashion_mnist).

Same training as the Axon binary, written the way a performance-minded PyTorch user would:
the whole data set lives in memory as float32 tensors, batches are taken with index_select
on a per-epoch seeded permutation (no DataLoader), plain nn.Sequential + F.cross_entropy.

Only the training loop is timed (time.perf_counter around the epochs); evaluation on the
test set runs afterwards under torch.no_grad. The LAST line of stdout is one JSON object
with the same keys as the Axon binary (model, world_size, epochs, batch_size, test_accuracy,
test_loss, train_samples_per_s, params_sha256) plus framework / torch_version.

Usage: /usr/bin/python3 bench/torch_fashion_mnist.py --model mlp_big --threads 1 --epochs 1
"""
import argparse
import gzip
import json
import math
import os
import re
import sys
import time


_DECIMAL_INT = re.compile(r"\+?(0|[1-9][0-9]*)")
_DECIMAL_REAL = re.compile(r"\+?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def integer(low, high):
    """An argparse type: a plain decimal integer in [low, high], checked like Axon's
    examples/cli (no 0x/leading zeros, no '_' or spaces, no minus for counts; argparse exits 2)."""
    def parse(text):
        if not _DECIMAL_INT.fullmatch(text) or not low <= int(text) <= high:
            raise argparse.ArgumentTypeError(f"expected an integer in [{low}, {high}], got '{text}'")
        return int(text)
    return parse


def positive_real(text):
    """An argparse type: a finite decimal number > 0 (no nan/inf, no hex, no trailing text)."""
    if not _DECIMAL_REAL.fullmatch(text) or not math.isfinite(float(text)) or float(text) <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got '{text}'")
    return float(text)


def _pin_blas_threads():
    """Debian's torch does its GEMMs in OpenBLAS (pthread build), whose thread pool ignores
    torch.set_num_threads: without this, "--threads 1" still runs BLAS on every core.
    It must happen before libopenblas is loaded, i.e. before importing numpy/torch. An explicitly
    set environment wins (bench/compare_pytorch.sh sets both variables to T)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--threads", type=integer(1, 1024), default=1)
    threads = pre.parse_known_args()[0].threads
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(threads))
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))


_pin_blas_threads()

import numpy as np  # noqa: E402  (numpy and torch after _pin_blas_threads on purpose)
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

DEFAULT_DATA_DIR = "/usr/share/datasets/fashion-mnist"


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["mlp", "mlp_big", "cnn"], default="mlp")
    ap.add_argument("--epochs", type=integer(1, 100000), default=1)
    ap.add_argument("--batch-size", type=integer(1, 1 << 20), default=128)
    ap.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], default="adam")
    ap.add_argument("--lr", type=positive_real, default=1e-3)
    ap.add_argument("--threads", type=integer(1, 1024), default=1)
    ap.add_argument("--seed", type=integer(0, 2**64 - 1), default=42)
    ap.add_argument("--data-dir", default=os.environ.get("AXON_FASHION_MNIST_DIR", DEFAULT_DATA_DIR))
    ap.add_argument("--no-progress", action="store_true", help="no per-epoch lines (only the final JSON)")
    # As Axon's fashion_mnist: cnn pads 'same' and standardizes its pixels unless told otherwise.
    ap.add_argument("--padding", choices=["same", "valid"], default=None, help="cnn's convolutions (default same)")
    std = ap.add_mutually_exclusive_group()
    std.add_argument("--standardize", dest="standardize", action="store_true", default=None,
                     help="pixels (x - mean) / std of the training set (the default for cnn)")
    std.add_argument("--no-standardize", dest="standardize", action="store_false", help="pixels x/255, also for cnn")
    args = ap.parse_args()
    if args.padding is not None and args.model != "cnn":
        ap.error(f"--padding applies to --model cnn only, not {args.model}")
    args.padding = args.padding or "same"
    if args.standardize is None:
        args.standardize = args.model == "cnn"
    return args


def read_idx(path):
    """Reads a gzip'd IDX file (ubyte data) into a numpy array of its declared shape."""
    with gzip.open(path, "rb") as f:
        buf = f.read()
    zero, dtype_code, ndim = buf[0:2], buf[2], buf[3]
    if zero != b"\x00\x00" or dtype_code != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    dims = np.frombuffer(buf, dtype=">u4", count=ndim, offset=4).astype(np.int64)
    data = np.frombuffer(buf, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: expected {int(np.prod(dims))} bytes of data, got {data.size}")
    return data.reshape(tuple(dims))


def load_split(data_dir, prefix):
    images = read_idx(os.path.join(data_dir, f"{prefix}-images-idx3-ubyte.gz"))
    labels_path = os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte.gz")
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"{data_dir}: {prefix} images {images.shape} and labels {labels.shape} do not match")
    if labels.size and labels.max() > 9:
        bad = int(np.argmax(labels > 9))
        raise ValueError(f"{labels_path}: label {labels[bad]} at index {bad} is not a class in [0, 10)")
    x = torch.from_numpy(images.reshape(images.shape[0], -1).astype(np.float32) / np.float32(255.0))
    y = torch.from_numpy(labels.astype(np.int64))
    return x.contiguous(), y


def build_model(name, padding="same"):
    if name == "cnn":
        # Axon's --model cnn in PyTorch's own (channels-first) layout: the flat 784 samples are
        # viewed as {batch, 1, 28, 28}, which costs nothing. 'valid': 28→26→13→11→5 (flatten
        # 1600); 'same' (padding 1, the default as in Axon): 28→28→14→14→7 (flatten 3136).
        flat = 64 * (7 * 7 if padding == "same" else 5 * 5)
        return nn.Sequential(nn.Unflatten(1, (1, 28, 28)), nn.Conv2d(1, 32, 3, padding=padding), nn.ReLU(),
                             nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=padding), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Linear(flat, 128), nn.ReLU(), nn.Linear(128, 10))
    if name == "mlp":
        return nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    return nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))


def build_optimizer(name, params, lr):
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    return torch.optim.AdamW(params, lr=lr)


@torch.no_grad()
def evaluate(model, x, y, chunk=2000):
    model.eval()
    total_loss, correct = 0.0, 0
    for i in range(0, x.shape[0], chunk):
        logits = model(x[i:i + chunk])
        total_loss += F.cross_entropy(logits, y[i:i + chunk], reduction="sum").item()
        correct += (logits.argmax(dim=1) == y[i:i + chunk]).sum().item()
    model.train()
    return correct / x.shape[0], total_loss / x.shape[0]


def main():
    args = parse_args()
    # Interop threads must be set before any parallel work starts.
    torch.set_num_interop_threads(1)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    x_train, y_train = load_split(args.data_dir, "train")
    x_test, y_test = load_split(args.data_dir, "t10k")
    if args.standardize:  # the training set's mean and std over every pixel, for both sets (as Axon)
        mean, std = x_train.mean().item(), x_train.std(unbiased=False).item()
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    n = x_train.shape[0]

    model = build_model(args.model, args.padding)
    opt = build_optimizer(args.optimizer, model.parameters(), args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    bs = args.batch_size

    model.train()
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        perm = torch.randperm(n, generator=gen)
        last_loss = None
        for i in range(0, n, bs):  # the final partial batch is kept
            idx = perm[i:i + bs]
            xb = x_train.index_select(0, idx)
            yb = y_train.index_select(0, idx)
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            last_loss = loss
        if not args.no_progress:
            # .item() syncs once per epoch only; printed time includes it (negligible on CPU).
            print(f"epoch {epoch + 1}/{args.epochs}: last batch loss {last_loss.item():.4f}, "
                  f"{time.perf_counter() - t0:.2f}s elapsed", flush=True)
    train_s = time.perf_counter() - t0

    acc, test_loss = evaluate(model, x_test, y_test)
    result = {
        "model": args.model,
        "world_size": 1,
        "epochs": args.epochs,
        "batch_size": bs,
        "test_accuracy": acc,
        "test_loss": test_loss,
        "train_samples_per_s": args.epochs * n / train_s,
        "params_sha256": None,
        "framework": "pytorch",
        "torch_version": torch.__version__,
        "optimizer": args.optimizer,
        "lr": args.lr,
        "threads": args.threads,
        "openblas_threads": os.environ["OPENBLAS_NUM_THREADS"],
        "seed": args.seed,
        "standardize": args.standardize,
        "padding": args.padding if args.model == "cnn" else None,
        "train_time_s": train_s,
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    sys.exit(main())
