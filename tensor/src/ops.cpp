// Kernels and their backward passes. Every kernel works on contiguous row-major data.
#include "axon/ops.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "axon/autograd.h"
#include "blas.h"

namespace axon {

namespace {

int64_t normalize_axis(int64_t axis, int64_t dims, const char* op, const Shape& shape) {
  int64_t a = axis < 0 ? axis + dims : axis;
  if (a < 0 || a >= dims)
    throw std::out_of_range(fmt::format("{}: axis {} out of range for shape {}", op, axis, shape_str(shape)));
  return a;
}

// A shape viewed as {outer, n, inner} around one axis, the layout every axis-wise kernel uses.
struct AxisSplit {
  int64_t outer = 1, n = 1, inner = 1;
};

// Calls f(base) for every lane along the axis: the lane's elements are base + k * inner, k < n.
template <class F>
void for_each_lane(const AxisSplit& s, F f) {
  for (int64_t o = 0; o < s.outer; ++o)
    for (int64_t i = 0; i < s.inner; ++i) f(o * s.n * s.inner + i);
}

AxisSplit split_at(const Shape& shape, int64_t axis) {
  AxisSplit s;
  for (int64_t d = 0; d < static_cast<int64_t>(shape.size()); ++d) {
    if (d < axis) s.outer *= shape[d];
    else if (d == axis) s.n = shape[d];
    else s.inner *= shape[d];
  }
  return s;
}

// Strides of `shape` aligned to the last dims of `out`, 0 where `shape` broadcasts.
std::vector<int64_t> broadcast_strides(const Shape& shape, const Shape& out) {
  std::vector<int64_t> strides(out.size(), 0);
  int64_t stride = 1;
  for (int64_t i = static_cast<int64_t>(shape.size()) - 1, o = static_cast<int64_t>(out.size()) - 1; i >= 0; --i, --o) {
    strides[o] = shape[i] == 1 ? 0 : stride;
    stride *= shape[i];
  }
  return strides;
}

// Calls f(out_index, a_offset, b_offset) for every element of `out`, walking the inner dimension
// in a tight loop. Used by broadcasting kernels and by their gradient reductions.
template <class F>
void for_each_broadcast(const Shape& out, const std::vector<int64_t>& sa, const std::vector<int64_t>& sb, F f) {
  const int64_t total = shape_numel(out);
  if (total == 0) return;
  if (out.empty()) {
    f(0, 0, 0);
    return;
  }
  const size_t d = out.size();
  const int64_t inner = out[d - 1];
  const int64_t ia = sa[d - 1], ib = sb[d - 1];
  std::vector<int64_t> index(d - 1, 0);
  int64_t oa = 0, ob = 0;
  for (int64_t o = 0; o < total; o += inner) {
    for (int64_t j = 0; j < inner; ++j) f(o + j, oa + j * ia, ob + j * ib);
    for (int64_t k = static_cast<int64_t>(d) - 2; k >= 0; --k) {
      oa += sa[k];
      ob += sb[k];
      if (++index[k] < out[k]) break;
      oa -= sa[k] * out[k];
      ob -= sb[k] * out[k];
      index[k] = 0;
    }
  }
}

template <class F>
Tensor binary_kernel(const Tensor& a, const Tensor& b, F f) {
  const Shape out_shape = broadcast_shape(a.shape(), b.shape());
  Tensor out = Tensor::empty(out_shape);
  float* o = out.data();
  const float* pa = a.data();
  const float* pb = b.data();
  const int64_t n = out.numel();
  if (a.shape() == b.shape()) {
    for (int64_t i = 0; i < n; ++i) o[i] = f(pa[i], pb[i]);
  } else if (b.numel() == 1) {
    const float s = pb[0];
    for (int64_t i = 0; i < n; ++i) o[i] = f(pa[i], s);
  } else if (a.numel() == 1) {
    const float s = pa[0];
    for (int64_t i = 0; i < n; ++i) o[i] = f(s, pb[i]);
  } else {
    for_each_broadcast(out_shape, broadcast_strides(a.shape(), out_shape), broadcast_strides(b.shape(), out_shape),
                       [&](int64_t i, int64_t ja, int64_t jb) { o[i] = f(pa[ja], pb[jb]); });
  }
  return out;
}

// Sums a gradient of the broadcast output shape down to an operand's shape.
Tensor reduce_to(const Tensor& g, const Shape& shape) {
  if (g.shape() == shape) return g;
  Tensor out = Tensor::zeros(shape);
  float* o = out.data();
  const float* pg = g.data();
  const std::vector<int64_t> so = broadcast_strides(shape, g.shape());
  const std::vector<int64_t> unit = broadcast_strides(g.shape(), g.shape());
  for_each_broadcast(g.shape(), so, unit, [&](int64_t, int64_t jo, int64_t jg) { o[jo] += pg[jg]; });
  return out;
}

template <class F>
Tensor unary_kernel(const Tensor& x, F f) {
  Tensor out = Tensor::empty(x.shape());
  const float* px = x.data();
  float* po = out.data();
  const int64_t n = x.numel();
  for (int64_t i = 0; i < n; ++i) po[i] = f(px[i]);
  return out;
}

// out[i] = f(a[i], b[i]) for tensors of one shape (used by backward passes).
template <class F>
Tensor zip_kernel(const Tensor& a, const Tensor& b, F f) {
  Tensor out = Tensor::empty(a.shape());
  const float* pa = a.data();
  const float* pb = b.data();
  float* po = out.data();
  const int64_t n = a.numel();
  for (int64_t i = 0; i < n; ++i) po[i] = f(pa[i], pb[i]);
  return out;
}

void require_2d(const char* op, const Tensor& t, const char* what) {
  if (t.dim() != 2)
    throw std::invalid_argument(fmt::format("{}: {} must be 2-d, got shape {}", op, what, shape_str(t.shape())));
}

int blas_int(int64_t v) {
  if (v > std::numeric_limits<int>::max()) throw std::length_error(fmt::format("BLAS dimension {} is too large", v));
  return static_cast<int>(v);
}

}  // namespace

Shape broadcast_shape(const Shape& a, const Shape& b) {
  const size_t d = std::max(a.size(), b.size());
  Shape out(d);
  for (size_t i = 0; i < d; ++i) {
    int64_t da = i < d - a.size() ? 1 : a[i - (d - a.size())];
    int64_t db = i < d - b.size() ? 1 : b[i - (d - b.size())];
    if (da != db && da != 1 && db != 1)
      throw std::invalid_argument(fmt::format("broadcast: shapes {} and {} are not compatible", shape_str(a), shape_str(b)));
    out[i] = da == 1 ? db : da;
  }
  return out;
}

// ---- binary ----

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor out = binary_kernel(a, b, [](float x, float y) { return x + y; });
  return record("add", out, {a, b}, [sa = a.shape(), sb = b.shape()](const Tensor& g, GradSlots& grads) {
    if (grads.needs(0)) grads.add(0, reduce_to(g, sa));
    if (grads.needs(1)) grads.add(1, reduce_to(g, sb));
  });
}

Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor out = binary_kernel(a, b, [](float x, float y) { return x - y; });
  return record("sub", out, {a, b}, [sa = a.shape(), sb = b.shape()](const Tensor& g, GradSlots& grads) {
    if (grads.needs(0)) grads.add(0, reduce_to(g, sa));
    if (grads.needs(1)) grads.add(1, reduce_to(neg(g), sb));
  });
}

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor out = binary_kernel(a, b, [](float x, float y) { return x * y; });
  return record("mul", out, {a, b}, [a, b](const Tensor& g, GradSlots& grads) {
    if (grads.needs(0)) grads.add(0, reduce_to(mul(g, b), a.shape()));
    if (grads.needs(1)) grads.add(1, reduce_to(mul(g, a), b.shape()));
  });
}

