// Runs under `mpirun -np 2`: real collectives and the data-parallel equivalence proof.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <limits>

#include "axon/agreement.h"
#include "../support/synthetic_data.h"
#include "axon/communicator.h"
#include "axon/data_parallel.h"
#include "axon/losses.h"
#include "axon/model_tools.h"
#include "axon/ops.h"
#include "axon/trainer.h"

using namespace axon;
using ::testing::HasSubstr;

static Communicator& world() {
  static std::unique_ptr<Communicator> comm = make_mpi_communicator();
  return *comm;
}

TEST(Mpi, WorldHasTwoRanks) {
  EXPECT_EQ(world().backend(), "mpi");
  ASSERT_EQ(world().size(), 2) << "run this test with mpirun -np 2";
  EXPECT_TRUE(launched_with_ranks());
}

TEST(Mpi, AllreduceSumMaxMin) {
  const int r = world().rank();
  std::vector<float> f{1.0f + r, 10.0f * r, -1.0f * r};
  world().allreduce(f, ReduceOp::sum);
  EXPECT_EQ(f, (std::vector<float>{3, 10, -1}));
  std::vector<double> d{1.0 + r, -5.0 * r};
  world().allreduce(d, ReduceOp::max);
  EXPECT_EQ(d, (std::vector<double>{2, 0}));
  std::vector<double> m{1.0 + r};
  world().allreduce(m, ReduceOp::min);
  EXPECT_EQ(m[0], 1.0);
  std::vector<float> empty;
  world().allreduce(empty);
}

TEST(Mpi, BroadcastFromEitherRoot) {
  for (int root = 0; root < 2; ++root) {
    std::vector<float> v(5, static_cast<float>(world().rank() * 100 + 7));
    world().broadcast(v, root);
    for (float x : v) EXPECT_EQ(x, root * 100 + 7);
    std::vector<std::byte> bytes(3, std::byte{static_cast<unsigned char>(world().rank())});
    world().broadcast(bytes, root);
    for (std::byte b : bytes) EXPECT_EQ(static_cast<int>(b), root);
  }
  world().barrier();
}

TEST(Mpi, BadRootIsAnErrorNamingTheRank) {
  std::vector<float> v(1);
  try {
    world().broadcast(v, 5);
    FAIL();
  } catch (const CommError& e) {
    EXPECT_THAT(e.what(), HasSubstr("root 5"));
    EXPECT_THAT(e.what(), HasSubstr("rank " + std::to_string(world().rank())));
  }
}

TEST(DataParallel, AveragesGradientsAndBroadcastsParameters) {
  const int r = world().rank();
  std::vector<float> params(4, static_cast<float>(r + 1)), grads{1.0f * r, 2.0f, 4.0f * r, -1.0f};
  DataParallel dp(world(), params, grads);
  dp.verify_layout(42);
  dp.broadcast_parameters();
  EXPECT_EQ(params, std::vector<float>(4, 1.0f));
  dp.average_gradients();
  EXPECT_EQ(grads, (std::vector<float>{0.5f, 2.0f, 2.0f, -1.0f}));
}

TEST(DataParallel, DifferentModelsOnDifferentRanksAreDetected) {
  std::vector<float> params(4), grads(4);
  DataParallel dp(world(), params, grads);
  try {
    dp.verify_layout(world().rank() == 0 ? 1 : 2);
    FAIL();
  } catch (const CommError& e) {
    EXPECT_THAT(e.what(), HasSubstr("rank 1 built a different model"));
  }
  std::vector<float> more(world().rank() == 0 ? 4 : 5), more_grads(more.size());
  DataParallel dp2(world(), more, more_grads);
  try {
    dp2.verify_layout(7);
    FAIL();
  } catch (const CommError& e) {
    EXPECT_THAT(e.what(), HasSubstr("rank 1 has 5 parameters but rank 0 has 4"));
  }
}

static data::Dataset synthetic(size_t count) { return axon::testing::synthetic_dataset(count, 2024); }

struct EquivalenceCase {
  std::string optimizer;
  size_t per_rank_batch;
  int epochs;
};

class Equivalence : public ::testing::TestWithParam<EquivalenceCase> {};

