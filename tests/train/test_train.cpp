#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "../support/gradcheck.h"
#include "axon/losses.h"
#include "axon/metrics.h"
#include "axon/trainer.h"

using namespace axon;
using ::testing::HasSubstr;

TEST(SoftmaxCrossEntropy, MatchesPyTorch) {
  std::ifstream in(std::string(AXON_SOURCE_DIR) + "/tests/fixtures/losses.json");
  ASSERT_TRUE(in) << "missing tests/fixtures/losses.json";
  nlohmann::json fixture = nlohmann::json::parse(in);
  ASSERT_GE(fixture["softmax_cross_entropy"].size(), 4u);
  for (const auto& c : fixture["softmax_cross_entropy"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    const int64_t batch = c["batch"], classes = c["classes"];
    Tensor logits = Tensor::from_vector({batch, classes}, c["logits"].get<std::vector<float>>()).set_requires_grad();
    std::vector<int32_t> labels = c["labels"].get<std::vector<int32_t>>();
    Tensor loss = softmax_cross_entropy(logits, labels);
    const double expected = c["loss"];
    EXPECT_TRUE(std::isfinite(loss.item()));
    EXPECT_NEAR(loss.item(), expected, 1e-5 * std::max(1.0, std::abs(expected)));
    loss.backward();
    std::vector<float> grad = c["grad"].get<std::vector<float>>();
    for (size_t i = 0; i < grad.size(); ++i) EXPECT_NEAR(logits.grad().data()[i], grad[i], 1e-6) << "element " << i;
  }
}

TEST(SoftmaxCrossEntropy, GradientMatchesFiniteDifferencesAndComposes) {
  Tensor logits = axon::testing::random_tensor({5, 4}, 3, true, -2, 2);
  std::vector<int32_t> labels{0, 3, 1, 2, 3};
  axon::testing::expect_gradients_match(
      [&](const std::vector<Tensor>& x) { return softmax_cross_entropy(x[0] * 2.0f, labels); }, {logits});
  // Same value as the unfused log_softmax formulation.
  Tensor fused = softmax_cross_entropy(logits, labels);
  Tensor logp = log_softmax(logits);
  double ref = 0;
  for (int r = 0; r < 5; ++r) ref -= logp.data()[r * 4 + labels[r]];
  EXPECT_NEAR(fused.item(), ref / 5, 1e-6);
}

TEST(SoftmaxCrossEntropy, BadLabelsAreClearErrors) {
  Tensor logits = Tensor::zeros({2, 3});
  std::vector<int32_t> bad{0, 3};
  try {
    softmax_cross_entropy(logits, bad);
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr("label 3 at row 1"));
  }
  std::vector<int32_t> short_labels{0};
  EXPECT_THROW(softmax_cross_entropy(logits, short_labels), std::invalid_argument);
  EXPECT_THROW(softmax_cross_entropy(Tensor::zeros({6}), short_labels), std::invalid_argument);
}

TEST(Metrics, AccuracyCountsArgmaxHits) {
  Tensor scores = Tensor::from_vector({3, 3}, {0.1f, 0.8f, 0.1f, 0.9f, 0.05f, 0.05f, 0.2f, 0.3f, 0.5f});
  std::vector<int32_t> labels{1, 0, 0};
  EXPECT_EQ(count_correct(scores, labels), 2);
  EXPECT_NEAR(accuracy(scores, labels), 2.0 / 3.0, 1e-12);
  EXPECT_NEAR(mean_squared_error(Tensor::from_vector({2}, {1, 3}), Tensor::from_vector({2}, {0, 1})).item(), 2.5, 1e-6);
}

// A small separable problem: class = argmax of 4 fixed random projections.
static data::Dataset synthetic(size_t count, uint64_t seed) {
  data::Dataset ds;
  ds.count = count;
  ds.sample_shape = {8};
  ds.sample_size = 8;
  ds.num_classes = 4;
  Generator gen(seed), proj_gen(99);
  Tensor proj = uniform({8, 4}, -1, 1, proj_gen);
  ds.images.resize(count * 8);
  ds.labels.resize(count);
  for (size_t i = 0; i < count; ++i) {
    float best = -1e9f;
    for (int j = 0; j < 8; ++j) ds.images[i * 8 + j] = gen.uniform(-1, 1);
    for (int c = 0; c < 4; ++c) {
      float s = 0;
      for (int j = 0; j < 8; ++j) s += ds.images[i * 8 + j] * proj.data()[j * 4 + c];
      if (s > best) best = s, ds.labels[i] = c;
    }
  }
  return ds;
}

