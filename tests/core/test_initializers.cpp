// Initializers: each one's mean and variance against its formula, its support, orthogonality,
// reproducibility, the kernel/bias options of dense, and the errors.
//
// Statistical bounds. For N independent draws of variance σ² the sample mean has standard error
// σ/√N and the mean of squares (an estimate of the variance when the mean is 0) has standard error
// σ²·√((κ − 1)/N), κ the kurtosis: 3 for a normal, 1.8 for a uniform, 2.37 for a normal cut at
// ±2σ. Every check allows 6 standard errors with κ = 3 (so at least 6 for each distribution): a
// correct initializer fails with probability below 2e-9, and with N = 200,000 the variance is
// pinned to ±1.9%, tight enough to tell a normal from a truncated normal of the same σ (the
// truncation alone lowers the variance by 23%) or fan_in from fan_avg. The draws are seeded, so
// the outcome is the same on every run.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "axon/initializers.h"
#include "axon/model.h"

namespace axon {
namespace {

using ::testing::HasSubstr;
namespace init_ = initializers;

struct Moments {
  double mean = 0, mean_sq = 0, max_abs = 0;
  int64_t n = 0;
};

Moments moments(const Tensor& t) {
  Moments m;
  for (float v : t.values()) {
    m.mean += v;
    m.mean_sq += static_cast<double>(v) * v;
    m.max_abs = std::max(m.max_abs, static_cast<double>(std::abs(v)));
  }
  m.n = t.numel();
  m.mean /= static_cast<double>(m.n);
  m.mean_sq /= static_cast<double>(m.n);
  return m;
}

// Mean within 6σ/√N of `mean`; variance within 6σ²√(2/N) of `variance`.
void expect_moments(const Tensor& t, double mean, double variance, const std::string& what) {
  const Moments m = moments(t);
  const double n = static_cast<double>(m.n);
  EXPECT_NEAR(m.mean, mean, 6.0 * std::sqrt(variance / n)) << what << ": mean";
  const double var = m.mean_sq - m.mean * m.mean;
  EXPECT_NEAR(var, variance, 6.0 * variance * std::sqrt(2.0 / n)) << what << ": variance";
}

enum class Support { uniform, truncated, normal };

// uniform: every value in [−l, l] (l = √(3·variance)) and the largest near l; truncated: every
// value within 2σ (σ = √variance / 0.8796...) and the largest near it; normal: values beyond
// 2.5σ exist (a truncated normal would have none).
void expect_support(const Tensor& t, double variance, Support support, const std::string& what) {
  const Moments m = moments(t);
  if (support == Support::uniform) {
    const double limit = std::sqrt(3.0 * variance);
    EXPECT_LE(m.max_abs, limit * (1 + 1e-6)) << what;
    EXPECT_GT(m.max_abs, 0.999 * limit) << what;
  } else if (support == Support::truncated) {
    const double cut = 2.0 * std::sqrt(variance) / 0.87962566103423978;
    EXPECT_LE(m.max_abs, cut * (1 + 1e-6)) << what;
    EXPECT_GT(m.max_abs, 0.999 * cut) << what;
  } else {
    EXPECT_GT(m.max_abs, 2.5 * std::sqrt(variance)) << what;
  }
}

constexpr double kFanIn = 400, kFanOut = 500;
const Shape kShape{400, 500};  // 200,000 draws

TEST(Initializers, FixedScaleMatchTheirFormulas) {
  Generator gen(1);
  const Tensor u = init_::uniform()(kShape, gen);  // U(−0.01, 0.01): variance 0.01²/3
  expect_moments(u, 0.0, 1e-4 / 3, "uniform");
  expect_support(u, 1e-4 / 3, Support::uniform, "uniform");
  const Tensor u2 = init_::uniform(0.5f)(kShape, gen);
  expect_moments(u2, 0.0, 0.25 / 3, "uniform(0.5)");
  const Tensor n = init_::normal()(kShape, gen);  // N(0, 0.01²)
  expect_moments(n, 0.0, 1e-4, "normal");
  expect_support(n, 1e-4, Support::normal, "normal");
  const Tensor n2 = init_::normal(3.0f, 0.5f)(kShape, gen);
  expect_moments(n2, 3.0, 0.25, "normal(3, 0.5)");
}

TEST(Initializers, NamedSchemesMatchTheirPapers) {
  struct Case {
    std::string name;
    Initializer init;
    double variance;
    Support support;
  };
  const double avg = (kFanIn + kFanOut) / 2;
  const std::vector<Case> cases = {
      // LeCun et al. 1998: variance 1/fan_in.
      {"lecun_uniform", init_::lecun_uniform(), 1.0 / kFanIn, Support::uniform},
      {"lecun_normal", init_::lecun_normal(), 1.0 / kFanIn, Support::truncated},
      // Glorot & Bengio 2010: variance 2/(fan_in + fan_out).
      {"glorot_uniform", init_::glorot_uniform(), 1.0 / avg, Support::uniform},
      {"glorot_normal", init_::glorot_normal(), 1.0 / avg, Support::truncated},
      {"glorot_uniform(3)", init_::glorot_uniform(3.0f), 3.0 / avg, Support::uniform},
      // He et al. 2015: variance 2/fan_in.
      {"he_uniform", init_::he_uniform(), 2.0 / kFanIn, Support::uniform},
      {"he_normal", init_::he_normal(), 2.0 / kFanIn, Support::truncated},
      {"lecun_normal(0.5)", init_::lecun_normal(0.5f), 0.5 / kFanIn, Support::truncated},
  };
  Generator gen(2);
  for (const Case& c : cases) {
    const Tensor t = c.init(kShape, gen);
    ASSERT_EQ(t.shape(), kShape);
    expect_moments(t, 0.0, c.variance, c.name);
    expect_support(t, c.variance, c.support, c.name);
  }
}

TEST(Initializers, VarianceScalingEveryModeAndDistribution) {
  using init_::Distribution;
  using init_::FanMode;
  Generator gen(3);
  for (FanMode mode : {FanMode::fan_in, FanMode::fan_out, FanMode::fan_avg}) {
    const double n = mode == FanMode::fan_in ? kFanIn : mode == FanMode::fan_out ? kFanOut : (kFanIn + kFanOut) / 2;
    for (auto [dist, support] : {std::pair{Distribution::normal, Support::normal},
                                 std::pair{Distribution::truncated_normal, Support::truncated},
                                 std::pair{Distribution::uniform, Support::uniform}}) {
      const std::string what = "variance_scaling mode " + std::to_string(static_cast<int>(mode)) + " distribution " +
                               std::to_string(static_cast<int>(dist));
      const Tensor t = init_::variance_scaling(2.5f, mode, dist)(kShape, gen);
      expect_moments(t, 0.0, 2.5 / n, what);
      expect_support(t, 2.5 / n, support, what);
    }
  }
  // The seed's defaults: scale 1, fan_in, normal.
  expect_moments(init_::variance_scaling()(kShape, gen), 0.0, 1.0 / kFanIn, "variance_scaling()");
  // A conv kernel {5, 5, 40, 50}: the receptive field (25) multiplies both fans (50,000 draws).
  const Tensor conv = init_::variance_scaling(1.0f, FanMode::fan_out, Distribution::uniform)({5, 5, 40, 50}, gen);
  expect_moments(conv, 0.0, 1.0 / (25 * 50), "variance_scaling fan_out on a conv kernel");
  // Fans below 1 count as 1 (variance = scale / max(1, n)): a scalar parameter.
  EXPECT_EQ(init_::fans({}), (std::pair<double, double>{1, 1}));
  EXPECT_EQ(init_::fans({7}), (std::pair<double, double>{7, 7}));
  EXPECT_EQ(init_::fans({3, 3, 16, 32}), (std::pair<double, double>{144, 288}));
}

TEST(Initializers, ConstantsAndIdentity) {
  Generator gen(4);
  EXPECT_EQ(init_::zeros()({2, 3}, gen).to_vector(), std::vector<float>(6, 0.0f));
  EXPECT_EQ(init_::ones()({4}, gen).to_vector(), std::vector<float>(4, 1.0f));
  EXPECT_EQ(init_::full(-2.5f)({2, 2}, gen).to_vector(), std::vector<float>(4, -2.5f));
  EXPECT_EQ(init_::identity()({3, 3}, gen).to_vector(), (std::vector<float>{1, 0, 0, 0, 1, 0, 0, 0, 1}));
  EXPECT_EQ(init_::identity()({2, 3}, gen).to_vector(), (std::vector<float>{1, 0, 0, 0, 1, 0}));
  EXPECT_EQ(init_::identity()({2, 2, 2}, gen).to_vector(), (std::vector<float>{1, 0, 0, 1, 1, 0, 0, 1}));
}

// ‖QᵀQ − I‖max for the {m, n} view of t when m ≥ n, else ‖QQᵀ − I‖max.
double orthogonality_error(const Tensor& t) {
  const int64_t n = t.shape().back(), m = t.numel() / n;
  const float* q = t.data();
  const bool tall = m >= n;
  const int64_t size = tall ? n : m, len = tall ? m : n;
  double worst = 0;
  for (int64_t i = 0; i < size; ++i)
    for (int64_t j = 0; j < size; ++j) {
      double dot = 0;
      for (int64_t k = 0; k < len; ++k)
        dot += tall ? static_cast<double>(q[k * n + i]) * q[k * n + j] : static_cast<double>(q[i * n + k]) * q[j * n + k];
      worst = std::max(worst, std::abs(dot - (i == j ? 1.0 : 0.0)));
    }
  return worst;
}

TEST(Initializers, OrthogonalIsOrthogonalForTallWideAndConvShapes) {
  Generator gen(5);
  for (const Shape& shape : std::vector<Shape>{{64, 32}, {32, 64}, {50, 50}, {3, 3, 8, 16}, {2, 4, 96}, {1, 7}, {7, 1}}) {
    for (auto dist : {init_::Distribution::normal, init_::Distribution::uniform}) {
      const Tensor q = init_::orthogonal(dist)(shape, gen);
      ASSERT_EQ(q.shape(), shape);
      // f32 rounding of each entry: a dot product of k terms errs by about k·2^-24.
      EXPECT_LT(orthogonality_error(q), 1e-5) << shape_str(shape);
    }
  }
}

TEST(Initializers, SameSeedSameValuesAndEveryNameParses) {
  for (const std::string name : {"zeros", "ones", "identity", "uniform", "normal", "lecun_uniform", "lecun_normal",
                                 "glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "variance_scaling",
                                 "orthogonal"}) {
    Initializer init = init_::parse(name);
    Generator a(7), b(7), c(8);
    const std::vector<float> va = init({6, 5}, a).to_vector(), vb = init({6, 5}, b).to_vector();
    EXPECT_EQ(va, vb) << name;
    if (name != "zeros" && name != "ones" && name != "identity") {
      EXPECT_NE(va, init({6, 5}, c).to_vector()) << name;
    }
  }
  try {
    init_::parse("xavier");
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), ::testing::AllOf(HasSubstr("xavier"), HasSubstr("glorot_uniform"), HasSubstr("orthogonal")));
  }
}

