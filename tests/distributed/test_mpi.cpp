// Runs under `mpirun -np 2`: real collectives and the data-parallel equivalence proof.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>

#include "axon/communicator.h"
#include "axon/data_parallel.h"
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

// A synthetic dataset: every rank makes the same one from the seed.
static data::Dataset synthetic(size_t count) {
  data::Dataset ds;
  ds.count = count;
  ds.sample_shape = {12};
  ds.sample_size = 12;
  ds.num_classes = 3;
  Generator gen(2024);
  ds.images.resize(count * 12);
  ds.labels.resize(count);
  for (float& v : ds.images) v = gen.uniform(-1, 1);
  for (size_t i = 0; i < count; ++i) ds.labels[i] = (ds.images[i * 12] + ds.images[i * 12 + 1] > 0) + (ds.images[i * 12 + 2] > 0.5f);
  return ds;
}

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
