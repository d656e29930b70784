// The kernel interface: one implementation per device type (ggml's backend tables, flashlight's
// TensorBackend). Op front ends (ops.h, autograd, losses, optimizers) check shapes, dtypes and
// devices, allocate outputs and record autograd; then they call backend(device).<kernel>. Kernels
// check nothing: every tensor they get is contiguous, on the backend's device, of one floating
// dtype unless the kernel says otherwise, and outputs are allocated by the caller.
//
// CPU kernels run on the calling thread (BLAS uses its own threads). CUDA kernels are queued on the
// device's compute stream and return before they finish; reading a value back (Tensor::item, .to(cpu))
// waits for them.
#pragma once

#include <cstdint>
#include <vector>

#include "axon/tensor.h"

namespace axon {

// maximum and minimum propagate NaN from either operand (as torch.maximum).
enum class BinaryOp : uint8_t { add, sub, mul, div, maximum, minimum };
// add_scalar, mul_scalar, max_scalar (max(x, s)) and min_scalar (min(x, s)) take their operand in
// `scalar`; sign is -1, 0 or 1 (NaN stays NaN). sqrt, abs, sign, max_scalar and min_scalar have no
// unary_backward (the optimizers' update transforms use them without autograd).
enum class UnaryOp : uint8_t {
  neg, exp, log, relu, sigmoid, tanh, square, add_scalar, mul_scalar, sqrt, abs, sign, max_scalar, min_scalar
};

// The activations with kernels of their own (axon/activations.h). Each one's scalar formula and
// derivative are written once, in tensor/src/activation_math.h, and shared by the CPU and CUDA
// kernels. exp, relu, sigmoid and tanh are UnaryOps; softmax and log_softmax have their own kernels.
enum class ActivationOp : uint8_t {
  celu,          // alpha
  elu,           // alpha
  gelu,          // exact (erf)
  gelu_tanh,     // tanh approximation
  hard_sigmoid,  // alpha (slope), beta (offset)
  hard_silu,     // alpha, beta as hard_sigmoid
  hard_tanh,
  leaky_relu,    // alpha
  log_sigmoid,
  mish,
  relu6,
  selu,          // alpha, beta = gamma (the scale)
  silu,
  softplus,
  softsign,
};
// The options of an ActivationOp (unused ones are ignored).
struct ActivationParams {
  double alpha = 0.0, beta = 0.0;
};

// One dropout mask and what it does (axon/nn_ops.h: dropout, alpha_dropout, spatial_dropout,
// feature_alpha_dropout). Element i uses mask entry m(i) = (i / per_sample)·channels +
// (i / inner) % channels (per element: per_sample = channels = inner = 1, m(i) = i; per
// (sample, channel): per_sample = the elements of one sample, inner = the product of the dims after
// the channel axis). Entry m is kept when kernels::dropout_bits(seed, m) ≥ threshold
// (tensor/src/layer_math.h). A kept element becomes x·keep_scale + keep_offset, a dropped one
// drop_value.
struct DropoutParams {
  uint64_t seed = 0;
  uint32_t threshold = 0;
  double keep_scale = 1.0, keep_offset = 0.0, drop_value = 0.0;
  int64_t per_sample = 1, inner = 1, channels = 1;
};

// The options of a normalization kernel (layer_norm or rms_norm along one axis).
//   layer_norm: y = (x − mean)·rstd·gamma + beta, rstd = 1/√(var + eps) (biased variance)
//   rms_norm:   y = x·rstd·(shift + gamma),       rstd = 1/√(mean(x²) + eps)
struct NormParams {
  double eps = 1e-5;
  bool rms = false;
  double shift = 0.0;  // rms_norm only
};

// A shape viewed as {outer, n, inner} around one axis, the layout every axis-wise kernel uses:
// the lane starting at base = o·n·inner + i holds the elements base + k·inner, k < n.
struct AxisSplit {
  int64_t outer = 1, n = 1, inner = 1;
};
AxisSplit split_at(const Shape& shape, int64_t axis);

// Normalization over groups of channels (batch_norm, group_norm, instance_norm; axon/nn_ops.h).
// x is viewed as {samples, positions, groups·group_size, inner}: the channel axis in the middle,
// `positions` the dims between the sample axis and the channel axis (channels last), `inner` the
// dims after it (channels first). Channel c = g·group_size + k belongs to group g. Statistics are
// taken per lane (s, g), lane index s·groups + g, over (position, k, inner):
//   batch_norm:    samples 1 (the batch is one sample), positions = the dims before the channel
//                  axis, batch included; groups = channels, group_size 1
//   group_norm:    samples = batch, groups as asked
//   instance_norm: samples = batch, groups = channels
// y = (x − mean)·rstd·gamma[c] + beta[c], rstd = 1/√(var + eps), var biased.
struct GroupNormParams {
  int64_t samples = 1, positions = 1, groups = 1, group_size = 1, inner = 1;
  double eps = 1e-5;
  // Inference: mean and rstd come from running_mean and running_var ({groups}, samples must be 1)
  // instead of the batch; the backward pass then treats them as constants.
  bool use_running = false;
  // Training with running statistics: after the batch statistics, running_mean and running_var
  // become (1 − momentum)·running + momentum·batch, the variance unbiased (n/(n − 1)), as
  // torch.nn.functional.batch_norm.
  bool update_running = false;
  double momentum = 0.1;
  // constexpr: callable from CUDA kernels (nvcc --expt-relaxed-constexpr).
  constexpr int64_t channels() const { return groups * group_size; }
  constexpr int64_t lane_size() const { return positions * group_size * inner; }
};

// Resizing the two spatial dims of x viewed as {outer, in_h, in_w, inner} to {outer, out_h, out_w,
// inner} (channels last: outer = batch, inner = channels; channels first: outer = batch·channels,
// inner 1). nearest: source index ⌊(o + ½)·in/out⌋ (the seed's, torch's "nearest-exact");
// bilinear: half-pixel centres, source (o + ½)·in/out − ½ clamped at 0 (torch's bilinear with
// align_corners=False, antialias=False).
struct ResizeParams {
  int64_t outer = 1, in_h = 1, in_w = 1, out_h = 1, out_w = 1, inner = 1;
  bool bilinear = false;
};

// The scalars of one Adam/AdamW step as PyTorch derives them (in double, then rounded to float):
//   g' = g + l2·p;  m = m·beta1 + one_minus_beta1·g';  v = v·beta2 + one_minus_beta2·g'²
//   (amsgrad: vmax = max(vmax, v), used in place of v)
//   p = p·decay − step_size · m / (sqrt(v)/bc2_sqrt + eps)
// with step_size = lr/(1 − beta1^t), bc2_sqrt = sqrt(1 − beta2^t), decay = 1 − lr·wd for AdamW
// (else 1) and l2 = wd for Adam (else 0). Kingma & Ba 2015; Loshchilov & Hutter 2019.
struct AdamStep {
  float beta1, beta2, one_minus_beta1, one_minus_beta2, eps, step_size, bc2_sqrt, decay, l2;
  // Capturable steps (a CUDA graph replays the same kernel arguments every step): when set, t is
  // read from this one f64 value on the parameters' device, already incremented for this step, and
  // step_size and bc2_sqrt are derived from t there, from these doubles, by the formulas above.
  const double* device_step = nullptr;
  double lr = 0.0, beta1_exact = 0.0, beta2_exact = 0.0;
};

// One SGD step as torch.optim.SGD: d = g + wd·p; with momentum, buf = first ? d : buf·momentum +
// keep·d (keep = 1 − dampening) and d = nesterov ? d + momentum·buf : buf; then p −= lr·d.
struct SgdStep {
  float lr, weight_decay, momentum, keep;
  bool nesterov, first;
};

// The geometry of an N-d convolution or pooling window (N = 1, 2, 3; axon/conv_ops.h) over a
// channels-last input {batch, in[0..N), channels}. Unused trailing spatial dims have size 1 and
// stride/dilation 1, so kernels always loop over three. Along dim d, output position o and window
// tap j read the input-dilated position p = o·stride − pad_lo + j·kernel_dilation, which is input
// element p / input_dilation when p ≥ 0, p % input_dilation == 0 and p / input_dilation < in
// (anything else is padding: zero for a convolution, skipped by max and counted by avg pooling).
struct ConvGeometry {
  int64_t batch = 1, channels = 1, groups = 1;  // channels: the input's, over all groups
  int64_t in[3] = {1, 1, 1}, out[3] = {1, 1, 1}, kernel[3] = {1, 1, 1};
  int64_t stride[3] = {1, 1, 1}, pad_lo[3] = {0, 0, 0}, input_dilation[3] = {1, 1, 1}, kernel_dilation[3] = {1, 1, 1};
};
enum class PoolKind : uint8_t { max, avg };

// The geometry of one scaled dot-product attention (axon/attention_ops.h): q {batch, heads, lq, d},
// k {batch, heads, lk, d}, v {batch, heads, lk, dv}, out {batch, heads, lq, dv}, contiguous.
// Query i attends key j unless causal and j > i, or mask (i32 {batch, lk}) is nonzero at (b, j).
struct AttentionParams {
  int64_t batch = 1, heads = 1, lq = 1, lk = 1, d = 1, dv = 1;
  double scale = 1.0;
  bool causal = false;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;

