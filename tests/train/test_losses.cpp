// The loss library against PyTorch or the formula (tests/fixtures/make_loss_fixtures.py): per-sample
// values, mean, sum and the gradient of the mean, including log 0, logits of ±1e4 and empty batches.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <set>
#include <nlohmann/json.hpp>

#include "axon/losses.h"
#include "axon/ops.h"

using namespace axon;
using nlohmann::json;

namespace {

Tensor f64(const Shape& shape, const json& values) {
  return Tensor::from_vector(shape, values.get<std::vector<double>>(), {DType::f64, Device::cpu()});
}

std::vector<double> values(const Tensor& t) {
  const Tensor c = t.to(DType::f64);
  const double* p = static_cast<const double*>(c.raw_data());
  return std::vector<double>(p, p + c.numel());
}

Tensor compute(const json& c, const Tensor& p, const Tensor& y, Reduction r) {
  const std::string loss = c["loss"];
  const json& o = c["options"];
  if (loss == "binary_cross_entropy")
    return binary_cross_entropy(p, y, {.from_logits = o.value("from_logits", false),
                                       .positive_weight = o.value("positive_weight", 1.0),
                                       .negative_weight = o.value("negative_weight", 1.0),
                                       .reduction = r});
  if (loss == "categorical_cross_entropy") {
    CategoricalCrossEntropyOptions co{.from_logits = o.value("from_logits", false),
                                      .class_weights = o.value("class_weights", std::vector<double>{}),
                                      .label_smoothing = o.value("label_smoothing", 0.0),
                                      .reduction = r};
    if (c.contains("labels")) return categorical_cross_entropy(p, c["labels"].get<std::vector<int32_t>>(), co);
    return categorical_cross_entropy(p, y, co);
  }
  if (loss == "mean_squared_error") return mean_squared_error(p, y, r);
  if (loss == "mean_absolute_error") return mean_absolute_error(p, y, r);
  if (loss == "huber") return huber(p, y, o["delta"], r);
  if (loss == "log_cosh") return log_cosh(p, y, r);
  if (loss == "kl_divergence") return kl_divergence(p, y, r);
  if (loss == "hinge") return hinge(p, y, r);
  if (loss == "categorical_hinge") return categorical_hinge(p, y, r);
  if (loss == "soft_margin") return soft_margin(p, y, r);
  if (loss == "poisson") return poisson(p, y, r);
  if (loss == "cosine_similarity") return cosine_similarity(p, y, 1e-6, r);
  if (loss == "connectionist_temporal_classification") {
    std::vector<std::vector<int32_t>> targets = c["targets"].get<std::vector<std::vector<int32_t>>>();
    const std::vector<int64_t> lengths = c["input_lengths"].get<std::vector<int64_t>>();
    return connectionist_temporal_classification(log_softmax(p, -1), targets, lengths, o["blank"], r);
  }
  if (loss == "margin_ranking") {
    const Shape shape = c["shape"].get<Shape>();
    return margin_ranking(p, f64(shape, c["prediction2"]), y, o["margin"], r);
  }
  throw std::runtime_error("no loss " + loss);
}

void expect_close(const std::vector<double>& got, const json& want, double tol, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    const double w = want[i];
    EXPECT_NEAR(got[i], w, tol * std::max(1.0, std::fabs(w))) << what << " [" << i << "]";
  }
}

TEST(Losses, MatchPyTorchOrTheFormulaInValueAndGradient) {
  std::ifstream in(std::string(AXON_SOURCE_DIR) + "/tests/fixtures/loss_library.json");
  ASSERT_TRUE(in);
  const json f = json::parse(in);
  std::set<std::string> seen;
  for (const json& c : f["cases"]) {
    SCOPED_TRACE(c["name"].get<std::string>() + " vs " + c["reference"].get<std::string>());
    seen.insert(c["loss"].get<std::string>());
    const Shape shape = c["shape"].get<Shape>();
    const Tensor y = c.contains("target") ? f64(shape, c["target"]) : Tensor();
    Tensor p = f64(shape, c["prediction"]);
    p.set_requires_grad();
    expect_close(values(compute(c, p.detach(), y, Reduction::none)), c["none"], 1e-9, "none");
    expect_close(values(compute(c, p.detach(), y, Reduction::sum)), json::array({c["sum"]}), 1e-9, "sum");
    Tensor mean_loss = compute(c, p, y, Reduction::mean);
    expect_close(values(mean_loss), json::array({c["mean"]}), 1e-9, "mean");
    mean_loss.backward();
    expect_close(values(p.grad()), c["grad"], 1e-9, "gradient");
  }
  EXPECT_EQ(seen.size(), 14u);
}

