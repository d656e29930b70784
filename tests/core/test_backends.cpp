// Every op on every available device and dtype (ggml's test-backend-ops): each op's forward and
// backward in f32 and bf16, on the CPU and on every visible GPU, against the CPU f64 result; and
// each op's f64 gradient against central finite differences.
//
// Inputs are multiples of 1/32 in [-2, 2] (and in [0.5, 2.5] for log and div's divisor), exact in
// every dtype, so a dtype's error is its own arithmetic, not the rounding of its inputs.
// Tolerances: f32 1e-5 relative (plus 1e-5 absolute for values near 0), bf16 3e-2 relative
// (8 significant bits, one rounding per op result).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "axon/activations.h"
#include "axon/attention_ops.h"
#include "axon/autograd.h"
#include "axon/bilinear.h"
#include "axon/conv_ops.h"
#include "axon/cuda.h"
#include "axon/losses.h"
#include "axon/nn_ops.h"
#include "axon/ops.h"
#include "axon/random.h"
#include "axon/shape_ops.h"

namespace axon {
namespace {

using Inputs = std::vector<Tensor>;

struct InputSpec {
  Shape shape;
  bool positive = false;  // in [0.5, 2.5]: for log, and div's divisor
  // Odd multiples of 1/64 in (-2.1, 2.1), still exact in bf16: never 0 or an integer, so an
  // activation with a kink there (relu6, hard_tanh, leaky_relu, ...) is differentiable at every
  // input and its gradient can be checked against finite differences.
  bool off_grid = false;
};

struct OpCase {
  std::string name;
  std::vector<InputSpec> inputs;
  std::function<Tensor(const Inputs&)> f;
  bool smooth = true;  // false for relu: finite differences are skipped (kink at 0 on the grid)
};

void PrintTo(const OpCase& c, std::ostream* os) { *os << c.name; }

std::vector<OpCase> op_cases() {
  std::vector<OpCase> cases = {
      {"add", {{{2, 3}}, {{2, 3}}}, [](const Inputs& x) { return add(x[0], x[1]); }},
      {"add_broadcast", {{{2, 3}}, {{3}}}, [](const Inputs& x) { return add(x[0], x[1]); }},
      {"add_broadcast_both", {{{2, 1, 4}}, {{3, 1}}}, [](const Inputs& x) { return add(x[0], x[1]); }},
      {"sub_broadcast", {{{2, 1}}, {{2, 3}}}, [](const Inputs& x) { return sub(x[0], x[1]); }},
      {"mul_broadcast", {{{4, 3}}, {{1, 3}}}, [](const Inputs& x) { return mul(x[0], x[1]); }},
      {"mul_scalar_tensor", {{{4, 3}}, {{}}}, [](const Inputs& x) { return mul(x[0], x[1]); }},
      {"div", {{{2, 3}}, {{2, 3}, true}}, [](const Inputs& x) { return div(x[0], x[1]); }},
      {"add_scalar", {{{5}}}, [](const Inputs& x) { return add_scalar(x[0], 0.75f); }},
      {"mul_scalar", {{{5}}}, [](const Inputs& x) { return mul_scalar(x[0], -1.5f); }},
      {"neg", {{{2, 2}}}, [](const Inputs& x) { return neg(x[0]); }},
      {"exp", {{{3, 2}}}, [](const Inputs& x) { return exp(x[0]); }},
      {"log", {{{3, 2}, true}}, [](const Inputs& x) { return log(x[0]); }},
      {"relu", {{{4, 4}}}, [](const Inputs& x) { return relu(x[0]); }, false},
      {"sigmoid", {{{3, 3}}}, [](const Inputs& x) { return sigmoid(x[0]); }},
      {"tanh", {{{3, 3}}}, [](const Inputs& x) { return tanh(x[0]); }},
      {"square", {{{3, 3}}}, [](const Inputs& x) { return square(x[0]); }},
      {"sum", {{{3, 4}}}, [](const Inputs& x) { return sum(x[0]); }},
      {"sum_axis0", {{{3, 4}}}, [](const Inputs& x) { return sum(x[0], 0); }},
      {"sum_axis1_keepdim", {{{2, 3, 4}}}, [](const Inputs& x) { return sum(x[0], 1, true); }},
      {"mean", {{{3, 4}}}, [](const Inputs& x) { return mean(x[0]); }},
      {"mean_axis", {{{3, 4}}}, [](const Inputs& x) { return mean(x[0], -1); }},
      {"matmul", {{{3, 4}}, {{4, 5}}}, [](const Inputs& x) { return matmul(x[0], x[1]); }},
      {"transpose", {{{3, 5}}}, [](const Inputs& x) { return transpose(x[0]); }},
      {"linear", {{{4, 3}}, {{3, 5}}, {{5}}}, [](const Inputs& x) { return linear(x[0], x[1], x[2]); }},
      {"linear_no_bias", {{{4, 3}}, {{3, 2}}}, [](const Inputs& x) { return linear(x[0], x[1], Tensor()); }},
      {"softmax", {{{3, 5}}}, [](const Inputs& x) { return softmax(x[0]); }},
      {"softmax_axis0", {{{3, 5}}}, [](const Inputs& x) { return softmax(x[0], 0); }},
      {"log_softmax", {{{2, 3, 4}}}, [](const Inputs& x) { return log_softmax(x[0], 1); }},
      {"reshape", {{{2, 6}}}, [](const Inputs& x) { return square(x[0].reshape({3, 4})); }},
      // Activations (axon/activations.h). Inputs off the grid of kinks; a scale in front spreads them
      // over both sides of kinks beyond [-2, 2] (relu6's 6, hard_sigmoid's -1 and 4, or -3 and 3).
      {"celu", {{{3, 4}, false, true}}, [](const Inputs& x) { return celu(x[0]); }},
      {"celu_alpha", {{{3, 4}, false, true}}, [](const Inputs& x) { return celu(x[0], 0.75); }},
      {"elu", {{{3, 4}, false, true}}, [](const Inputs& x) { return elu(x[0], 1.25); }},
      {"gelu", {{{3, 4}}}, [](const Inputs& x) { return gelu(mul_scalar(x[0], 2.0f)); }},
      {"gelu_tanh", {{{3, 4}}}, [](const Inputs& x) { return gelu(mul_scalar(x[0], 2.0f), GeluApproximation::tanh); }},
      {"hard_sigmoid", {{{4, 4}, false, true}}, [](const Inputs& x) { return hard_sigmoid(mul_scalar(x[0], 3.0f)); }},
      {"hard_sigmoid_torch", {{{4, 4}, false, true}},
       [](const Inputs& x) { return hard_sigmoid(mul_scalar(x[0], 2.0f), 1.0 / 6.0, 0.5); }},
      {"hard_silu", {{{4, 4}, false, true}}, [](const Inputs& x) { return hard_silu(mul_scalar(x[0], 3.0f)); }},
      {"hard_swish_torch", {{{4, 4}, false, true}},
       [](const Inputs& x) { return hard_swish(mul_scalar(x[0], 2.0f), 1.0 / 6.0, 0.5); }},
      {"hard_tanh", {{{3, 4}, false, true}}, [](const Inputs& x) { return hard_tanh(x[0]); }},
      {"leaky_relu", {{{3, 4}, false, true}}, [](const Inputs& x) { return leaky_relu(x[0], 0.2); }},
      {"log_sigmoid", {{{3, 4}}}, [](const Inputs& x) { return log_sigmoid(mul_scalar(x[0], 3.0f)); }},
      {"mish", {{{3, 4}}}, [](const Inputs& x) { return mish(mul_scalar(x[0], 2.0f)); }},
      {"relu6", {{{4, 4}, false, true}}, [](const Inputs& x) { return relu6(mul_scalar(x[0], 4.0f)); }},
      {"selu", {{{3, 4}, false, true}}, [](const Inputs& x) { return selu(x[0]); }},
      {"silu", {{{3, 4}}}, [](const Inputs& x) { return silu(mul_scalar(x[0], 2.0f)); }},
      {"softplus", {{{3, 4}}}, [](const Inputs& x) { return softplus(mul_scalar(x[0], 3.0f)); }},
      {"softsign", {{{3, 4}, false, true}}, [](const Inputs& x) { return softsign(x[0]); }},
      {"log_sumexp", {{{3, 5}}}, [](const Inputs& x) { return log_sumexp(x[0]); }},
      {"log_sumexp_axis0", {{{3, 5}}}, [](const Inputs& x) { return log_sumexp(x[0], 0, false); }},
      {"log_sumexp_3d", {{{2, 3, 4}}}, [](const Inputs& x) { return log_sumexp(mul_scalar(x[0], 4.0f), 1); }},
      // Dropout (the same mask for a seed on every device) and normalization (axon/nn_ops.h).
      {"dropout", {{{6, 7}}}, [](const Inputs& x) { return dropout(x[0], 0.3, 1234); }},
      {"alpha_dropout", {{{6, 7}}}, [](const Inputs& x) { return alpha_dropout(x[0], 0.3, 99); }},
      {"spatial_dropout", {{{4, 3, 5}}}, [](const Inputs& x) { return spatial_dropout(x[0], 0.4, 5); }},
      {"feature_alpha_dropout_channels_first", {{{4, 5, 3}}},
       [](const Inputs& x) { return feature_alpha_dropout(x[0], 0.4, 6, 1); }},
      {"layer_norm", {{{3, 5}}, {{5}}, {{5}}}, [](const Inputs& x) { return layer_norm(x[0], x[1], x[2]); }},
      {"layer_norm_axis0_no_beta", {{{4, 3}}, {{4}}}, [](const Inputs& x) { return layer_norm(x[0], x[1], Tensor(), 0, 0.1); }},
      {"rms_norm", {{{3, 5}}, {{5}}}, [](const Inputs& x) { return rms_norm(x[0], x[1]); }},
      {"rms_norm_axis1_shift", {{{2, 4, 3}}, {{4}}}, [](const Inputs& x) { return rms_norm(x[0], x[1], 1, 1e-3, 0.5); }},
      // Group-statistics normalization (batch_norm with its running statistics made fresh per call,
      // group_norm, instance_norm) and the shape ops (axon/shape_ops.h).
      {"batch_norm_train", {{{6, 4}}, {{4}}, {{4}}}, [](const Inputs& x) {
         const TensorOptions s{x[0].dtype() == DType::f64 ? DType::f64 : DType::f32, x[0].device()};
         return batch_norm(x[0], x[1], x[2], Tensor::zeros({4}, s), Tensor::ones({4}, s), true);
       }},
      {"batch_norm_train_channels_first", {{{3, 4, 5}}, {{4}}}, [](const Inputs& x) {
         return batch_norm(x[0], x[1], Tensor(), Tensor(), Tensor(), true, 0.1, 1e-3, 1);
       }},
      {"batch_norm_inference", {{{5, 2, 3}}, {{3}}, {{3}}}, [](const Inputs& x) {
         const TensorOptions s{x[0].dtype() == DType::f64 ? DType::f64 : DType::f32, x[0].device()};
         return batch_norm(x[0], x[1], x[2], Tensor::from_vector({3}, std::vector<double>{0.25, -0.5, 1.0}, s),
                           Tensor::from_vector({3}, std::vector<double>{0.5, 2.0, 1.5}, s), false);
       }},
      {"group_norm", {{{2, 3, 6}}, {{6}}, {{6}}}, [](const Inputs& x) { return group_norm(x[0], x[1], x[2], 3); }},
      {"group_norm_channels_first", {{{2, 6, 2, 2}}, {{6}}, {{6}}},
       [](const Inputs& x) { return group_norm(x[0], x[1], x[2], 2, 1); }},
      {"instance_norm", {{{2, 5, 3}}, {{3}}, {{3}}}, [](const Inputs& x) { return instance_norm(x[0], x[1], x[2]); }},
      {"permute", {{{2, 3, 4}}}, [](const Inputs& x) { return square(permute(x[0], {2, 0, 1})); }},
      {"slice", {{{3, 5}}}, [](const Inputs& x) { return square(slice(x[0], 1, 1, 3)); }},
      {"concatenate", {{{2, 3}}, {{2, 2}}}, [](const Inputs& x) { return square(concatenate({x[0], x[1]}, 1)); }},
      {"split", {{{5, 2}}}, [](const Inputs& x) {
         std::vector<Tensor> parts = split(x[0], {2, 3}, 0);
         return add(sum(square(parts[0])), sum(mul_scalar(parts[1], 3.0f)));
       }},
      {"pad", {{{2, 3, 2}}}, [](const Inputs& x) { return square(pad(x[0], {{0, 0}, {1, -1}, {2, 1}}, 0.5)); }},
      {"resize_nearest", {{{2, 3, 2, 2}}}, [](const Inputs& x) { return resize(x[0], 5, 3); }},
      {"resize_bilinear", {{{2, 3, 4, 2}}}, [](const Inputs& x) { return resize(x[0], 5, 3, ResizeMethod::bilinear); }},
      {"resize_bilinear_channels_first", {{{1, 2, 3, 3}}},
       [](const Inputs& x) { return resize(x[0], 4, 2, ResizeMethod::bilinear, false); }},
      // Convolution and pooling (axon/conv_ops.h); max pools may tie on the input grid, so their
      // gradients are checked against the f64 reference here and against finite differences in
      // test_conv (distinct inputs).
      {"conv1d_same_strides", {{{2, 7, 3}}, {{3, 3, 4}}, {{4}}},
       [](const Inputs& x) { return conv(x[0], x[1], x[2], {.strides = {2}, .padding = Padding::same()}); }},
      {"conv2d_explicit_dilated", {{{2, 5, 4, 3}}, {{3, 2, 3, 4}}, {{4}}},
       [](const Inputs& x) {
         return conv(x[0], x[1], x[2], {.padding = Padding::explicit_pairs({{1, 0}, {2, 1}}), .kernel_dilation = {1, 2}});
       }},
      {"conv2d_groups_input_dilation_channels_first", {{{2, 4, 4, 3}}, {{2, 2, 2, 6}}},
       [](const Inputs& x) {
         return conv(x[0], x[1], Tensor(),
                     {.strides = {2}, .input_dilation = {2}, .feature_group_count = 2, .channels = ChannelsLayout::first});
       }},
      {"conv3d", {{{1, 3, 4, 3, 2}}, {{2, 2, 2, 2, 3}}, {{3}}},
       [](const Inputs& x) { return conv(x[0], x[1], x[2], {.padding = Padding::same()}); }},
      {"max_pool2d", {{{2, 5, 5, 3}}},
       [](const Inputs& x) { return max_pool(x[0], {.kernel_size = {2}, .padding = Padding::same()}); }, false},
      {"max_pool1d_dilated_channels_first", {{{2, 3, 9}}},
       [](const Inputs& x) {
         return max_pool(x[0], {.kernel_size = {2}, .strides = {2}, .dilations = {2}, .channels = ChannelsLayout::first});
       }, false},
      {"avg_pool1d_padded", {{{2, 7, 3}}},
       [](const Inputs& x) { return avg_pool(x[0], {.kernel_size = {3}, .strides = {2}, .padding = Padding::explicit_pairs({{1, 1}})}); }},
      {"avg_pool3d_channels_first", {{{1, 2, 4, 4, 3}}},
       [](const Inputs& x) { return avg_pool(x[0], {.kernel_size = {2, 2, 1}, .channels = ChannelsLayout::first}); }},
      {"global_avg_pool", {{{2, 3, 4, 5}}}, [](const Inputs& x) { return global_avg_pool(x[0]); }},
      {"global_max_pool_keep_axes", {{{2, 3, 4, 5}}}, [](const Inputs& x) { return global_max_pool(x[0], true); }, false},
      // conv_transpose, lp/blur/adaptive pooling and bilinear (axon/conv_ops.h, axon/bilinear.h).
      {"conv_transpose2d_same_strides", {{{2, 3, 4, 3}}, {{3, 2, 3, 4}}, {{4}}},
       [](const Inputs& x) { return conv_transpose(x[0], x[1], x[2], {.strides = {2}, .padding = Padding::same()}); }},
      {"conv_transpose1d_dilated_channels_first", {{{2, 3, 5}}, {{2, 3, 2}}},
       [](const Inputs& x) {
         return conv_transpose(x[0], x[1], Tensor(), {.strides = {3}, .kernel_dilation = {2}, .channels = ChannelsLayout::first});
       }},
      {"lp_pool2d", {{{2, 4, 4, 3}, true}}, [](const Inputs& x) { return lp_pool(x[0], {.kernel_size = {2}}, 2.0); }},
      {"blur_pool", {{{2, 4, 5, 3}}}, [](const Inputs& x) { return blur_pool(x[0]); }},
      {"adaptive_avg_pool", {{{2, 6, 4, 3}}}, [](const Inputs& x) { return adaptive_avg_pool(x[0], {3, 2}); }},
      {"adaptive_max_pool", {{{2, 6, 4, 3}}}, [](const Inputs& x) { return adaptive_max_pool(x[0], {2}); }, false},
      {"global_lp_pool", {{{2, 3, 4, 2}, true}}, [](const Inputs& x) { return global_lp_pool(x[0], 3.0); }},
      {"bilinear", {{{3, 2}}, {{3, 4}}, {{5, 2, 4}}, {{5}}},
       [](const Inputs& x) { return bilinear(x[0], x[1], x[2], x[3]); }},
      {"softmax_cross_entropy", {{{4, 5}}}, [](const Inputs& x) {
         Tensor labels = Tensor::from_vector({4}, std::vector<int32_t>{0, 4, 2, 2}, {DType::i32, Device::cpu()});
         return softmax_cross_entropy(x[0], labels.to(x[0].device()));
       }},
      // Sequence ops (axon/attention_ops.h): the embedding's scatter-add gradient (repeated ids)
      // and attention with both masks.
      {"embedding", {{{5, 3}}}, [](const Inputs& x) {
         Tensor ids = Tensor::from_vector({2, 3}, std::vector<int64_t>{0, 4, 2, 2, 1, 4}, {DType::i64, x[0].device()});
         return embedding(ids, x[0]);
       }},
      {"scaled_dot_product_attention", {{{2, 2, 4, 3}}, {{2, 2, 4, 3}}, {{2, 2, 4, 2}}}, [](const Inputs& x) {
         AttentionOptions a;
         a.causal = true;
         a.key_padding_mask = Tensor::from_vector({2, 4}, std::vector<int32_t>{0, 0, 0, 1, 0, 0, 0, 0}, {DType::i32, Device::cpu()});
         return scaled_dot_product_attention(x[0], x[1], x[2], a);
       }},
  };
  return cases;
}

// Deterministic inputs exact in bf16: multiples of 1/32.
Inputs make_inputs(const OpCase& c, uint64_t seed, DType dtype, Device device, bool requires_grad) {
  Inputs out;
  Generator gen(seed);
  for (const InputSpec& spec : c.inputs) {
    std::vector<double> v(static_cast<size_t>(shape_numel(spec.shape)));
    for (double& x : v) {
      const double u = std::round(static_cast<double>(gen.uniform(-2.0f, 2.0f)) * 32.0) / 32.0;
      x = spec.positive ? 1.5 + u / 2.0 : spec.off_grid ? u + (u < 0 ? -1.0 : 1.0) / 64.0 : u;
      if (spec.positive && x < 0.5) x = 0.5;
    }
    Tensor t = Tensor::from_vector(spec.shape, v, {dtype, device});
    if (requires_grad) t.set_requires_grad();
    out.push_back(t);
  }
  return out;
}

struct Result {
  std::vector<double> output;
  std::vector<std::vector<double>> grads;
};

// Forward, then backward of sum(output · w) with fixed weights w in the same dtype and device.
Result run(const OpCase& c, DType dtype, Device device) {
  Inputs x = make_inputs(c, 7, dtype, device, true);
  Tensor y = c.f(x);
  Generator gen(99);
  std::vector<double> w(static_cast<size_t>(y.numel()));
  for (double& v : w) v = std::round(static_cast<double>(gen.uniform(-1.0f, 1.0f)) * 16.0) / 16.0;
  Tensor weights = Tensor::from_vector(y.shape(), w, {y.dtype(), device});
  sum(mul(y, weights)).backward();
  Result r;
  r.output = y.to_double_vector();
  for (const Tensor& t : x) r.grads.push_back(t.grad().to_double_vector());
  return r;
}

void expect_close(const std::vector<double>& got, const std::vector<double>& want, double rtol, double atol,
                  const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_NEAR(got[i], want[i], atol + rtol * std::abs(want[i])) << what << " element " << i;
}

std::vector<Device> devices() {
  std::vector<Device> d{Device::cpu()};
  for (int k = 0; k < cuda::device_count(); ++k) d.push_back(Device::cuda(k));
  return d;
}

class EveryOp : public ::testing::TestWithParam<OpCase> {};

TEST_P(EveryOp, MatchesTheCpuF64ResultOnEveryDeviceAndDtype) {
  const OpCase& c = GetParam();
  const Result reference = run(c, DType::f64, Device::cpu());
  if (cuda::device_count() == 0) std::printf("[ note ] no CUDA device: checking the CPU only\n");
  for (Device device : devices()) {
    for (DType dtype : {DType::f32, DType::bf16, DType::f64}) {
      if (dtype == DType::f64 && device.is_cpu()) continue;
      const double rtol = dtype == DType::bf16 ? 3e-2 : 1e-5;
      const double atol = dtype == DType::bf16 ? 3e-2 : 1e-5;
      const std::string where = c.name + " " + dtype_name(dtype) + " on " + device.str();
      const Result r = run(c, dtype, device);
      expect_close(r.output, reference.output, rtol, atol, where + " output");
      for (size_t i = 0; i < r.grads.size(); ++i)
        expect_close(r.grads[i], reference.grads[i], rtol, atol, where + " gradient of input " + std::to_string(i));
    }
  }
}

TEST_P(EveryOp, F64GradientMatchesFiniteDifferences) {
  const OpCase& c = GetParam();
  if (!c.smooth)
    GTEST_SKIP() << c.name << " is not differentiable everywhere on the input grid (a kink at 0, or ties in a max window); "
                              "its gradient is checked against the f64 reference above";
  Inputs x = make_inputs(c, 7, DType::f64, Device::cpu(), true);
  Tensor probe = c.f(x);
  Generator gen(5);
  std::vector<double> w(static_cast<size_t>(probe.numel()));
  for (double& v : w) v = gen.uniform(-1.0f, 1.0f);
  Tensor weights = Tensor::from_vector(probe.shape(), w, {DType::f64, Device::cpu()});
  auto objective = [&](const Inputs& xs) { return sum(mul(c.f(xs), weights)); };
  objective(x).backward();
  const double eps = 1e-6;
  for (size_t i = 0; i < x.size(); ++i) {
    std::vector<double> analytic = x[i].grad().to_double_vector();
    NoGradGuard no_grad;
    double* v = x[i].data_as<double>();
    for (int64_t k = 0; k < x[i].numel(); ++k) {
      const double saved = v[k];
      v[k] = saved + eps;
      const double up = objective(x).item_double();
      v[k] = saved - eps;
      const double down = objective(x).item_double();
      v[k] = saved;
      const double numeric = (up - down) / (2 * eps);
      EXPECT_NEAR(analytic[k], numeric, 1e-6 + 1e-6 * std::abs(numeric)) << c.name << " input " << i << " element " << k;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Ops, EveryOp, ::testing::ValuesIn(op_cases()),
                         [](const ::testing::TestParamInfo<OpCase>& info) { return info.param.name; });

// ---- dtype and device rules ----

TEST(DTypes, MixedDtypesAreErrorsNamingBoth) {
  Tensor a = Tensor::ones({2}, {DType::f32, Device::cpu()});
  Tensor b = Tensor::ones({2}, {DType::f64, Device::cpu()});
  try {
    add(a, b);
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), ::testing::AllOf(::testing::HasSubstr("add"), ::testing::HasSubstr("f32"),
                                           ::testing::HasSubstr("f64")));
  }
  EXPECT_THROW(matmul(Tensor::ones({2, 2}), Tensor::ones({2, 2}, {DType::bf16, Device::cpu()})), std::invalid_argument);
}

TEST(DTypes, IntegerTensorsCarryDataButNoArithmetic) {
  Tensor ids = Tensor::from_vector({3}, std::vector<int64_t>{1, -2, 3}, {DType::i64, Device::cpu()});
  EXPECT_EQ(ids.dtype(), DType::i64);
  EXPECT_EQ(ids.to(DType::f32).to_vector(), (std::vector<float>{1, -2, 3}));
  EXPECT_EQ(Tensor::from_vector({2}, std::vector<float>{2.9f, -2.9f}).to(DType::i32).data_as<int32_t>()[1], -2);
  try {
    exp(ids);
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), ::testing::AllOf(::testing::HasSubstr("exp"), ::testing::HasSubstr("i64")));
  }
}

