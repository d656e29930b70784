#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

#include "../support/gradcheck.h"
#include "axon/model.h"
#include "axon/ops.h"

using namespace axon;
using ::testing::HasSubstr;

static Model readme_model() { return input({-1, 784}) | dense(128) | dense(10, Activation::softmax); }

TEST(Summary, MatchesElixirAxonForTheReadmeModel) {
  const std::string expected =
      " Layer                 Shape        Parameters\n"
      " input_1 (input)       {nil, 784}   0\n"
      " dense_2 (dense)       {nil, 128}   100480\n"
      " dense_3 (dense)       {nil, 10}    1290\n"
      " softmax_4 (softmax)   {nil, 10}    0\n"
      "Total Parameters: 101770\n"
      "Total Parameters Memory: 407.08 kilobytes\n";
  EXPECT_EQ(summary(readme_model()), expected);
}

TEST(Init, LaysOutParametersInCanonicalOrderInOneBuffer) {
  Parameters params = init(readme_model(), 0);
  ASSERT_EQ(params.size(), 4u);
  EXPECT_EQ(params.entries()[0].name, "dense_2.kernel");
  EXPECT_EQ(params.entries()[1].name, "dense_2.bias");
  EXPECT_EQ(params.entries()[2].name, "dense_3.kernel");
  EXPECT_EQ(params.entries()[3].name, "dense_3.bias");
  EXPECT_EQ(params.count(), 100480u + 1290u);
  EXPECT_EQ(params["dense_2.kernel"].shape(), (Shape{784, 128}));
  EXPECT_EQ(params["dense_3.bias"].data(), params.values().data() + 100480 + 1280);
  EXPECT_EQ(params["dense_3.bias"].grad().data(), params.grads().data() + 100480 + 1280);
  EXPECT_THROW(params["nope"], std::out_of_range);
}

TEST(Init, GlorotUniformKernelAndZeroBias) {
  Parameters params = init(readme_model(), 3);
  const float limit = std::sqrt(6.0f / (784 + 128));
  float max_abs = 0;
  double sum_sq = 0;
  for (float v : params["dense_2.kernel"].values()) {
    max_abs = std::max(max_abs, std::abs(v));
    sum_sq += v * v;
  }
  EXPECT_LE(max_abs, limit);
  EXPECT_GT(max_abs, 0.95f * limit);
  // Variance of U(-l, l) is l^2 / 3.
  EXPECT_NEAR(sum_sq / (784 * 128), limit * limit / 3, 0.05 * limit * limit / 3);
  for (float v : params["dense_2.bias"].values()) EXPECT_EQ(v, 0.0f);
}

TEST(Init, SameSeedSameParameters) {
  Parameters a = init(readme_model(), 11), b = init(readme_model(), 11), c = init(readme_model(), 12);
  EXPECT_TRUE(std::equal(a.values().begin(), a.values().end(), b.values().begin()));
  EXPECT_FALSE(std::equal(a.values().begin(), a.values().end(), c.values().begin()));
}

TEST(Predict, ComputesTheLayersInOrder) {
  Model model = input({-1, 3}) | dense(2, Activation::relu) | dense(2);
  Parameters params = init(model, 5);
  Tensor x = Tensor::from_vector({2, 3}, {1, -2, 3, 0.5f, 0.25f, -1});
  Tensor y = predict(model, params, x);
  Tensor ref = linear(relu(linear(x, params["dense_2.kernel"], params["dense_2.bias"])), params["dense_4.kernel"],
                      params["dense_4.bias"]);
  EXPECT_EQ(y.shape(), (Shape{2, 2}));
  for (int i = 0; i < 4; ++i) EXPECT_FLOAT_EQ(y.data()[i], ref.data()[i]);
  EXPECT_FALSE(y.requires_grad());
}