TEST(Initializers, DenseTakesKernelAndBiasInitializers) {
  DenseOptions options;
  options.kernel_initializer = init_::orthogonal();
  options.bias_initializer = init_::full(0.25f);
  Model model = input({-1, 48}) | dense(32, options) | dense(8, {.kernel_initializer = init_::he_normal(),
                                                                  .bias_initializer = init_::ones()});
  Parameters a = init(model, 9), b = init(model, 9);
  EXPECT_EQ(a.flat_values().to_vector(), b.flat_values().to_vector());  // seeded, reproducible
  EXPECT_LT(orthogonality_error(a["dense_2.kernel"]), 1e-5);
  EXPECT_EQ(a["dense_2.bias"].to_vector(), std::vector<float>(32, 0.25f));
  EXPECT_EQ(a["dense_3.bias"].to_vector(), std::vector<float>(8, 1.0f));
  const double cut = 2.0 * std::sqrt(2.0 / 32) / 0.87962566103423978;
  for (float v : a["dense_3.kernel"].values()) EXPECT_LE(std::abs(v), cut);
  // Another seed, other values.
  EXPECT_NE(init(model, 10)["dense_2.kernel"].to_vector(), a["dense_2.kernel"].to_vector());
  // A custom initializer: any function of (shape, generator); its f64 result is converted.
  DenseOptions custom;
  custom.kernel_initializer = [](const Shape& shape, Generator&) { return Tensor::full(shape, 0.5, {DType::f64, Device::cpu()}); };
  Parameters c = init(input({-1, 2}) | dense(3, custom), 0);
  EXPECT_EQ(c["dense_2.kernel"].to_vector(), std::vector<float>(6, 0.5f));
}

