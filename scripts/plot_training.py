#!/usr/bin/env python3
"""Plots train and validation loss from a metrics.csv written by `fashion_mnist --log-dir DIR`.

Usage: scripts/plot_training.py DIR/metrics.csv OUT.png [TITLE]
Needs matplotlib (Debian: python3-matplotlib); docs/images/fashion_mnist_loss.png was made with it:
  build/bin/fashion_mnist --model mlp --epochs 15 --validation-split 0.1 --log-dir /tmp/fm-logs
  scripts/plot_training.py /tmp/fm-logs/metrics.csv docs/images/fashion_mnist_loss.png
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    rows = list(csv.DictReader(open(sys.argv[1])))
    if not rows:
        sys.exit(f"{sys.argv[1]}: no rows")
    epochs = [int(r["epoch"]) for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    ax.plot(epochs, [float(r["train_loss"]) for r in rows], marker="o", label="train loss")
    if rows[0].get("validation_loss"):
        ax.plot(epochs, [float(r["validation_loss"]) for r in rows], marker="s", label="validation loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy loss")
    ax.set_title(sys.argv[3] if len(sys.argv) > 3 else "Fashion-MNIST")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(sys.argv[2])


if __name__ == "__main__":
    main()