TEST(DTypes, HostAccessChecksTheDtype) {
  Tensor t = Tensor::zeros({2}, {DType::f64, Device::cpu()});
  EXPECT_THROW(t.data(), std::logic_error);
  EXPECT_NO_THROW(t.data_as<double>());
  EXPECT_THROW(t.data_as<int32_t>(), std::logic_error);
}

TEST(DTypes, Bf16RoundsToNearestEven) {
  EXPECT_EQ(static_cast<float>(bf16(1.0f)), 1.0f);
  // 1 + 2^-8 is exactly halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1).
  EXPECT_EQ(static_cast<float>(bf16(1.0f + 0x1.0p-8f)), 1.0f);
  EXPECT_EQ(static_cast<float>(bf16(1.0f + 3 * 0x1.0p-8f)), 1.0f + 0x1.0p-6f);
  EXPECT_TRUE(std::isnan(static_cast<float>(bf16(std::nanf("")))));
  EXPECT_TRUE(std::isinf(static_cast<float>(bf16(INFINITY))));
}

TEST(DTypes, ConversionIsDifferentiable) {
  Tensor x = Tensor::from_vector({3}, std::vector<float>{1, 2, 3}).set_requires_grad();
  sum(square(x.to(DType::f64))).backward();
  EXPECT_EQ(x.grad().dtype(), DType::f32);
  EXPECT_EQ(x.grad().to_vector(), (std::vector<float>{2, 4, 6}));
}

