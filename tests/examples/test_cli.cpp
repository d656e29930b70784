// Unit tests of axon/cli.h: strict number parsing for the programs' options.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "axon/cli.h"
#include "axon/communicator.h"

using namespace axon::cli;

namespace {

// The UsageError message for `text`, or "" (and a failure) if it was accepted.
template <class F>
std::string rejection(F&& parse, const std::string& text) {
  try {
    parse(text);
  } catch (const UsageError& e) {
    return e.what();
  }
  ADD_FAILURE() << "accepted '" << text << "'";
  return "";
}

// Values wrong for any integer option: not plain decimal, or not a number at all.
const std::vector<std::string> kNotDecimalIntegers = {
    "", " ", "abc", "1x", "x1", " 1", "1 ", "1\n", "\t1", "0x10", "0X10", "0b1", "0o7", "010", "00",
    "1e3", "1E3", "1.0", "1.", ".5", "+", "-", "++1", "+-1", "-+1", "--1", "1-", "1+1", "1,000",
    "1_000", "inf", "nan", "\xd9\xa1" /* Arabic-Indic one */};

}  // namespace

TEST(CliInteger, AcceptsPlainDecimal) {
  EXPECT_EQ(parse_integer<int>("--epochs", "1", 1, 100000), 1);
  EXPECT_EQ(parse_integer<int>("--epochs", "100000", 1, 100000), 100000);
  EXPECT_EQ(parse_integer<int>("--epochs", "+7", 1, 100000), 7);  // '+' cannot change the value
  EXPECT_EQ(parse_integer<int>("--n", "0", -5, 5), 0);
  EXPECT_EQ(parse_integer<int>("--n", "-5", -5, 5), -5);
  EXPECT_EQ(parse_integer<int>("--n", "-2147483648", std::numeric_limits<int>::min(), 0),
            std::numeric_limits<int>::min());
  EXPECT_EQ(parse_integer<int>("--n", "2147483647", 0, std::numeric_limits<int>::max()),
            std::numeric_limits<int>::max());
  EXPECT_EQ(parse_integer<size_t>("--batch-size", "1048576", 1, size_t{1} << 20), size_t{1} << 20);
  EXPECT_EQ(parse_integer<uint64_t>("--seed", "18446744073709551615", 0, UINT64_MAX), UINT64_MAX);
  EXPECT_EQ(parse_integer<uint64_t>("--seed", "0", 0, UINT64_MAX), 0u);
}

TEST(CliInteger, IntRejectsEverythingElseNamingOptionRangeAndValue) {
  auto parse = [](const std::string& t) { return parse_integer<int>("--epochs", t, 1, 100000); };
  for (const std::string& bad : kNotDecimalIntegers) {
    SCOPED_TRACE("'" + bad + "'");
    EXPECT_EQ(rejection(parse, bad), "--epochs: expected an integer in [1, 100000], got '" + bad + "'");
  }
  // Out of the option's range, and out of int's range (no wrap, no saturation).
  for (const std::string bad : {"0", "-1", "100001", "2147483647", "2147483648", "-2147483649",
                                "4294967297", "99999999999999999999999999"}) {
    SCOPED_TRACE(bad);
    EXPECT_EQ(rejection(parse, bad), "--epochs: expected an integer in [1, 100000], got '" + bad + "'");
  }
  auto full = [](const std::string& t) {
    return parse_integer<int>("--n", t, std::numeric_limits<int>::min(), std::numeric_limits<int>::max());
  };
  for (const std::string bad : {"2147483648", "-2147483649", "4294967296", "-0x1"}) {
    SCOPED_TRACE(bad);
    EXPECT_EQ(rejection(full, bad), "--n: expected an integer in [-2147483648, 2147483647], got '" + bad + "'");
  }
}

TEST(CliInteger, SizeTRejectsNegativeOverflowAndNonDecimal) {
  auto parse = [](const std::string& t) { return parse_integer<size_t>("--batch-size", t, 1, size_t{1} << 20); };
  for (const std::string& bad : kNotDecimalIntegers) {
    SCOPED_TRACE("'" + bad + "'");
    EXPECT_EQ(rejection(parse, bad), "--batch-size: expected an integer in [1, 1048576], got '" + bad + "'");
  }
  // A minus sign never wraps around to a huge unsigned value, not even "-0".
  for (const std::string bad : {"-1", "-0", "-3", "-18446744073709551615", "0", "1048577",
                                "18446744073709551615", "18446744073709551616", "36893488147419103232"}) {
    SCOPED_TRACE(bad);
    EXPECT_EQ(rejection(parse, bad), "--batch-size: expected an integer in [1, 1048576], got '" + bad + "'");
  }
}