TEST(Trainer, LearnsASeparableProblemAndReportsConsistentNumbers) {
  data::Dataset train = synthetic(2000, 1), test = synthetic(500, 2);
  Model model = input({-1, 8}) | dense(32, Activation::relu) | dense(4);
  Parameters params = init(model, 0);
  auto opt = adam({.lr = 1e-2f});
  auto comm = make_local_communicator();
  Trainer trainer(model, params, *opt, *comm, {.epochs = 5, .batch_size = 32, .progress = false});
  EvalResult before = trainer.evaluate(test);
  TrainResult result = trainer.fit(train, &test);
  ASSERT_EQ(result.epochs.size(), 5u);
  EXPECT_EQ(result.train_samples, 5 * 2000);
  EXPECT_LT(result.epochs.back().train_loss, result.epochs.front().train_loss);
  ASSERT_TRUE(result.epochs.back().test.accuracy && before.accuracy);
  EXPECT_GT(*result.epochs.back().test.accuracy, 0.9);
  EXPECT_GT(*result.epochs.back().test.accuracy, *before.accuracy);
  EXPECT_EQ(result.epochs.back().test.samples, 500);
  EXPECT_GT(result.samples_per_second(), 0);
  EvalResult after = trainer.evaluate(test);
  ASSERT_TRUE(after.accuracy);
  EXPECT_DOUBLE_EQ(*after.accuracy, *result.epochs.back().test.accuracy);
}

TEST(Trainer, BatchNormLearnsAndItsRunningStatisticsFollowTrainingInF32AndBf16) {
  // Training updates the model state (in bf16 mixed precision too: the compute copy shares the f32
  // master copy's state); evaluation uses it, and evaluating changes nothing.
  data::Dataset train = synthetic(1000, 1), test = synthetic(300, 2);
  Model model = input({-1, 8}) | dense(32) | batch_norm({.gamma_initializer = initializers::ones()}) | relu() | dense(4);
  for (DType compute : {DType::f32, DType::bf16}) {
    Parameters params = init(model, 0);
    const std::vector<float> initial = params.flat_state().to_vector();
    auto opt = adam({.lr = 1e-2f});
    auto comm = make_local_communicator();
    TrainOptions o{.epochs = 3, .batch_size = 32, .progress = false};
    o.compute_dtype = compute;
    Trainer trainer(model, params, *opt, *comm, o);
    TrainResult result = trainer.fit(train, &test);
    ASSERT_TRUE(result.epochs.back().test.accuracy);
    EXPECT_GT(*result.epochs.back().test.accuracy, 0.9) << dtype_name(compute);
    const std::vector<float> trained = params.flat_state().to_vector();
    EXPECT_NE(trained, initial) << dtype_name(compute);
    for (float v : trained) EXPECT_TRUE(std::isfinite(v));
    trainer.evaluate(test);
    EXPECT_EQ(params.flat_state().to_vector(), trained) << "evaluation changed the running statistics";
  }
}

TEST(Trainer, SameSeedIsBitIdentical) {
  data::Dataset train = synthetic(300, 3);
  Model model = input({-1, 8}) | dense(16, Activation::tanh) | dense(4);
  std::string hashes[2];
  for (auto& h : hashes) {
    Parameters params = init(model, 7);
    auto opt = sgd({.lr = 0.1f, .momentum = 0.9f});
    auto comm = make_local_communicator();
    Trainer(model, params, *opt, *comm, {.epochs = 2, .batch_size = 10, .seed = 5, .progress = false}).fit(train);
    h = parameters_sha256(params);
  }
  EXPECT_EQ(hashes[0], hashes[1]);
  EXPECT_EQ(hashes[0].size(), 64u);
}