TEST(DTypes, ParsingNamesTheBadText) {
  EXPECT_EQ(parse_dtype("bf16"), DType::bf16);
  EXPECT_THROW(parse_dtype("float16"), std::invalid_argument);
  EXPECT_EQ(parse_device("cuda:3"), Device::cuda(3));
  EXPECT_EQ(parse_device("cuda"), Device::cuda(0));
  EXPECT_EQ(parse_device("cpu"), Device::cpu());
  for (const char* bad : {"gpu", "cuda:", "cuda:-1", "cuda:x", "cuda:1x", "cuda:+1", "CPU"}) {
    try {
      parse_device(bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const std::invalid_argument& e) {
      EXPECT_THAT(e.what(), ::testing::HasSubstr(std::string("'") + bad + "'"));
    }
  }
}

TEST(Devices, AMissingDeviceIsAnErrorNamingIt) {
  const int count = cuda::device_count();
  try {
    Tensor::zeros({2}, {DType::f32, Device::cuda(count)});
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("cuda:" + std::to_string(count)));
  }
}

TEST(Devices, OperandsOnTwoDevicesAreErrorsNamingBoth) {
  if (cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device: a second device cannot be made";
  Tensor a = Tensor::ones({2});
  Tensor b = Tensor::ones({2}, {DType::f32, Device::cuda(0)});
  try {
    add(a, b);
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), ::testing::AllOf(::testing::HasSubstr("add"), ::testing::HasSubstr("cpu"),
                                           ::testing::HasSubstr("cuda:0")));
  }
}

