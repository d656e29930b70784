// Optimizers against trajectories recorded from PyTorch (tests/fixtures/make_fixtures.py).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "../support/compare.h"
#include "axon/optimizers.h"

using namespace axon;
using nlohmann::json;

using axon::testing::load_fixture;

static std::unique_ptr<Optimizer> from_hyper(const std::string& kind, const json& h) {
  if (kind == "sgd")
    return sgd({.lr = h["lr"], .momentum = h["momentum"], .dampening = h["dampening"],
                .weight_decay = h["weight_decay"], .nesterov = h["nesterov"]});
  AdamOptions o{.lr = h["lr"], .beta1 = h["betas"][0], .beta2 = h["betas"][1], .eps = h["eps"],
                .weight_decay = h["weight_decay"], .amsgrad = h["amsgrad"]};
  return kind == "adam" ? adam(o) : adamw(o);
}

TEST(Optimizers, MatchPyTorchTrajectories) {
  json fixture = load_fixture("optimizers.json");
  ASSERT_GE(fixture["cases"].size(), 10u);
  for (const json& c : fixture["cases"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    auto opt = from_hyper(c["optimizer"], c["hyper"]);
    std::vector<float> params = c["initial_params"].get<std::vector<float>>();
    for (size_t t = 0; t < c["grads"].size(); ++t) {
      std::vector<float> grads = c["grads"][t].get<std::vector<float>>();
      opt->step(params, grads);
      std::vector<float> expected = c["params_after_step"][t].get<std::vector<float>>();
      for (size_t i = 0; i < params.size(); ++i)
        EXPECT_NEAR(params[i], expected[i], 2e-6f * std::max(1.0f, std::abs(expected[i])))
            << "step " << t + 1 << " element " << i;
    }
    EXPECT_EQ(opt->steps(), static_cast<int64_t>(c["grads"].size()));
  }
}

TEST(Optimizers, AShardStepsLikeTheWhole) {
  // Element-wise rules: stepping two halves with two optimizers equals stepping the whole buffer.
  std::vector<float> whole{1, -2, 3, -4, 5, -6}, grads{0.1f, 0.2f, -0.3f, 0.4f, -0.5f, 0.6f};
  std::vector<float> left(whole.begin(), whole.begin() + 3), right(whole.begin() + 3, whole.end());
  auto a = adamw({.lr = 0.1f, .weight_decay = 0.1f}), b = adamw({.lr = 0.1f, .weight_decay = 0.1f}),
       c = adamw({.lr = 0.1f, .weight_decay = 0.1f});
  for (int t = 0; t < 3; ++t) {
    a->step(whole, grads);
    b->step(left, std::span<const float>(grads).subspan(0, 3));
    c->step(right, std::span<const float>(grads).subspan(3));
  }
  for (int i = 0; i < 3; ++i) EXPECT_EQ(whole[i], left[i]);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(whole[3 + i], right[i]);
}

TEST(Optimizers, BadInputIsRejected) {
  auto opt = adam();
  std::vector<float> p(4, 0.0f), g(3, 0.0f), g4(4, 0.0f);
  EXPECT_THROW(opt->step(p, g), std::invalid_argument);
  opt->step(p, g4);
  std::vector<float> p5(5), g5(5);
  EXPECT_THROW(opt->step(p5, g5), std::invalid_argument);
  EXPECT_THROW(make_optimizer("adagrad9", 0.1f), std::invalid_argument);
  EXPECT_THROW(adam({.lr = -1.0f}), std::invalid_argument);
  EXPECT_THROW(adam({.beta1 = 1.0f}), std::invalid_argument);
  EXPECT_THROW(sgd({.nesterov = true}), std::invalid_argument);
  EXPECT_EQ(make_optimizer("adamw", 0.5f)->learning_rate(), 0.5f);
  EXPECT_EQ(opt->state().size(), 2u);
}

TEST(Optimizers, StateOfTheWrongSizeIsRejected) {
  // As when a checkpoint for another model is loaded into the optimizer's state.
  std::vector<float> p(1000, 1.0f), g(1000, 0.1f);
  auto momentum = sgd({.lr = 0.1, .momentum = 0.9});
  *momentum->state()[0].second = Tensor::zeros({2});
  EXPECT_THROW(momentum->step(p, g), std::invalid_argument);

  auto ams = adam({.amsgrad = true});
  for (auto& [name, buffer] : ams->state())
    if (name != "max_exp_avg_sq") *buffer = Tensor::zeros({1000});
  *ams->state()[2].second = Tensor::zeros({3});
  try {
    ams->step(p, g);
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("max_exp_avg_sq"));
  }
}