TEST(Initializers, BadOptionsAndShapesAreErrorsNamingThem) {
  auto expect_error = [](auto f, const std::vector<std::string>& parts) {
    try {
      f();
      ADD_FAILURE() << "expected an error mentioning " << parts[0];
    } catch (const std::invalid_argument& e) {
      for (const std::string& p : parts) EXPECT_THAT(e.what(), HasSubstr(p));
    }
  };
  expect_error([] { init_::uniform(-1.0f); }, {"uniform", "scale", "-1"});
  expect_error([] { init_::normal(0.0f, 0.0f); }, {"normal", "scale"});
  expect_error([] { init_::he_normal(NAN); }, {"he_normal", "scale"});
  expect_error([] { init_::variance_scaling(0.0f); }, {"variance_scaling", "scale"});
  expect_error([] { init_::orthogonal(init_::Distribution::truncated_normal); }, {"orthogonal", "truncated_normal"});
  // Shapes are known at init(): the error names the parameter, its shape and the initializer.
  DenseOptions bias_eye;
  bias_eye.bias_initializer = init_::identity();
  expect_error([&] { init(input({-1, 2}) | dense(3, bias_eye), 0); }, {"dense_2.bias", "{3}", "identity", "rank 2"});
  DenseOptions wrong;
  wrong.kernel_initializer = [](const Shape&, Generator&) { return Tensor::zeros({5}); };
  expect_error([&] { init(input({-1, 2}) | dense(3, wrong), 0); }, {"dense_2.kernel", "{5}", "{2, 3}"});
  DenseOptions empty;
  empty.kernel_initializer = nullptr;
  expect_error([&] { dense(3, empty); }, {"dense", "kernel_initializer"});
}

}  // namespace
}  // namespace axon
