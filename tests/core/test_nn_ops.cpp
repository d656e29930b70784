// Dropout, layer_norm and rms_norm: normalization against PyTorch (tests/fixtures/normalization.json)
// on every available device in f64 and f32; dropout's statistics, reproducibility and training-only
// behaviour; the dropout, layer_norm and rms_norm layers; and the errors.
// (tests/core/test_backends.cpp checks the same ops in bf16 and against finite differences.)
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "axon/autograd.h"
#include "../support/compare.h"
#include "axon/cuda.h"
#include "axon/model.h"
#include "axon/nn_ops.h"

namespace axon {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

using axon::testing::devices;
using axon::testing::expect_close;

TEST(Normalization, MatchesPyTorchOnEveryDeviceInF64AndF32) {
  std::ifstream in(std::string(AXON_SOURCE_DIR) + "/tests/fixtures/normalization.json");
  ASSERT_TRUE(in) << "missing tests/fixtures/normalization.json";
  const json cases = json::parse(in)["cases"];
  ASSERT_EQ(cases.size(), 5u);
  for (const json& c : cases) {
    const std::string name = c["name"];
    const bool rms = c["function"] == "rms_norm";
    const Shape shape = c["shape"].get<Shape>();
    const int64_t axis = c["axis"];
    const double eps = c["epsilon"], shift = c["shift"];
    const int64_t channels = shape[static_cast<size_t>(axis < 0 ? axis + static_cast<int64_t>(shape.size()) : axis)];
    for (Device device : devices())
      for (DType dtype : {DType::f64, DType::f32}) {
        const std::string where = name + " " + dtype_name(dtype) + " on " + device.str();
        const TensorOptions o{dtype, device};
        Tensor x = Tensor::from_vector(shape, c["x"].get<std::vector<double>>(), o).set_requires_grad();
        Tensor gamma = Tensor::from_vector({channels}, c["gamma"].get<std::vector<double>>(), o).set_requires_grad();
        Tensor beta;
        if (!rms) beta = Tensor::from_vector({channels}, c["beta"].get<std::vector<double>>(), o).set_requires_grad();
        Tensor y = rms ? rms_norm(x, gamma, axis, eps, shift) : layer_norm(x, gamma, beta, axis, eps);
        sum(mul(y, Tensor::from_vector(shape, c["weights"].get<std::vector<double>>(), o))).backward();
        // f32: the lanes near 100 keep ~5 digits of their 0.01 spread in the f32 input itself, so
        // their normalized values and gradients carry ~1e-3 relative error (PyTorch's f32 the same).
        const double rtol = dtype == DType::f64 ? 1e-9 : 2e-3, atol = dtype == DType::f64 ? 1e-10 : 2e-3;
        expect_close(y.to_double_vector(), c["output"].get<std::vector<double>>(), rtol, atol, where + " output");
        expect_close(x.grad().to_double_vector(), c["grad_x"].get<std::vector<double>>(), rtol, 10 * atol, where + " grad x");
        expect_close(gamma.grad().to_double_vector(), c["grad_gamma"].get<std::vector<double>>(), rtol, atol,
                     where + " grad gamma");
        if (!rms)
          expect_close(beta.grad().to_double_vector(), c["grad_beta"].get<std::vector<double>>(), rtol, atol,
                       where + " grad beta");
      }
  }
}

TEST(Dropout, DropsTheRateAndScalesTheRestSoTheMeanIsKept) {
  // 1,000,000 draws: the fraction dropped has standard error √(p(1−p)/N) ≤ 5e-4; 6 of them is 3e-3.
  const int64_t n = 1000000;
  for (double rate : {0.1, 0.5, 0.9}) {
    Tensor x = Tensor::ones({1000, 1000});
    Tensor y = dropout(x, rate, 42);
    int64_t dropped = 0;
    double total = 0;
    for (float v : y.values()) {
      if (v == 0.0f) ++dropped;
      else EXPECT_FLOAT_EQ(v, static_cast<float>(1.0 / (1.0 - rate)));
      total += v;
    }
    EXPECT_NEAR(static_cast<double>(dropped) / n, rate, 6 * std::sqrt(rate * (1 - rate) / n)) << rate;
    // The mean stays 1: its standard error is √(rate/(1−rate)/N).
    EXPECT_NEAR(total / n, 1.0, 6 * std::sqrt(rate / (1 - rate) / n)) << rate;
  }
}

TEST(Dropout, TheSeedDecidesTheMaskOnEveryDeviceAndTheGradientUsesIt) {
  Tensor x = Tensor::from_vector({64, 33}, std::vector<float>(64 * 33, 2.0f));
  const std::vector<float> a = dropout(x, 0.3, 7).to_vector(), b = dropout(x, 0.3, 7).to_vector();
  EXPECT_EQ(a, b);
  EXPECT_NE(a, dropout(x, 0.3, 8).to_vector());
  for (Device device : devices()) {
    Tensor xd = Tensor::from_vector({64, 33}, std::vector<float>(64 * 33, 2.0f), {DType::f32, device}).set_requires_grad();
    Tensor y = dropout(xd, 0.3, 7);
    EXPECT_EQ(y.to_vector(), a) << "the mask of seed 7 on " << device.str();
    sum(y).backward();
    // dy/dx is the mask times 1/(1 − rate): where y is 0 the gradient is 0, elsewhere 1/0.7.
    const std::vector<float> g = xd.grad().to_vector();
    for (size_t i = 0; i < a.size(); ++i) EXPECT_FLOAT_EQ(g[i], a[i] == 0.0f ? 0.0f : static_cast<float>(1 / 0.7)) << i;
  }
  EXPECT_EQ(dropout(x, 0.0, 7).to_vector(), x.to_vector());
}

TEST(Dropout, AlphaDropoutHasPyTorchsConstantsAndKeepsSelusMeanAndVariance) {
  std::ifstream in(std::string(AXON_SOURCE_DIR) + "/tests/fixtures/dropout.json");
  ASSERT_TRUE(in) << "missing tests/fixtures/dropout.json";
  const json cases = json::parse(in)["alpha_dropout"];
  ASSERT_EQ(cases.size(), 3u);
  for (const json& c : cases) {
    const double rate = c["rate"], a = c["a"], b = c["b"], dropped = c["dropped"];
    for (Device device : devices()) {
      const TensorOptions o{DType::f64, device};
      // Inputs 0 and 1 under one mask: kept elements give b and a + b, dropped ones `dropped`.
      const std::vector<double> z = alpha_dropout(Tensor::zeros({4096}, o), rate, 11).to_double_vector();
      const std::vector<double> one = alpha_dropout(Tensor::ones({4096}, o), rate, 11).to_double_vector();
      int drops = 0;
      for (size_t i = 0; i < z.size(); ++i) {
        const bool kept = std::abs(z[i] - b) < 1e-12;
        if (!kept) ++drops;
        EXPECT_NEAR(z[i], kept ? b : dropped, 1e-12) << rate << " element " << i;
        EXPECT_NEAR(one[i], kept ? a + b : dropped, 1e-12) << rate << " element " << i;
      }
      EXPECT_NEAR(drops / 4096.0, rate, 6 * std::sqrt(rate * (1 - rate) / 4096)) << rate;
    }
  }
  // Standard normal inputs (a SELU network's fixed point) keep mean 0 and variance 1. 10^6 draws;
  // the sample of x and the mask each add an error of about √(1/N) to the mean and √(2/N) to the
  // variance, so the bounds are 6·√(2/N) and 6·√(4/N).
  Generator gen(12);
  Tensor x = normal({1000, 1000}, 0.0f, 1.0f, gen).to(DType::f64);
  for (double rate : {0.1, 0.3}) {
    const std::vector<double> y = alpha_dropout(x, rate, 3).to_double_vector();
    double mean = 0, sq = 0;
    for (double v : y) mean += v, sq += v * v;
    mean /= 1e6;
    EXPECT_NEAR(mean, 0.0, 6 * std::sqrt(2e-6)) << rate;
    EXPECT_NEAR(sq / 1e6 - mean * mean, 1.0, 6 * std::sqrt(4e-6)) << rate;
  }
}

TEST(Dropout, SpatialAndFeatureAlphaDropoutDropWholeChannels) {
  // {batch 6, 5, 4, channels 16} channels last, and {6, 16, 5, 4} channels first.
  for (auto [shape, channel_index] : {std::pair{Shape{6, 5, 4, 16}, int64_t{-1}}, std::pair{Shape{6, 16, 5, 4}, int64_t{1}}}) {
    for (bool alpha : {false, true}) {
      Tensor x = Tensor::ones(shape);
      Tensor y = alpha ? feature_alpha_dropout(x, 0.5, 21, channel_index) : spatial_dropout(x, 0.5, 21, channel_index);
      const std::vector<float> v = y.to_vector();
      const int64_t c_axis = channel_index < 0 ? 3 : 1;
      const int64_t per_sample = x.numel() / 6;
      int64_t inner = 1;
      for (int64_t d = c_axis + 1; d < 4; ++d) inner *= shape[d];
      // Every element of one (sample, channel) has the value of that pair's first element.
      std::vector<float> first(6 * 16, NAN);
      int dropped_pairs = 0;
      for (int64_t i = 0; i < x.numel(); ++i) {
        const int64_t pair = (i / per_sample) * 16 + (i / inner) % 16;
        if (std::isnan(first[pair])) {
          first[pair] = v[i];
          dropped_pairs += alpha ? v[i] < 0 : v[i] == 0;
        }
        ASSERT_EQ(v[i], first[pair]) << (alpha ? "feature_alpha_dropout" : "spatial_dropout") << " element " << i;
      }
      EXPECT_GT(dropped_pairs, 20);  // 96 pairs at rate 0.5: 48 expected, 6 standard errors is 29
      EXPECT_LT(dropped_pairs, 76);
      if (!alpha) {
        for (float f : first) EXPECT_TRUE(f == 0.0f || f == 2.0f);
      }
    }
  }
  // The same seed and shape give the same channels on every device.
  Tensor x = Tensor::ones({3, 7, 9});
  const std::vector<float> want = spatial_dropout(x, 0.4, 5).to_vector();
  for (Device device : devices()) EXPECT_EQ(spatial_dropout(x.to(device), 0.4, 5).to_vector(), want) << device.str();
}

TEST(Dropout, TheLayerDropsInTrainingOnlyAndIsReproducible) {
  Model model = input({-1, 100}) | dropout(0.5);
  Parameters params = init(model, 0);
  Tensor x = Tensor::ones({8, 100});
  EXPECT_EQ(predict(model, params, x).to_vector(), x.to_vector());  // inference: the identity
  Generator g1(3), g2(3), g3(4);
  const std::vector<float> a = forward(model, params, x, ForwardContext{true, &g1}).to_vector();
  EXPECT_EQ(a, forward(model, params, x, ForwardContext{true, &g2}).to_vector());
  EXPECT_NE(a, forward(model, params, x, ForwardContext{true, &g3}).to_vector());
  EXPECT_NE(a, forward(model, params, x, ForwardContext{true, &g1}).to_vector());  // the next step, a new mask
  int zeros = 0;
  for (float v : a) zeros += v == 0.0f;
  EXPECT_GT(zeros, 300);
  EXPECT_LT(zeros, 500);
  // The other kinds as layers: named after themselves, the identity in inference.
  Model others = input({-1, 4, 6}) | alpha_dropout({.rate = 0.2}) | spatial_dropout({.rate = 0.3, .seed = 4}) |
                 feature_alpha_dropout({.rate = 0.1, .channel_index = 1});
  EXPECT_THAT(summary(others), ::testing::AllOf(HasSubstr("alpha_dropout_2 (alpha_dropout)"),
                                                HasSubstr("spatial_dropout_3 (spatial_dropout)"),
                                                HasSubstr("feature_alpha_dropout_4 (feature_alpha_dropout)")));
  Parameters none = init(others, 0);
  Tensor x3 = Tensor::ones({2, 4, 6});
  EXPECT_EQ(predict(others, none, x3).to_vector(), x3.to_vector());
  Generator g4(1);
  EXPECT_NE(forward(others, none, x3, ForwardContext{true, &g4}).to_vector(), x3.to_vector());
  try {
    forward(model, params, x, ForwardContext{true, nullptr});
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), ::testing::AllOf(HasSubstr("dropout"), HasSubstr("rng")));
  }
}