// The proof: 2 ranks with per-rank batch b reach the same parameters as 1 rank with
// batch 2b (the same samples make up each global batch; only summation order differs).
TEST_P(Equivalence, TwoRanksWithBatchBEqualOneRankWithBatch2B) {
  const EquivalenceCase c = GetParam();
  const data::Dataset train = synthetic(640);  // a multiple of 2b: no padded samples
  Model model = input({-1, 12}) | dense(16, Activation::tanh) | dense(3);

  auto run = [&](Communicator& comm, size_t batch) {
    Parameters params = init(model, 3);
    auto opt = make_optimizer(c.optimizer, 0.01f);
    Trainer trainer(model, params, *opt, comm, {.epochs = c.epochs, .batch_size = batch, .seed = 11, .progress = false});
    TrainResult result = trainer.fit(train);
    EXPECT_EQ(result.train_samples, 640 * c.epochs);
    return params;
  };
  Parameters distributed = run(world(), c.per_rank_batch);
  auto local = make_local_communicator();
  Parameters single = run(*local, 2 * c.per_rank_batch);

  ASSERT_EQ(distributed.count(), single.count());
  float max_diff = 0;
  for (size_t i = 0; i < single.count(); ++i)
    max_diff = std::max(max_diff, std::abs(distributed.values()[i] - single.values()[i]));
  EXPECT_LT(max_diff, 1e-5f) << "rank " << world().rank();
  // And the ranks agree bit for bit with each other.
  std::string mine = parameters_sha256(distributed), theirs = mine;
  std::vector<std::byte> buf(64);
  std::memcpy(buf.data(), mine.data(), 64);
  world().broadcast(buf, 0);
  theirs.assign(reinterpret_cast<const char*>(buf.data()), 64);
  EXPECT_EQ(mine, theirs);
}

INSTANTIATE_TEST_SUITE_P(Optimizers, Equivalence,
                         ::testing::Values(EquivalenceCase{"sgd", 16, 2}, EquivalenceCase{"adam", 16, 2},
                                           EquivalenceCase{"adamw", 8, 1}));

// ---- Ranks that disagree (docs/reliability.md) ----

