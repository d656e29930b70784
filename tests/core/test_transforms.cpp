// Every optimizer over 20 steps against PyTorch or the paper's formula
// (tests/fixtures/make_optimizer_fixtures.py), the update transforms, parameter groups.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <set>
#include <fstream>
#include <nlohmann/json.hpp>

#include "../support/compare.h"
#include "axon/allocator.h"
#include "axon/optimizers.h"
#include "axon/transforms.h"

using namespace axon;
using nlohmann::json;

namespace {

using axon::testing::load_fixture;

double get(const json& h, const char* key, double fallback) { return h.contains(key) ? h[key].get<double>() : fallback; }

std::unique_ptr<Optimizer> from_case(const std::string& kind, const json& h) {
  const double lr = h["lr"];
  if (kind == "sgd")
    return sgd({.lr = lr, .momentum = get(h, "momentum", 0), .weight_decay = get(h, "weight_decay", 0),
                .nesterov = h.value("nesterov", false)});
  if (kind == "adam") return adam({.lr = lr});
  if (kind == "adamw") return adamw({.lr = lr, .weight_decay = get(h, "weight_decay", 1e-2)});
  if (kind == "adagrad")
    return adagrad({.lr = lr, .lr_decay = get(h, "lr_decay", 0), .weight_decay = get(h, "weight_decay", 0),
                    .initial_accumulator_value = h["initial_accumulator_value"], .eps = h["eps"]});
  if (kind == "rmsprop")
    return rmsprop({.lr = lr, .decay = h["decay"], .eps = get(h, "eps", 1e-8), .weight_decay = get(h, "weight_decay", 0),
                    .momentum = get(h, "momentum", 0), .centered = h.value("centered", false)});
  if (kind == "radam")
    return radam({.lr = lr, .beta2 = get(h, "beta2", 0.999), .weight_decay = get(h, "weight_decay", 0)});
  if (kind == "adamax")
    return adamax({.lr = lr, .beta2 = get(h, "beta2", 0.999), .eps = get(h, "eps", 1e-8),
                   .weight_decay = get(h, "weight_decay", 0)});
  if (kind == "nadam")
    return nadam({.lr = lr, .weight_decay = get(h, "weight_decay", 0), .momentum_decay = get(h, "momentum_decay", 4e-3)});
  if (kind == "adabelief")
    return adabelief({.lr = lr, .eps = get(h, "eps", 0), .eps_root = get(h, "eps_root", 1e-16),
                      .weight_decay = get(h, "weight_decay", 0)});
  if (kind == "fromage") return fromage({.lr = lr});
  if (kind == "lamb") return lamb({.lr = lr, .weight_decay = get(h, "weight_decay", 0)});
  if (kind == "noisy_sgd")
    return noisy_sgd({.lr = lr, .eta = h["eta"], .gamma = h["gamma"], .seed = h["seed"].get<uint64_t>()});
  if (kind == "yogi") return yogi({.lr = lr});
  if (kind == "lion") return lion({.lr = lr, .weight_decay = get(h, "weight_decay", 0)});
  throw std::runtime_error("no optimizer " + kind);
}

TEST(Transforms, EveryOptimizerMatchesItsReferenceFor20Steps) {
  const json f = load_fixture("optimizer_trajectories.json");
  std::set<std::string> seen;
  for (const json& c : f["cases"]) {
    const std::string name = c["name"];
    SCOPED_TRACE(name + " vs " + c["reference"].get<std::string>());
    seen.insert(c["optimizer"].get<std::string>());
    auto opt = from_case(c["optimizer"], c["hyper"]);
    std::vector<float> p = f["initial_params"].get<std::vector<float>>();
    ASSERT_EQ(c["steps"].size(), 20u);
    double worst = 0.0;
    for (size_t t = 0; t < c["steps"].size(); ++t) {
      const std::vector<float> g = f["grads"][t].get<std::vector<float>>();
      opt->step(p, g);
      const std::vector<float> want = c["steps"][t].get<std::vector<float>>();
      for (size_t i = 0; i < p.size(); ++i) {
        const double err = std::fabs(p[i] - want[i]) / std::max(1.0, std::fabs(static_cast<double>(want[i])));
        worst = std::max(worst, err);
        EXPECT_LE(err, 1e-5) << "step " << t + 1 << " element " << i << ": " << p[i] << " vs " << want[i];
      }
    }
    EXPECT_EQ(opt->nonfinite_flag().item(), 0.0f);
    char text[32];
    std::snprintf(text, sizeof text, "%.2e", worst);
    RecordProperty(name, text);
  }
  for (const std::string& n : optimizer_names()) EXPECT_TRUE(seen.count(n)) << "no fixture for " << n;
}

TEST(Transforms, TheFusedOptimizersEqualTheirChains) {
  // sgd, adam and adamw run one fused kernel; as chains of transforms they take the same steps (to
  // f32 rounding: the chain rounds after each pass).
  const json f = load_fixture("optimizer_trajectories.json");
  struct Pair {
    std::unique_ptr<Optimizer> fused, chained;
  };
  std::vector<Pair> pairs;
  pairs.push_back({sgd({.lr = 0.05, .momentum = 0.9, .nesterov = true}),
                   chain_optimizer("sgd_chain", 0.05, chain({trace(0.9, true), scale_by_learning_rate()}))});
  pairs.push_back({adam({.lr = 0.01, .weight_decay = 0.1}),
                   chain_optimizer("adam_chain", 0.01,
                                   chain({add_decayed_weights(0.1), scale_by_adam(), scale_by_learning_rate()}))});
  pairs.push_back({adamw({.lr = 0.01, .weight_decay = 0.1}),
                   chain_optimizer("adamw_chain", 0.01,
                                   chain({scale_by_adam(), add_decayed_weights(0.1), scale_by_learning_rate()}))});
  for (Pair& pr : pairs) {
    SCOPED_TRACE(pr.fused->name());
    std::vector<float> a = f["initial_params"].get<std::vector<float>>(), b = a;
    for (const json& g : f["grads"]) {
      const std::vector<float> gv = g.get<std::vector<float>>();
      pr.fused->step(a, gv);
      pr.chained->step(b, gv);
    }
    for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 2e-6 * std::max(1.0f, std::fabs(a[i])));
  }
}

