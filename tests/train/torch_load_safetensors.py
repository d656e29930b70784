#!/usr/bin/python3
"""Loads a safetensors file written by axon::save_parameters into PyTorch and checks that the same
model rebuilt in PyTorch gives Axon's outputs.

  torch_load_safetensors.py PARAMS INPUT OUTPUT

PARAMS holds the parameters and model state of the Axon model
  input({-1, H, W, C}) | conv(F, kernel 3) | batch_norm() | relu() | flatten() | dense(U)
(names conv_*.kernel/bias, batch_norm_*.gamma/beta/mean/var, dense_*.kernel/bias); INPUT holds
"x" (NHWC) and OUTPUT holds "y", Axon's predict(model, params, x). The file is parsed by hand
(8-byte little-endian header length, JSON header, raw little-endian data: the safetensors format),
since Debian's python3-torch comes without the safetensors package; its data is also checked
against the "axon.sha256" metadata. Prints the largest difference; exits 1 when it is over 1e-4.
"""
import hashlib
import json
import struct
import sys

import torch

DTYPES = {"F32": torch.float32, "F64": torch.float64, "BF16": torch.bfloat16, "I32": torch.int32, "I64": torch.int64}


def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    meta = header.pop("__metadata__", {})
    data = blob[8 + n:]
    tensors = {}
    for name, info in header.items():
        start, end = info["data_offsets"]
        t = torch.frombuffer(bytearray(data[start:end]), dtype=DTYPES[info["dtype"]]) if end > start else \
            torch.empty(0, dtype=DTYPES[info["dtype"]])
        tensors[name] = t.reshape(info["shape"])
    return tensors, meta, data


def one(tensors, prefix, suffix):
    names = [k for k in tensors if k.startswith(prefix) and k.endswith("." + suffix)]
    if len(names) != 1:
        sys.exit(f"expected one {prefix}*.{suffix} in the file, found {names}")
    return tensors[names[0]].to(torch.float64)


def main():
    params, meta, data = read_safetensors(sys.argv[1])
    if meta.get("format") != "axon":
        sys.exit(f"metadata format {meta.get('format')!r}, expected 'axon'")
    if hashlib.sha256(data).hexdigest() != meta["axon.sha256"]:
        sys.exit("the data does not match the axon.sha256 metadata")
    x = read_safetensors(sys.argv[2])[0]["x"].to(torch.float64)
    expected = read_safetensors(sys.argv[3])[0]["y"].to(torch.float64)

    kernel = one(params, "conv_", "kernel")  # Axon {kh, kw, in, out} -> torch {out, in, kh, kw}
    conv = torch.nn.Conv2d(kernel.shape[2], kernel.shape[3], kernel.shape[:2]).double()
    dense_kernel = one(params, "dense_", "kernel")  # Axon {in, out} -> torch Linear.weight {out, in}
    linear = torch.nn.Linear(dense_kernel.shape[0], dense_kernel.shape[1]).double()
    norm = torch.nn.BatchNorm2d(kernel.shape[3], eps=1e-5).double()
    with torch.no_grad():
        conv.weight.copy_(kernel.permute(3, 2, 0, 1))
        conv.bias.copy_(one(params, "conv_", "bias"))
        norm.weight.copy_(one(params, "batch_norm_", "gamma"))
        norm.bias.copy_(one(params, "batch_norm_", "beta"))
        norm.running_mean.copy_(one(params, "batch_norm_", "mean"))
        norm.running_var.copy_(one(params, "batch_norm_", "var"))
        linear.weight.copy_(dense_kernel.t())
        linear.bias.copy_(one(params, "dense_", "bias"))
    norm.eval()
    with torch.no_grad():
        h = torch.relu(norm(conv(x.permute(0, 3, 1, 2))))  # channels last -> first
        y = linear(h.permute(0, 2, 3, 1).flatten(1))       # Axon flattens channels-last
    diff = (y - expected).abs().max().item()
    print(json.dumps({"max_abs_diff": diff, "tensors": len(params), "output_shape": list(y.shape)}))
    sys.exit(0 if diff <= 1e-4 else 1)


if __name__ == "__main__":
    main()
