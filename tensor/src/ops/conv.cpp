// Convolution and pooling: front ends and backward passes. Everything runs channels last; a
// channels-first input is transposed in and the result transposed back (both differentiable).
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <functional>
#include <limits>

#include "axon/autograd.h"
#include "axon/conv_ops.h"
#include "axon/ops.h"
#include "axon/shape_ops.h"
#include "common.h"
#include "cpu/onednn_conv.h"

namespace axon {

std::string padding_str(const Padding& padding) {
  switch (padding.kind) {
    case Padding::Kind::valid: return "valid";
    case Padding::Kind::same: return "same";
    case Padding::Kind::explicit_pairs: {
      std::string s = "[";
      for (size_t i = 0; i < padding.pairs.size(); ++i)
        s += fmt::format("{}({}, {})", i ? ", " : "", padding.pairs[i].first, padding.pairs[i].second);
      return s + "]";
    }
  }
  return "?";
}

namespace {

std::string list_str(const std::vector<int64_t>& v, const char* empty) {
  return v.empty() ? std::string(empty) : fmt::format("[{}]", fmt::join(v, ", "));
}
const char* layout_str(ChannelsLayout c) { return c == ChannelsLayout::last ? "last" : "first"; }

}  // namespace

std::string conv_options_str(const ConvOptions& o) {
  return fmt::format("strides {}, padding {}, input_dilation {}, kernel_dilation {}, feature_group_count {}, channels {}",
                     list_str(o.strides, "1"), padding_str(o.padding), list_str(o.input_dilation, "1"),
                     list_str(o.kernel_dilation, "1"), o.feature_group_count, layout_str(o.channels));
}

std::string pool_options_str(const PoolOptions& o) {
  return fmt::format("kernel_size {}, strides {}, padding {}, dilations {}, channels {}", list_str(o.kernel_size, "[]"),
                     list_str(o.strides, "kernel_size"), padding_str(o.padding), list_str(o.dilations, "1"),
                     layout_str(o.channels));
}

namespace {

// A shape seen channels last: {batch, spatial..., channels}.
struct LastShape {
  int64_t batch, channels;
  std::vector<int64_t> spatial;
};

LastShape as_last(const char* op, const Shape& s, ChannelsLayout layout, const std::string& opts) {
  if (s.size() < 3 || s.size() > 5)
    throw std::invalid_argument(fmt::format("{} ({}): input of shape {} must have rank 3 to 5 ({{batch, spatial..., channels}} "
                                            "with 1 to 3 spatial dims{})",
                                            op, opts, shape_str(s), layout == ChannelsLayout::first ? ", channels first" : ""));
  LastShape l;
  l.batch = s[0];
  if (layout == ChannelsLayout::last) {
    l.channels = s.back();
    l.spatial.assign(s.begin() + 1, s.end() - 1);
  } else {
    l.channels = s[1];
    l.spatial.assign(s.begin() + 2, s.end());
  }
  return l;
}

// One value per spatial dim from an option list: empty -> `fallback`, one value -> all dims.
std::vector<int64_t> per_dim(const char* op, const char* name, const std::vector<int64_t>& v, size_t dims,
                             const std::vector<int64_t>& fallback, int64_t minimum, const std::string& opts,
                             const Shape& input) {
  std::vector<int64_t> r;
  if (v.empty())
    r = fallback;
  else if (v.size() == 1)
    r.assign(dims, v[0]);
  else if (v.size() == dims)
    r = v;
  else
    throw std::invalid_argument(fmt::format("{} ({}): {} has {} values but input of shape {} has {} spatial dims", op, opts,
                                            name, v.size(), shape_str(input), dims));
  for (int64_t x : r)
    if (x < minimum)
      throw std::invalid_argument(
          fmt::format("{} ({}): {} must be ≥ {}, got {}", op, opts, name, minimum, list_str(r, "")));
  return r;
}

// The geometry (out sizes included) of a window op over a channels-last input; `spatial` may
// hold −1 for an unknown size only when `shape_only`. Throws naming the op, options and shapes.
ConvGeometry geometry(const char* op, const std::string& opts, const Shape& input, const LastShape& x,
                      const std::vector<int64_t>& kernel, const std::vector<int64_t>& strides, const Padding& padding,
                      const std::vector<int64_t>& input_dilation, const std::vector<int64_t>& kernel_dilation) {
  const size_t dims = x.spatial.size();
  const std::vector<int64_t> ones(dims, 1);
  const std::vector<int64_t> s = per_dim(op, "strides", strides, dims, ones, 1, opts, input);
  const std::vector<int64_t> ld = per_dim(op, "input_dilation", input_dilation, dims, ones, 1, opts, input);
  const std::vector<int64_t> kd = per_dim(op, "kernel_dilation", kernel_dilation, dims, ones, 1, opts, input);
  std::vector<std::pair<int64_t, int64_t>> pads(dims, {0, 0});
  if (padding.kind == Padding::Kind::explicit_pairs) {
    if (padding.pairs.size() == 1)
      pads.assign(dims, padding.pairs[0]);
    else if (padding.pairs.size() == dims)
      pads = padding.pairs;
    else
      throw std::invalid_argument(fmt::format("{} ({}): padding has {} pairs but input of shape {} has {} spatial dims", op,
                                              opts, padding.pairs.size(), shape_str(input), dims));
    for (auto [lo, hi] : pads)
      if (lo < 0 || hi < 0)
        throw std::invalid_argument(fmt::format("{} ({}): padding must not be negative", op, opts));
  }
  ConvGeometry g;
  g.batch = x.batch;
  g.channels = x.channels;
  for (size_t d = 0; d < dims; ++d) {
    const int64_t in = x.spatial[d];
    if (in <= 0)
      throw std::invalid_argument(
          fmt::format("{} ({}): spatial dim {} of input shape {} must be known and positive", op, opts, d, shape_str(input)));
    const int64_t in_dil = (in - 1) * ld[d] + 1, k_eff = (kernel[d] - 1) * kd[d] + 1;
    int64_t lo = pads[d].first, hi = pads[d].second;
    if (padding.kind == Padding::Kind::same) {
      const int64_t out = (in_dil + s[d] - 1) / s[d];
      const int64_t total = std::max<int64_t>((out - 1) * s[d] + k_eff - in_dil, 0);
      lo = total / 2;
      hi = total - lo;
    }
    const int64_t padded = in_dil + lo + hi;
    if (k_eff > padded)
      throw std::invalid_argument(fmt::format(
          "{} ({}): kernel size {} (dilated {}) is larger than the padded input size {} along spatial dim {} (input shape {})",
          op, opts, kernel[d], k_eff, padded, d, shape_str(input)));
    g.in[d] = in;
    g.kernel[d] = kernel[d];
    g.stride[d] = s[d];
    g.pad_lo[d] = lo;
    g.input_dilation[d] = ld[d];
    g.kernel_dilation[d] = kd[d];
    g.out[d] = (padded - k_eff) / s[d] + 1;
  }
  return g;
}

std::vector<int64_t> out_spatial(const ConvGeometry& g, size_t dims) { return {g.out, g.out + dims}; }

Shape make_shape(int64_t batch, const std::vector<int64_t>& spatial, int64_t channels, ChannelsLayout layout) {
  Shape s{batch};
  if (layout == ChannelsLayout::first) s.push_back(channels);
  s.insert(s.end(), spatial.begin(), spatial.end());
  if (layout == ChannelsLayout::last) s.push_back(channels);
  return s;
}

// A 1-d view of t from element `offset` on (gemm_ld's operands inside a larger matrix).
Tensor from(const Tensor& t, int64_t offset) {
  return Tensor::view_of(t.storage(), t.offset() + static_cast<size_t>(offset), {t.numel() - offset}, t.dtype());
}

// {batch, rows, cols...} -> {batch, cols..., rows}: channels first to last (rows = channels);
// `to_first` does the reverse. Differentiable: the gradient is the opposite move.
Tensor move_channels(const Tensor& x, bool to_first) {
  const int64_t batch = x.size(0);
  int64_t rows, cols;
  Shape out_shape{batch};
  if (to_first) {  // {N, S..., C} -> {N, C, S...}
    rows = 1;
    for (int64_t d = 1; d + 1 < x.dim(); ++d) rows *= x.size(d);
    cols = x.size(-1);
    out_shape.push_back(cols);
    for (int64_t d = 1; d + 1 < x.dim(); ++d) out_shape.push_back(x.size(d));
  } else {  // {N, C, S...} -> {N, S..., C}
    rows = x.size(1);
    cols = 1;
    for (int64_t d = 2; d < x.dim(); ++d) {
      cols *= x.size(d);
      out_shape.push_back(x.size(d));
    }
    out_shape.push_back(rows);
  }
  Tensor out = Tensor::empty(out_shape, x.options());
  if (out.numel() > 0) backend(x.device()).batched_transpose(x, batch, rows, cols, out);
  return record(to_first ? "channels_first" : "channels_last", out, {x},
                [to_first](const Tensor& g, GradSlots& grads) { grads.add(0, move_channels(g, !to_first)); });
}

// The bias gradient (input 2) of a convolution: db {cout} gets the sum over the `rows` positions
// of the output gradient go {rows, cout} (added to, when db already holds a gradient).
void add_bias_grad(const Tensor& go, int64_t rows, int64_t cout, GradSlots& grads) {
  float beta = 0.0f;
  Tensor db = grads.target(2, {cout}, go.options(), beta);
  backend(go.device()).sum_axis(go, AxisSplit{1, rows, cout}, beta, db);
}

// Convolution by the backend's library (oneDNN on the CPU): x is kept for the kernel gradient,
// instead of im2col's buffer.
Tensor conv_library(const Tensor& x, const Tensor& kernel, const Tensor& bias, const ConvGeometry& g, Tensor out) {
  Backend& be = backend(x.device());
  be.conv_forward(x, kernel, bias.defined() ? &bias : nullptr, g, out);
  return record("conv", out, {x, kernel, bias},
                [x = x.detach(), kernel = kernel.detach(), g](const Tensor& go, GradSlots& grads) {
                  Backend& be = backend(go.device());
                  if (grads.needs(0)) {
                    Tensor dx = Tensor::empty(x.shape(), x.options());
                    be.conv_backward_data(go, kernel, g, dx);
                    grads.add(0, dx);
                  }
                  const bool needs_bias = grads.size() > 2 && grads.needs(2);
                  if (grads.needs(1)) {  // and the bias gradient in the same pass
                    float beta = 0.0f, db_beta = 0.0f;
                    Tensor dw = grads.target(1, kernel.shape(), kernel.options(), beta);
                    Tensor db = needs_bias ? grads.target(2, {kernel.size(-1)}, go.options(), db_beta) : Tensor();
                    be.conv_backward_weights(x, go, g, beta, dw, needs_bias ? &db : nullptr, db_beta);
                  } else if (needs_bias) {
                    add_bias_grad(go, go.numel() / kernel.size(-1), kernel.size(-1), grads);  // cout ≥ 1 here
                  }
                });
}

// Convolution of a channels-last x with geometry g (out sizes set) and kernel {k..., cg, cout}:
// the backend's library convolution when it has one for g, else im2col + GEMM.
Tensor conv_last(const Tensor& x, const Tensor& kernel, const Tensor& bias, const ConvGeometry& g, size_t dims) {
  const int64_t cout = kernel.size(-1), groups = g.groups, cg = g.channels / groups, coutg = cout / groups;
  const int64_t m = g.batch * g.out[0] * g.out[1] * g.out[2];
  const int64_t taps = g.kernel[0] * g.kernel[1] * g.kernel[2], kg = taps * cg;
  Tensor out = Tensor::empty(make_shape(g.batch, out_spatial(g, dims), cout, ChannelsLayout::last), x.options());
  Backend& be = backend(x.device());
  if (be.has_conv(g, static_cast<int>(dims), cout, x.dtype())) return conv_library(x, kernel, bias, g, out);
  // A 1×1 convolution with unit strides, no padding and one group reads x as it is.
  bool identity = groups == 1 && taps == 1;
  for (int d = 0; d < 3; ++d) identity = identity && g.stride[d] == 1 && g.pad_lo[d] == 0 && g.in[d] == g.out[d];
  Tensor col = identity ? x.detach() : Tensor::empty({groups * m * kg}, x.options());
  float beta = 0.0f;
  if (bias.defined() && out.numel() > 0) {
    // Every row starts as the bias (a rank-1 GEMM, ones · bias: BLAS-fast, unlike a broadcast
    // loop), and the convolution's GEMMs add onto it (beta = 1), as linear does.
    be.gemm_ld(false, false, m, cout, 1, 1.0f, Tensor::ones({m}, x.options()), 1, bias, cout, 0.0f, out, cout);
    beta = 1.0f;
  }
  if (m > 0 && cout > 0 && kg == 0 && beta == 0.0f) out.fill(0.0);  // no input channels
  if (m > 0 && cout > 0 && kg > 0) {
    for (int64_t grp = 0; grp < groups; ++grp) {
      Tensor col_g = identity ? x : Tensor::view_of(col.storage(), col.offset() + grp * m * kg, {m, kg}, x.dtype());
      if (!identity) be.im2col(x, g, grp, col_g);
      Tensor out_g = from(out, grp * coutg);
      be.gemm_ld(false, false, m, coutg, kg, 1.0f, col_g, kg, from(kernel, grp * coutg), cout, beta, out_g, cout);
    }
  }
  return record("conv", out, {x, kernel, bias},
                [x_shape = x.shape(), opts = x.options(), col, kernel = kernel.detach(), g, m, kg, cout, coutg,
                 groups](const Tensor& go, GradSlots& grads) {
                  Backend& be = backend(go.device());
                  if (grads.needs(0)) {  // dcol = dy · Wᵀ per group, then col2im
                    Tensor dx = Tensor::empty(x_shape, opts);
                    if (m == 0 || cout == 0 || kg == 0) {
                      dx.fill(0.0);
                    } else {
                      Tensor dcol = Tensor::empty({m, kg}, opts);
                      for (int64_t grp = 0; grp < groups; ++grp) {
                        be.gemm_ld(false, true, m, kg, coutg, 1.0f, from(go, grp * coutg), cout, from(kernel, grp * coutg),
                                   cout, 0.0f, dcol, kg);
                        be.col2im(dcol, g, grp, dx);
                      }
                    }
                    grads.add(0, dx);
                  }
                  if (grads.needs(1)) {  // dW = colᵀ · dy per group
                    float beta = 0.0f;
                    Tensor dw = grads.target(1, kernel.shape(), kernel.options(), beta);
                    if (m == 0 || kg == 0) {
                      if (beta == 0.0f) dw.fill(0.0);
                    } else {
                      for (int64_t grp = 0; grp < groups; ++grp) {
                        Tensor col_g = Tensor::view_of(col.storage(), col.offset() + grp * m * kg, {m, kg}, col.dtype());
                        Tensor dw_g = from(dw, grp * coutg);
                        be.gemm_ld(true, false, kg, coutg, m, 1.0f, col_g, kg, from(go, grp * coutg), cout, beta, dw_g, cout);
                      }
                    }
                  }
                  if (grads.size() > 2 && grads.needs(2)) add_bias_grad(go, m, cout, grads);
                });
}

Tensor pool_last(PoolKind kind, const Tensor& x, const ConvGeometry& g, size_t dims) {
  Tensor out = Tensor::empty(make_shape(g.batch, out_spatial(g, dims), g.channels, ChannelsLayout::last), x.options());
  Tensor argmax;
  if (kind == PoolKind::max) argmax = Tensor::empty(out.shape(), {DType::i32, x.device()});
  if (out.numel() > 0) backend(x.device()).pool(kind, x, g, out, argmax.defined() ? &argmax : nullptr);
  return record(kind == PoolKind::max ? "max_pool" : "avg_pool", out, {x},
                [kind, g, argmax, x_shape = x.shape(), opts = x.options()](const Tensor& go, GradSlots& grads) {
                  Tensor dx = Tensor::empty(x_shape, opts);
                  if (dx.numel() > 0)
                    backend(go.device()).pool_backward(kind, go, g, argmax.defined() ? &argmax : nullptr, dx);
                  grads.add(0, dx);
                });
}

struct ConvPlan {
  LastShape x;
  ConvGeometry g;
  int64_t cout;
};

ConvPlan plan_conv(const Shape& input, const Shape& kernel, const ConvOptions& o) {
  const std::string opts = conv_options_str(o);
  ConvPlan p;
  p.x = as_last("conv", input, o.channels, opts);
  const size_t dims = p.x.spatial.size();
  if (kernel.size() != dims + 2)
    throw std::invalid_argument(fmt::format("conv ({}): kernel of shape {} must be {{k..., in_channels/groups, out_channels}} "
                                            "with {} spatial dims, as input shape {}",
                                            opts, shape_str(kernel), dims, shape_str(input)));
  const int64_t groups = o.feature_group_count;
  p.cout = kernel.back();
  if (groups < 1 || p.x.channels % groups != 0 || p.cout % groups != 0)
    throw std::invalid_argument(fmt::format("conv ({}): feature_group_count {} must divide the input channels {} and the "
                                            "output channels {} (input shape {}, kernel shape {})",
                                            opts, groups, p.x.channels, p.cout, shape_str(input), shape_str(kernel)));
  if (kernel[dims] != p.x.channels / groups)
    throw std::invalid_argument(fmt::format("conv ({}): kernel of shape {} expects {} input channels per group, but input of "
                                            "shape {} has {} channels in {} group(s)",
                                            opts, shape_str(kernel), kernel[dims], shape_str(input), p.x.channels, groups));
  std::vector<int64_t> k(kernel.begin(), kernel.begin() + static_cast<int64_t>(dims));
  for (int64_t v : k)
    if (v < 1) throw std::invalid_argument(fmt::format("conv ({}): kernel of shape {} has an empty window", opts, shape_str(kernel)));
  p.g = geometry("conv", opts, input, p.x, k, o.strides, o.padding, o.input_dilation, o.kernel_dilation);
  p.g.groups = groups;
  return p;
}

struct PoolPlan {
  LastShape x;
  ConvGeometry g;
};

PoolPlan plan_pool(const char* op, const Shape& input, const PoolOptions& o) {
  const std::string opts = pool_options_str(o);
  PoolPlan p;
  p.x = as_last(op, input, o.channels, opts);
  const size_t dims = p.x.spatial.size();
  if (o.kernel_size.empty())
    throw std::invalid_argument(fmt::format("{} ({}): kernel_size is required", op, opts));
  const std::vector<int64_t> k = per_dim(op, "kernel_size", o.kernel_size, dims, {}, 1, opts, input);
  p.g = geometry(op, opts, input, p.x, k, o.strides.empty() ? k : o.strides, o.padding, {}, o.dilations);
  return p;
}

Tensor pool_impl(PoolKind kind, const char* op, const Tensor& x, const PoolOptions& o) {
  detail::check_floating(op, x);
  const PoolPlan p = plan_pool(op, x.shape(), o);
  const size_t dims = p.x.spatial.size();
  if (o.channels == ChannelsLayout::last) return pool_last(kind, x, p.g, dims);
  return move_channels(pool_last(kind, move_channels(x, false), p.g, dims), true);
}

Tensor global_impl(PoolKind kind, const char* op, const Tensor& x, bool keep_axes, ChannelsLayout layout) {
  detail::check_floating(op, x);
  const Shape out_shape = global_pool_output_shape(x.shape(), keep_axes, layout);
  PoolOptions o;
  o.channels = layout;
  const LastShape l = as_last(op, x.shape(), layout, "");
  o.kernel_size = l.spatial;
  return pool_impl(kind, op, x, o).reshape(out_shape);
}

}  // namespace

bool onednn_available() { return cpu_detail::onednn_built(); }
bool onednn_enabled() { return cpu_detail::onednn_enabled(); }
void set_onednn_enabled(bool enabled) { cpu_detail::set_onednn_enabled(enabled); }
std::string onednn_version() { return cpu_detail::onednn_version(); }
int64_t onednn_conv_calls() { return cpu_detail::onednn_calls(); }
int64_t onednn_gemm_calls() { return cpu_detail::onednn_gemm_calls(); }

Shape conv_output_shape(const Shape& input, const Shape& kernel, const ConvOptions& options) {
  const ConvPlan p = plan_conv(input, kernel, options);
  return make_shape(p.x.batch, out_spatial(p.g, p.x.spatial.size()), p.cout, options.channels);
}

Tensor conv(const Tensor& x, const Tensor& kernel, const Tensor& bias, const ConvOptions& options) {
  detail::check_floating("conv", x);
  if (!kernel.defined()) throw std::invalid_argument("conv: kernel is undefined");
  detail::check_same("conv", x, kernel);
  const ConvPlan p = plan_conv(x.shape(), kernel.shape(), options);
  if (bias.defined()) {
    detail::check_same("conv", x, bias);
    if (bias.dim() != 1 || bias.size(0) != p.cout)
      throw std::invalid_argument(fmt::format("conv ({}): bias of shape {} does not match kernel of shape {} (expects {{{}}})",
                                              conv_options_str(options), shape_str(bias.shape()), shape_str(kernel.shape()),
                                              p.cout));
  }
  const size_t dims = p.x.spatial.size();
  if (options.channels == ChannelsLayout::last) return conv_last(x, kernel, bias, p.g, dims);
  return move_channels(conv_last(move_channels(x, false), kernel, bias, p.g, dims), true);
}

Shape pool_output_shape(const Shape& input, const PoolOptions& options) {
  const PoolPlan p = plan_pool("pool", input, options);
  return make_shape(p.x.batch, out_spatial(p.g, p.x.spatial.size()), p.x.channels, options.channels);
}

Tensor max_pool(const Tensor& x, const PoolOptions& options) { return pool_impl(PoolKind::max, "max_pool", x, options); }
Tensor avg_pool(const Tensor& x, const PoolOptions& options) { return pool_impl(PoolKind::avg, "avg_pool", x, options); }

Shape global_pool_output_shape(const Shape& input, bool keep_axes, ChannelsLayout channels) {
  const LastShape l = as_last("global_pool", input, channels, fmt::format("keep_axes {}", keep_axes));
  if (!keep_axes) return {l.batch, l.channels};
  return make_shape(l.batch, std::vector<int64_t>(l.spatial.size(), 1), l.channels, channels);
}

Tensor global_avg_pool(const Tensor& x, bool keep_axes, ChannelsLayout channels) {
  return global_impl(PoolKind::avg, "global_avg_pool", x, keep_axes, channels);
}
Tensor global_max_pool(const Tensor& x, bool keep_axes, ChannelsLayout channels) {
  return global_impl(PoolKind::max, "global_max_pool", x, keep_axes, channels);
}

}  // namespace axon