Tensor div(const Tensor& a, const Tensor& b) {
  Tensor out = binary_kernel(a, b, [](float x, float y) { return x / y; });
  return record("div", out, {a, b}, [a, b, y = out.detach()](const Tensor& g, GradSlots& grads) {
    if (grads.needs(0)) grads.add(0, reduce_to(div(g, b), a.shape()));
    // d(a/b)/db = -a/b^2 = -out/b
    if (grads.needs(1)) grads.add(1, reduce_to(neg(div(mul(g, y), b)), b.shape()));
  });
}

Tensor add_scalar(const Tensor& a, float s) {
  Tensor out = unary_kernel(a, [s](float x) { return x + s; });
  return record("add_scalar", out, {a}, [](const Tensor& g, GradSlots& grads) { grads.add(0, g); });
}

Tensor mul_scalar(const Tensor& a, float s) {
  Tensor out = unary_kernel(a, [s](float x) { return x * s; });
  return record("mul_scalar", out, {a}, [s](const Tensor& g, GradSlots& grads) { grads.add(0, mul_scalar(g, s)); });
}

// ---- unary ----

Tensor neg(const Tensor& x) {
  Tensor out = unary_kernel(x, [](float v) { return -v; });
  return record("neg", out, {x}, [](const Tensor& g, GradSlots& grads) { grads.add(0, neg(g)); });
}