TEST(Devices, CopiesRoundTripAndCarryGradients) {
  if (cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device";
  Tensor x = Tensor::from_vector({4}, std::vector<float>{1, -2, 3, -4}).set_requires_grad();
  Tensor y = x.to(Device::cuda(0));
  EXPECT_EQ(y.device(), Device::cuda(0));
  sum(mul_scalar(y, 3.0f)).backward();
  EXPECT_EQ(x.grad().device(), Device::cpu());
  EXPECT_EQ(x.grad().to_vector(), (std::vector<float>{3, 3, 3, 3}));
}

}  // namespace
}  // namespace axon

namespace axon {
namespace {

TEST(Indexing, GatherRowsOnEveryDeviceAndDtype) {
  for (Device device : devices()) {
    for (DType dtype : {DType::f32, DType::i32, DType::bf16, DType::f64}) {
      Tensor src = Tensor::from_vector({4, 3}, std::vector<double>{0, 1, 2, 10, 11, 12, 20, 21, 22, 30, 31, 32},
                                       {dtype, device});
      Tensor idx = Tensor::from_vector({3}, std::vector<int64_t>{3, 0, 3}, {DType::i64, device});
      Tensor out = gather_rows(src, idx);
      EXPECT_EQ(out.shape(), (Shape{3, 3}));
      EXPECT_EQ(out.to_double_vector(), (std::vector<double>{30, 31, 32, 0, 1, 2, 30, 31, 32}))
          << dtype_name(dtype) << " on " << device.str();
    }
  }
}

TEST(Indexing, GatherRowsRejectsBadIndices) {
  Tensor src = Tensor::zeros({4, 2});
  EXPECT_THROW(gather_rows(src, Tensor::from_vector({1}, std::vector<int64_t>{4}, {DType::i64, Device::cpu()})),
               std::out_of_range);
  EXPECT_THROW(gather_rows(src, Tensor::from_vector({1}, std::vector<int64_t>{-1}, {DType::i64, Device::cpu()})),
               std::out_of_range);
  EXPECT_THROW(gather_rows(src, Tensor::from_vector({1}, std::vector<int32_t>{0}, {DType::i32, Device::cpu()})),
               std::invalid_argument);
}

}  // namespace
}  // namespace axon
