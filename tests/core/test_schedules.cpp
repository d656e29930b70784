// Learning-rate schedules against torch.optim.lr_scheduler (tests/fixtures/schedules.json, from
// make_optimizer_fixtures.py), the scheduled optimizer, and minimize() on plain functions.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "axon/minimize.h"
#include "axon/ops.h"
#include "axon/optimizers.h"
#include "axon/schedules.h"

using namespace axon;
using nlohmann::json;

namespace {

Schedule from_case(const std::string& name, const json& o) {
  const double init = o["init"];
  if (name == "step_decay") return step_decay(init, o["step_size"], o["gamma"]);
  if (name == "exponential_decay") return exponential_decay(init, o["decay_rate"], o["transition_steps"]);
  if (name == "cosine_decay") return cosine_decay(init, o["decay_steps"], o["alpha"]);
  if (name == "cosine_warm_restarts") return cosine_warm_restarts(init, o["period_steps"], o["period_mult"], o["eta_min"]);
  if (name == "polynomial_decay")
    return polynomial_decay(init, o["end_value"], o["power"], o["transition_steps"]);
  if (name == "linear_warmup_cosine")
    return linear_warmup(cosine_decay(init, o["decay_steps"]), o["warmup_steps"], o["start_factor"]);
  throw std::runtime_error("no schedule " + name);
}

TEST(Schedules, MatchTorchLrSchedulers) {
  std::ifstream in(std::string(AXON_SOURCE_DIR) + "/tests/fixtures/schedules.json");
  ASSERT_TRUE(in);
  const json f = json::parse(in);
  ASSERT_GE(f["cases"].size(), 7u);
  for (const json& c : f["cases"]) {
    SCOPED_TRACE(c["schedule"].get<std::string>());
    const Schedule s = from_case(c["schedule"], c["options"]);
    for (size_t t = 0; t < c["lr"].size(); ++t) {
      const double want = c["lr"][t];
      EXPECT_NEAR(s(static_cast<int64_t>(t)), want, 1e-9 + 1e-7 * want) << "step " << t;
    }
  }
}

TEST(Schedules, FollowTheirFormulas) {
  EXPECT_EQ(constant(0.3)(1000), 0.3);
  // staircase exponential decay, starting at step 5
  const Schedule e = exponential_decay(1.0, 0.5, 10, 5, true);
  EXPECT_EQ(e(4), 1.0);
  EXPECT_EQ(e(14), 1.0);
  EXPECT_EQ(e(15), 0.5);
  EXPECT_EQ(e(35), 0.125);
  EXPECT_DOUBLE_EQ(exponential_decay(1.0, 0.5, 10)(5), std::sqrt(0.5));
  // polynomial decay with Polaris' end value, held after the transition
  const Schedule p = polynomial_decay(1.0, 1e-3, 2.0, 10);
  EXPECT_DOUBLE_EQ(p(5), (1.0 - 1e-3) * 0.25 + 1e-3);
  EXPECT_EQ(p(10), 1e-3);
  EXPECT_EQ(p(100), 1e-3);
  EXPECT_DOUBLE_EQ(cosine_decay(2.0, 10, 0.5)(10), 1.0);
  EXPECT_DOUBLE_EQ(cosine_decay(2.0, 10)(5), 1.0);
  // warmup composes with anything, e.g. a step decay
  const Schedule w = linear_warmup(step_decay(1.0, 3, 0.1), 4);
  EXPECT_EQ(w(0), 0.0);
  EXPECT_EQ(w(2), 0.5);
  EXPECT_EQ(w(4), 1.0);
  EXPECT_DOUBLE_EQ(w(7), 0.1);
  EXPECT_THAT(w.config, ::testing::HasSubstr("linear_warmup(step_decay(init=1, step_size=3, gamma=0.1)"));
}

TEST(Schedules, ParseTheCommandLineForm) {
  EXPECT_DOUBLE_EQ(parse_schedule("cosine:decay_steps=100", 0.1)(50), 0.05);
  EXPECT_EQ(parse_schedule("constant", 0.1)(7), 0.1);
  EXPECT_DOUBLE_EQ(parse_schedule("step:step_size=2,gamma=0.5,warmup=2", 1.0)(2 + 4), 0.25);
  EXPECT_DOUBLE_EQ(parse_schedule("cosine_restarts:period_steps=4", 1.0)(4), 1.0);
  EXPECT_DOUBLE_EQ(parse_schedule("polynomial:power=1,end_value=0,transition_steps=4", 1.0)(1), 0.75);
  EXPECT_DOUBLE_EQ(parse_schedule("exponential:decay_rate=0.5,transition_steps=1", 1.0)(2), 0.25);
  auto expect_message = [](const std::string& spec, const std::string& part) {
    try {
      parse_schedule(spec, 0.1);
      ADD_FAILURE() << spec;
    } catch (const std::invalid_argument& e) {
      EXPECT_THAT(e.what(), ::testing::HasSubstr(part)) << spec;
    }
  };
  expect_message("cosinus", "unknown schedule 'cosinus'");
  expect_message("cosine:decay=3", "no option 'decay'");
  expect_message("cosine:decay_steps=x", "decay_steps = 'x' is not a number");
  expect_message("cosine:decay_steps=2.5", "not a whole number");
  expect_message("cosine:decay_steps=0", "decay_steps = 0");
  expect_message("step:gamma", "not key=value");
  EXPECT_THROW(step_decay(0.1)(-1), std::invalid_argument);
}

TEST(Schedules, AScheduledOptimizerSetsTheRateBeforeEachStep) {
  // SGD on p with gradient 1: each step subtracts that step's rate.
  auto opt = scheduled(sgd({.lr = 1.0}), step_decay(1.0, 2, 0.5));
  std::vector<float> p{0.0f}, g{1.0f};
  std::vector<float> seen;
  for (int t = 0; t < 5; ++t) {
    const float before = p[0];
    opt->step(p, g);
    seen.push_back(before - p[0]);
  }
  EXPECT_EQ(seen, (std::vector<float>{1, 1, 0.5f, 0.5f, 0.25f}));
  EXPECT_EQ(opt->name(), "sgd");
  EXPECT_THAT(opt->config(), ::testing::HasSubstr("with step_decay(init=1, step_size=2, gamma=0.5)"));
  EXPECT_EQ(opt->learning_rate(), 0.25);
  // A restored step count resumes the schedule.
  auto resumed = scheduled(sgd({.lr = 1.0}), step_decay(1.0, 2, 0.5));
  resumed->set_steps(4);
  std::vector<float> q{0.0f};
  resumed->step(q, g);
  EXPECT_EQ(q[0], -0.25f);
  resumed->set_capturable(true);
  EXPECT_THROW(resumed->step(q, g), std::invalid_argument);
}

TEST(Schedules, ReduceOnPlateauAsTorch) {
  // torch.optim.lr_scheduler.ReduceLROnPlateau(factor=0.1, patience=2, threshold=1e-4): cut after
  // the third epoch without a relative improvement of 1e-4; cooldown 1 skips one epoch's count.
  ReduceOnPlateau r(1.0, 0.1, 2, 1e-4, 1);
  std::vector<double> lrs;
  for (double v : {1.0, 0.9, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.5}) lrs.push_back(r.update(v));
  EXPECT_THAT(lrs, ::testing::Pointwise(::testing::DoubleEq(),
                                        std::vector<double>{1, 1, 1, 1, 0.1, 0.1, 0.1, 0.1, 0.01, 0.01}));
  EXPECT_THROW(ReduceOnPlateau(1.0, 1.5), std::invalid_argument);
}

TEST(Minimize, FindsTheMinimumOfAQuadratic) {
  // f(x) = Σ (x - c)² from tensor ops; Adam walks to c.
  const Tensor c = Tensor::from_vector({3}, std::vector<float>{1, -2, 0.5f});
  auto f = [&c](const Tensor& x) { return sum(square(x - c)); };
  Tensor x = Tensor::zeros({3});
  auto opt = adam({.lr = 0.05});
  MinimizeResult r = minimize(f, x, *opt, 1000);
  EXPECT_EQ(r.steps, 1000);
  EXPECT_LT(r.loss, 1e-6);
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(x.to_vector()[i], c.to_vector()[i], 1e-3);
  EXPECT_EQ(opt->steps(), 1000);
  EXPECT_THROW(minimize([](const Tensor& v) { return v * 2.0f; }, x, *opt, 1), std::invalid_argument);
  EXPECT_THROW(minimize(f, x, *opt, -1), std::invalid_argument);
}

TEST(Minimize, StopsWhenTheLossIsNotFinite) {
  // SGD with a huge rate throws x = 1 to -2e30, where x² overflows f32.
  Tensor x = Tensor::full({1}, 1.0);
  auto opt = sgd({.lr = 1e30});
  MinimizeResult r = minimize([](const Tensor& v) { return sum(square(v)); }, x, *opt, 50);
  EXPECT_EQ(r.steps, 1);
  EXPECT_TRUE(std::isinf(r.loss));
}

}  // namespace