Tensor exp(const Tensor& x) {
  Tensor out = unary_kernel(x, [](float v) { return std::exp(v); });
  return record("exp", out, {x}, [y = out.detach()](const Tensor& g, GradSlots& grads) { grads.add(0, zip_kernel(g, y, [](float gv, float y) { return gv * y; })); });
}

Tensor log(const Tensor& x) {
  Tensor out = unary_kernel(x, [](float v) { return std::log(v); });
  return record("log", out, {x}, [x](const Tensor& g, GradSlots& grads) { grads.add(0, zip_kernel(g, x, [](float gv, float v) { return gv / v; })); });
}

Tensor relu(const Tensor& x) {
  Tensor out = unary_kernel(x, [](float v) { return v > 0.0f ? v : 0.0f; });
  return record("relu", out, {x}, [y = out.detach()](const Tensor& g, GradSlots& grads) {
    grads.add(0, zip_kernel(g, y, [](float gv, float y) { return y > 0.0f ? gv : 0.0f; }));
  });
}

Tensor sigmoid(const Tensor& x) {
  Tensor out = unary_kernel(x, [](float v) { return 1.0f / (1.0f + std::exp(-v)); });
  return record("sigmoid", out, {x}, [y = out.detach()](const Tensor& g, GradSlots& grads) {
    grads.add(0, zip_kernel(g, y, [](float gv, float y) { return gv * y * (1.0f - y); }));
  });
}

Tensor tanh(const Tensor& x) {
  Tensor out = unary_kernel(x, [](float v) { return std::tanh(v); });
  return record("tanh", out, {x}, [y = out.detach()](const Tensor& g, GradSlots& grads) {
    grads.add(0, zip_kernel(g, y, [](float gv, float y) { return gv * (1.0f - y * y); }));
  });
}

Tensor square(const Tensor& x) {
  Tensor out = unary_kernel(x, [](float v) { return v * v; });
  return record("square", out, {x}, [x](const Tensor& g, GradSlots& grads) {
    grads.add(0, zip_kernel(g, x, [](float gv, float v) { return 2.0f * v * gv; }));
  });
}

// ---- reductions ----

Tensor sum(const Tensor& x) {
  double total = 0.0;  // double accumulator: sums of many floats lose digits otherwise
  const float* p = x.data();
  const int64_t n = x.numel();
  for (int64_t i = 0; i < n; ++i) total += p[i];
  Tensor out = Tensor::scalar(static_cast<float>(total));
  return record("sum", out, {x}, [shape = x.shape()](const Tensor& g, GradSlots& grads) {
    grads.add(0, Tensor::full(shape, g.item()));
  });
}

Tensor sum(const Tensor& x, int64_t axis, bool keepdim) {
  const Shape& shape = x.shape();
  const int64_t a = normalize_axis(axis, x.dim(), "sum", shape);
  const AxisSplit s = split_at(shape, a);
  Shape out_shape = shape;
  if (keepdim) out_shape[a] = 1;
  else out_shape.erase(out_shape.begin() + a);
  Tensor out = Tensor::zeros(out_shape);
  const float* px = x.data();
  float* po = out.data();
  for (int64_t o = 0; o < s.outer; ++o)
    for (int64_t k = 0; k < s.n; ++k)
      for (int64_t i = 0; i < s.inner; ++i) po[o * s.inner + i] += px[(o * s.n + k) * s.inner + i];
  return record("sum", out, {x}, [shape, s](const Tensor& g, GradSlots& grads) {
    Tensor gx = Tensor::empty(shape);
    const float* pg = g.data();
    float* pgx = gx.data();
    for (int64_t o = 0; o < s.outer; ++o)
      for (int64_t k = 0; k < s.n; ++k)
        for (int64_t i = 0; i < s.inner; ++i) pgx[(o * s.n + k) * s.inner + i] = pg[o * s.inner + i];
    grads.add(0, gx);
  });
}