TEST(Transforms, ChainsNameTheirStateAndConfig) {
  auto opt = rmsprop({.lr = 0.01, .momentum = 0.9, .centered = true});
  std::vector<float> p{1, 2}, g{0.1f, 0.2f};
  opt->step(p, g);
  std::vector<std::string> names;
  for (auto& [n, b] : opt->state()) {
    names.push_back(n);
    EXPECT_EQ(b->numel(), 2);
  }
  EXPECT_THAT(names, ::testing::ElementsAre("1.square_avg", "1.grad_avg", "2.momentum_buffer"));
  EXPECT_EQ(opt->config(),
            "rmsprop(lr=0.01, decay=0.9, eps=1e-08, weight_decay=0, momentum=0.9, centered=true, nesterov=false, "
            "initial_scale=0)");
  EXPECT_EQ(chain({clip(1.0), scale(2.0)})->config(), "chain(clip(delta=1), scale(factor=2))");
}

TEST(Transforms, RestoredStateContinuesTheTrajectory) {
  for (const std::string& name : optimizer_names()) {
    SCOPED_TRACE(name);
    std::vector<float> a{1, -2, 3}, g{0.5f, -0.25f, 0.125f};
    auto first = make_optimizer(name, 0.01);
    for (int t = 0; t < 3; ++t) first->step(a, g);
    std::vector<float> b = a;
    auto resumed = make_optimizer(name, 0.01);
    auto from = first->state(), to = resumed->state();
    ASSERT_EQ(from.size(), to.size());
    for (size_t i = 0; i < from.size(); ++i) *to[i].second = from[i].second->clone();
    resumed->set_steps(first->steps());
    first->step(a, g);
    resumed->step(b, g);
    EXPECT_EQ(a, b);
  }
}

TEST(Transforms, BadOptionsNameTheOptimizerOptionAndValue) {
  auto expect_message = [](auto make, std::vector<std::string> parts) {
    try {
      make();
      ADD_FAILURE() << "accepted";
    } catch (const std::invalid_argument& e) {
      for (const std::string& p : parts) EXPECT_THAT(e.what(), ::testing::HasSubstr(p));
    }
  };
  expect_message([] { scale_by_adam(1.5); }, {"scale_by_adam", "b1", "1.5"});
  expect_message([] { radam({.beta2 = -0.1}); }, {"scale_by_radam", "b2", "-0.1"});
  expect_message([] { rmsprop({.weight_decay = -1}); }, {"rmsprop", "weight_decay", "-1"});
  expect_message([] { rmsprop({.nesterov = true}); }, {"rmsprop", "momentum"});
  expect_message([] { adagrad({.lr_decay = -0.5}); }, {"adagrad", "lr_decay", "-0.5"});
  expect_message([] { clip(-1.0); }, {"clip", "delta", "-1"});
  expect_message([] { scale_by_rms(0.9, 1e-50); }, {"scale_by_rms", "eps", "32-bit float"});
  expect_message([] { lion({.lr = -1}); }, {"learning rate", "-1"});
  expect_message([] { make_optimizer("adagrad9", 0.1); }, {"adagrad9", "noisy_sgd", "lion"});
  auto opt = lamb();
  std::vector<float> p(4, 1.0f), g(3, 0.0f);
  expect_message([&] { opt->step(p, g); }, {"lamb", "4", "3"});
  auto chained = yogi();
  chained->set_capturable(true);
  std::vector<float> g4(4, 0.1f);
  expect_message([&] { chained->step(p, g4); }, {"yogi", "capturable"});
}