TEST(Normalization, TheLayersHaveTheSeedsParametersAndMatchTheFunctions) {
  Model model = input({-1, 6}) | dense(8) | layer_norm() | rms_norm({.epsilon = 1e-3, .shift = 0.5}) | dense(2);
  const std::string expected =
      " Layer                       Shape      Parameters\n"
      " input_1 (input)             {nil, 6}   0\n"
      " dense_2 (dense)             {nil, 8}   56\n"
      " layer_norm_3 (layer_norm)   {nil, 8}   16\n"
      " rms_norm_4 (rms_norm)       {nil, 8}   8\n"
      " dense_5 (dense)             {nil, 2}   18\n"
      "Total Parameters: 98\n"
      "Total Parameters Memory: 392 bytes\n";
  EXPECT_EQ(summary(model), expected);
  Parameters p = init(model, 5);
  EXPECT_EQ(p["layer_norm_3.gamma"].shape(), (Shape{8}));
  EXPECT_EQ(p["layer_norm_3.beta"].to_vector(), std::vector<float>(8, 0.0f));
  EXPECT_EQ(p["rms_norm_4.gamma"].to_vector(), std::vector<float>(8, 1.0f));
  // The seed's layer_norm gamma initializer is glorot_uniform: U(−√(3/8), √(3/8)) for {8}.
  for (float v : p["layer_norm_3.gamma"].values()) EXPECT_LE(std::abs(v), std::sqrt(3.0f / 8));
  Tensor x = Tensor::from_vector({3, 6}, std::vector<float>{1, 2, 3, 4, 5, 6, -1, 0, 1, 0, -1, 2, 9, 8, 7, 6, 5, 4});
  Tensor h = linear(x, p["dense_2.kernel"], p["dense_2.bias"]);
  h = layer_norm(h, p["layer_norm_3.gamma"], p["layer_norm_3.beta"]);
  h = rms_norm(h, p["rms_norm_4.gamma"], -1, 1e-3, 0.5);
  EXPECT_EQ(predict(model, p, x).to_vector(), linear(h, p["dense_5.kernel"], p["dense_5.bias"]).to_vector());
}