Tensor mean(const Tensor& x) {
  const int64_t n = x.numel();
  if (n == 0) throw std::invalid_argument("mean: empty tensor");
  return mul_scalar(sum(x), 1.0f / static_cast<float>(n));
}

Tensor mean(const Tensor& x, int64_t axis, bool keepdim) {
  const int64_t n = x.size(axis);
  if (n == 0) throw std::invalid_argument("mean: empty axis in shape " + shape_str(x.shape()));
  return mul_scalar(sum(x, axis, keepdim), 1.0f / static_cast<float>(n));
}

std::vector<int64_t> argmax_rows(const Tensor& x) {
  require_2d("argmax_rows", x, "input");
  const int64_t rows = x.size(0), cols = x.size(1);
  std::vector<int64_t> out(static_cast<size_t>(rows));
  const float* p = x.data();
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = p + r * cols;
    out[r] = std::max_element(row, row + cols) - row;
  }
  return out;
}

// ---- linear algebra ----

Tensor matmul(const Tensor& a, const Tensor& b) {
  require_2d("matmul", a, "left operand");
  require_2d("matmul", b, "right operand");
  if (a.size(1) != b.size(0))
    throw std::invalid_argument(
        fmt::format("matmul: shapes {} and {} do not chain (inner sizes differ)", shape_str(a.shape()), shape_str(b.shape())));
  const int m = blas_int(a.size(0)), k = blas_int(a.size(1)), n = blas_int(b.size(1));
  Tensor out = Tensor::empty({m, n});
  if (m && n) blas::sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, a.data(), k, b.data(), n, 0.0f, out.data(), n);
  if (k == 0) out.fill(0.0f);
  return record("matmul", out, {a, b}, [a, b, m, k, n](const Tensor& g, GradSlots& grads) {
    float beta = 0.0f;
    if (grads.needs(0)) {  // dA = dC · Bᵀ
      float* ga = grads.target(0, a.shape(), beta);
      blas::sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, k, n, 1.0f, g.data(), n, b.data(), n, beta, ga, k);
    }
    if (grads.needs(1)) {  // dB = Aᵀ · dC
      float* gb = grads.target(1, b.shape(), beta);
      blas::sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, k, n, m, 1.0f, a.data(), k, g.data(), n, beta, gb, n);
    }
  });
}

Tensor transpose(const Tensor& x) {
  require_2d("transpose", x, "input");
  const int64_t r = x.size(0), c = x.size(1);
  Tensor out = Tensor::empty({c, r});
  const float* px = x.data();
  float* po = out.data();
  for (int64_t i = 0; i < r; ++i)
    for (int64_t j = 0; j < c; ++j) po[j * r + i] = px[i * c + j];
  return record("transpose", out, {x}, [](const Tensor& g, GradSlots& grads) { grads.add(0, transpose(g)); });
}

Tensor linear(const Tensor& x, const Tensor& kernel, const Tensor& bias) {
  require_2d("linear", x, "input");
  require_2d("linear", kernel, "kernel");
  if (x.size(1) != kernel.size(0))
    throw std::invalid_argument(fmt::format("linear: input of shape {} does not match kernel of shape {} (expects {{*, {}}})",
                                            shape_str(x.shape()), shape_str(kernel.shape()), kernel.size(0)));
  if (bias.defined() && (bias.dim() != 1 || bias.size(0) != kernel.size(1)))
    throw std::invalid_argument(fmt::format("linear: bias of shape {} does not match kernel of shape {}",
                                            shape_str(bias.shape()), shape_str(kernel.shape())));
  const int batch = blas_int(x.size(0)), in = blas_int(x.size(1)), units = blas_int(kernel.size(1));
  Tensor out = Tensor::empty({batch, units});
  float* po = out.data();
  // Start from the bias in every row so the GEMM can add onto it (beta = 1): one pass, no temporary.
  float beta = 0.0f;
  if (bias.defined()) {
    for (int r = 0; r < batch; ++r) std::copy_n(bias.data(), units, po + static_cast<int64_t>(r) * units);
    beta = 1.0f;
  }
  if (in == 0) {
    if (!bias.defined()) out.fill(0.0f);
  } else if (batch && units) {
    blas::sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, batch, units, in, 1.0f, x.data(), in, kernel.data(), units, beta, po, units);
  }
  return record("linear", out, {x, kernel, bias}, [x, kernel, batch, in, units](const Tensor& g, GradSlots& grads) {
    float beta = 0.0f;
    if (grads.needs(0)) {  // dx = g · Wᵀ
      float* gx = grads.target(0, x.shape(), beta);
      blas::sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, batch, in, units, 1.0f, g.data(), units, kernel.data(), units, beta, gx, in);
    }
    if (grads.needs(1)) {  // dW = xᵀ · g
      float* gw = grads.target(1, kernel.shape(), beta);
      blas::sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, in, units, batch, 1.0f, x.data(), in, g.data(), units, beta, gw, units);
    }
    if (grads.needs(2)) {  // db = column sums of g
      float* gb = grads.target(2, {units}, beta);
      if (beta == 0.0f) std::fill_n(gb, units, 0.0f);
      const float* pg = g.data();
      for (int r = 0; r < batch; ++r) {
        const float* row = pg + static_cast<int64_t>(r) * units;
        for (int j = 0; j < units; ++j) gb[j] += row[j];
      }
    }
  });
}