  // out = value (any dtype).
  virtual void fill(Tensor& out, double value) = 0;
  // dst = src, any two dtypes (a copy when equal; float to integer truncates toward zero).
  virtual void cast(Tensor& dst, const Tensor& src) = 0;
  // out = a op b, broadcasting a and b to out's shape (NumPy rules, checked by the caller).
  virtual void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) = 0;
  // out = op(x); out may be x.
  virtual void unary(UnaryOp op, const Tensor& x, double scalar, Tensor& out) = 0;
  // out = g · op'(…), where `saved` is the op's output for exp, relu, sigmoid, tanh and its input
  // for log and square.
  virtual void unary_backward(UnaryOp op, const Tensor& g, const Tensor& saved, Tensor& out) = 0;
  // out = g summed over the dimensions in which out's shape broadcasts to g's shape.
  virtual void reduce_to(const Tensor& g, Tensor& out) = 0;
  // out (one element) = the sum of all of x, accumulated in double.
  virtual void sum_all(const Tensor& x, Tensor& out) = 0;
  // out {outer, inner} = beta·out + Σ_k x {outer, n, inner}; beta is 0 or 1.
  virtual void sum_axis(const Tensor& x, const AxisSplit& s, float beta, Tensor& out) = 0;
  // C {m, n} = alpha·op(A)·op(B) + beta·C, row-major; op transposes when asked. A is {m, k}
  // ({k, m} when trans_a), B is {k, n} ({n, k} when trans_b). bf16 accumulates in f32.
  virtual void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const Tensor& a,
                    const Tensor& b, float beta, Tensor& c) = 0;
  // gemm with explicit leading dimensions (row strides in elements, ≥ the row length): a, b and c
  // start at their tensors' first elements, which may be views into larger matrices (a group's
  // columns of a convolution kernel or output). k ≥ 1.
  virtual void gemm_ld(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const Tensor& a,
                       int64_t lda, const Tensor& b, int64_t ldb, float beta, Tensor& c, int64_t ldc) = 0;
  // Convolution kernels (channels last; tensor/src/cpu/conv_kernels.cpp, cuda/conv_kernels.cu).
  // im2col: col {batch·Π out, Π kernel · channels/groups} = the windows of group `group`'s channels
  // of x, row (n, o...), column (j..., c), zero where a tap reads padding.
  virtual void im2col(const Tensor& x, const ConvGeometry& g, int64_t group, Tensor& col) = 0;
  // col2im: writes group `group`'s channels of dx (x's shape) with the sum of every col entry that
  // im2col would have read from that element (the adjoint of im2col); other channels are untouched.
  virtual void col2im(const Tensor& col, const ConvGeometry& g, int64_t group, Tensor& dx) = 0;
  // A library convolution (oneDNN on the CPU when built with it), channels last: x {batch,
  // in..., channels}, kernel {k..., channels/groups, cout}, out {batch, out..., cout}, `dims` (1-3)
  // spatial dims. has_conv says whether it takes this geometry and dtype; when not, the caller runs
  // im2col + GEMM (above), and these must not be called.
  virtual bool has_conv(const ConvGeometry& /*g*/, int /*dims*/, int64_t /*cout*/, DType /*dtype*/) const { return false; }
  // out = conv(x, kernel) + bias (bias {cout} or null).
  virtual void conv_forward(const Tensor& x, const Tensor& kernel, const Tensor* bias, const ConvGeometry& g,
                            Tensor& out);
  // dx (x's shape) = the input gradient given the output gradient `grad`; written, not added.
  virtual void conv_backward_data(const Tensor& grad, const Tensor& kernel, const ConvGeometry& g, Tensor& dx);
  // dw (the kernel's shape) = beta·dw + the kernel gradient given x and `grad`; beta is 0 or 1.
  // With db ({cout}, or null) also db = db_beta·db + the bias gradient, in the same pass.
  virtual void conv_backward_weights(const Tensor& x, const Tensor& grad, const ConvGeometry& g, float beta, Tensor& dw,
                                     Tensor* db, float db_beta);
  // Pooling {batch, in..., C} -> {batch, out..., C}. max writes the window tap (flat over the
  // kernel dims) of each maximum to argmax (i32; −1 for a window of padding only, whose output
  // is −inf; the first maximum wins, NaN propagates); avg divides
  // each window's sum by the window's size, padding included (PyTorch's count_include_pad).
  virtual void pool(PoolKind kind, const Tensor& x, const ConvGeometry& g, Tensor& out, Tensor* argmax) = 0;
  // Its backward: writes dx from the output gradient (argmax for max, null for avg).
  virtual void pool_backward(PoolKind kind, const Tensor& grad, const ConvGeometry& g, const Tensor* argmax,
                             Tensor& dx) = 0;
  // out {batch, cols, rows} = each of the batch's {rows, cols} matrices of x transposed (the
  // channels-first <-> channels-last layout change).
  virtual void batched_transpose(const Tensor& x, int64_t batch, int64_t rows, int64_t cols, Tensor& out) = 0;
  // out {cols, rows} = the transpose of x {rows, cols}.
  virtual void transpose2d(const Tensor& x, Tensor& out) = 0;
  // out = (log-)softmax of x along the axis described by s.
  virtual void softmax(const Tensor& x, const AxisSplit& s, bool log_space, Tensor& out) = 0;
  // out = the input gradient given the forward output y and the output gradient g.
  virtual void softmax_backward(const Tensor& y, const Tensor& g, const AxisSplit& s, bool log_space, Tensor& out) = 0;
  // out = f(x) for an activation f; out may be x.
  virtual void activation(ActivationOp op, const ActivationParams& p, const Tensor& x, Tensor& out) = 0;
  // out = g · f'(x), given the forward input x.
  virtual void activation_backward(ActivationOp op, const ActivationParams& p, const Tensor& g, const Tensor& x,
                                   Tensor& out) = 0;
  // out {outer, inner} = log Σ_k exp(x {outer, n, inner}), shifted by the lane's maximum (a lane whose
  // maximum is ±inf gives that maximum).
  virtual void log_sumexp(const Tensor& x, const AxisSplit& s, Tensor& out) = 0;
  // out = the dropout of x described by p (DropoutParams). The mask is a counter-based hash of
  // (seed, mask index), the same on every backend, so a seed gives the same mask on the CPU and on
  // a GPU. The backward pass is the same kernel applied to the output gradient with
  // keep_offset = drop_value = 0.
  virtual void dropout(const Tensor& x, const DropoutParams& p, Tensor& out) = 0;
  // Normalization of x along the axis described by s; gamma and beta {n} (beta may be null);
  // writes y (x's shape) and the lane statistics mean and rstd ({outer·inner}, f32, or f64 for
  // f64 x; mean is 0 for rms_norm).
  virtual void norm(const Tensor& x, const Tensor& gamma, const Tensor* beta, const AxisSplit& s, const NormParams& p,
                    Tensor& y, Tensor& mean, Tensor& rstd) = 0;
  // Its backward given the output gradient g: writes (does not add) dx, dgamma and dbeta, each
  // skipped when null.
  virtual void norm_backward(const Tensor& x, const Tensor& gamma, const Tensor& g, const Tensor& mean,
                             const Tensor& rstd, const AxisSplit& s, const NormParams& p, Tensor* dx, Tensor* dgamma,
                             Tensor* dbeta) = 0;
  // Group-statistics normalization (GroupNormParams): writes y and the lane statistics mean and
  // rstd ({samples·groups}, f32, or f64 for f64 x); gamma and beta {channels} may be null (no
  // scale, no offset); running_mean and running_var ({groups}, the dtype of mean) are read when
  // p.use_running and updated in place when p.update_running, else may be null.
  virtual void group_norm(const Tensor& x, const Tensor* gamma, const Tensor* beta, const GroupNormParams& p, Tensor& y,
                          Tensor& mean, Tensor& rstd, Tensor* running_mean, Tensor* running_var) = 0;
  // Its backward given the output gradient g: writes (does not add) dx, dgamma and dbeta, each
  // skipped when null.
  virtual void group_norm_backward(const Tensor& x, const Tensor* gamma, const Tensor& g, const Tensor& mean,
                                   const Tensor& rstd, const GroupNormParams& p, Tensor* dx, Tensor* dgamma,
                                   Tensor* dbeta) = 0;
  // dst {outer, dst_n, inner}[o, dst_offset + k, i] = src {outer, src_n, inner}[o, src_offset + k, i]
  // for k < count (any dtype): concatenate, split, pad and their backward passes.
  virtual void axis_copy(const Tensor& src, int64_t src_n, int64_t src_offset, Tensor& dst, int64_t dst_n,
                         int64_t dst_offset, int64_t outer, int64_t inner, int64_t count) = 0;
  // out = x with its axes permuted: out.size(d) = x.size(perm[d]) (any dtype, rank ≤ 8).
  virtual void permute(const Tensor& x, const std::vector<int64_t>& perm, Tensor& out) = 0;
  // out = x resized (ResizeParams).
  virtual void resize(const Tensor& x, const ResizeParams& p, Tensor& out) = 0;
  // dx (f32, or f64 for f64 g; x's shape) = the gradient of resize given the output gradient g.
  virtual void resize_backward(const Tensor& g, const ResizeParams& p, Tensor& dx) = 0;
  // Fused softmax cross-entropy over logits {batch, classes} and i32 labels {batch}: writes
  // probs {batch, classes} and loss (one f32 or f64 element) = mean over rows of −log softmax[label].
  // Labels outside [0, classes) make the loss NaN (checked on the host by the front end when the
  // labels live there).
  virtual void cross_entropy(const Tensor& logits, const Tensor& labels, Tensor& probs, Tensor& loss) = 0;
  // out = beta·out + g·(probs − onehot(labels))/batch, g the loss gradient (one element, f32, or
  // f64 for f64 logits).
  virtual void cross_entropy_backward(const Tensor& probs, const Tensor& labels, const Tensor& g, float beta,
                                      Tensor& out) = 0;
  // out {k, row...} = the rows of src {n, row...} at the i64 indices {k} (any dtype; indices are
  // trusted: the front end checks them where they live on the host).
  virtual void gather_rows(const Tensor& src, const Tensor& indices, Tensor& out) = 0;
  // out (i64 {rows}) = the index of the largest value in each row of x {rows, cols}.
  virtual void argmax_rows(const Tensor& x, Tensor& out) = 0;
  // out (f64, one element) += the number of rows of scores {rows, cols} whose argmax equals the
  // i32 label: accuracy counts stay on the device until read once per epoch.
  virtual void accumulate_correct(const Tensor& scores, const Tensor& labels, Tensor& out) = 0;
  // out (f32, one element) = 1 when every element of x is finite, else 0.
  virtual void all_finite(const Tensor& x, Tensor& out) = 0;
  // One fused Adam/AdamW step over f32 flat buffers (param, grad, m, v, and vmax with amsgrad).
  // Sets `nonfinite` (f32, one element; never cleared here) to 1 when an updated parameter is not
  // finite: the check costs no pass of its own.
  virtual void adam_step(const AdamStep& h, Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, Tensor* vmax,
                         Tensor& nonfinite) = 0;
  // One fused SGD step over f32 flat buffers; buf is null without momentum. `nonfinite` as above.
  virtual void sgd_step(const SgdStep& h, Tensor& param, const Tensor& grad, Tensor* buf, Tensor& nonfinite) = 0;
  // out {n, row...} += the rows of src {k, row...} at the i64 indices {k} (a scatter-add: repeated
  // indices are summed; the embedding gradient). f32 or f64; indices trusted. The CPU adds in index
  // order; the CUDA kernel uses atomics (the order of repeated indices is not fixed).
  virtual void index_add_rows(const Tensor& src, const Tensor& indices, Tensor& out) = 0;
  // Scaled dot-product attention (AttentionParams), f32 or f64, without the {lq, lk} score matrix:
  // writes out and lse {batch, heads, lq} = the log-sum-exp of each query's scaled, masked scores
  // (+inf for a query with no key to attend, whose output row is zero). mask may be null.
  virtual void attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* mask,
                         const AttentionParams& p, Tensor& out, Tensor& lse) = 0;
  // Its backward given the output gradient dout: writes (does not add) dq, dk and dv, recomputing
  // the probabilities block by block from q, k and lse (FlashAttention's backward).
  virtual void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* mask,
                                  const Tensor& out, const Tensor& lse, const Tensor& dout, const AttentionParams& p,
                                  Tensor& dq, Tensor& dk, Tensor& dv) = 0;
  // Waits until every kernel queued on this device has finished (a no-op on the CPU).
  virtual void synchronize() = 0;
};

// The backend of `device`. Throws std::runtime_error when Axon was built without CUDA and a CUDA
// device is asked for.
Backend& backend(Device device);

// Copies `bytes` between two blocks on any devices (host↔device, device↔device). Waits for the
// copy when either side is the host.
void copy_bytes(Device dst_device, void* dst, Device src_device, const void* src, size_t bytes);

}  // namespace axon
