// Shape operations: front ends and backward passes (axon/shape_ops.h).
#include "axon/shape_ops.h"
#include "axon/ops.h"

#include <algorithm>
#include <cmath>

#include "axon/autograd.h"
#include "common.h"

namespace axon {

namespace {

int64_t prod(const Shape& s, int64_t begin, int64_t end) {
  int64_t p = 1;
  for (int64_t d = begin; d < end; ++d) p *= s[static_cast<size_t>(d)];
  return p;
}

// dst[.., dst_offset + k, ..] = src[.., src_offset + k, ..] along axis a, k < count.
void copy_along(const Tensor& src, int64_t src_offset, Tensor& dst, int64_t dst_offset, int64_t a, int64_t count) {
  const int64_t outer = prod(src.shape(), 0, a), inner = prod(src.shape(), a + 1, src.dim());
  if (outer * inner * count == 0) return;
  backend(src.device()).axis_copy(src, src.size(a), src_offset, dst, dst.size(a), dst_offset, outer, inner, count);
}

// x embedded at `offset` along axis a into a tensor whose axis a has size n, the rest `value`.
Tensor embed(const Tensor& x, int64_t a, int64_t offset, int64_t n, double value) {
  Shape shape = x.shape();
  shape[static_cast<size_t>(a)] = n;
  Tensor out = Tensor::full(shape, value, x.options());
  copy_along(x, 0, out, offset, a, x.size(a));
  return record("pad", out, {x}, [a, offset, length = x.size(a)](const Tensor& g, GradSlots& grads) {
    grads.add(0, slice(g, a, offset, length));
  });
}

}  // namespace

Tensor permute(const Tensor& x, const std::vector<int64_t>& perm) {
  const int64_t rank = x.dim();
  if (static_cast<int64_t>(perm.size()) != rank || rank > 8)
    throw std::invalid_argument(fmt::format("permute: permutation of {} axes for input shape {} (rank ≤ 8)", perm.size(),
                                            shape_str(x.shape())));
  std::vector<int64_t> p(perm.size()), inverse(perm.size(), -1);
  Shape shape(perm.size());
  for (size_t d = 0; d < perm.size(); ++d) {
    const int64_t a = perm[d] < 0 ? perm[d] + rank : perm[d];
    if (a < 0 || a >= rank || inverse[static_cast<size_t>(a)] != -1)
      throw std::invalid_argument(fmt::format("permute: {} is not a permutation of the axes of input shape {}",
                                              shape_str(perm), shape_str(x.shape())));
    p[d] = a;
    inverse[static_cast<size_t>(a)] = static_cast<int64_t>(d);
    shape[d] = x.size(a);
  }
  if (std::is_sorted(p.begin(), p.end())) return x;  // the identity
  Tensor out = Tensor::empty(shape, x.options());
  if (out.numel() > 0) backend(x.device()).permute(x, p, out);
  return record("permute", out, {x}, [inverse](const Tensor& g, GradSlots& grads) { grads.add(0, permute(g, inverse)); });
}

Tensor slice(const Tensor& x, int64_t axis, int64_t start, int64_t length) {
  const int64_t a = detail::normalize_axis(axis, x.dim(), "slice", x.shape());
  if (start < 0 || length < 0 || start + length > x.size(a))
    throw std::invalid_argument(fmt::format("slice: [{}, {}) is outside axis {} (size {}) of input shape {}", start,
                                            start + length, axis, x.size(a), shape_str(x.shape())));
  if (start == 0 && length == x.size(a)) return x;
  Shape shape = x.shape();
  shape[static_cast<size_t>(a)] = length;
  Tensor out = Tensor::empty(shape, x.options());
  copy_along(x, start, out, 0, a, length);
  return record("slice", out, {x}, [a, start, n = x.size(a)](const Tensor& g, GradSlots& grads) {
    grads.add(0, embed(g, a, start, n, 0.0));
  });
}

Tensor concatenate(const std::vector<Tensor>& xs, int64_t axis) {
  if (xs.empty()) throw std::invalid_argument("concatenate: no tensors given");
  const Tensor& first = xs[0];
  const int64_t a = detail::normalize_axis(axis, first.dim(), "concatenate", first.shape());
  int64_t total = 0;
  for (const Tensor& x : xs) {
    detail::check_same("concatenate", first, x);
    bool fits = x.dim() == first.dim();
    for (int64_t d = 0; fits && d < x.dim(); ++d) fits = d == a || x.size(d) == first.size(d);
    if (!fits)
      throw std::invalid_argument(fmt::format("concatenate (axis {}): shapes {} and {} differ outside the axis", axis,
                                              shape_str(first.shape()), shape_str(x.shape())));
    total += x.size(a);
  }
  if (xs.size() == 1) return first;
  Shape shape = first.shape();
  shape[static_cast<size_t>(a)] = total;
  Tensor out = Tensor::empty(shape, first.options());
  std::vector<int64_t> offsets;
  int64_t offset = 0;
  for (const Tensor& x : xs) {
    copy_along(x, 0, out, offset, a, x.size(a));
    offsets.push_back(offset);
    offset += x.size(a);
  }
  std::vector<int64_t> sizes;
  for (const Tensor& x : xs) sizes.push_back(x.size(a));
  return record("concatenate", out, xs, [a, offsets, sizes](const Tensor& g, GradSlots& grads) {
    for (size_t i = 0; i < offsets.size(); ++i)
      if (grads.needs(i)) grads.add(i, slice(g, a, offsets[i], sizes[i]));
  });
}

std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t axis) {
  const int64_t a = detail::normalize_axis(axis, x.dim(), "split", x.shape());
  int64_t total = 0;
  for (int64_t s : sizes) {
    if (s < 0) throw std::invalid_argument(fmt::format("split: negative size {} in {}", s, shape_str(sizes)));
    total += s;
  }
  if (total != x.size(a))
    throw std::invalid_argument(fmt::format("split: sizes {} sum to {}, but axis {} of input shape {} has {}",
                                            shape_str(sizes), total, axis, shape_str(x.shape()), x.size(a)));
  std::vector<Tensor> out;
  int64_t offset = 0;
  for (int64_t s : sizes) {
    out.push_back(slice(x, a, offset, s));
    offset += s;
  }
  return out;
}

