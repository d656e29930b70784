// The functional level of the recurrent layers (axon/recurrent_layers.h): cells as composed ops,
// the unrolls, and the fused CPU operators for a whole lstm or gru sequence.
#include <fmt/format.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <stdexcept>

#include "axon/autograd.h"
#include "axon/backend.h"
#include "axon/recurrent_layers.h"
#include "axon/vector_math.h"

namespace axon {

namespace {

Tensor one_minus(const Tensor& m) { return add_scalar(mul_scalar(m, -1.0f), 1.0f); }

// new where mask is 0, old where it is 1; mask {B} or {B, 1} broadcast over the other axes.
Tensor carry_select(const Tensor& fresh, const Tensor& old, const Tensor& mask) {
  if (!mask.defined()) return fresh;
  Shape shape(static_cast<size_t>(fresh.dim()), 1);
  shape[0] = fresh.size(0);
  const Tensor m = mask.reshape(shape);
  return add(mul(fresh, one_minus(m)), mul(old, m));
}

Tensor gate_block(const Tensor& gates, int64_t index, int64_t units, int64_t axis = 1) {
  return slice(gates, axis, index * units, units);
}

void check_mask(const char* op, const Tensor& x, const Tensor& mask) {
  if (mask.defined() && (mask.numel() != x.size(0) || mask.dtype() != x.dtype() || mask.device() != x.device()))
    throw std::invalid_argument(fmt::format("{}: mask of shape {} ({}, {}) must have one value per sample of input {} ({}, {})",
                                            op, shape_str(mask.shape()), dtype_name(mask.dtype()), mask.device().str(),
                                            shape_str(x.shape()), dtype_name(x.dtype()), x.device().str()));
}

Tensor take_step(const Tensor& x, int64_t t) {
  Shape shape = x.shape();
  shape.erase(shape.begin() + 1);
  return slice(x, 1, t, 1).reshape(shape);
}

Tensor add_time_axis(const Tensor& x) {
  Shape shape = x.shape();
  shape.insert(shape.begin() + 1, 1);
  return x.reshape(shape);
}

UnrollResult unroll(const CellFn& cell, const Tensor& x, const std::vector<Tensor>& carry, const Tensor& mask,
                    const char* op) {
  if (x.dim() < 3) throw std::invalid_argument(fmt::format("{}: input of shape {} needs rank ≥ 3 {{batch, time, ...}}", op, shape_str(x.shape())));
  if (mask.defined() && (mask.dim() != 2 || mask.size(0) != x.size(0) || mask.size(1) != x.size(1)))
    throw std::invalid_argument(fmt::format("{}: mask of shape {} does not fit input {} (expected {{{}, {}}})", op,
                                            shape_str(mask.shape()), shape_str(x.shape()), x.size(0), x.size(1)));
  std::vector<Tensor> state = carry;
  std::vector<Tensor> outputs;
  const Tensor m = mask.defined() ? mask.to(x.dtype()) : Tensor();
  for (int64_t t = 0; t < x.size(1); ++t) {
    state = cell(take_step(x, t), state, m.defined() ? take_step(m, t) : Tensor());
    outputs.push_back(add_time_axis(state.back()));
  }
  return {concatenate(outputs, 1), state};
}

// ---- the fused CPU operators ----

// A view of `base`'s memory at `offset` elements from its start.
Tensor view(const Tensor& base, int64_t offset, const Shape& shape) {
  return Tensor::view_of(base.storage(), base.offset() + static_cast<size_t>(offset), shape, base.dtype());
}

// f32 exp without a libm call (axon/vector_math.h), so that the gate loops below vectorize.
inline float exp_of(float x) { return kernels::vmath::exp(x); }
inline double exp_of(double x) { return std::exp(x); }

// In place over n values: σ(v) = 1/(1 + e^−v); tanh(v) = 2σ(2v) − 1 (absolute error ~1e-7 in f32).
template <class T>
void sigmoid_inplace(T* v, int64_t n) {
  for (int64_t k = 0; k < n; ++k) v[k] = T(1) / (T(1) + exp_of(-v[k]));
}
template <class T>
void tanh_inplace(T* v, int64_t n) {
  if constexpr (std::is_same_v<T, double>) {
    for (int64_t k = 0; k < n; ++k) v[k] = std::tanh(v[k]);
  } else {
    for (int64_t k = 0; k < n; ++k) v[k] = T(2) / (T(1) + exp_of(T(-2) * v[k])) - T(1);
  }
}

// The whole lstm: x {B, T, F}; returns {B, T + 2, U}: the sequence, then c_T, then h_T.
template <class T>
Tensor lstm_fused(const Tensor& x, const Tensor& c0, const Tensor& h0, const std::vector<uint8_t>& masked,
                  const Tensor& ik, const Tensor& hk, const Tensor& bias) {
  const int64_t B = x.size(0), S = x.size(1), F = x.size(2), U = hk.size(0), G = 4 * U;
  const TensorOptions o = x.options();
  Backend& be = backend(o.device);
  Tensor xp = Tensor::empty({B * S, G}, o), hw = Tensor::empty({B, G}, o);
  // acts: per step and sample [i f g o tanh(c')], saved for the backward pass.
  Tensor hs = Tensor::empty({S + 1, B, U}, o), cs = Tensor::empty({S + 1, B, U}, o), acts = Tensor::empty({S, B, 5 * U}, o);
  Tensor out = Tensor::empty({B, S + 2, U}, o);
  {
    NoGradGuard no_grad;
    const Tensor x2 = x.detach().reshape({B * S, F});
    be.gemm(false, false, B * S, G, F, 1.0f, x2, ik.detach(), 0.0f, xp);
    view(hs, 0, {B, U}).copy_from(h0.detach());
    view(cs, 0, {B, U}).copy_from(c0.detach());
    const T* XP = xp.data_as<T>();
    const Tensor zero_bias = Tensor::zeros({G}, o);
    const T* bp = bias.defined() ? bias.data_as<T>() : zero_bias.data_as<T>();
    T* H = hs.data_as<T>();
    T* C = cs.data_as<T>();
    T* A = acts.data_as<T>();
    const T* HW = hw.data_as<T>();
    for (int64_t t = 0; t < S; ++t) {
      Tensor hprev = view(hs, t * B * U, {B, U});
      be.gemm(false, false, B, G, U, 1.0f, hprev, hk.detach(), 0.0f, hw);
      for (int64_t b = 0; b < B; ++b) {
        const T* cp = C + (t * B + b) * U;
        const T* hpv = H + (t * B + b) * U;
        T* cn = C + ((t + 1) * B + b) * U;
        T* hn = H + ((t + 1) * B + b) * U;
        T* a = A + (t * B + b) * 5 * U;
        if (!masked.empty() && masked[static_cast<size_t>(b * S + t)]) {
          for (int64_t u = 0; u < U; ++u) cn[u] = cp[u], hn[u] = hpv[u];
          continue;
        }
        // Each loop below is a plain loop over contiguous values, which the compiler vectorizes.
        const T* xr = XP + (b * S + t) * G;
        const T* hr = HW + b * G;
        for (int64_t k = 0; k < G; ++k) a[k] = xr[k] + hr[k] + bp[k];
        sigmoid_inplace(a, 2 * U);
        tanh_inplace(a + 2 * U, U);
        sigmoid_inplace(a + 3 * U, U);
        for (int64_t u = 0; u < U; ++u) cn[u] = a[U + u] * cp[u] + a[u] * a[2 * U + u];
        T* tc = a + 4 * U;
        for (int64_t u = 0; u < U; ++u) tc[u] = cn[u];
        tanh_inplace(tc, U);
        for (int64_t u = 0; u < U; ++u) hn[u] = a[3 * U + u] * tc[u];
      }
    }
    T* Y = out.data_as<T>();
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t t = 0; t < S; ++t)
        for (int64_t u = 0; u < U; ++u) Y[(b * (S + 2) + t) * U + u] = H[((t + 1) * B + b) * U + u];
      for (int64_t u = 0; u < U; ++u) {
        Y[(b * (S + 2) + S) * U + u] = C[(S * B + b) * U + u];
        Y[(b * (S + 2) + S + 1) * U + u] = H[(S * B + b) * U + u];
      }
    }
  }
  std::vector<Tensor> inputs{x, c0, h0, ik, hk};
  if (bias.defined()) inputs.push_back(bias);
  return record("lstm", out, inputs, [=](const Tensor& grad, GradSlots& grads) {
    NoGradGuard no_grad;
    Backend& be = backend(o.device);
    const T* g = grad.data_as<T>();
    const T* C = cs.data_as<T>();
    const T* A = acts.data_as<T>();
    Tensor dgates = Tensor::zeros({S, B, G}, o), dh = Tensor::empty({B, U}, o), dc = Tensor::empty({B, U}, o);
    Tensor tmp = Tensor::empty({B, U}, o);
    T* DG = dgates.data_as<T>();
    T* DH = dh.data_as<T>();
    T* DC = dc.data_as<T>();
    const T* TMP = tmp.data_as<T>();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t u = 0; u < U; ++u) {
        DC[b * U + u] = g[(b * (S + 2) + S) * U + u];
        DH[b * U + u] = g[(b * (S + 2) + S + 1) * U + u];
      }
    for (int64_t t = S - 1; t >= 0; --t) {
      for (int64_t b = 0; b < B; ++b) {
        T* dhb = DH + b * U;
        T* dcb = DC + b * U;
        for (int64_t u = 0; u < U; ++u) dhb[u] += g[(b * (S + 2) + t) * U + u];
        if (!masked.empty() && masked[static_cast<size_t>(b * S + t)]) continue;  // the state passes through
        const T* a = A + (t * B + b) * 5 * U;
        const T* cp = C + (t * B + b) * U;
        T* d = DG + (t * B + b) * G;
        for (int64_t u = 0; u < U; ++u) {
          const T i = a[u], f = a[U + u], gg = a[2 * U + u], og = a[3 * U + u], tc = a[4 * U + u];
          const T dcc = dcb[u] + dhb[u] * og * (T(1) - tc * tc);
          d[u] = dcc * gg * i * (T(1) - i);
          d[U + u] = dcc * cp[u] * f * (T(1) - f);
          d[2 * U + u] = dcc * i * (T(1) - gg * gg);
          d[3 * U + u] = dhb[u] * tc * og * (T(1) - og);
          dcb[u] = dcc * f;
        }
      }
      Tensor dg_t = view(dgates, t * B * G, {B, G});
      be.gemm(false, true, B, U, G, 1.0f, dg_t, hk.detach(), 0.0f, tmp);
      for (int64_t b = 0; b < B; ++b) {
        if (!masked.empty() && masked[static_cast<size_t>(b * S + t)]) continue;
        for (int64_t u = 0; u < U; ++u) DH[b * U + u] = TMP[b * U + u];
      }
    }
    // dgates batch-major {B·S, G}, the layout of x's rows.
    Tensor dgb = Tensor::empty({B * S, G}, o);
    T* DGB = dgb.data_as<T>();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < S; ++t)
        for (int64_t k = 0; k < G; ++k) DGB[(b * S + t) * G + k] = DG[(t * B + b) * G + k];
    float beta = 0.0f;
    if (grads.needs(0)) {  // dx = dG · ikᵀ
      Tensor gx = grads.target(0, x.shape(), o, beta);
      Tensor gx2 = gx.reshape({B * S, F});
      be.gemm(false, true, B * S, F, G, 1.0f, dgb, ik.detach(), beta, gx2);
    }
    if (grads.needs(1)) grads.add(1, dc);
    if (grads.needs(2)) grads.add(2, dh);
    if (grads.needs(3)) {  // dik = xᵀ · dG
      Tensor gi = grads.target(3, ik.shape(), o, beta);
      be.gemm(true, false, F, G, B * S, 1.0f, x.detach().reshape({B * S, F}), dgb, beta, gi);
    }
    if (grads.needs(4)) {  // dhk = Σ_t h_{t−1}ᵀ · dG_t
      Tensor gh = grads.target(4, hk.shape(), o, beta);
      be.gemm(true, false, U, G, S * B, 1.0f, view(hs, 0, {S * B, U}), view(dgates, 0, {S * B, G}), beta, gh);
    }
    if (grads.size() > 5 && grads.needs(5)) grads.add(5, sum(dgb, 0));
  });
}

