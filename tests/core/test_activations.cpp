// Every activation against PyTorch (tests/fixtures/activations.json, made by make_fixtures.py):
// output and the gradient of sum(output · weights), in f64 and f32 on every available device; the
// activation option of dense and the activation layers; and the errors for bad options and dtypes.
// (tests/core/test_backends.cpp checks the same ops in bf16 and against finite differences.)
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "../support/compare.h"
#include "axon/activations.h"
#include "axon/autograd.h"
#include "axon/cuda.h"
#include "axon/model.h"

namespace axon {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

json load_cases() { return axon::testing::load_fixture("activations.json")["cases"]; }

// The fixture's function and options as an Activation (the layer path: parse_activation, the
// with_* options, apply_activation).
Activation activation_of(const json& c) {
  Activation a = parse_activation(c["function"].get<std::string>());
  const json& o = c["options"];
  if (o.contains("alpha")) a = a.with_alpha(o["alpha"].get<double>());
  if (o.contains("beta")) a = a.with_beta(o["beta"].get<double>());
  if (o.contains("gamma")) a = a.with_gamma(o["gamma"].get<double>());
  if (o.contains("axis")) a = a.with_axis(o["axis"].get<int64_t>());
  return a;
}

using axon::testing::devices;

TEST(Activations, MatchPyTorchOnEveryDeviceInF64AndF32) {
  const json cases = load_cases();
  ASSERT_EQ(cases.size(), 41u);
  if (cuda::device_count() == 0) std::printf("[ note ] no CUDA device: checking the CPU only\n");
  for (const json& c : cases) {
    const std::string name = c["name"];
    const Activation act = activation_of(c);
    const Shape in_shape = c["input_shape"].get<Shape>();
    const Shape out_shape = c["output_shape"].get<Shape>();
    const auto input = c["input"].get<std::vector<double>>();
    const auto want = c["output"].get<std::vector<double>>();
    const auto weights = c["weights"].get<std::vector<double>>();
    const auto want_grad = c["grad"].get<std::vector<double>>();
    for (Device device : devices()) {
      for (DType dtype : {DType::f64, DType::f32}) {
        const std::string where = name + " " + dtype_name(dtype) + " on " + device.str();
        Tensor x = Tensor::from_vector(in_shape, input, {dtype, device}).set_requires_grad();
        Tensor y = apply_activation(act, x);
        ASSERT_EQ(y.shape(), out_shape) << where;
        sum(mul(y, Tensor::from_vector(out_shape, weights, {dtype, device}))).backward();
        const std::vector<double> got = y.to_double_vector(), grad = x.grad().to_double_vector();
        // f64: the formulas may differ from PyTorch's in the last bits, and PyTorch's softplus
        // returns x (gradient 1) above 20, off by exp(-20.5) = 1.3e-9 at 20.5; f32: a few ulps of
        // each value. A case may loosen its gradient's tolerance (grad_rtol, with the reason in
        // make_fixtures.py).
        const double rtol = dtype == DType::f64 ? 1e-8 : 2e-5, atol = dtype == DType::f64 ? 1e-12 : 1e-6;
        const double grad_rtol = std::max(rtol, c.value("grad_rtol", 0.0));
        for (size_t i = 0; i < want.size(); ++i) {
          if (dtype == DType::f32 && std::abs(want[i]) > FLT_MAX) {  // exp(100.25) overflows f32
            EXPECT_TRUE(std::isinf(got[i])) << where << " output " << i;
            continue;
          }
          EXPECT_NEAR(got[i], want[i], atol + rtol * std::abs(want[i])) << where << " output " << i;
        }
        for (size_t i = 0; i < want_grad.size(); ++i) {
          if (dtype == DType::f32 && std::abs(want_grad[i]) > FLT_MAX) continue;
          EXPECT_NEAR(grad[i], want_grad[i], atol + grad_rtol * std::abs(want_grad[i])) << where << " gradient " << i;
        }
      }
    }
  }
}

// The CPU's f32 gelu and silu run on Axon's own vectorizable erf and exp (tensor/include/axon/vector_math.h).
// Over a dense grid of inputs, values and gradients against the same formulas in double: each
// within a few f32 ulps of the value (plus 2e-7 absolute, erf's own rounding near ±1, times |x|),
// and NaN and ±inf as in PyTorch (gelu(−inf) = −inf·0 is NaN there too).
TEST(Activations, F32GeluAndSiluOnTheCpuAreAccurateOnADenseGrid) {
  std::vector<float> xs;
  for (int i = -200000; i <= 200000; ++i) xs.push_back(static_cast<float>(i) * 6e-5f);  // [-12, 12]
  const auto phi = [](double v) { return 0.5 * (1.0 + std::erf(v / std::sqrt(2.0))); };
  const auto sig = [](double v) { return 1.0 / (1.0 + std::exp(-v)); };
  for (const std::string name : {"gelu", "silu"}) {
    Tensor x = Tensor::from_vector({static_cast<int64_t>(xs.size())}, xs).set_requires_grad();
    Tensor y = name == "gelu" ? gelu(x) : silu(x);
    sum(y).backward();
    const std::vector<float> got = y.to_vector(), grad = x.grad().to_vector();
    double worst_value = 0, worst_grad = 0;
    for (size_t i = 0; i < xs.size(); ++i) {
      const double v = xs[i];
      const double pdf = std::exp(-0.5 * v * v) / std::sqrt(2.0 * M_PI);
      const double want = name == "gelu" ? v * phi(v) : v * sig(v);
      const double want_grad = name == "gelu" ? phi(v) + v * pdf : sig(v) * (1.0 + v * (1.0 - sig(v)));
      const double tol = 2e-7 * std::abs(v) + 5e-7 * std::abs(want) + 1e-30;
      const double gtol = 2e-7 * (1.0 + std::abs(v)) + 5e-7 * std::abs(want_grad);
      worst_value = std::max(worst_value, std::abs(got[i] - want) / tol);
      worst_grad = std::max(worst_grad, std::abs(grad[i] - want_grad) / gtol);
    }
    EXPECT_LE(worst_value, 1.0) << name << ": worst value error, in units of the tolerance";
    EXPECT_LE(worst_grad, 1.0) << name << ": worst gradient error, in units of the tolerance";
  }
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> g = gelu(Tensor::from_vector({4}, std::vector<float>{-inf, inf, nan, -1e-30f})).to_vector();
  EXPECT_TRUE(std::isnan(g[0]));
  EXPECT_EQ(g[1], inf);
  EXPECT_TRUE(std::isnan(g[2]));
  EXPECT_NEAR(g[3], -0.5e-30f, 1e-36f);
  const std::vector<float> s = silu(Tensor::from_vector({4}, std::vector<float>{-200.0f, 200.0f, nan, 0.0f})).to_vector();
  EXPECT_EQ(s[0], -0.0f);
  EXPECT_EQ(s[1], 200.0f);
  EXPECT_TRUE(std::isnan(s[2]));
  EXPECT_EQ(s[3], 0.0f);
}

TEST(Activations, TheTensorFunctionsAreTheLayerActivations) {
  Tensor x = Tensor::from_vector({2, 3}, std::vector<float>{-2.5f, -0.5f, 0.25f, 1.0f, 3.5f, 7.0f});
  const std::vector<std::pair<Tensor, Activation>> pairs = {
      {celu(x, 0.5), Activation::celu.with_alpha(0.5)},
      {elu(x), Activation::elu},
      {gelu(x), Activation::gelu},
      {gelu(x, GeluApproximation::tanh), Activation::gelu_tanh},
      {hard_sigmoid(x), Activation::hard_sigmoid},
      {hard_swish(x, 1.0 / 6, 0.5), Activation::hard_silu.with_alpha(1.0 / 6).with_beta(0.5)},
      {hard_tanh(x), Activation::hard_tanh},
      {leaky_relu(x, 0.3), Activation::leaky_relu.with_alpha(0.3)},
      {log_sigmoid(x), Activation::log_sigmoid},
      {log_sumexp(x, 0), Activation::log_sumexp.with_axis(0)},
      {mish(x), Activation::mish},
      {relu6(x), Activation::relu6},
      {selu(x), Activation::selu},
      {silu(x), Activation::silu},
      {softplus(x), Activation::softplus},
      {softsign(x), Activation::softsign},
  };
  for (const auto& [direct, act] : pairs)
    EXPECT_EQ(direct.to_vector(), apply_activation(act, x).to_vector()) << activation_name(act);
  EXPECT_EQ(log_sumexp(x, -1, false).shape(), (Shape{2}));
  EXPECT_EQ(log_sumexp(x).shape(), (Shape{2, 1}));
  EXPECT_EQ(apply_activation(Activation::linear, x).to_vector(), x.to_vector());
}

TEST(Activations, EveryNameParsesToTheSeedsDefaults) {
  const std::vector<std::string> names = {"celu", "elu", "exp", "gelu", "gelu_tanh", "hard_sigmoid", "hard_silu",
                                          "hard_tanh", "leaky_relu", "linear", "log_sigmoid", "log_softmax",
                                          "log_sumexp", "mish", "relu", "relu6", "selu", "sigmoid", "silu",
                                          "softmax", "softplus", "softsign", "tanh"};
  for (const std::string& n : names) EXPECT_EQ(activation_name(parse_activation(n)), n);
  EXPECT_EQ(parse_activation("hard_swish"), Activation::hard_silu);
  EXPECT_EQ(parse_activation("linear"), Activation::none);
  EXPECT_EQ(Activation::leaky_relu.alpha, 1.0e-2);
  EXPECT_EQ(Activation::hard_sigmoid.alpha, 0.2);
  EXPECT_EQ(Activation::hard_sigmoid.beta, 0.2);
  EXPECT_EQ(Activation::celu.alpha, 1.0);
  EXPECT_EQ(Activation::selu.alpha, 1.6732632423543772);
  EXPECT_EQ(Activation::selu.beta, 1.0507009873554805);
  try {
    parse_activation("gelu9");
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), ::testing::AllOf(HasSubstr("gelu9"), HasSubstr("hard_swish"), HasSubstr("softsign")));
  }
}

