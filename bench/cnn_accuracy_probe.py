#!/usr/bin/python3
"""Why does `fashion_mnist --model cnn` stop near 0.88 test accuracy after 3 epochs (issue #8's
target is 0.90)? Trains bench/torch_fashion_mnist.py's cnn (the same layers as Axon's) in
PyTorch with one thing changed at a time and prints the test accuracy after every epoch, one
JSON line per epoch:

  --standardize   inputs (x/255 - 0.2860) / 0.3530 (the training set's mean and std) instead of x/255
  --init glorot   the seed's glorot_uniform kernels and zero biases instead of PyTorch's defaults
  --batch-size N  more (N < 128) or fewer optimizer steps per epoch
  --padding same  'same' convolutions (28→28→14→14→7, flatten 3136; now the cnn's default) instead of
                  'valid' (26→13→11→5, 1600; the probe's default, the seed model it was written for)

Usage: OPENBLAS_NUM_THREADS=2 /usr/bin/python3 bench/cnn_accuracy_probe.py --threads 2 --epochs 3 [--standardize]
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_fashion_mnist as tfm  # noqa: E402  (pins the BLAS threads from --threads first)

torch, nn, F = tfm.torch, tfm.nn, tfm.F


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--standardize", action="store_true")
    ap.add_argument("--init", choices=["torch", "glorot"], default="torch")
    ap.add_argument("--padding", choices=["valid", "same"], default="valid")
    args = ap.parse_args()
    torch.set_num_interop_threads(1)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    x_train, y_train = tfm.load_split(args.data_dir, "train")
    x_test, y_test = tfm.load_split(args.data_dir, "t10k")
    if args.standardize:
        mean, std = x_train.mean().item(), x_train.std().item()
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    model = tfm.build_model("cnn", padding=args.padding)
    if args.init == "glorot":
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    n, bs = x_train.shape[0], args.batch_size
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, bs):
            idx = perm[i:i + bs]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x_train[idx]), y_train[idx]).backward()
            opt.step()
        test_acc, test_loss = tfm.evaluate(model, x_test, y_test)
        train_acc, train_loss = tfm.evaluate(model, x_train, y_train)
        print(json.dumps({"epoch": epoch + 1, "test_accuracy": test_acc, "test_loss": round(test_loss, 4),
                          "train_accuracy": train_acc, "train_loss": round(train_loss, 4),
                          "standardize": args.standardize, "init": args.init, "padding": args.padding, "batch_size": bs, "lr": args.lr,
                          "seed": args.seed, "elapsed_s": round(time.perf_counter() - t0, 1)}), flush=True)


if __name__ == "__main__":
    main()