// ---- softmax family ----

namespace {

// Writes softmax (or log-softmax) of x along the axis described by s into out.
void softmax_forward(const float* x, float* out, const AxisSplit& s, bool log_space) {
  for_each_lane(s, [&](int64_t base) {
    const float* px = x + base;
    float* po = out + base;
    float max_v = -std::numeric_limits<float>::infinity();
    for (int64_t k = 0; k < s.n; ++k) max_v = std::max(max_v, px[k * s.inner]);
    double total = 0.0;
    for (int64_t k = 0; k < s.n; ++k) total += std::exp(static_cast<double>(px[k * s.inner] - max_v));
    if (log_space) {
      const float log_total = static_cast<float>(std::log(total));
      for (int64_t k = 0; k < s.n; ++k) po[k * s.inner] = px[k * s.inner] - max_v - log_total;
    } else {
      const double inv = 1.0 / total;
      for (int64_t k = 0; k < s.n; ++k)
        po[k * s.inner] = static_cast<float>(std::exp(static_cast<double>(px[k * s.inner] - max_v)) * inv);
    }
  });
}

}  // namespace

Tensor softmax(const Tensor& x, int64_t axis) {
  const int64_t a = normalize_axis(axis, x.dim(), "softmax", x.shape());
  const AxisSplit s = split_at(x.shape(), a);
  Tensor out = Tensor::empty(x.shape());
  softmax_forward(x.data(), out.data(), s, false);
  return record("softmax", out, {x}, [y = out.detach(), s](const Tensor& g, GradSlots& grads) {
    // dx = y ⊙ (g − Σ g⊙y) along the axis
    Tensor gx = Tensor::empty(y.shape());
    const float* py = y.data();
    const float* pg = g.data();
    float* pgx = gx.data();
    for_each_lane(s, [&](int64_t base) {
      double dot = 0.0;
      for (int64_t k = 0; k < s.n; ++k) dot += static_cast<double>(pg[base + k * s.inner]) * py[base + k * s.inner];
      for (int64_t k = 0; k < s.n; ++k) {
        const int64_t j = base + k * s.inner;
        pgx[j] = py[j] * (pg[j] - static_cast<float>(dot));
      }
    });
    grads.add(0, gx);
  });
}

Tensor log_softmax(const Tensor& x, int64_t axis) {
  const int64_t a = normalize_axis(axis, x.dim(), "log_softmax", x.shape());
  const AxisSplit s = split_at(x.shape(), a);
  Tensor out = Tensor::empty(x.shape());
  softmax_forward(x.data(), out.data(), s, true);
  return record("log_softmax", out, {x}, [y = out.detach(), s](const Tensor& g, GradSlots& grads) {
    // dx = g − softmax ⊙ Σ g along the axis
    Tensor gx = Tensor::empty(y.shape());
    const float* py = y.data();
    const float* pg = g.data();
    float* pgx = gx.data();
    for_each_lane(s, [&](int64_t base) {
      double total = 0.0;
      for (int64_t k = 0; k < s.n; ++k) total += pg[base + k * s.inner];
      for (int64_t k = 0; k < s.n; ++k) {
        const int64_t j = base + k * s.inner;
        pgx[j] = pg[j] - std::exp(py[j]) * static_cast<float>(total);
      }
    });
    grads.add(0, gx);
  });
}

}  // namespace axon