TEST(Activations, BadOptionsAndDtypesAreErrorsNamingTheActivation) {
  auto expect_error = [](auto f, const std::vector<std::string>& parts) {
    try {
      f();
      ADD_FAILURE() << "expected an error mentioning " << parts[0];
    } catch (const std::exception& e) {
      for (const std::string& p : parts) EXPECT_THAT(e.what(), HasSubstr(p));
    }
  };
  Tensor x = Tensor::ones({2, 3});
  expect_error([&] { celu(x, 0.0); }, {"celu", "alpha", "non-zero"});
  expect_error([&] { leaky_relu(x, NAN); }, {"leaky_relu", "alpha", "finite"});
  expect_error([&] { selu(x, 1.0, INFINITY); }, {"selu", "gamma", "finite"});
  expect_error([&] { hard_sigmoid(x, 0.2, NAN); }, {"hard_sigmoid", "beta"});
  expect_error([&] { log_sumexp(x, 2); }, {"log_sumexp", "axis 2", "{2, 3}"});
  expect_error([&] { log_sumexp(Tensor::ones({2, 0})); }, {"log_sumexp", "empty"});
  Tensor ids = Tensor::from_vector({2}, std::vector<int32_t>{1, 2}, {DType::i32, Device::cpu()});
  expect_error([&] { gelu(ids); }, {"gelu", "i32"});
  expect_error([&] { mish(ids); }, {"mish", "i32"});
  expect_error([&] { log_sumexp(ids); }, {"log_sumexp", "i32"});
  // Layer options: rejected when the model is built, naming the activation.
  expect_error([&] { Activation::relu.with_alpha(0.5); }, {"relu", "alpha"});
  expect_error([&] { Activation::celu.with_alpha(0.0); }, {"celu", "alpha"});
  expect_error([&] { Activation::gelu.with_axis(0); }, {"gelu", "axis"});
  expect_error([&] { input({-1, 4}) | celu(0.0); }, {"celu", "alpha"});
  expect_error([&] { input({-1, 4}) | selu(1.0, NAN); }, {"selu", "gamma"});
  // An axis out of range is found when the model is planned, with the layer's name and shape.
  expect_error([&] { summary(input({-1, 4}) | softmax(3)); }, {"softmax", "axis 3", "{-1, 4}"});
}