TEST(Losses, ComputeInF32Too) {
  // The fixture's first BCE case in f32: the same values to float rounding.
  const Tensor p = Tensor::from_vector({2, 2}, std::vector<float>{0.2f, 0.9f, 0.6f, 0.1f});
  const Tensor y = Tensor::from_vector({2, 2}, std::vector<float>{0, 1, 1, 0});
  const double want = -(std::log(0.8) + std::log(0.9) + std::log(0.6) + std::log(0.9)) / 4.0;
  EXPECT_NEAR(binary_cross_entropy(p, y).item(), want, 1e-6);
  const Tensor logits = Tensor::from_vector({1, 3}, std::vector<float>{1e4f, -1e4f, 0.0f});
  const Tensor l = categorical_cross_entropy(logits, std::vector<int32_t>{1}, {.from_logits = true, .class_weights = {}});
  EXPECT_NEAR(l.item(), 2e4, 1.0);
}

TEST(Losses, EmptyBatches) {
  const Tensor p = Tensor::zeros({0, 3}), y = Tensor::zeros({0, 3});
  EXPECT_EQ(mean_squared_error(p, y, Reduction::none).numel(), 0);
  EXPECT_EQ(mean_squared_error(p, y, Reduction::sum).item(), 0.0f);
  EXPECT_EQ(binary_cross_entropy(p, y, {.reduction = Reduction::sum}).item(), 0.0f);
  try {
    huber(p, y);
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("huber: empty batch"));
  }
  EXPECT_EQ(categorical_cross_entropy(p, std::vector<int32_t>{}, {.class_weights = {}, .reduction = Reduction::none}).numel(), 0);
}

TEST(Losses, BadInputNamesTheLossAndTheShapesOrOption) {
  auto expect_message = [](auto fn, std::vector<std::string> parts) {
    try {
      fn();
      ADD_FAILURE() << "accepted";
    } catch (const std::invalid_argument& e) {
      for (const auto& part : parts) EXPECT_THAT(e.what(), ::testing::HasSubstr(part));
    }
  };
  const Tensor a = Tensor::zeros({2, 3}), b = Tensor::zeros({3, 2});
  expect_message([&] { mean_absolute_error(a, b); }, {"mean_absolute_error", "{2, 3}", "{3, 2}"});
  expect_message([&] { huber(a, a, -1.0); }, {"huber", "delta", "-1"});
  expect_message([&] { kl_divergence(a, a.to(DType::f64)); }, {"kl_divergence", "f32", "f64"});
  expect_message([&] { categorical_cross_entropy(a, std::vector<int32_t>{0, 3}); }, {"label 3", "row 1", "3 classes"});
  expect_message([&] { categorical_cross_entropy(a, a, {.class_weights = {1.0}}); }, {"1 class weights", "3 classes"});
  expect_message([&] { binary_cross_entropy(a, a, {.positive_weight = -2}); }, {"positive_weight", "-2"});
  expect_message([&] { apply_label_smoothing(a, 1.5); }, {"smoothing", "1.5"});
}

TEST(Losses, CtcOfAnImpossibleAlignmentIsInfinite) {
  // Two frames cannot emit "1 1" (a blank must separate the repeats): +inf, zero gradient.
  Tensor lp = log_softmax(Tensor::zeros({1, 2, 3}), -1);
  Tensor x = Tensor::zeros({1, 2, 3});
  x.set_requires_grad();
  Tensor l = connectionist_temporal_classification(log_softmax(x, -1), {{1, 1}}, {}, 0, Reduction::sum);
  EXPECT_TRUE(std::isinf(l.item()));
  l.backward();
  for (float g : x.grad().to_vector()) EXPECT_EQ(g, 0.0f);
  EXPECT_THROW(connectionist_temporal_classification(lp, {{0}}), std::invalid_argument);      // the blank
  EXPECT_THROW(connectionist_temporal_classification(lp, {{1}, {1}}), std::invalid_argument);  // 2 targets, batch 1
  EXPECT_THROW(connectionist_temporal_classification(lp, {{1}}, std::vector<int64_t>{3}), std::invalid_argument);
}

TEST(Losses, LabelSmoothingSpreadsTheMass) {
  const Tensor y = Tensor::from_vector({1, 4}, std::vector<float>{0, 1, 0, 0});
  EXPECT_THAT(apply_label_smoothing(y, 0.2).to_vector(), ::testing::ElementsAre(0.05f, 0.85f, 0.05f, 0.05f));
}

}  // namespace