Tensor pad(const Tensor& x, const std::vector<std::pair<int64_t, int64_t>>& config, double value) {
  if (static_cast<int64_t>(config.size()) != x.dim())
    throw std::invalid_argument(fmt::format("pad: {} (before, after) pairs for input shape {} (one per dim)",
                                            config.size(), shape_str(x.shape())));
  Tensor out = x;
  for (int64_t d = 0; d < x.dim(); ++d) {
    const auto [lo, hi] = config[static_cast<size_t>(d)];
    // Crop first (negative amounts), then pad.
    const int64_t crop_lo = std::max<int64_t>(0, -lo), crop_hi = std::max<int64_t>(0, -hi);
    if (crop_lo + crop_hi > out.size(d))
      throw std::invalid_argument(fmt::format("pad: ({}, {}) crops more than axis {} (size {}) of input shape {}", lo, hi,
                                              d, x.size(d), shape_str(x.shape())));
    if (crop_lo + crop_hi > 0) out = slice(out, d, crop_lo, out.size(d) - crop_lo - crop_hi);
    const int64_t pad_lo = std::max<int64_t>(0, lo), pad_hi = std::max<int64_t>(0, hi);
    if (pad_lo + pad_hi > 0) out = embed(out, d, pad_lo, out.size(d) + pad_lo + pad_hi, value);
  }
  return out;
}

const char* resize_method_name(ResizeMethod method) {
  switch (method) {
    case ResizeMethod::nearest: return "nearest";
    case ResizeMethod::bilinear: return "bilinear";
    case ResizeMethod::bicubic: return "bicubic";
    case ResizeMethod::lanczos3: return "lanczos3";
    case ResizeMethod::lanczos5: return "lanczos5";
  }
  return "unknown";
}

