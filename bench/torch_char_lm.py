#!/usr/bin/python3
"""The char_lm transformer (examples/char_lm.cpp) in PyTorch: the same data, vocabulary, split,
model, optimizer, batch and steps, for docs/benchmarks.md.

  /usr/bin/python3 bench/torch_char_lm.py --steps 300 --threads 2

Model: token embedding (96 x d_model, U(-0.01, 0.01) as Axon's seed default) + learned positions
(N(0, 0.02)), `layers` pre-norm GPT-2 blocks (LayerNorm, nn.MultiheadAttention with a causal mask,
LayerNorm, Linear(4 d_model), exact GELU, Linear), a final LayerNorm and the output layer tied to
the embedding. AdamW(lr 3e-3, weight decay 0.01 on every parameter, as Axon's flat buffer).
Batches: `batch` random windows of the first 90% of the text; validation: the mean loss of 8
batches of fixed windows spread evenly over the last 10% (the same windows as char_lm).
Tokens/s counts training steps only (forward, backward, step), as char_lm does.
The last line is JSON: model, steps, train_loss, val_loss, tokens_per_s, threads.
"""
import argparse
import glob
import json
import math
import os
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

VOCAB = 96


def load(files):
    ids = []
    for f in files:
        for b in open(f, "rb").read():
            if b == 10:
                ids.append(0)
            elif 32 <= b <= 126:
                ids.append(b - 31)
    return ids


class Block(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x, mask):
        a = self.ln1(x)
        x = x + self.attn(a, a, a, attn_mask=mask, need_weights=False)[0]
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class CharLM(nn.Module):
    def __init__(self, context, d, layers, heads):
        super().__init__()
        self.tok = nn.Embedding(VOCAB, d)
        nn.init.uniform_(self.tok.weight, -0.01, 0.01)
        self.pos = nn.Parameter(torch.randn(context, d) * 0.02)
        self.blocks = nn.ModuleList([Block(d, heads) for _ in range(layers)])
        self.ln = nn.LayerNorm(d)
        self.register_buffer("mask", torch.ones(context, context, dtype=torch.bool).triu(1))

    def forward(self, ids):
        x = self.tok(ids) + self.pos
        for b in self.blocks:
            x = b(x, self.mask)
        return self.ln(x) @ self.tok.weight.t()


class CharLSTM(nn.Module):
    """char_lm --model lstm: embedding d, `layers` LSTM layers of 2d units, a dense head."""

    def __init__(self, d, layers):
        super().__init__()
        self.tok = nn.Embedding(VOCAB, d)
        nn.init.uniform_(self.tok.weight, -0.01, 0.01)
        self.lstm = nn.LSTM(d, 2 * d, num_layers=layers, batch_first=True)
        self.head = nn.Linear(2 * d, VOCAB)
        # Axon's initializers (the seed's): glorot_uniform kernels, zero biases. torch's
        # weight_ih {4U, F} has the same fans as Axon's input_kernel {F, 4U}.
        for name, p in list(self.lstm.named_parameters()) + list(self.head.named_parameters()):
            if "weight" in name:
                nn.init.xavier_uniform_(p)
            else:
                nn.init.zeros_(p)

    def forward(self, ids):
        return self.head(self.lstm(self.tok(ids))[0])


def batch_of(text, starts, context):
    idx = torch.tensor(starts)[:, None] + torch.arange(context + 1)[None, :]
    w = text[idx]
    return w[:, :-1], w[:, 1:]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=["transformer", "lstm"], default="transformer")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--context", type=int, default=64)
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", nargs="*", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    files = a.data or sorted(f for f in glob.glob("/usr/share/games/fortunes/*")
                             if os.path.isfile(f) and "." not in os.path.basename(f))
    ids = load(files)
    cut = len(ids) - len(ids) // 10
    train, val = torch.tensor(ids[:cut]), torch.tensor(ids[cut:])
    model = CharLM(a.context, a.d_model, a.layers, a.heads) if a.model == "transformer" else CharLSTM(a.d_model, a.layers)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(a.seed + 1)

    def val_loss():
        model.eval()
        span, batches, total = len(val) - a.context - 1, 8, 0.0
        with torch.no_grad():
            for k in range(batches):
                starts = [((k * a.batch_size + i) * span) // (a.batch_size * batches) for i in range(a.batch_size)]
                x, y = batch_of(val, starts, a.context)
                total += F.cross_entropy(model(x).reshape(-1, VOCAB), y.reshape(-1)).item()
        model.train()
        return total / batches

    seconds, window, n, train_loss, vl = 0.0, 0.0, 0, 0.0, 0.0
    for step in range(1, a.steps + 1):
        starts = torch.randint(0, len(train) - a.context - 2, (a.batch_size,), generator=gen).tolist()
        x, y = batch_of(train, starts, a.context)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x).reshape(-1, VOCAB), y.reshape(-1))
        loss.backward()
        opt.step()
        l = loss.item()
        seconds += time.perf_counter() - t0
        window, n = window + l, n + 1
        if step % 50 == 0 or step == a.steps:
            train_loss, vl = window / n, val_loss()
            window, n = 0.0, 0
            print(f"step {step:>6}  train_loss {train_loss:.4f}  val_loss {vl:.4f}  ({seconds:.1f} s training)", flush=True)
    print(json.dumps({"model": a.model, "steps": a.steps, "train_loss": train_loss, "val_loss": vl,
                      "tokens_per_s": a.steps * a.batch_size * a.context / seconds, "threads": a.threads,
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