TEST(Trainer, BadOptionsAreRejected) {
  Model model = input({-1, 8}) | dense(4);
  Parameters params = init(model, 0);
  auto opt = adam();
  auto comm = make_local_communicator();
  EXPECT_THROW(Trainer(model, params, *opt, *comm, {.epochs = 0}), std::invalid_argument);
  EXPECT_THROW(Trainer(model, params, *opt, *comm, {.batch_size = 0}), std::invalid_argument);
  // A dataset whose samples do not fit the model's input names the layer and both shapes.
  data::Dataset wrong = synthetic(10, 1);
  wrong.sample_size = 4;
  wrong.sample_shape = {4};
  wrong.images.resize(40);
  Trainer trainer(model, params, *opt, *comm, {.progress = false});
  try {
    trainer.fit(wrong);
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr("input_1 (input)"));
    EXPECT_THAT(e.what(), HasSubstr("{10, 4}"));
    EXPECT_THAT(e.what(), HasSubstr("{nil, 8}"));
  }
}

TEST(Checksums, FingerprintDependsOnLayoutOnly) {
  Model a = input({-1, 8}) | dense(4);
  Model b = input({-1, 8}) | dense(5);
  EXPECT_EQ(layout_fingerprint(init(a, 0)), layout_fingerprint(init(a, 1)));
  EXPECT_NE(layout_fingerprint(init(a, 0)), layout_fingerprint(init(b, 0)));
  EXPECT_NE(parameters_sha256(init(a, 0)), parameters_sha256(init(a, 1)));
}

TEST(Trainer, DatasetWhoseShapeFieldsDisagreeIsAnErrorNotACrash) {
  data::Dataset ds = synthetic(4, 1);
  ds.sample_shape = {};  // sample_size (8) and sample_shape disagree
  Model model = input({-1, 2, 4}) | flatten() | dense(4);
  Parameters params = init(model, 0);
  auto opt = adam();
  auto comm = make_local_communicator();
  Trainer trainer(model, params, *opt, *comm, {.progress = false});
  try {
    trainer.fit(ds);
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr("do not fill a batch"));
  }
}

// ---- Non-finite numbers stop training (docs/reliability.md) ----

static bool all_finite(const Parameters& params) {
  for (float v : const_cast<Parameters&>(params).values())
    if (!std::isfinite(v)) return false;
  return true;
}

TEST(Trainer, LossThatIsNaNFromStepOneStopsBeforeAnyUpdate) {
  data::Dataset train = synthetic(64, 1);
  Model model = input({-1, 8}) | dense(4);
  Parameters params = init(model, 0);
  const std::string before = parameters_sha256(params);
  auto opt = sgd({.lr = 0.1});
  auto comm = make_local_communicator();
  LossFn nan_loss = [](const Tensor& out, const Tensor& labels) {
    return softmax_cross_entropy(out, labels) * std::numeric_limits<float>::quiet_NaN();
  };
  Trainer trainer(model, params, *opt, *comm, {.epochs = 2, .batch_size = 16, .progress = false}, nan_loss);
  try {
    trainer.fit(train);
    FAIL() << "a NaN loss must stop training";
  } catch (const NonFiniteError& e) {
    EXPECT_EQ(e.epoch, 1);
    EXPECT_EQ(e.step, 1);
    EXPECT_TRUE(std::isnan(e.value));
    EXPECT_THAT(e.what(), HasSubstr("non-finite loss nan at epoch 1, step 1"));
    EXPECT_THAT(e.what(), HasSubstr("try a lower one"));
  }
  EXPECT_EQ(parameters_sha256(params), before) << "no optimizer step may apply a non-finite gradient";
  EXPECT_EQ(opt->steps(), 0);
}