// ---- conv_transpose, power-average, blur and adaptive pooling ----
// Each is built from the differentiable ops above (conv, avg_pool, max_pool) and element-wise
// ops, so its backward pass is theirs.
namespace axon {

namespace {

// Runs f; an std::invalid_argument from the op it calls, "inner_op (its options): what", is
// rethrown as "prefix: what" (prefix: the outer op and its own options).
template <class F>
auto renamed(const std::string& prefix, const std::string& inner_op, F&& f) {
  try {
    return f();
  } catch (const std::invalid_argument& e) {
    std::string what = e.what();
    if (what.rfind(inner_op + " (", 0) == 0) {
      const size_t at = what.find("): ");
      if (at != std::string::npos) what = what.substr(at + 3);
    }
    throw std::invalid_argument(prefix + ": " + what);
  }
}

ConvOptions transpose_as_conv(const Shape& kernel, const ConvTransposeOptions& o) {
  ConvOptions c;
  c.strides = {1};
  c.input_dilation = o.strides;
  c.kernel_dilation = o.kernel_dilation;
  c.channels = o.channels;
  c.padding = Padding::explicit_pairs(conv_transpose_padding(kernel, o));
  return c;
}

// x^p: by multiplication for an integer p ≥ 1 (any sign of x), else exp(p·log x).
Tensor power(const Tensor& x, double p) {
  if (p == std::floor(p) && p >= 1 && p <= 64) {
    Tensor r = x;
    for (int i = 1; i < static_cast<int>(p); ++i) r = mul(r, x);
    return r;
  }
  return exp(mul(log(x), Tensor::scalar(p, x.options())));
}

// s^(1/p) for s ≥ 0: exp(log(s)/p).
Tensor root(const Tensor& s, double p) {
  if (p == 1) return s;
  return exp(mul(log(s), Tensor::scalar(1.0 / p, s.options())));
}

void check_norm(const char* op, double norm) {
  if (!(norm > 0) || !std::isfinite(norm))
    throw std::invalid_argument(fmt::format("{}: norm must be positive and finite, got {}", op, norm));
}

}  // namespace

std::string conv_transpose_options_str(const ConvTransposeOptions& o) {
  return fmt::format("strides {}, padding {}, kernel_dilation {}, channels {}", list_str(o.strides, "1"),
                     padding_str(o.padding), list_str(o.kernel_dilation, "1"), layout_str(o.channels));
}

std::vector<std::pair<int64_t, int64_t>> conv_transpose_padding(const Shape& kernel, const ConvTransposeOptions& o) {
  const std::string opts = conv_transpose_options_str(o);
  if (kernel.size() < 3 || kernel.size() > 5)
    throw std::invalid_argument(fmt::format("conv_transpose ({}): kernel of shape {} must be {{k..., in_channels, "
                                            "out_channels}} with 1 to 3 spatial dims",
                                            opts, shape_str(kernel)));
  const size_t dims = kernel.size() - 2;
  const std::vector<int64_t> ones(dims, 1);
  const std::vector<int64_t> s = per_dim("conv_transpose", "strides", o.strides, dims, ones, 1, opts, kernel);
  const std::vector<int64_t> kd = per_dim("conv_transpose", "kernel_dilation", o.kernel_dilation, dims, ones, 1, opts, kernel);
  if (o.padding.kind == Padding::Kind::explicit_pairs) {
    if (o.padding.pairs.size() == 1) return std::vector<std::pair<int64_t, int64_t>>(dims, o.padding.pairs[0]);
    return o.padding.pairs;  // conv checks the count against the input
  }
  std::vector<std::pair<int64_t, int64_t>> pads;
  for (size_t d = 0; d < dims; ++d) {
    if (kernel[d] < 1)
      throw std::invalid_argument(
          fmt::format("conv_transpose ({}): kernel of shape {} has an empty window", opts, shape_str(kernel)));
    const int64_t k = (kernel[d] - 1) * kd[d] + 1;
    if (o.padding.kind == Padding::Kind::valid) {
      const int64_t len = k + s[d] - 2 + std::max<int64_t>(k - s[d], 0);
      pads.emplace_back(k - 1, len - (k - 1));
    } else {
      const int64_t len = k + s[d] - 2;
      const int64_t lo = s[d] > k - 1 ? k - 1 : (len + 1) / 2;
      pads.emplace_back(lo, len - lo);
    }
  }
  return pads;
}

Shape conv_transpose_output_shape(const Shape& input, const Shape& kernel, const ConvTransposeOptions& options) {
  const std::string opts = conv_transpose_options_str(options);
  // Option lists against the input's spatial dims first, so their errors name the input.
  const size_t dims = as_last("conv_transpose", input, options.channels, opts).spatial.size();
  per_dim("conv_transpose", "strides", options.strides, dims, {}, 1, opts, input);
  per_dim("conv_transpose", "kernel_dilation", options.kernel_dilation, dims, {}, 1, opts, input);
  if (kernel.size() != dims + 2)
    throw std::invalid_argument(fmt::format("conv_transpose ({}): kernel of shape {} must be {{k..., in_channels, "
                                            "out_channels}} with {} spatial dims, as input shape {}",
                                            opts, shape_str(kernel), dims, shape_str(input)));
  return renamed(fmt::format("conv_transpose ({})", conv_transpose_options_str(options)), "conv",
                 [&] { return conv_output_shape(input, kernel, transpose_as_conv(kernel, options)); });
}

namespace {

// conv_transpose of a channels-last x {N, X..., Cin} by kernel {k..., Cin, Cout}, y {N, Y..., Cout}.
// y[o] = Σ_j x_dilated_padded[o + j·kd] · K[j] gets input element i at o = i·s + lo − j·kd. So x
// is the *output* of a convolution of y with geometry g: stride s, pad_lo −lo, and a kernel
// dilation of −kd (its taps walk backwards: conv_input_at(g, d, i, j) = i·s + lo − j·kd, and
// conv_output_at inverts it). Then, as conv's backward pass computes dx from dy:
//   col = x · Wt (Wt {Cin, taps·Cout}, the kernel with its first two axes swapped), y = col2im(col)
// and the backward pass is conv's forward: dcol = im2col(dy), dx = dcol · Wtᵀ, dWt = xᵀ · dcol.
// No GEMM work on the zeros that the input-dilated formulation would multiply (s^d of it).
Tensor conv_transpose_last(const Tensor& x, const Tensor& kernel, const Tensor& bias, const ConvGeometry& g,
                           const Shape& y_shape) {
  const int64_t cin = kernel.size(-2), cout = kernel.size(-1), taps = g.kernel[0] * g.kernel[1] * g.kernel[2];
  const int64_t m = cin > 0 ? x.numel() / cin : 0, ny = cout > 0 ? shape_numel(y_shape) / cout : 0, n = taps * cout;
  const Tensor wt = permute(kernel.reshape({taps, cin, cout}), {1, 0, 2});  // {Cin, taps, Cout}
  Tensor y = Tensor::empty(y_shape, x.options());
  Backend& be = backend(x.device());
  if (y.numel() > 0) {
    if (m > 0 && cin > 0) {
      Tensor col = Tensor::empty({m, n}, x.options());
      be.gemm_ld(false, false, m, n, cin, 1.0f, x, cin, wt, n, 0.0f, col, n);
      be.col2im(col, g, 0, y);
    } else {
      y.fill(0.0);
    }
    if (bias.defined())  // y += ones · bias (a rank-1 GEMM, as conv adds its bias)
      be.gemm_ld(false, false, ny, cout, 1, 1.0f, Tensor::ones({ny}, x.options()), 1, bias, cout, 1.0f, y, cout);
  }
  return record("conv_transpose", y, {x, wt, bias},
                [x = x.detach(), wt = wt.detach(), g, m, n, ny, cin, cout](const Tensor& go, GradSlots& grads) {
                  Backend& be = backend(go.device());
                  Tensor dcol;
                  if (m > 0 && n > 0 && (grads.needs(0) || grads.needs(1))) {
                    dcol = Tensor::empty({m, n}, go.options());
                    be.im2col(go, g, 0, dcol);
                  }
                  if (grads.needs(0)) {  // dx = dcol · Wtᵀ
                    Tensor dx = Tensor::empty(x.shape(), x.options());
                    if (dcol.defined() && cin > 0)
                      be.gemm_ld(false, true, m, cin, n, 1.0f, dcol, n, wt, n, 0.0f, dx, cin);
                    else
                      dx.fill(0.0);
                    grads.add(0, dx);
                  }
                  if (grads.needs(1)) {  // dWt = xᵀ · dcol
                    float beta = 0.0f;
                    Tensor dw = grads.target(1, wt.shape(), wt.options(), beta);
                    if (dcol.defined() && cin > 0)
                      be.gemm_ld(true, false, cin, n, m, 1.0f, x, cin, dcol, n, beta, dw, n);
                    else if (beta == 0.0f)
                      dw.fill(0.0);
                  }
                  if (grads.size() > 2 && grads.needs(2)) add_bias_grad(go, ny, cout, grads);
                });
}

}  // namespace

Tensor conv_transpose(const Tensor& x, const Tensor& kernel, const Tensor& bias, const ConvTransposeOptions& options) {
  detail::check_floating("conv_transpose", x);
  if (!kernel.defined()) throw std::invalid_argument("conv_transpose: kernel is undefined");
  const std::string prefix = fmt::format("conv_transpose ({})", conv_transpose_options_str(options));
  detail::check_same("conv_transpose", x, kernel);
  const Shape out = conv_transpose_output_shape(x.shape(), kernel.shape(), options);  // every shape error, named
  const int64_t cout = kernel.shape().back();
  if (bias.defined()) {
    detail::check_same("conv_transpose", x, bias);
    if (bias.dim() != 1 || bias.size(0) != cout)
      throw std::invalid_argument(fmt::format("{}: bias of shape {} does not match kernel of shape {} (expects {{{}}})",
                                              prefix, shape_str(bias.shape()), shape_str(kernel.shape()), cout));
  }
  const LastShape xl = as_last("conv_transpose", x.shape(), options.channels, "");
  const LastShape yl = as_last("conv_transpose", out, options.channels, "");
  const size_t dims = xl.spatial.size();
  const std::vector<int64_t> ones(dims, 1);
  const std::vector<int64_t> s = per_dim("conv_transpose", "strides", options.strides, dims, ones, 1, prefix, x.shape());
  const std::vector<int64_t> kd =
      per_dim("conv_transpose", "kernel_dilation", options.kernel_dilation, dims, ones, 1, prefix, x.shape());
  const auto pads = conv_transpose_padding(kernel.shape(), options);
  ConvGeometry g;  // y (the "input") convolved to x (the "output"): see conv_transpose_last
  g.batch = xl.batch;
  g.channels = cout;
  for (size_t d = 0; d < dims; ++d) {
    g.in[d] = yl.spatial[d];
    g.out[d] = xl.spatial[d];
    g.kernel[d] = kernel.size(static_cast<int64_t>(d));
    g.stride[d] = s[d];
    g.pad_lo[d] = -pads[d].first;
    g.kernel_dilation[d] = -kd[d];
  }
  const Shape y_last = make_shape(yl.batch, yl.spatial, cout, ChannelsLayout::last);
  if (options.channels == ChannelsLayout::last) return conv_transpose_last(x, kernel, bias, g, y_last);
  return move_channels(conv_transpose_last(move_channels(x, false), kernel, bias, g, y_last), true);
}

Tensor lp_pool(const Tensor& x, const PoolOptions& options, double norm) {
  detail::check_floating("lp_pool", x);
  check_norm("lp_pool", norm);
  const PoolPlan p = renamed(fmt::format("lp_pool ({}, norm {})", pool_options_str(options), norm), "lp_pool",
                             [&] { return plan_pool("lp_pool", x.shape(), options); });
  // The window sum is the window mean (padding counted) times the window size.
  const double taps = static_cast<double>(p.g.kernel[0] * p.g.kernel[1] * p.g.kernel[2]);
  Tensor sums = mul(avg_pool(power(x, norm), options), Tensor::scalar(taps, x.options()));
  return root(sums, norm);
}

Tensor blur_pool(const Tensor& x, ChannelsLayout channels) {
  detail::check_floating("blur_pool", x);
  if (x.dim() != 4)
    throw std::invalid_argument(fmt::format("blur_pool (channels {}): input of shape {} must have rank 4 (2 spatial dims)",
                                            layout_str(channels), shape_str(x.shape())));
  const int64_t c = channels == ChannelsLayout::last ? x.size(3) : x.size(1);
  std::vector<double> k(9 * static_cast<size_t>(c));
  const double taps[3] = {1, 2, 1};
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      for (int64_t ch = 0; ch < c; ++ch) k[(i * 3 + j) * c + ch] = taps[i] * taps[j] / 16.0;
  ConvOptions o;
  o.padding = Padding::explicit_pairs({{1, 1}});
  o.feature_group_count = c;
  o.channels = channels;
  const Tensor filter = Tensor::from_vector({3, 3, 1, c}, k, x.options());
  return conv(x, filter, Tensor(), o);
}

PoolOptions adaptive_pool_options(const Shape& input, const std::vector<int64_t>& output_size, ChannelsLayout channels) {
  const std::string opts = fmt::format("output_size {}, channels {}", list_str(output_size, "input size"), layout_str(channels));
  const LastShape l = as_last("adaptive_pool", input, channels, opts);
  const size_t dims = l.spatial.size();
  const std::vector<int64_t> out = per_dim("adaptive_pool", "output_size", output_size, dims, l.spatial, 1, opts, input);
  PoolOptions o;
  o.channels = channels;
  for (size_t d = 0; d < dims; ++d) {
    if (l.spatial[d] < out[d])
      throw std::invalid_argument(fmt::format("adaptive_pool ({}): output size {} is larger than the input size {} along "
                                              "spatial dim {} (input shape {})",
                                              opts, out[d], l.spatial[d], d, shape_str(input)));
    const int64_t stride = l.spatial[d] / out[d];
    o.strides.push_back(stride);
    o.kernel_size.push_back(l.spatial[d] - (out[d] - 1) * stride);
  }
  return o;
}

namespace {
Tensor adaptive(const char* op, const Tensor& x, const std::vector<int64_t>& output_size, ChannelsLayout channels,
                const std::function<Tensor(const PoolOptions&)>& pool) {
  detail::check_floating(op, x);
  const std::string prefix = fmt::format("{} (output_size {}, channels {})", op, list_str(output_size, "input size"),
                                         layout_str(channels));
  const PoolOptions o = renamed(prefix, "adaptive_pool", [&] { return adaptive_pool_options(x.shape(), output_size, channels); });
  return pool(o);
}
}  // namespace

Tensor adaptive_avg_pool(const Tensor& x, const std::vector<int64_t>& output_size, ChannelsLayout channels) {
  return adaptive("adaptive_avg_pool", x, output_size, channels, [&](const PoolOptions& o) { return avg_pool(x, o); });
}
Tensor adaptive_max_pool(const Tensor& x, const std::vector<int64_t>& output_size, ChannelsLayout channels) {
  return adaptive("adaptive_max_pool", x, output_size, channels, [&](const PoolOptions& o) { return max_pool(x, o); });
}
Tensor adaptive_lp_pool(const Tensor& x, const std::vector<int64_t>& output_size, double norm, ChannelsLayout channels) {
  check_norm("adaptive_lp_pool", norm);
  return adaptive("adaptive_lp_pool", x, output_size, channels,
                  [&](const PoolOptions& o) { return lp_pool(x, o, norm); });
}

Tensor global_lp_pool(const Tensor& x, double norm, bool keep_axes, ChannelsLayout channels) {
  detail::check_floating("global_lp_pool", x);
  check_norm("global_lp_pool", norm);
  const Shape out_shape = global_pool_output_shape(x.shape(), keep_axes, channels);
  PoolOptions o;
  o.channels = channels;
  o.kernel_size = as_last("global_lp_pool", x.shape(), channels, "").spatial;
  return lp_pool(x, o, norm).reshape(out_shape);
}

}  // namespace axon
