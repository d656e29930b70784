#!/usr/bin/python3
"""Fits the coefficients of tensor/include/axon/vector_math.h (f32 exp and erf on the CPU).

Each fit is a linear least-squares fit of the relative error, reweighted a few dozen times towards
the minimax (equal-ripple) solution (Lawson's algorithm). Prints the coefficients, and the largest
relative error of the fit in double and of its evaluation in f32 (Horner's rule, as the header).

  /usr/bin/python3 tensor/tools/fit_vector_math.py
"""
import math

import numpy as np


def lawson(basis, target, weight_of_row, iters=40):
    """Coefficients c minimising max |basis·c − target| · weight_of_row (approximately)."""
    w = np.ones(len(target))
    for _ in range(iters):
        c, *_ = np.linalg.lstsq(basis * (w * weight_of_row)[:, None], target * w * weight_of_row, rcond=None)
        err = np.abs(basis @ c - target) * weight_of_row
        w = w * (err / err.max()) ** 0.3 + 1e-3
    return c, err.max()


def horner_f32(coeffs_low_first, t):
    acc = np.zeros_like(t, dtype=np.float32)
    for c in np.float32(coeffs_low_first)[::-1]:
        acc = acc * t + c
    return acc


def show(name, coeffs):
    print(f"{name} (highest degree first):")
    for c in coeffs[::-1]:
        print(f"  {np.float32(c)!r:>16}  # {c:.17g}")


# exp(r) on |r| ≤ ln(2)/2 (after the Cody-Waite reduction x = n·ln 2 + r): 1 + r·(c1 + c2·r + ...).
r = np.linspace(-math.log(2) / 2 * 1.01, math.log(2) / 2 * 1.01, 20001)
c, err = lawson(r[:, None] ** np.arange(1, 7), np.exp(r) - 1, 1 / np.exp(r))
p = np.concatenate([[1.0], c])
f32 = np.abs(horner_f32(p, r.astype(np.float32)) - np.exp(r)) / np.exp(r)
show("exp: degree-6 polynomial in r", p)
print(f"  relative error {err:.3g} (double), {f32.max():.3g} (f32)\n")

# erf(x) = x·P(t)/Q(t), t = x², on |x| < 1 (Q's constant term 1). Linearised as x·P(t) − erf·(Q(t) − 1) = erf.
x = np.linspace(1e-6, 1.0, 20001)
y = np.array([math.erf(v) for v in x])
t = x * x
q_fixed = None
for _ in range(8):  # re-linearise around the last Q
    basis = np.hstack([x[:, None] * t[:, None] ** np.arange(4), -(y[:, None] * t[:, None] ** np.arange(1, 3))])
    scale = 1 / y if q_fixed is None else 1 / (y * np.polyval(q_fixed[::-1], t))
    c, _ = lawson(basis, y, scale)
    q_fixed = np.concatenate([[1.0], c[4:]])
P, Q = c[:4], q_fixed
rel = np.abs(x * np.polyval(P[::-1], t) / np.polyval(Q[::-1], t) - y) / y
xf = x.astype(np.float32)
relf = np.abs(xf * horner_f32(P, xf * xf) / horner_f32(Q, xf * xf) - y) / y
show("erf, |x| < 1: P(t)", P)
show("erf, |x| < 1: Q(t)", Q)
print(f"  relative error {rel.max():.3g} (double), {relf.max():.3g} (f32)\n")

# erfc(z)·exp(z²) on 1 ≤ z ≤ 3.925 (beyond, erf rounds to ±1 in f32): R(z) = P(z)/Q(z).
z = np.linspace(1.0, 3.925, 20001)
g = np.array([math.erfc(v) * math.exp(v * v) for v in z])
q_fixed = None
for _ in range(8):
    basis = np.hstack([z[:, None] ** np.arange(4), -(g[:, None] * z[:, None] ** np.arange(1, 4))])
    scale = 1 / g if q_fixed is None else 1 / (g * np.polyval(q_fixed[::-1], z))
    c, _ = lawson(basis, g, scale)
    q_fixed = np.concatenate([[1.0], c[4:]])
P, Q = c[:4], q_fixed
rel = np.abs(np.polyval(P[::-1], z) / np.polyval(Q[::-1], z) - g) / g
zf = z.astype(np.float32)
relf = np.abs(horner_f32(P, zf) / horner_f32(Q, zf) - g) / g
show("erfc(z)·exp(z²), 1 ≤ z ≤ 3.925: P(z)", P)
show("erfc(z)·exp(z²), 1 ≤ z ≤ 3.925: Q(z)", Q)
print(f"  relative error {rel.max():.3g} (double), {relf.max():.3g} (f32)")