TEST(Trainer, HugeLearningRateStopsAtTheFirstNonFiniteLossWithFiniteParameters) {
  data::Dataset train = synthetic(256, 1);
  Model model = input({-1, 8}) | dense(32, Activation::relu) | dense(32, Activation::relu) | dense(4);
  Parameters params = init(model, 0);
  auto opt = adam({.lr = 1e30});
  auto comm = make_local_communicator();
  Trainer trainer(model, params, *opt, *comm, {.epochs = 3, .batch_size = 16, .progress = false});
  try {
    trainer.fit(train);
    FAIL() << "lr 1e30 must diverge";
  } catch (const NonFiniteError& e) {
    EXPECT_EQ(e.epoch, 1);
    EXPECT_GE(e.step, 2);
    EXPECT_FALSE(std::isfinite(e.value));
    EXPECT_THAT(e.what(), HasSubstr("learning rate (1e+30) is probably too high"));
  }
  EXPECT_TRUE(all_finite(params));
}

TEST(Trainer, AnUpdateThatOverflowsTheParametersStopsEvenWithoutATestSet) {
  // Finite loss and gradient, but lr 3e38 overflows the Adam update: without a test set nothing
  // else would notice, and the run would end "successfully" with non-finite parameters.
  data::Dataset train = synthetic(64, 1);
  Model model = input({-1, 8}) | dense(4);
  Parameters params = init(model, 0);
  auto opt = adam({.lr = 3e38});
  auto comm = make_local_communicator();
  Trainer trainer(model, params, *opt, *comm, {.epochs = 1, .batch_size = 16, .progress = false});
  try {
    trainer.fit(train);
    FAIL() << "an overflowing update must stop training";
  } catch (const NonFiniteError& e) {
    EXPECT_EQ(e.epoch, 1);
    EXPECT_THAT(e.what(), HasSubstr("parameters are not finite after the optimizer step at epoch 1, step"));
  }
}

TEST(Trainer, NonFiniteEvaluationLossIsAnErrorNotANumber) {
  data::Dataset test = synthetic(20, 2);
  test.source = "/data/t10k-images";
  Model model = input({-1, 8}) | dense(4);
  Parameters params = init(model, 0);
  params.values()[0] = std::numeric_limits<float>::infinity();
  params.values()[1] = -std::numeric_limits<float>::infinity();
  auto opt = adam();
  auto comm = make_local_communicator();
  Trainer trainer(model, params, *opt, *comm, {.progress = false});
  try {
    trainer.evaluate(test);
    FAIL();
  } catch (const NonFiniteError& e) {
    EXPECT_THAT(e.what(), HasSubstr("non-finite evaluation loss"));
    EXPECT_THAT(e.what(), HasSubstr("/data/t10k-images"));
  }
}

// ---- Metrics over zero samples are not measured ----

TEST(Trainer, EmptyTestSetIsReportedAsNotMeasured) {
  data::Dataset train = synthetic(64, 1), test = synthetic(0, 2);
  Model model = input({-1, 8}) | dense(4);
  Parameters params = init(model, 0);
  auto opt = adam();
  auto comm = make_local_communicator();
  Trainer trainer(model, params, *opt, *comm, {.batch_size = 16, .progress = false});
  TrainResult result = trainer.fit(train, &test);
  ASSERT_EQ(result.epochs.size(), 1u);
  EXPECT_EQ(result.epochs[0].test.samples, 0);
  EXPECT_FALSE(result.epochs[0].test.loss.has_value());
  EXPECT_FALSE(result.epochs[0].test.accuracy.has_value());
  EvalResult direct = trainer.evaluate(test);
  EXPECT_FALSE(direct.loss.has_value());
  EXPECT_FALSE(direct.accuracy.has_value());
}

TEST(Trainer, EmptyTrainingSetNamesItsSourceNotOurInternals) {
  data::Dataset train = synthetic(0, 1);
  train.source = "/data/fmnist/train-images-idx3-ubyte.gz";
  Model model = input({-1, 8}) | dense(4);
  Parameters params = init(model, 0);
  auto opt = adam();
  auto comm = make_local_communicator();
  Trainer trainer(model, params, *opt, *comm, {.progress = false});
  try {
    trainer.fit(train);
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr("training set /data/fmnist/train-images-idx3-ubyte.gz has no samples"));
    EXPECT_THAT(e.what(), ::testing::Not(HasSubstr("DistributedSampler")));
  }
}