TEST(Transforms, ARestoredBufferOfTheWrongSizeIsRejected) {
  auto opt = nadam();
  std::vector<float> p(10, 1.0f), g(10, 0.1f);
  *opt->state()[1].second = Tensor::zeros({3});
  try {
    opt->step(p, g);
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("exp_avg_sq"));
    EXPECT_THAT(e.what(), ::testing::HasSubstr("scale_by_nadam"));
  }
}

TEST(Transforms, ElementwiseTransforms) {
  Tensor p = Tensor::from_vector({4}, std::vector<float>{1, 2, 3, 4});
  StepContext ctx{1, 0.5, p};
  // init (the state and scratch buffers, like the updates), then one step.
  auto run = [&ctx](TransformPtr t, Tensor& u) {
    t->init(u);
    t->apply(u, ctx);
  };
  Tensor u = Tensor::from_vector({4}, std::vector<float>{-3, -0.5f, 0.5f, 3});
  run(clip(1.0), u);
  EXPECT_EQ(u.to_vector(), (std::vector<float>{-1, -0.5f, 0.5f, 1}));
  u = Tensor::from_vector({2}, std::vector<float>{3, 4});
  run(clip_by_global_norm(1.0), u);
  EXPECT_NEAR(u.to_vector()[0], 0.6f, 1e-7);
  EXPECT_NEAR(u.to_vector()[1], 0.8f, 1e-7);
  u = Tensor::from_vector({4}, std::vector<float>{1, 1, 1, 1});
  run(add_decayed_weights(0.1), u);
  EXPECT_EQ(u.to_vector(), (std::vector<float>{1.1f, 1.2f, 1.3f, 1.4f}));
  run(scale_by_learning_rate(2.0), u);  // -2·0.5
  EXPECT_EQ(u.to_vector(), (std::vector<float>{-1.1f, -1.2f, -1.3f, -1.4f}));
  auto sched = scale_by_schedule([](int64_t step) { return 1.0 / static_cast<double>(step + 2); });
  run(sched, u);
  EXPECT_NEAR(u.to_vector()[0], -0.55f, 1e-7);
  // centralize: a {2, 2} kernel (rows lose their mean) and a {2} bias (kept).
  Tensor w = Tensor::from_vector({6}, std::vector<float>{1, 3, 10, 20, 5, 6});
  run(centralize({{2, 2}, {2}}), w);
  EXPECT_EQ(w.to_vector(), (std::vector<float>{-1, 1, -5, 5, 5, 6}));
  EXPECT_THROW(run(centralize({{3}}), w), std::invalid_argument);
  // trust ratio: |p| / |u| = sqrt(30) / 2.
  u = Tensor::from_vector({4}, std::vector<float>{1, 1, 1, 1});
  run(scale_by_trust_ratio(), u);
  EXPECT_NEAR(u.to_vector()[0], std::sqrt(30.0) / 2.0, 1e-6);
}