TEST(CliInteger, Uint64SeedRejectsNegativeOverflowAndNonDecimal) {
  auto parse = [](const std::string& t) { return parse_integer<uint64_t>("--seed", t, 0, UINT64_MAX); };
  const std::string expected = "--seed: expected an integer in [0, 18446744073709551615], got '";
  for (const std::string& bad : kNotDecimalIntegers) {
    SCOPED_TRACE("'" + bad + "'");
    EXPECT_EQ(rejection(parse, bad), expected + bad + "'");
  }
  for (const std::string bad : {"-1", "-0", "18446744073709551616", "18446744073709551620",
                                "99999999999999999999", "0xFFFFFFFFFFFFFFFF"}) {
    SCOPED_TRACE(bad);
    EXPECT_EQ(rejection(parse, bad), expected + bad + "'");
  }
}

TEST(CliReal, AcceptsFiniteDecimalNumbers) {
  const RealBounds positive = greater_than(0);
  EXPECT_DOUBLE_EQ(parse_real("--lr", "1e-3", positive), 1e-3);
  EXPECT_DOUBLE_EQ(parse_real("--lr", "0.001", positive), 1e-3);
  EXPECT_DOUBLE_EQ(parse_real("--lr", "+0.5", positive), 0.5);
  EXPECT_DOUBLE_EQ(parse_real("--lr", ".5", positive), 0.5);
  EXPECT_DOUBLE_EQ(parse_real("--lr", "5.", positive), 5.0);
  EXPECT_DOUBLE_EQ(parse_real("--lr", "1E2", positive), 100.0);
  EXPECT_DOUBLE_EQ(parse_real("--lr", "1e300", positive), 1e300);
  EXPECT_DOUBLE_EQ(parse_real("--x", "-2.5", in_range(-3, 3)), -2.5);
  EXPECT_DOUBLE_EQ(parse_real("--x", "3", in_range(-3, 3)), 3.0);
}

TEST(CliReal, DoubleRejectsNonFiniteMalformedAndOutOfRange) {
  auto parse = [](const std::string& t) { return parse_real("--lr", t, greater_than(0)); };
  for (const std::string bad :
       {"", " ", "abc", "nan", "NaN", "-nan", "nan(1)", "inf", "-inf", "INF", "infinity", "1e999", "-1e999",
        "1e-400", "0x10", "0x1p3", "1,5", "1.5x", " 1", "1 ", "1\n", "++1", "+-1", "--1", "1e", "e5", ".",
        "+", "-", "0", "-0", "+0", "0.0", "-0.001", "1.5.2", "1e3e3", "\xd9\xa1"}) {
    SCOPED_TRACE("'" + bad + "'");
    EXPECT_EQ(rejection(parse, bad), "--lr: expected a finite number > 0, got '" + bad + "'");
  }
  auto ranged = [](const std::string& t) { return parse_real("--p", t, in_range(0, 1)); };
  for (const std::string bad : {"-0.1", "1.0000001", "2", "nan", "inf"}) {
    SCOPED_TRACE(bad);
    EXPECT_EQ(rejection(ranged, bad), "--p: expected a finite number in [0, 1], got '" + bad + "'");
  }
}

TEST(CliReal, DescribesBoundsWithoutHugeNumbers) {
  EXPECT_EQ(describe(greater_than(0)), "a finite number > 0");
  EXPECT_EQ(describe(in_range(0, 1)), "a finite number in [0, 1]");
  EXPECT_EQ(describe(RealBounds{}), "a finite number");
  EXPECT_EQ(describe(in_range(0.25, 1e-3)), "a finite number in [0.25, 0.001]");
}

// A real that the program uses as a float: 1e-50 and 1e39 are finite doubles > 0, but the cast
// to float would make them 0 (no training at all) and inf.
TEST(CliReal, FloatOptionsRejectValuesThatAFloatCannotHold) {
  const std::string expected = "--lr: expected a finite number > 0 that fits a 32-bit float (1.2e-38 to 3.4e38), got '";
  auto parse = [](const std::string& t) { return parse_real("--lr", t, positive_float()); };
  // Subnormal floats (below 1.17549435e-38) are refused too: fewer significant bits than written.
  for (const std::string bad : {"1e-50", "1e-39", "1.1754942e-38", "1e-45", "1e39", "3.5e38", "3.4028236e38", "1e300",
                                "0", "-1", "nan", "inf", "1e999", "1e-400", "abc"}) {
    SCOPED_TRACE(bad);
    EXPECT_EQ(rejection(parse, bad), expected + bad + "'");
  }
  for (const std::string good : {"1e-3", "1.17549436e-38", "1.2e-38", "3.4e38", "3.40282346e38", "1", "0.5"}) {
    SCOPED_TRACE(good);
    const double value = parse(good);
    EXPECT_GT(static_cast<float>(value), 0.0f);
    EXPECT_TRUE(std::isfinite(static_cast<float>(value)));
  }
  // Ranges that include 0 or negative numbers say so.
  EXPECT_EQ(describe(as_float(in_range(0, 1))), "a finite number in [0, 1] that fits a 32-bit float (1.2e-38 to 3.4e38, or 0)");
  EXPECT_EQ(describe(as_float(RealBounds{})),
            "a finite number that fits a 32-bit float (1.2e-38 to 3.4e38 in magnitude, or 0)");
  EXPECT_DOUBLE_EQ(parse_real("--x", "0", as_float(in_range(0, 1))), 0.0);
  EXPECT_DOUBLE_EQ(parse_real("--x", "-2e-30", as_float(RealBounds{})), -2e-30);
  EXPECT_EQ(rejection([](const std::string& t) { return parse_real("--x", t, as_float(RealBounds{})); }, "-1e-40"),
            "--x: expected a finite number that fits a 32-bit float (1.2e-38 to 3.4e38 in magnitude, or 0), got '-1e-40'");
}