// The whole gru: x {B, T, F}; returns {B, T + 1, U}: the sequence, then h_T. Saves r, z, n and
// the hidden projection of n (h·whn + bhn) per step.
template <class T>
Tensor gru_fused(const Tensor& x, const Tensor& h0, const std::vector<uint8_t>& masked, const Tensor& ik,
                 const Tensor& hk, const Tensor& bias) {
  const int64_t B = x.size(0), S = x.size(1), F = x.size(2), U = hk.size(0), G = 3 * U;
  const TensorOptions o = x.options();
  Backend& be = backend(o.device);
  Tensor xp = Tensor::empty({B * S, G}, o), hw = Tensor::empty({B, G}, o);
  Tensor hs = Tensor::empty({S + 1, B, U}, o), acts = Tensor::empty({S, B, 4 * U}, o);
  Tensor out = Tensor::empty({B, S + 1, U}, o);
  {
    NoGradGuard no_grad;
    be.gemm(false, false, B * S, G, F, 1.0f, x.detach().reshape({B * S, F}), ik.detach(), 0.0f, xp);
    view(hs, 0, {B, U}).copy_from(h0.detach());
    const T* XP = xp.data_as<T>();
    const Tensor zero_bias = Tensor::zeros({4 * U}, o);
    const T* bp = bias.defined() ? bias.data_as<T>() : zero_bias.data_as<T>();
    T* H = hs.data_as<T>();
    T* A = acts.data_as<T>();
    const T* HW = hw.data_as<T>();
    for (int64_t t = 0; t < S; ++t) {
      be.gemm(false, false, B, G, U, 1.0f, view(hs, t * B * U, {B, U}), hk.detach(), 0.0f, hw);
      for (int64_t b = 0; b < B; ++b) {
        const T* hpv = H + (t * B + b) * U;
        T* hn = H + ((t + 1) * B + b) * U;
        T* a = A + (t * B + b) * 4 * U;  // [r z n (h·whn + bhn)]
        if (!masked.empty() && masked[static_cast<size_t>(b * S + t)]) {
          for (int64_t u = 0; u < U; ++u) hn[u] = hpv[u];
          continue;
        }
        const T* xr = XP + (b * S + t) * G;
        const T* hr = HW + b * G;
        for (int64_t k = 0; k < 2 * U; ++k) a[k] = xr[k] + hr[k] + bp[k];
        sigmoid_inplace(a, 2 * U);
        for (int64_t u = 0; u < U; ++u) a[3 * U + u] = hr[2 * U + u] + bp[3 * U + u];
        for (int64_t u = 0; u < U; ++u) a[2 * U + u] = xr[2 * U + u] + bp[2 * U + u] + a[u] * a[3 * U + u];
        tanh_inplace(a + 2 * U, U);
        for (int64_t u = 0; u < U; ++u) hn[u] = a[2 * U + u] + a[U + u] * (hpv[u] - a[2 * U + u]);
      }
    }
    T* Y = out.data_as<T>();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t <= S; ++t)
        for (int64_t u = 0; u < U; ++u)
          Y[(b * (S + 1) + t) * U + u] = H[((t < S ? t + 1 : S) * B + b) * U + u];
  }
  std::vector<Tensor> inputs{x, h0, ik, hk};
  if (bias.defined()) inputs.push_back(bias);
  return record("gru", out, inputs, [=](const Tensor& grad, GradSlots& grads) {
    NoGradGuard no_grad;
    Backend& be = backend(o.device);
    const T* g = grad.data_as<T>();
    const T* H = hs.data_as<T>();
    const T* A = acts.data_as<T>();
    // dx-side gate gradients (r, z, n pre-activations) and hidden-side ones (r, z, hidden n).
    Tensor dxg = Tensor::zeros({S, B, G}, o), dhg = Tensor::zeros({S, B, G}, o);
    Tensor dh = Tensor::empty({B, U}, o), tmp = Tensor::empty({B, U}, o);
    T* DX = dxg.data_as<T>();
    T* DHG = dhg.data_as<T>();
    T* DH = dh.data_as<T>();
    const T* TMP = tmp.data_as<T>();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t u = 0; u < U; ++u) DH[b * U + u] = g[(b * (S + 1) + S) * U + u];
    for (int64_t t = S - 1; t >= 0; --t) {
      for (int64_t b = 0; b < B; ++b) {
        T* dhb = DH + b * U;
        for (int64_t u = 0; u < U; ++u) dhb[u] += g[(b * (S + 1) + t) * U + u];
        if (!masked.empty() && masked[static_cast<size_t>(b * S + t)]) continue;
        const T* a = A + (t * B + b) * 4 * U;
        const T* hpv = H + (t * B + b) * U;
        T* dx = DX + (t * B + b) * G;
        T* dhh = DHG + (t * B + b) * G;
        for (int64_t u = 0; u < U; ++u) {
          const T r = a[u], z = a[U + u], n = a[2 * U + u], hnp = a[3 * U + u];
          const T dn = dhb[u] * (T(1) - z) * (T(1) - n * n);
          const T dz = dhb[u] * (hpv[u] - n) * z * (T(1) - z);
          const T dr = dn * hnp * r * (T(1) - r);
          dx[u] = dr, dx[U + u] = dz, dx[2 * U + u] = dn;
          dhh[u] = dr, dhh[U + u] = dz, dhh[2 * U + u] = dn * r;
          dhb[u] *= z;  // the direct path h' = … + z⊙h; the gate paths are added below
        }
      }
      be.gemm(false, true, B, U, G, 1.0f, view(dhg, t * B * G, {B, G}), hk.detach(), 0.0f, tmp);
      for (int64_t b = 0; b < B; ++b) {
        if (!masked.empty() && masked[static_cast<size_t>(b * S + t)]) continue;
        for (int64_t u = 0; u < U; ++u) DH[b * U + u] += TMP[b * U + u];
      }
    }
    Tensor dxb = Tensor::empty({B * S, G}, o);
    T* DXB = dxb.data_as<T>();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < S; ++t)
        for (int64_t k = 0; k < G; ++k) DXB[(b * S + t) * G + k] = DX[(t * B + b) * G + k];
    float beta = 0.0f;
    if (grads.needs(0)) {
      Tensor gx = grads.target(0, x.shape(), o, beta);
      Tensor gx2 = gx.reshape({B * S, F});
      be.gemm(false, true, B * S, F, G, 1.0f, dxb, ik.detach(), beta, gx2);
    }
    if (grads.needs(1)) grads.add(1, dh);
    if (grads.needs(2)) {
      Tensor gi = grads.target(2, ik.shape(), o, beta);
      be.gemm(true, false, F, G, B * S, 1.0f, x.detach().reshape({B * S, F}), dxb, beta, gi);
    }
    if (grads.needs(3)) {
      Tensor gh = grads.target(3, hk.shape(), o, beta);
      be.gemm(true, false, U, G, S * B, 1.0f, view(hs, 0, {S * B, U}), view(dhg, 0, {S * B, G}), beta, gh);
    }
    if (grads.size() > 4 && grads.needs(4)) {  // [br bz bin] from the input side, bhn from the hidden side
      Tensor bx = sum(dxb, 0);
      Tensor bh = sum(view(dhg, 0, {S * B, G}), 0);
      grads.add(4, concatenate({bx, slice(bh, 0, 2 * U, U)}, 0));
    }
  });
}

