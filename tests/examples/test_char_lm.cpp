// End-to-end checks of examples/char_lm.cpp: a few training steps on a small text file on one rank
// and on two (axonrun), the JSON result line, and its errors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "../support/process.h"
#include "../support/require_mpi.h"

namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;
using axon::testing::run_command;

std::string bin(const std::string& name) { return std::string(AXON_BIN_DIR) + "/" + name; }

nlohmann::json last_json_line(const std::string& output) {
  size_t end = output.size();
  while (end > 0) {
    const size_t start = output.rfind('\n', end - 1);
    const size_t from = start == std::string::npos ? 0 : start + 1;
    if (output.compare(from, 1, "{") == 0) return nlohmann::json::parse(output.substr(from, end - from));
    if (start == std::string::npos) break;
    end = start;
  }
  ADD_FAILURE() << "no JSON line in:\n" << output;
  return nlohmann::json::object();
}

// A small text of a few repeated lines: enough for a tiny model to learn something in few steps.
std::string text_file() {
  const fs::path path = fs::temp_directory_path() / "axon_char_lm_test.txt";
  std::ofstream out(path);
  for (int i = 0; i < 200; ++i)
    out << "the quick brown fox jumps over the lazy dog.\nA stitch in time saves nine " << i % 7 << ".\n";
  return path.string();
}

const std::string kSmall = " --steps 40 --eval-every 20 --context 16 --d-model 16 --heads 2 --batch-size 8 --threads 1";

class CharLmModel : public ::testing::TestWithParam<std::string> {};

TEST_P(CharLmModel, TrainsAFewStepsAndEndsWithTheJsonLine) {
  auto r = run_command(bin("char_lm") + " --model " + GetParam() + kSmall + " --data " + text_file());
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_THAT(r.stdout_text, HasSubstr("step     20  train_loss"));
  EXPECT_THAT(r.stdout_text, HasSubstr("samples:"));
  nlohmann::json j = last_json_line(r.stdout_text);
  EXPECT_EQ(j["model"], GetParam());
  EXPECT_EQ(j["steps"], 40);
  EXPECT_EQ(j["world_size"], 1);
  EXPECT_GT(j["tokens_per_s"].get<double>(), 0.0);
  // Below a uniform guess over the 96 characters (log 96 = 4.56 nats): it learned.
  EXPECT_LT(j["train_loss"].get<double>(), 4.0);
  EXPECT_LT(j["val_loss"].get<double>(), 4.0);
}

TEST_P(CharLmModel, TwoRanksThroughTheLauncher) {
  AXON_REQUIRE_MPI();
  auto r = run_command(bin("axonrun") + " -n 2 " + bin("char_lm") + " --model " + GetParam() + kSmall + " --data " +
                       text_file());
  ASSERT_EQ(r.code, 0) << r.output;
  nlohmann::json j = last_json_line(r.stdout_text);
  EXPECT_EQ(j["model"], GetParam());
  EXPECT_EQ(j["world_size"], 2);
  EXPECT_LT(j["val_loss"].get<double>(), 4.0);
}

INSTANTIATE_TEST_SUITE_P(Models, CharLmModel, ::testing::Values("transformer", "lstm"));

TEST(CharLm, ErrorsNameTheOptionOrFile) {
  auto model = run_command(bin("char_lm") + " --model gpt --steps 1 --data " + text_file());
  EXPECT_EQ(model.code, 2);
  EXPECT_THAT(model.output, HasSubstr("--model"));
  auto heads = run_command(bin("char_lm") + " --d-model 16 --heads 3");
  EXPECT_EQ(heads.code, 2);
  EXPECT_THAT(heads.output, HasSubstr("3 does not divide --d-model 16"));
  auto missing = run_command(bin("char_lm") + " --steps 1 --data /nonexistent/text.txt");
  EXPECT_NE(missing.code, 0);
  EXPECT_THAT(missing.output, HasSubstr("cannot read /nonexistent/text.txt"));
}

}  // namespace