TEST(CliOptions, BadValuesFailAtParseTimeAndGoodOnesAreStored) {
  CLI::App app{"test", "prog"};
  int epochs = 1;
  size_t batch = 8;
  uint64_t seed = 0;
  double lr = 1e-3;
  add_integer(app, "--epochs", epochs, 1, 10, "epochs");
  add_integer(app, "--batch-size", batch, size_t{1}, size_t{64}, "batch");
  add_integer(app, "--seed", seed, uint64_t{0}, UINT64_MAX, "seed");
  add_real(app, "--lr", lr, greater_than(0), "lr");

  app.parse(std::vector<std::string>{"0.5", "--lr", "18446744073709551615", "--seed", "3", "--epochs"});  // reversed
  EXPECT_EQ(epochs, 3);
  EXPECT_EQ(seed, UINT64_MAX);
  EXPECT_DOUBLE_EQ(lr, 0.5);
  EXPECT_EQ(batch, 8u);  // untouched when not given

  try {
    app.parse(std::vector<std::string>{"nan", "--lr"});
    ADD_FAILURE() << "--lr nan was accepted";
  } catch (const CLI::ValidationError& e) {
    EXPECT_EQ(std::string(e.what()), "--lr: expected a finite number > 0, got 'nan'");
    EXPECT_NE(e.get_exit_code(), 0);
  }
  try {
    app.parse(std::vector<std::string>{"-1", "--batch-size"});
    ADD_FAILURE() << "--batch-size -1 was accepted";
  } catch (const CLI::ParseError& e) {
    EXPECT_EQ(std::string(e.what()), "--batch-size: expected an integer in [1, 64], got '-1'");
  }
  EXPECT_EQ(batch, 8u);
}

// ---- agreeing on the parse outcome (multi-rank cases: FashionMnistUnderMpirun.* in test_examples) --

TEST(CliAgreement, OneRankBehavesLikeASingleProcess) {
  CLI::App app{"test", "prog"};
  auto comm = axon::make_local_communicator();
  EXPECT_EQ(agree_on_command_line(*comm, app, {}), std::nullopt);

  ::testing::internal::CaptureStdout();
  EXPECT_EQ(agree_on_command_line(*comm, app, {ParseOutcome::Kind::help, "the help text\n"}), std::optional<int>(0));
  EXPECT_EQ(::testing::internal::GetCapturedStdout(), "the help text\n");

  ::testing::internal::CaptureStderr();
  EXPECT_EQ(agree_on_command_line(*comm, app, {ParseOutcome::Kind::usage_error, "--lr: bad"}), std::optional<int>(2));
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "prog: error: --lr: bad\nRun 'prog --help' for usage.\n");
}

// ---- axon::launcher_rank: which rank prints what is the same everywhere --------------------

TEST(LauncherRank, ReadsTheLauncherVariablesBeforeMpiAndRejectsMalformedValues) {
  const char* names[] = {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"};
  for (const char* name : names) unsetenv(name);
  EXPECT_EQ(axon::launcher_rank(), 0);  // no launcher: a single process is rank 0
  for (const char* name : names) {
    SCOPED_TRACE(name);
    setenv(name, "3", 1);
    EXPECT_EQ(axon::launcher_rank(), 3);
    // Not a plain decimal rank: treated as unknown (0) rather than misread.
    for (const char* bad : {"-1", " 1", "1x", "0x1", "99999999999"}) {
      setenv(name, bad, 1);
      EXPECT_EQ(axon::launcher_rank(), 0) << bad;
    }
    unsetenv(name);
  }
  setenv("PMIX_RANK", "5", 1);  // Open MPI sets both; its own variable comes first
  setenv("OMPI_COMM_WORLD_RANK", "2", 1);
  EXPECT_EQ(axon::launcher_rank(), 2);
  for (const char* name : names) unsetenv(name);
}
