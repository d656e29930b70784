// End-to-end checks of the example programs, run as a user would run them.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>
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