TEST(Transforms, ParameterGroupsGiveEachGroupItsOwnRateAndDecay) {
  // dense.kernel (3 values) with AdamW decay 0.1, dense.bias (2 values) without decay.
  std::vector<std::pair<std::string, int64_t>> layout{{"dense.kernel", 3}, {"dense.bias", 2}};
  auto grouped = param_groups(layout, {{{"bias"}, [] { return adamw({.lr = 0.02, .weight_decay = 0.0}); }}},
                              [] { return adamw({.lr = 0.01, .weight_decay = 0.1}); });
  auto kernel = adamw({.lr = 0.01, .weight_decay = 0.1});
  auto bias = adamw({.lr = 0.02, .weight_decay = 0.0});
  std::vector<float> p{1, 2, 3, 4, 5}, g{0.1f, -0.2f, 0.3f, -0.4f, 0.5f};
  std::vector<float> k(p.begin(), p.begin() + 3), b(p.begin() + 3, p.end());
  for (int t = 0; t < 4; ++t) {
    if (t == 2) {  // a schedule halves the rate: both groups follow
      grouped->set_learning_rate(0.005);
      kernel->set_learning_rate(0.005);
      bias->set_learning_rate(0.01);
    }
    grouped->step(p, g);
    kernel->step(k, std::span<const float>(g).subspan(0, 3));
    bias->step(b, std::span<const float>(g).subspan(3));
  }
  for (int i = 0; i < 3; ++i) EXPECT_EQ(p[i], k[i]);
  for (int i = 0; i < 2; ++i) EXPECT_EQ(p[3 + i], b[i]);
  EXPECT_EQ(grouped->steps(), 4);
  std::vector<std::string> names;
  for (auto& [n, t] : grouped->state()) names.push_back(n);
  EXPECT_THAT(names, ::testing::ElementsAre("dense.kernel.exp_avg", "dense.kernel.exp_avg_sq", "dense.bias.exp_avg",
                                            "dense.bias.exp_avg_sq"));
  std::vector<float> p6(6), g6(6);
  EXPECT_THROW(grouped->step(p6, g6), std::invalid_argument);
  // A parameter that becomes inf raises the grouped flag.
  std::vector<float> huge{1, 2, 3, 4, 5}, inf_grad{0, 0, 0, 0, std::numeric_limits<float>::infinity()};
  auto plain = param_groups(layout, {{{"bias"}, [] { return sgd({.lr = 1.0}); }}}, [] { return sgd({.lr = 1.0}); });
  plain->step(huge, inf_grad);
  EXPECT_EQ(plain->nonfinite_flag().item(), 1.0f);
}

TEST(Transforms, NonfiniteParametersRaiseTheFlag) {
  for (const std::string& name : optimizer_names()) {
    SCOPED_TRACE(name);
    auto opt = make_optimizer(name, 0.1);
    std::vector<float> p{1, 2}, g{0.5f, std::numeric_limits<float>::quiet_NaN()};
    opt->step(p, g);
    EXPECT_EQ(opt->nonfinite_flag().item(), 1.0f);
    std::vector<float> q{1, 2}, h{0.5f, 0.25f};
    auto fresh = make_optimizer(name, 0.1);
    fresh->step(q, h);
    EXPECT_EQ(fresh->nonfinite_flag().item(), 0.0f);
  }
}

}  // namespace

namespace {

TEST(Transforms, AStepAllocatesNothingAfterTheFirst) {
  // The state is made by the first step; later steps run in place. With the allocator's cache
  // emptied, any allocation would reach the system and be counted.
  for (const std::string& name : optimizer_names()) {
    SCOPED_TRACE(name);
    auto opt = make_optimizer(name, 0.01);
    Tensor p = Tensor::full({1000}, 0.5), g = Tensor::full({1000}, 0.01);
    opt->step(p, g);
    empty_cache(Device::cpu());
    const AllocatorStats before = allocator_stats(Device::cpu());
    for (int t = 0; t < 5; ++t) opt->step(p, g);
    const AllocatorStats after = allocator_stats(Device::cpu());
    EXPECT_EQ(after.device_malloc_calls, before.device_malloc_calls);
    EXPECT_EQ(after.allocated_bytes, before.allocated_bytes);
  }
}

}  // namespace

namespace {

TEST(Transforms, AShardStepsLikeTheWholeForElementwiseOptimizers) {
  // ZeRO: a rank steps its slice of the flat buffer. Exact for every element-wise chain; lamb and
  // fromage take norms over the buffer given, and noisy_sgd draws by element index in it.
  std::vector<float> whole{1, -2, 3, -4, 5, -6, 0.5f}, grads{0.1f, 0.2f, -0.3f, 0.4f, -0.5f, 0.6f, -0.05f};
  for (const std::string& name : optimizer_names()) {
    if (name == "lamb" || name == "fromage" || name == "noisy_sgd") continue;
    SCOPED_TRACE(name);
    std::vector<float> w = whole, left(whole.begin(), whole.begin() + 3), right(whole.begin() + 3, whole.end());
    auto a = make_optimizer(name, 0.01), b = make_optimizer(name, 0.01), c = make_optimizer(name, 0.01);
    for (int t = 0; t < 4; ++t) {
      a->step(w, grads);
      b->step(left, std::span<const float>(grads).subspan(0, 3));
      c->step(right, std::span<const float>(grads).subspan(3));
    }
    for (int i = 0; i < 3; ++i) EXPECT_EQ(w[i], left[i]);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(w[3 + i], right[i]);
  }
}

}  // namespace