TEST(Activations, AreTheActivationOptionOfDense) {
  Model model = input({-1, 3}) | dense(4, Activation::gelu) | dense(5, Activation::leaky_relu.with_alpha(0.2)) |
                dense(2, Activation::log_sumexp);
  const std::string expected =
      " Layer                       Shape      Parameters\n"
      " input_1 (input)             {nil, 3}   0\n"
      " dense_2 (dense)             {nil, 4}   16\n"
      " gelu_3 (gelu)               {nil, 4}   0\n"
      " dense_4 (dense)             {nil, 5}   25\n"
      " leaky_relu_5 (leaky_relu)   {nil, 5}   0\n"
      " dense_6 (dense)             {nil, 2}   12\n"
      " log_sumexp_7 (log_sumexp)   {nil, 1}   0\n"
      "Total Parameters: 53\n"
      "Total Parameters Memory: 212 bytes\n";
  EXPECT_EQ(summary(model), expected);
  Parameters params = init(model, 1);
  Tensor x = Tensor::from_vector({2, 3}, std::vector<float>{0.5f, -1.0f, 2.0f, 1.5f, 0.25f, -0.75f});
  Tensor y = predict(model, params, x);
  // The same computation by hand with the tensor functions.
  Tensor h = gelu(linear(x, params["dense_2.kernel"], params["dense_2.bias"]));
  h = leaky_relu(linear(h, params["dense_4.kernel"], params["dense_4.bias"]), 0.2);
  Tensor want = log_sumexp(linear(h, params["dense_6.kernel"], params["dense_6.bias"]));
  EXPECT_EQ(y.shape(), (Shape{2, 1}));
  EXPECT_EQ(y.to_vector(), want.to_vector());
  // Every activation builds as a layer and runs forward and backward through a model.
  for (const Activation& a :
       {Activation::celu, Activation::elu, Activation::exp, Activation::gelu, Activation::gelu_tanh,
        Activation::hard_sigmoid, Activation::hard_silu, Activation::hard_tanh, Activation::leaky_relu,
        Activation::linear, Activation::log_sigmoid, Activation::log_softmax, Activation::log_sumexp, Activation::mish,
        Activation::relu, Activation::relu6, Activation::selu, Activation::sigmoid, Activation::silu,
        Activation::softmax, Activation::softplus, Activation::softsign, Activation::tanh}) {
    Model m = input({-1, 3}) | dense(4, a);
    Parameters p = init(m, 2);
    Tensor out = forward(m, p, x, ForwardContext{true, nullptr});
    sum(out).backward();
    for (double g : p.flat_grads().to_double_vector()) EXPECT_TRUE(std::isfinite(g)) << activation_name(a);
  }
}

}  // namespace
}  // namespace axon
