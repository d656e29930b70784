// End-to-end checks of the example programs, run as a user would run them.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <zlib.h>

#include <csignal>

#include <filesystem>
#include <fstream>
#include <random>
#include <nlohmann/json.hpp>

#include "../support/process.h"

using ::testing::HasSubstr;
namespace fs = std::filesystem;

using Result = axon::testing::CommandResult;
using axon::testing::run_command;

static std::string bin(const std::string& name) { return std::string(AXON_BIN_DIR) + "/" + name; }

static nlohmann::json last_json_line(const std::string& output) {
  size_t end = output.find_last_not_of('\n');
  size_t start = output.rfind('\n', end);
  return nlohmann::json::parse(output.substr(start == std::string::npos ? 0 : start + 1, end - start));
}

static const char* kFashion = "/usr/share/datasets/fashion-mnist";

TEST(ReadmeModel, PrintsTheSummaryTable) {
  Result r = run_command(bin("readme_model"));
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.output,
            " Layer                 Shape        Parameters\n"
            " input_1 (input)       {nil, 784}   0\n"
            " dense_2 (dense)       {nil, 128}   100480\n"
            " dense_3 (dense)       {nil, 10}    1290\n"
            " softmax_4 (softmax)   {nil, 10}    0\n");
}

TEST(FashionMnist, UnknownFlagValuesAreRejected) {
  for (const char* args : {"--model resnet9000", "--optimizer lbfgs", "--epochs 0", "--batch-size -3", "--lr abc",
                           "--threads 0", "--no-such-flag"}) {
    Result r = run_command(bin("fashion_mnist") + " " + args);
    EXPECT_NE(r.code, 0) << args;
    EXPECT_FALSE(r.output.empty()) << args;
  }
  Result r = run_command(bin("fashion_mnist") + " --model resnet9000");
  EXPECT_THAT(r.output, HasSubstr("resnet9000"));
}

TEST(FashionMnist, MissingDatasetNamesTheFolder) {
  Result r = run_command(bin("fashion_mnist") + " --data /nonexistent/fmnist --no-progress");
  EXPECT_NE(r.code, 0);
  EXPECT_THAT(r.output, HasSubstr("/nonexistent/fmnist"));
  EXPECT_THAT(r.output, HasSubstr("error"));
}

TEST(FashionMnist, TruncatedDatasetIsAClearError) {
  if (!fs::exists(kFashion)) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  fs::path dir = fs::temp_directory_path() / ("axon_truncated_" + std::to_string(getpid()));
  fs::create_directories(dir);
  for (const char* f : {"train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"})
    fs::copy_file(fs::path(kFashion) / f, dir / f, fs::copy_options::overwrite_existing);
  // A train-images file cut short: a valid gzip of a truncated IDX payload.
  {
    gzFile in = gzopen((fs::path(kFashion) / "train-images-idx3-ubyte.gz").c_str(), "rb");
    gzFile out = gzopen((dir / "train-images-idx3-ubyte.gz").c_str(), "wb");
    std::vector<char> buf(100000);
    int n = gzread(in, buf.data(), static_cast<unsigned>(buf.size()));
    gzwrite(out, buf.data(), static_cast<unsigned>(n));
    gzclose(in);
    gzclose(out);
  }
  Result r = run_command(bin("fashion_mnist") + " --no-progress --data " + dir.string());
  fs::remove_all(dir);
  EXPECT_NE(r.code, 0);
  EXPECT_THAT(r.output, HasSubstr("train-images-idx3-ubyte.gz"));
  EXPECT_THAT(r.output, HasSubstr("truncated"));
}

TEST(FashionMnist, TwoRanksThroughTheLauncherTrainToTheTarget) {
  if (!fs::exists(kFashion)) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  Result r = run_command(bin("axonrun") + " -n 2 " + bin("fashion_mnist") +
                 " --model mlp --epochs 1 --batch-size 128 --optimizer adam --threads 1 --no-progress");
  ASSERT_EQ(r.code, 0) << r.output;
  nlohmann::json j = last_json_line(r.output);
  EXPECT_EQ(j["world_size"], 2);
  EXPECT_EQ(j["model"], "mlp");
  EXPECT_EQ(j["epochs"], 1);
  EXPECT_EQ(j["batch_size"], 128);
  EXPECT_GE(j["test_accuracy"].get<double>(), 0.80);
  EXPECT_GT(j["train_samples_per_s"].get<double>(), 0.0);
  EXPECT_EQ(j["params_sha256"].get<std::string>().size(), 64u);
  // The same run again gives bit-identical parameters.
  Result again = run_command(bin("axonrun") + " -n 2 " + bin("fashion_mnist") +
                     " --model mlp --epochs 1 --batch-size 128 --optimizer adam --threads 1 --no-progress");
  ASSERT_EQ(again.code, 0) << again.output;
  EXPECT_EQ(last_json_line(again.output)["params_sha256"], j["params_sha256"]);
}