TEST(Normalization, BadInputIsAnErrorNamingTheOpOptionsAndShapes) {
  auto expect_error = [](auto f, const std::vector<std::string>& parts) {
    try {
      f();
      ADD_FAILURE() << "expected an error mentioning " << parts[0];
    } catch (const std::exception& e) {
      for (const std::string& s : parts) EXPECT_THAT(e.what(), HasSubstr(s));
    }
  };
  Tensor x = Tensor::ones({2, 4});
  expect_error([&] { layer_norm(x, Tensor::ones({3}), Tensor()); }, {"layer_norm", "gamma", "{3}", "{2, 4}"});
  expect_error([&] { layer_norm(x, Tensor::ones({4}), Tensor::ones({5})); }, {"layer_norm", "beta", "{5}"});
  expect_error([&] { rms_norm(x, Tensor::ones({4}, {DType::f64, Device::cpu()})); }, {"rms_norm", "f32", "f64"});
  expect_error([&] { rms_norm(x, Tensor::ones({4}), -1, -1.0); }, {"rms_norm", "epsilon", "-1"});
  expect_error([&] { layer_norm(x, Tensor::ones({4}), Tensor(), 2); }, {"layer_norm", "axis 2"});
  expect_error([&] { dropout(x, 1.0, 0); }, {"dropout", "rate", "[0, 1)"});
  expect_error([&] { dropout(x, -0.1, 0); }, {"dropout", "rate"});
  Tensor ids = Tensor::from_vector({2}, std::vector<int32_t>{1, 2}, {DType::i32, Device::cpu()});
  expect_error([&] { dropout(ids, 0.5, 0); }, {"dropout", "i32"});
  expect_error([&] { alpha_dropout(x, 1.5, 0); }, {"alpha_dropout", "rate"});
  expect_error([&] { spatial_dropout(Tensor::ones({4}), 0.5, 0); }, {"spatial_dropout", "rank 2", "{4}"});
  expect_error([&] { feature_alpha_dropout(x, 0.5, 0, 0); }, {"feature_alpha_dropout", "batch axis", "{2, 4}"});
  expect_error([&] { spatial_dropout(x, 0.5, 0, 5); }, {"spatial_dropout", "axis 5"});
  expect_error([&] { summary(input({-1, 4}) | spatial_dropout({.channel_index = 0})); },
               {"spatial_dropout", "channel_index 0", "{-1, 4}"});
  expect_error([&] { alpha_dropout({.rate = 1.0}); }, {"alpha_dropout", "rate"});
  // Layer options are checked when the model is built; shapes when it is planned.
  expect_error([&] { dropout(1.0); }, {"dropout", "rate", "1"});
  expect_error([&] { layer_norm({.epsilon = -1e-5}); }, {"layer_norm", "epsilon"});
  expect_error([&] { summary(input({-1, 4}) | layer_norm({.channel_index = 2})); },
               {"layer_norm", "channel_index 2", "{-1, 4}"});
  expect_error([&] { summary(input({-1, 4}) | rms_norm({.channel_index = 0})); }, {"rms_norm", "batch axis"});
}

}  // namespace
}  // namespace axon