std::vector<uint8_t> mask_flags(const Tensor& mask) {
  std::vector<uint8_t> flags;
  if (!mask.defined()) return flags;
  for (double v : mask.to_double_vector()) flags.push_back(v != 0.0 ? 1 : 0);
  return flags;
}

bool fused_ok(const Tensor& x, Unroll unroll, Activation gate, Activation activation) {
  return unroll == Unroll::dynamic && x.device().is_cpu() && (x.dtype() == DType::f32 || x.dtype() == DType::f64) &&
         gate == Activation::sigmoid && activation == Activation::tanh;
}

void check_rnn_args(const char* op, const Tensor& x, const std::vector<Tensor>& state, size_t n_state, const Tensor& ik,
                    const Tensor& hk, const Tensor& bias, int64_t gates, int64_t bias_blocks) {
  if (x.dim() != 3) throw std::invalid_argument(fmt::format("{}: input of shape {} must be {{batch, time, features}}", op, shape_str(x.shape())));
  if (hk.dim() != 2 || hk.size(1) != gates * hk.size(0))
    throw std::invalid_argument(fmt::format("{}: hidden_kernel of shape {} must be {{units, {}·units}}", op, shape_str(hk.shape()), gates));
  const int64_t U = hk.size(0);
  if (ik.dim() != 2 || ik.size(0) != x.size(2) || ik.size(1) != gates * U)
    throw std::invalid_argument(fmt::format("{}: input_kernel of shape {} must be {{{}, {}}} for input {} and {} units", op,
                                            shape_str(ik.shape()), x.size(2), gates * U, shape_str(x.shape()), U));
  if (bias.defined() && (bias.dim() != 1 || bias.size(0) != bias_blocks * U))
    throw std::invalid_argument(fmt::format("{}: bias of shape {} must be {{{}}}", op, shape_str(bias.shape()), bias_blocks * U));
  if (state.size() != n_state) throw std::invalid_argument(fmt::format("{}: {} state tensors given, expected {}", op, state.size(), n_state));
  for (const Tensor& s : state)
    if (s.shape() != Shape{x.size(0), U})
      throw std::invalid_argument(fmt::format("{}: state of shape {} must be {{{}, {}}} for input {} and {} units", op,
                                              shape_str(s.shape()), x.size(0), U, shape_str(x.shape()), U));
}

}  // namespace