TEST(Predict, SoftmaxOutputsAreDistributions) {
  Parameters params = init(readme_model(), 1);
  Generator gen(2);
  Tensor y = predict(readme_model(), params, uniform({4, 784}, 0, 1, gen));
  for (int r = 0; r < 4; ++r) {
    float total = 0;
    for (int c = 0; c < 10; ++c) total += y.data()[r * 10 + c];
    EXPECT_NEAR(total, 1.0f, 1e-5);
  }
}

TEST(Errors, WrongInputShapeNamesTheLayerAndBothShapes) {
  Parameters params = init(readme_model(), 0);
  try {
    predict(readme_model(), params, Tensor::zeros({32, 100}));
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr("input_1 (input)"));
    EXPECT_THAT(e.what(), HasSubstr("{32, 100}"));
    EXPECT_THAT(e.what(), HasSubstr("{nil, 784}"));
  }
  try {
    init(readme_model(), {8, 100}, 0);
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr("input_1"));
    EXPECT_THAT(e.what(), HasSubstr("{8, 100}"));
  }
}

TEST(Errors, LayerShapeErrorNamesTheLayer) {
  Model bad = input({-1}) | dense(3);
  try {
    summary(bad);
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr("dense_2 (dense)"));
    EXPECT_THAT(e.what(), HasSubstr("rank 2 or more, got {-1}"));
  }
  EXPECT_EQ(plan(input({-1, 4, 4}) | flatten() | dense(3)).layers.back().output_shape, (Shape{-1, 3}));
  // As the seed's dense, a rank-3 input keeps its middle axis: the last axis is transformed.
  EXPECT_EQ(plan(input({-1, 4, 4}) | dense(3)).layers.back().output_shape, (Shape{-1, 4, 3}));
  EXPECT_THROW(dense(0), std::invalid_argument);
}

TEST(Errors, ParametersOfAnotherModelAreRejected) {
  Model other = input({-1, 784}) | dense(64) | dense(10);
  Parameters params = init(other, 0);
  try {
    predict(readme_model(), params, Tensor::zeros({1, 784}));
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr("dense_2 (dense)"));
    EXPECT_THAT(e.what(), HasSubstr("{784, 128}"));
    EXPECT_THAT(e.what(), HasSubstr("{784, 64}"));
  }
}

TEST(Forward, GradientsLandInTheFlatGradBuffer) {
  Model model = input({-1, 3}) | dense(4, Activation::tanh) | dense(2);
  Parameters params = init(model, 9);
  Tensor x = axon::testing::random_tensor({5, 3}, 1, false);
  ModelPlan p = plan(model);
  // Check d(sum(out * w))/dparams against finite differences through the flat buffer.
  auto objective = [&] { return sum(square(forward(p, params, x, ForwardContext{true, nullptr}))); };
  params.zero_grad();
  objective().backward();
  std::vector<float> analytic(params.grads().begin(), params.grads().end());
  NoGradGuard no_grad;
  for (size_t k = 0; k < params.count(); ++k) {
    float& v = params.values()[k];
    const float saved = v;
    v = saved + 1e-2f;
    double up = objective().item();
    v = saved - 1e-2f;
    double down = objective().item();
    v = saved;
    double numeric = (up - down) / 2e-2;
    EXPECT_NEAR(analytic[k], numeric, 2e-3 + 2e-2 * std::abs(numeric)) << "flat index " << k;
  }
}

TEST(Initializers, FansAndVarianceScaling) {
  auto [in, out] = initializers::fans({3, 3, 16, 32});
  EXPECT_EQ(in, 9 * 16);
  EXPECT_EQ(out, 9 * 32);
  Generator gen(0);
  Tensor he = initializers::he_normal()({400, 300}, gen);
  double var = mean(square(he)).item();
  EXPECT_NEAR(var, 2.0 / 400, 0.1 * 2.0 / 400);
  EXPECT_EQ(parse_activation("relu"), Activation::relu);
  EXPECT_THROW(parse_activation("gelu9"), std::invalid_argument);
}