// Runs f on every rank and returns the CommError's message (failing when f does not throw).
template <class F>
static std::string comm_error_of(F&& f) {
  try {
    f();
  } catch (const CommError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a CommError on rank " << world().rank();
  return "";
}

TEST(Agreement, RanksThatAgreePass) {
  Agreement facts;
  facts.add_uint("train dataset size", 60000).add_double("lr", 1e-3).add_string("optimizer", "adam(lr=0.001)");
  facts.verify(world(), "test");
  Agreement none;
  none.verify(world(), "test");
}

TEST(Agreement, EveryDifferingFactIsNamedWithEveryRanksValueOnEveryRank) {
  const int r = world().rank();
  Agreement facts;
  facts.add_uint("train dataset size", r == 0 ? 60000 : 1000)
      .add_uint("epochs", 2)
      .add_double("lr", r == 0 ? 1e-3 : 0.5)
      .add_string("optimizer", r == 0 ? "adam(lr=0.001)" : "sgd(lr=0.5)");
  const std::string msg = comm_error_of([&] { facts.verify(world(), "trainer"); });
  EXPECT_THAT(msg, HasSubstr("trainer: ranks disagree on train dataset size: rank 0 has 60000, rank 1 has 1000"));
  EXPECT_THAT(msg, HasSubstr("ranks disagree on lr: rank 0 has 0.001, rank 1 has 0.5"));
  EXPECT_THAT(msg, HasSubstr("ranks disagree on optimizer: rank 0 has 'adam(lr=0.001)', rank 1 has 'sgd(lr=0.5)'"));
  EXPECT_THAT(msg, ::testing::Not(HasSubstr("epochs")));
  EXPECT_THAT(msg, HasSubstr("seen on rank " + std::to_string(r)));
  // The ranks are still in step: a following collective matches.
  std::vector<double> one{1.0};
  world().allreduce(one);
  EXPECT_EQ(one[0], 2.0);
}

TEST(Agreement, DifferentListsOfFactsAreAnErrorNotAMismatchedCollective) {
  Agreement facts;
  facts.add_uint("a", 1);
  if (world().rank() == 1) facts.add_uint("b", 2);
  const std::string msg = comm_error_of([&] { facts.verify(world(), "trainer"); });
  EXPECT_THAT(msg, HasSubstr("ranks check different lists of facts"));
}

TEST(Trainer, RanksWithDifferentDatasetsFailOnBothRanksBeforeTheFirstCollective) {
  const data::Dataset train = synthetic(world().rank() == 0 ? 640 : 100);
  Model model = input({-1, 12}) | dense(16, Activation::tanh) | dense(3);
  Parameters params = init(model, 3);
  auto opt = make_optimizer("adam", 0.01);
  Trainer trainer(model, params, *opt, world(), {.epochs = 1, .batch_size = 16, .progress = false});
  const std::string msg = comm_error_of([&] { trainer.fit(train); });
  EXPECT_THAT(msg, HasSubstr("ranks disagree on train dataset size: rank 0 has 640, rank 1 has 100"));
  EXPECT_THAT(msg, HasSubstr("ranks disagree on steps per epoch: rank 0 has 20, rank 1 has 4"));
  EXPECT_THAT(msg, ::testing::ContainsRegex("ranks disagree on train label checksum: rank 0 has 0x[0-9a-f]{16}, rank 1 has 0x"));
  EXPECT_EQ(opt->steps(), 0);
}

TEST(Trainer, RanksWithDifferentOptionsOrOptimizersFailOnBothRanks) {
  const data::Dataset train = synthetic(64);
  Model model = input({-1, 12}) | dense(3);
  const int r = world().rank();
  {
    Parameters params = init(model, 3);
    auto opt = make_optimizer("adam", 0.01);
    Trainer trainer(model, params, *opt, world(), {.epochs = 1 + r, .batch_size = 16, .progress = false});
    EXPECT_THAT(comm_error_of([&] { trainer.fit(train); }), HasSubstr("ranks disagree on epochs: rank 0 has 1, rank 1 has 2"));
  }
  {
    Parameters params = init(model, 3);
    auto opt = r == 0 ? make_optimizer("adam", 0.01) : make_optimizer("sgd", 0.01);
    Trainer trainer(model, params, *opt, world(), {.epochs = 1, .batch_size = 16, .progress = false});
    EXPECT_THAT(comm_error_of([&] { trainer.fit(train); }),
                HasSubstr("ranks disagree on optimizer: rank 0 has 'adam(lr=0.01,"));
  }
}

TEST(Trainer, EvaluateOnDifferentDatasetsFailsOnBothRanks) {
  const data::Dataset test = synthetic(world().rank() == 0 ? 50 : 60);
  Model model = input({-1, 12}) | dense(3);
  Parameters params = init(model, 3);
  auto opt = make_optimizer("adam", 0.01);
  Trainer trainer(model, params, *opt, world(), {.progress = false});
  EXPECT_THAT(comm_error_of([&] { trainer.evaluate(test); }),
              HasSubstr("ranks disagree on evaluation dataset size: rank 0 has 50, rank 1 has 60"));
}

TEST(Trainer, ModelStateIsAveragedOverRanksSoEveryRankEvaluatesTheSameModel) {
  // Each rank's batch_norm statistics follow its own shard; fit() averages them at each epoch end
  // (and evaluation and checkpoints do), so both ranks end with the same state.
  const data::Dataset train = synthetic(256);
  Model model = input({-1, 12}) | batch_norm({.momentum = 1.0}) | dense(3);
  Parameters params = init(model, 3);
  auto opt = make_optimizer("adam", 0.01);
  Trainer trainer(model, params, *opt, world(), {.epochs = 1, .batch_size = 16, .seed = 2, .progress = false});
  trainer.fit(train);
  std::vector<float> state = params.flat_state().to_vector();
  ASSERT_EQ(state.size(), 24u);
  std::vector<float> lo = state, hi = state;
  world().allreduce(lo, ReduceOp::min);
  world().allreduce(hi, ReduceOp::max);
  EXPECT_EQ(lo, hi);
  EXPECT_NE(state, std::vector<float>(state.size(), state[0]));
}

// Frozen parameters on two ranks with the bucketed reducer (their gradients are never computed,
// so they are reduced as unused ones): they stay bit-identical, the rest trains alike everywhere.
TEST(Trainer, FrozenParametersStayPutOnEveryRankWithTheBucketedReducer) {
  const data::Dataset train = synthetic(128);
  Model model = input({-1, 12}) | dense(8, Activation::relu) | dense(3);
  Parameters params = init(model, 5);
  params.freeze(layers_named(params, {"dense_2"}));
  const std::vector<float> frozen = params["dense_2.kernel"].to_vector(), head = params["dense_4.kernel"].to_vector();
  auto opt = skip_frozen(params, make_optimizer("adam", 0.01));
  Trainer trainer(model, params, *opt, world(),
                  {.epochs = 1, .batch_size = 16, .seed = 2, .progress = false, .bucket_bytes = 64, .first_bucket_bytes = 64});
  trainer.fit(train);
  EXPECT_EQ(params["dense_2.kernel"].to_vector(), frozen);
  EXPECT_NE(params["dense_4.kernel"].to_vector(), head);
  std::vector<float> values = params.flat_values().to_vector(), lo = values, hi = values;
  world().allreduce(lo, ReduceOp::min);
  world().allreduce(hi, ReduceOp::max);
  EXPECT_EQ(lo, hi);
}

// ---- Non-finite numbers stop every rank at the same step ----

TEST(Trainer, NaNLossOnOneRankStopsBothRanksAtTheSameStep) {
  const data::Dataset train = synthetic(640);
  Model model = input({-1, 12}) | dense(16, Activation::tanh) | dense(3);
  for (int bad_step : {1, 3}) {
    SCOPED_TRACE("NaN from step " + std::to_string(bad_step) + " on rank 1");
    Parameters params = init(model, 3);
    auto opt = make_optimizer("sgd", 0.01);
    int calls = 0;
    LossFn loss = [&](const Tensor& out, const Tensor& labels) {
      Tensor l = softmax_cross_entropy(out, labels);
      return (world().rank() == 1 && ++calls >= bad_step) ? l * std::numeric_limits<float>::quiet_NaN() : l;
    };
    Trainer trainer(model, params, *opt, world(), {.epochs = 2, .batch_size = 16, .progress = false}, loss);
    int epoch = -1;
    int64_t step = -1;
    std::string msg;
    try {
      trainer.fit(train);
      ADD_FAILURE() << "rank " << world().rank() << " did not stop";
    } catch (const NonFiniteError& e) {
      epoch = e.epoch;
      step = e.step;
      msg = e.what();
    }
    EXPECT_EQ(epoch, 1);
    EXPECT_EQ(step, bad_step);
    EXPECT_EQ(opt->steps(), bad_step - 1);
    if (world().rank() == 1) EXPECT_THAT(msg, HasSubstr("non-finite loss nan"));
    else EXPECT_THAT(msg, HasSubstr("non-finite gradient"));
    EXPECT_THAT(msg, HasSubstr("try a lower one"));
    // Both ranks stopped in step: the next collective matches.
    std::vector<double> one{1.0};
    world().allreduce(one);
    EXPECT_EQ(one[0], 2.0);
  }
}

// ---- AXON_DISTRIBUTED_DEBUG: per-collective checks ----

TEST(CollectiveChecks, MismatchedCountsThrowOnBothRanksWithoutWritingPastTheBuffer) {
  auto checked = with_collective_checks(make_mpi_communicator());
  const int r = world().rank();
  std::vector<float> buf(static_cast<size_t>(4 + r), 1.0f);
  const std::string msg = comm_error_of([&] { checked->allreduce(buf); });
  EXPECT_THAT(msg, HasSubstr("rank 0 calls allreduce(float, sum) of 4 elements, rank 1 calls allreduce(float, sum) of 5 elements"));
  EXPECT_THAT(msg, HasSubstr("of rank " + std::to_string(r)));
  EXPECT_EQ(buf, std::vector<float>(static_cast<size_t>(4 + r), 1.0f)) << "the mismatched call must not be made";

  // Different operations and dtypes are caught too.
  std::vector<double> d(3, 1.0);
  std::vector<float> f(3, 1.0f);
  const std::string msg2 = comm_error_of([&] {
    if (r == 0) checked->allreduce(d, ReduceOp::max);
    else checked->broadcast(f, 0);
  });
  EXPECT_THAT(msg2, HasSubstr("rank 0 calls allreduce(double, max) of 3 elements, rank 1 calls broadcast(float, root 0) of 3 elements"));

  // Matching calls go through.
  std::vector<float> ok{static_cast<float>(r)};
  checked->allreduce(ok);
  EXPECT_EQ(ok[0], 1.0f);
  checked->barrier();
}

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  world();  // MPI up before any test
  // Only rank 0 prints the usual report; other ranks print failures only.
  if (world().rank() != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  int failed = RUN_ALL_TESTS();
  // Every rank must pass: a failure on rank 1 alone fails the whole test.
  std::vector<double> any{static_cast<double>(failed)};
  world().allreduce(any, ReduceOp::max);
  return any[0] != 0 ? 1 : 0;
}