Tensor reverse(const Tensor& x, int64_t axis) {
  const int64_t a = axis < 0 ? axis + x.dim() : axis;
  if (a < 0 || a >= x.dim())
    throw std::invalid_argument(fmt::format("reverse: axis {} is outside input shape {}", axis, shape_str(x.shape())));
  const int64_t n = x.size(a);
  if (n <= 1) return x;
  std::vector<Tensor> parts;
  for (int64_t i = n - 1; i >= 0; --i) parts.push_back(slice(x, a, i, 1));
  return concatenate(parts, a);
}

std::pair<Tensor, Tensor> lstm_cell(const Tensor& x, const Tensor& c, const Tensor& h, const Tensor& mask,
                                    const Tensor& input_kernel, const Tensor& hidden_kernel, const Tensor& bias,
                                    Activation gate, Activation activation) {
  check_mask("lstm_cell", x, mask);
  const int64_t U = hidden_kernel.size(0);
  Tensor gates = add(matmul(x, input_kernel), matmul(h, hidden_kernel));
  if (bias.defined()) gates = add(gates, bias);
  const Tensor i = apply_activation(gate, gate_block(gates, 0, U));
  const Tensor f = apply_activation(gate, gate_block(gates, 1, U));
  const Tensor g = apply_activation(activation, gate_block(gates, 2, U));
  const Tensor o = apply_activation(gate, gate_block(gates, 3, U));
  const Tensor c_new = add(mul(f, c), mul(i, g));
  const Tensor h_new = mul(o, apply_activation(activation, c_new));
  return {carry_select(c_new, c, mask), carry_select(h_new, h, mask)};
}