TEST(FashionMnist, AFailedRankStopsTheWholeJobWithAnExplanation) {
  if (!fs::exists(kFashion)) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  // Rank 1 dies before joining; rank 0 would wait for it in its first collective forever.
  const std::string program = bin("fashion_mnist") + " --threads 1 --no-progress";
  Result r = run_command(bin("axonrun") + " -n 2 sh -c '[ \"$OMPI_COMM_WORLD_RANK\" = 1 ] && exit 7; exec " + program + "'");
  EXPECT_NE(r.code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("axonrun: job failed with exit code"));
  EXPECT_LT(r.seconds, 120.0) << "the job should stop when a rank fails, not hang";
}

// ---- Faults and bad input end to end (docs/reliability.md) ----

// A temporary Fashion-MNIST folder with `train` and `test` samples of random pixels and labels
// (plain IDX files), removed at the end of the test.
class SmallFashion {
 public:
  SmallFashion(uint32_t train, uint32_t test, uint32_t seed = 1) {
    std::string pattern = (fs::temp_directory_path() / "axon_small_fashion_XXXXXX").string();
    if (!mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
    dir_ = pattern;
    std::mt19937 rng(seed);
    write(dir_ / "train-images-idx3-ubyte", 0x0803, {train, 28, 28}, rng, 256);
    write(dir_ / "train-labels-idx1-ubyte", 0x0801, {train}, rng, 10);
    write(dir_ / "t10k-images-idx3-ubyte", 0x0803, {test, 28, 28}, rng, 256);
    write(dir_ / "t10k-labels-idx1-ubyte", 0x0801, {test}, rng, 10);
  }
  ~SmallFashion() {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string dir() const { return dir_.string(); }

 private:
  static void write(const fs::path& path, uint32_t magic, const std::vector<uint32_t>& dims, std::mt19937& rng,
                    unsigned values) {
    std::ofstream out(path, std::ios::binary);
    auto be32 = [&](uint32_t v) {
      const char b[4] = {char(v >> 24), char(v >> 16), char(v >> 8), char(v)};
      out.write(b, 4);
    };
    be32(magic);
    size_t n = 1;
    for (uint32_t d : dims) be32(d), n *= d;
    for (size_t i = 0; i < n; ++i) out.put(static_cast<char>(rng() % values));
  }
  fs::path dir_;
};

// Two ranks under axonrun, rank 0 with args0 and rank 1 with args1; `timeout` bounds the job so a
// hang fails the test instead of the suite.
static Result two_ranks(const std::string& args0, const std::string& args1, const std::string& env = "") {
  const std::string program = bin("fashion_mnist") + " --threads 1 --no-progress ";
  return run_command(env + "timeout -k 10 90 " + bin("axonrun") + " -n 2 sh -c 'if [ \"$OMPI_COMM_WORLD_RANK\" = 1 ]; then exec " +
                     program + args1 + "; else exec " + program + args0 + "; fi'");
}

// A job whose ranks disagree must end (no hang, no crash in MPI) with an error that names both
// ranks' values, printed by every rank.
static void expect_clean_disagreement(const Result& r, const std::string& expected) {
  EXPECT_NE(r.code, 0) << r.output;
  EXPECT_NE(r.code, 124) << "the job hung:\n" << r.output;
  EXPECT_NE(r.code, 128 + SIGABRT) << r.output;
  EXPECT_THAT(r.output, HasSubstr(expected));
  EXPECT_THAT(r.output, HasSubstr("seen on rank 0"));
  EXPECT_THAT(r.output, HasSubstr("seen on rank 1"));
  EXPECT_THAT(r.output, ::testing::Not(HasSubstr("malloc")));
  EXPECT_THAT(r.output, ::testing::Not(HasSubstr("double free")));
  EXPECT_THAT(r.output, ::testing::Not(HasSubstr("\"test_loss\"")));
  EXPECT_LT(r.seconds, 60.0) << r.output;
}

TEST(FashionMnist, RanksWithDifferentDatasetsFailFastNamingBothSizes) {
  SmallFashion big(200, 20, 1), small(100, 20, 2);
  Result r = two_ranks("--data " + big.dir(), "--data " + small.dir());
  expect_clean_disagreement(r, "ranks disagree on train dataset size: rank 0 has 200, rank 1 has 100");
}

TEST(FashionMnist, RanksWithDifferentEpochsFailFastNamingBoth) {
  SmallFashion data(64, 16);
  Result r = two_ranks("--data " + data.dir() + " --epochs 1", "--data " + data.dir() + " --epochs 2");
  expect_clean_disagreement(r, "ranks disagree on epochs: rank 0 has 1, rank 1 has 2");
}

TEST(FashionMnist, RanksWithDifferentBatchSizesFailFastNamingBoth) {
  SmallFashion data(64, 16);
  Result r = two_ranks("--data " + data.dir() + " --batch-size 8", "--data " + data.dir() + " --batch-size 16");
  expect_clean_disagreement(r, "ranks disagree on batch size: rank 0 has 8, rank 1 has 16");
}

TEST(FashionMnist, RanksWithDifferentLearningRatesOrOptimizersFailFastNamingBoth) {
  SmallFashion data(64, 16);
  Result lr = two_ranks("--data " + data.dir() + " --lr 0.001", "--data " + data.dir() + " --lr 0.01");
  expect_clean_disagreement(lr, "ranks disagree on optimizer: rank 0 has 'adam(lr=0.001,");
  EXPECT_THAT(lr.output, HasSubstr("rank 1 has 'adam(lr=0.01,"));
  Result opt = two_ranks("--data " + data.dir() + " --optimizer sgd", "--data " + data.dir() + " --optimizer adamw");
  expect_clean_disagreement(opt, "ranks disagree on optimizer: rank 0 has 'sgd(lr=0.001,");
  EXPECT_THAT(opt.output, HasSubstr("rank 1 has 'adamw(lr=0.001,"));
}

TEST(FashionMnist, HugeLearningRateStopsWithExitCode3OnOneAndTwoRanks) {
  SmallFashion data(256, 32);
  const std::string args = "--data " + data.dir() + " --optimizer adam --lr 1e30 --batch-size 16";
  Result one = run_command("timeout -k 10 90 " + bin("fashion_mnist") + " --threads 1 --no-progress " + args);
  EXPECT_EQ(one.code, 3) << one.output;
  EXPECT_THAT(one.output, HasSubstr("non-finite loss"));
  EXPECT_THAT(one.output, HasSubstr("at epoch 1, step "));
  EXPECT_THAT(one.output, HasSubstr("try a lower one"));
  EXPECT_THAT(one.output, ::testing::Not(HasSubstr("null")));
  Result two = two_ranks(args, args);
  EXPECT_EQ(two.code, 3) << two.output;
  EXPECT_THAT(two.output, HasSubstr("at epoch 1, step "));
  EXPECT_THAT(two.output, HasSubstr("try a lower one"));
  EXPECT_THAT(two.output, ::testing::Not(HasSubstr("null")));
  EXPECT_LT(two.seconds, 60.0) << two.output;
}

TEST(FashionMnist, EmptyTestSplitIsReportedAsNotMeasured) {
  SmallFashion data(64, 0);
  Result r = run_command("timeout -k 10 90 " + bin("fashion_mnist") + " --threads 1 --no-progress --data " + data.dir());
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("test split is empty"));
  EXPECT_THAT(r.output, HasSubstr("test metrics not measured"));
  nlohmann::json j = last_json_line(r.output);
  EXPECT_TRUE(j["test_accuracy"].is_null()) << j;
  EXPECT_TRUE(j["test_loss"].is_null()) << j;
  EXPECT_EQ(j["test_samples"], 0);
}

TEST(FashionMnist, EmptyTrainingSplitNamesTheFile) {
  SmallFashion data(0, 16);
  Result r = run_command("timeout -k 10 90 " + bin("fashion_mnist") + " --threads 1 --no-progress --data " + data.dir());
  EXPECT_NE(r.code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr(data.dir() + "/train-images-idx3-ubyte has no samples"));
  EXPECT_THAT(r.output, ::testing::Not(HasSubstr("DistributedSampler")));
}