TEST(Optimizers, RestoredStateAndStepCountContinueTheTrajectory) {
  std::vector<float> a{1, 2, 3}, g{0.5f, -0.25f, 0.125f};
  auto first = adam({.lr = 0.01});
  for (int t = 0; t < 3; ++t) first->step(a, g);
  std::vector<float> b = a;
  auto resumed = adam({.lr = 0.01});
  for (size_t i = 0; i < 2; ++i) *resumed->state()[i].second = first->state()[i].second->clone();
  resumed->set_steps(first->steps());
  first->step(a, g);
  resumed->step(b, g);
  EXPECT_EQ(a, b);
}

TEST(Optimizers, ConfigNamesEveryHyperparameter) {
  EXPECT_EQ(adam({.lr = 1e-3})->config(), "adam(lr=0.001, beta1=0.9, beta2=0.999, eps=1e-08, weight_decay=0, amsgrad=false)");
  EXPECT_EQ(sgd({.lr = 0.1, .momentum = 0.9})->config(),
            "sgd(lr=0.1, momentum=0.9, dampening=0, weight_decay=0, nesterov=false)");
  EXPECT_EQ(make_optimizer("adamw", 0.01)->config(),
            "adamw(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-08, weight_decay=0.01, amsgrad=false)");
  // Learning rates that differ in the last bit still describe differently.
  EXPECT_NE(adam({.lr = 0.1})->config(), adam({.lr = std::nextafter(0.1, 1.0)})->config());
}

TEST(Optimizers, HyperparametersThatDoNotFitAFloatAreRejected) {
  // The update kernels compute in f32: 1e-50 would round to 0 (no training), 1e39 to inf.
  for (double lr : {1e-50, 1e-39, 1e39}) {
    try {
      adam({.lr = lr});
      ADD_FAILURE() << "accepted lr " << lr;
    } catch (const std::invalid_argument& e) {
      EXPECT_THAT(e.what(), ::testing::HasSubstr("learning rate"));
      EXPECT_THAT(e.what(), ::testing::HasSubstr("32-bit float"));
    }
  }
  EXPECT_THROW(sgd({.lr = 0.1, .momentum = 1e-45}), std::invalid_argument);
  EXPECT_THROW(adam({.eps = 1e-50}), std::invalid_argument);
  EXPECT_NO_THROW(adam({.lr = 0.0}));
  EXPECT_NO_THROW(adam({.lr = 1e-30, .eps = 1e-30}));
  auto opt = sgd();
  EXPECT_THROW(opt->set_learning_rate(1e-300), std::invalid_argument);
}

namespace axon {
namespace {

// Capturable mode (the step count kept beside the parameters, for CUDA graphs) derives the same
// step scalars from it as the host does: on the CPU both use the same pow, so equal bits.
TEST(Optimizers, CapturableAdamTakesTheSameSteps) {
  for (bool decoupled : {false, true}) {
    Tensor grads = Tensor::from_vector({4}, std::vector<float>{0.5f, -1.0f, 2.0f, 1e-3f});
    Tensor a = Tensor::from_vector({4}, std::vector<float>{1, 2, 3, 4}), b = a.clone();
    AdamOptions o{.lr = 1e-2, .weight_decay = 0.1};
    auto host = decoupled ? adamw(o) : adam(o);
    auto device = decoupled ? adamw(o) : adam(o);
    device->set_capturable(true);
    EXPECT_TRUE(device->capturable());
    for (int t = 0; t < 25; ++t) {
      host->step(a, grads);
      device->step(b, grads);
    }
    EXPECT_EQ(a.to_vector(), b.to_vector()) << (decoupled ? "adamw" : "adam");
    // A restored step count reaches the device copy too.
    host->set_steps(3);
    device->set_steps(3);
    host->step(a, grads);
    device->step(b, grads);
    EXPECT_EQ(a.to_vector(), b.to_vector());
    EXPECT_EQ(device->steps(), 4);
  }
}

}  // namespace
}  // namespace axon