Tensor gru_cell(const Tensor& x, const Tensor& h, const Tensor& mask, const Tensor& input_kernel,
                const Tensor& hidden_kernel, const Tensor& bias, Activation gate, Activation activation) {
  check_mask("gru_cell", x, mask);
  const int64_t U = hidden_kernel.size(0);
  Tensor xp = matmul(x, input_kernel);
  Tensor hp = matmul(h, hidden_kernel);
  if (bias.defined()) xp = add(xp, slice(bias, 0, 0, 3 * U));
  Tensor hn = gate_block(hp, 2, U);
  if (bias.defined()) hn = add(hn, slice(bias, 0, 3 * U, U));
  const Tensor r = apply_activation(gate, add(gate_block(xp, 0, U), gate_block(hp, 0, U)));
  const Tensor z = apply_activation(gate, add(gate_block(xp, 1, U), gate_block(hp, 1, U)));
  const Tensor n = apply_activation(activation, add(gate_block(xp, 2, U), mul(r, hn)));
  const Tensor h_new = add(n, mul(z, sub(h, n)));
  return carry_select(h_new, h, mask);
}

std::pair<Tensor, Tensor> conv_lstm_cell(const Tensor& x, const Tensor& c, const Tensor& h, const Tensor& mask,
                                         const Tensor& input_kernel, const Tensor& hidden_kernel, const Tensor& bias,
                                         const ConvOptions& conv_options) {
  check_mask("conv_lstm_cell", x, mask);
  ConvOptions o = conv_options;
  o.channels = ChannelsLayout::first;
  const Tensor gates = add(conv(x, input_kernel, bias, o), conv(h, hidden_kernel, Tensor(), o));
  if (gates.dim() != c.dim() || gates.size(1) != 4 * c.size(1))
    throw std::invalid_argument(fmt::format("conv_lstm_cell: gates of shape {} do not fit the state {} (4·units channels)",
                                            shape_str(gates.shape()), shape_str(c.shape())));
  const int64_t U = c.size(1);
  // The seed's gate order i, g, f, o and its forget bias of 1.
  const Tensor i = sigmoid(gate_block(gates, 0, U));
  const Tensor g = tanh(gate_block(gates, 1, U));
  const Tensor f = sigmoid(add_scalar(gate_block(gates, 2, U), 1.0f));
  const Tensor og = sigmoid(gate_block(gates, 3, U));
  if (f.shape() != c.shape())
    throw std::invalid_argument(fmt::format("conv_lstm_cell: the convolutions give gates of shape {} per gate, but the "
                                            "state has shape {} (strides and padding must keep the spatial shape)",
                                            shape_str(f.shape()), shape_str(c.shape())));
  const Tensor c_new = add(mul(f, c), mul(i, g));
  const Tensor h_new = mul(og, tanh(c_new));
  return {carry_select(c_new, c, mask), carry_select(h_new, h, mask)};
}