namespace {

// The resampling kernel k(x) of each method (shape_ops.h).
double resize_kernel(ResizeMethod method, double x) {
  x = std::abs(x);
  switch (method) {
    case ResizeMethod::bilinear: return std::max(0.0, 1.0 - x);
    case ResizeMethod::bicubic:  // Keys 1981, a = −0.5
      if (x < 1.0) return (1.5 * x - 2.5) * x * x + 1.0;
      if (x < 2.0) return ((-0.5 * x + 2.5) * x - 4.0) * x + 2.0;
      return 0.0;
    case ResizeMethod::lanczos3:
    case ResizeMethod::lanczos5: {
      const double r = method == ResizeMethod::lanczos3 ? 3.0 : 5.0;
      if (x >= r) return 0.0;
      if (x < 1e-9) return 1.0;
      const double px = M_PI * x;
      return r * std::sin(px) * std::sin(px / r) / (px * px);
    }
    case ResizeMethod::nearest: break;
  }
  throw std::logic_error("resize: no kernel for nearest");
}

// {out, in}: row o holds the normalised weights of the input samples for output sample o.
Tensor resize_weights(int64_t in, int64_t out, ResizeMethod method, bool antialias, const TensorOptions& options) {
  const double inv_scale = static_cast<double>(in) / static_cast<double>(out);
  const double stretch = antialias ? std::max(inv_scale, 1.0) : 1.0;
  std::vector<double> w(static_cast<size_t>(out * in), 0.0);
  for (int64_t o = 0; o < out; ++o) {
    const double centre = (static_cast<double>(o) + 0.5) * inv_scale - 0.5;
    double* row = w.data() + o * in;
    double total = 0.0;
    for (int64_t j = 0; j < in; ++j) total += row[j] = resize_kernel(method, (static_cast<double>(j) - centre) / stretch);
    if (std::abs(total) > 1e-12)
      for (int64_t j = 0; j < in; ++j) row[j] /= total;
    else
      std::fill(row, row + in, 0.0);
  }
  return Tensor::from_vector({out, in}, w, {DType::f64, options.device}).to(options.dtype);
}

// x {batch, h, w, channels} resampled along axis 1 (h) or 2 (w) by weights {out, in}: one GEMM
// over the axis moved to the front. Differentiable through permute, reshape and matmul.
Tensor resample_axis(const Tensor& x, int64_t axis, const Tensor& weights) {
  const std::vector<int64_t> to_front = axis == 1 ? std::vector<int64_t>{1, 0, 2, 3} : std::vector<int64_t>{2, 0, 1, 3};
  const std::vector<int64_t> back = axis == 1 ? std::vector<int64_t>{1, 0, 2, 3} : std::vector<int64_t>{1, 2, 0, 3};
  Tensor front = permute(x, to_front);
  Shape rest(front.shape().begin() + 1, front.shape().end());
  Tensor y = matmul(weights, front.reshape({front.size(0), front.numel() / front.size(0)}));
  Shape shape = rest;
  shape.insert(shape.begin(), weights.size(0));
  return permute(y.reshape(shape), back);
}

}  // namespace

Tensor resize(const Tensor& x, int64_t out_h, int64_t out_w, ResizeMethod method, bool channels_last, bool antialias) {
  detail::check_floating("resize", x);
  if (x.dim() != 4)
    throw std::invalid_argument(fmt::format("resize: needs an input {{batch, h, w, channels}} ({{batch, channels, h, w}} "
                                            "with channels first), got {}",
                                            shape_str(x.shape())));
  if (out_h <= 0 || out_w <= 0)
    throw std::invalid_argument(fmt::format("resize: output size {{{}, {}}} must be positive", out_h, out_w));
  if (x.numel() == 0) throw std::invalid_argument(fmt::format("resize: input shape {} is empty", shape_str(x.shape())));
  const int64_t in_h = x.size(channels_last ? 1 : 2), in_w = x.size(channels_last ? 2 : 3);
  const bool downsamples = out_h < in_h || out_w < in_w;
  if (method != ResizeMethod::nearest && !(method == ResizeMethod::bilinear && !(antialias && downsamples))) {
    // Kernels wider than bilinear's, or antialiased downsampling: separable weight matrices.
    if (x.dtype() == DType::bf16) return resize(x.to(DType::f32), out_h, out_w, method, channels_last, antialias).to(DType::bf16);
    Tensor nhwc = channels_last ? x : permute(x, {0, 2, 3, 1});
    const TensorOptions options = x.options();
    Tensor y = resample_axis(nhwc, 1, resize_weights(in_h, out_h, method, antialias, options));
    y = resample_axis(y, 2, resize_weights(in_w, out_w, method, antialias, options));
    return channels_last ? y : permute(y, {0, 3, 1, 2});
  }
  ResizeParams p;
  p.bilinear = method == ResizeMethod::bilinear;
  p.out_h = out_h;
  p.out_w = out_w;
  Shape shape = x.shape();
  if (channels_last) {
    p.outer = x.size(0), p.in_h = x.size(1), p.in_w = x.size(2), p.inner = x.size(3);
    shape[1] = out_h, shape[2] = out_w;
  } else {
    p.outer = x.size(0) * x.size(1), p.in_h = x.size(2), p.in_w = x.size(3), p.inner = 1;
    shape[2] = out_h, shape[3] = out_w;
  }
  Tensor out = Tensor::empty(shape, x.options());
  backend(x.device()).resize(x, p, out);
  return record("resize", out, {x}, [p, in_shape = x.shape(), dtype = x.dtype()](const Tensor& g, GradSlots& grads) {
    Tensor acc = Tensor::empty(in_shape, {dtype == DType::f64 ? DType::f64 : DType::f32, g.device()});
    backend(g.device()).resize_backward(g, p, acc);
    grads.add(0, acc.dtype() == dtype ? acc : acc.to(dtype));
  });
}

}  // namespace axon