UnrollResult static_unroll(const CellFn& cell, const Tensor& x, const std::vector<Tensor>& carry, const Tensor& mask) {
  return unroll(cell, x, carry, mask, "static_unroll");
}

UnrollResult dynamic_unroll(const CellFn& cell, const Tensor& x, const std::vector<Tensor>& carry, const Tensor& mask) {
  return unroll(cell, x, carry, mask, "dynamic_unroll");
}

UnrollResult lstm(const Tensor& x, const std::vector<Tensor>& state, const Tensor& mask, const Tensor& input_kernel,
                  const Tensor& hidden_kernel, const Tensor& bias, Unroll unroll, Activation gate, Activation activation) {
  check_rnn_args("lstm", x, state, 2, input_kernel, hidden_kernel, bias, 4, 4);
  if (fused_ok(x, unroll, gate, activation)) {
    const int64_t S = x.size(1), U = hidden_kernel.size(0);
    if (mask.defined() && mask.shape() != Shape{x.size(0), S})
      throw std::invalid_argument(fmt::format("lstm: mask of shape {} does not fit input {}", shape_str(mask.shape()), shape_str(x.shape())));
    const std::vector<uint8_t> flags = mask_flags(mask);
    Tensor packed = x.dtype() == DType::f64
                        ? lstm_fused<double>(x, state[0], state[1], flags, input_kernel, hidden_kernel, bias)
                        : lstm_fused<float>(x, state[0], state[1], flags, input_kernel, hidden_kernel, bias);
    const Shape s{x.size(0), U};
    return {slice(packed, 1, 0, S), {slice(packed, 1, S, 1).reshape(s), slice(packed, 1, S + 1, 1).reshape(s)}};
  }
  CellFn cell = [&](const Tensor& xt, const std::vector<Tensor>& carry, const Tensor& mt) {
    auto [c, h] = lstm_cell(xt, carry[0], carry[1], mt, input_kernel, hidden_kernel, bias, gate, activation);
    return std::vector<Tensor>{c, h};
  };
  return unroll == Unroll::dynamic ? dynamic_unroll(cell, x, state, mask) : static_unroll(cell, x, state, mask);
}

UnrollResult gru(const Tensor& x, const std::vector<Tensor>& state, const Tensor& mask, const Tensor& input_kernel,
                 const Tensor& hidden_kernel, const Tensor& bias, Unroll unroll, Activation gate, Activation activation) {
  check_rnn_args("gru", x, state, 1, input_kernel, hidden_kernel, bias, 3, 4);
  if (fused_ok(x, unroll, gate, activation)) {
    const int64_t S = x.size(1), U = hidden_kernel.size(0);
    if (mask.defined() && mask.shape() != Shape{x.size(0), S})
      throw std::invalid_argument(fmt::format("gru: mask of shape {} does not fit input {}", shape_str(mask.shape()), shape_str(x.shape())));
    const std::vector<uint8_t> flags = mask_flags(mask);
    Tensor packed = x.dtype() == DType::f64 ? gru_fused<double>(x, state[0], flags, input_kernel, hidden_kernel, bias)
                                            : gru_fused<float>(x, state[0], flags, input_kernel, hidden_kernel, bias);
    return {slice(packed, 1, 0, S), {slice(packed, 1, S, 1).reshape({x.size(0), U})}};
  }
  CellFn cell = [&](const Tensor& xt, const std::vector<Tensor>& carry, const Tensor& mt) {
    return std::vector<Tensor>{gru_cell(xt, carry[0], mt, input_kernel, hidden_kernel, bias, gate, activation)};
  };
  return unroll == Unroll::dynamic ? dynamic_unroll(cell, x, state, mask) : static_unroll(cell, x, state, mask);
}

UnrollResult conv_lstm(const Tensor& x, const std::vector<Tensor>& state, const Tensor& mask,
                       const Tensor& input_kernel, const Tensor& hidden_kernel, const Tensor& bias,
                       const ConvOptions& conv_options, Unroll unroll) {
  if (x.dim() < 4 || x.dim() > 6)
    throw std::invalid_argument(fmt::format("conv_lstm: input of shape {} must be {{batch, time, channels, 1 to 3 spatial dims}}",
                                            shape_str(x.shape())));
  if (state.size() != 2) throw std::invalid_argument(fmt::format("conv_lstm: {} state tensors given, expected {{c, h}}", state.size()));
  // The seed's state {B, 1, U, spatial...}; the cell works on {B, U, spatial...}.
  std::vector<Tensor> carry;
  for (const Tensor& s : state) {
    if (s.dim() != x.dim() || s.size(1) != 1)
      throw std::invalid_argument(fmt::format("conv_lstm: state of shape {} must be {{batch, 1, units, spatial...}} for input {}",
                                              shape_str(s.shape()), shape_str(x.shape())));
    Shape shape = s.shape();
    shape.erase(shape.begin() + 1);
    carry.push_back(s.reshape(shape));
  }
  CellFn cell = [&](const Tensor& xt, const std::vector<Tensor>& c, const Tensor& mt) {
    auto [cn, hn] = conv_lstm_cell(xt, c[0], c[1], mt, input_kernel, hidden_kernel, bias, conv_options);
    return std::vector<Tensor>{cn, hn};
  };
  UnrollResult r = unroll == Unroll::dynamic ? dynamic_unroll(cell, x, carry, mask) : static_unroll(cell, x, carry, mask);
  for (Tensor& s : r.state) s = add_time_axis(s);
  return r;
}

}  // namespace axon
