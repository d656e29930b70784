// Command-line helpers shared by the programs in examples/ and bench/: strict number parsing
// for CLI11 options, usage-error exits, and printing what is the same on every rank once.
//
// Numbers are checked once, while the command line is parsed, so a bad value stops the program
// before MPI starts or data is loaded, with exit code 2 (usage error, as axonrun uses) and a
// message naming the option, what it expects and what it got:
//   fashion_mnist: error: --lr: expected a finite number > 0 that fits a 32-bit float (1.2e-38 to 3.4e38), got 'nan'
// Nothing is reinterpreted: only plain decimal numbers are accepted. Rejected are empty values,
// surrounding whitespace, trailing characters ("12abc", "1.5" for an integer), hex/octal/binary
// forms ("0x10", "010", "0b1"), a minus sign for an unsigned option (no wrap-around), values
// outside the option's range or the type's range (no saturation), and inf/nan/overflow for real
// numbers. A single leading '+' is accepted: it cannot change the value.
#pragma once

#include <CLI/CLI.hpp>

#include <concepts>
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace axon {
class Communicator;
}

namespace axon::cli {

// A bad command-line value; what() is the whole message, e.g.
// "--lr: expected a finite number > 0, got 'nan'".
class UsageError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// Parses `text` as a decimal integer in [min, max] (inclusive). Throws UsageError
// "<option>: expected an integer in [min, max], got '<text>'" for anything else.
template <std::integral T>
T parse_integer(std::string_view option, std::string_view text, T min, T max);

// Allowed values of a real-number option: a finite number within optional bounds; an open
// bound excludes the bound itself (lr > 0).
struct RealBounds {
  double lower = -std::numeric_limits<double>::infinity();
  bool lower_open = false;
  double upper = std::numeric_limits<double>::infinity();
  bool upper_open = false;
  // The program computes with the value as a 32-bit float (an optimizer's learning rate): it must
  // also be 0 (when the bounds allow it) or a normal float, 1.17549435e-38 <= |x| <= 3.40282347e38.
  // A double outside that range would become 0 or inf in the cast, silently; subnormal floats
  // are refused too, since they carry fewer significant bits than the user wrote and arithmetic
  // on them may be flushed to zero.
  bool as_float = false;
};
// Bounds for "> value".
RealBounds greater_than(double value);
// Bounds for "in [lower, upper]".
RealBounds in_range(double lower, double upper);
// `bounds`, and the value must fit a 32-bit float (RealBounds::as_float).
RealBounds as_float(RealBounds bounds);
// "> 0, as a 32-bit float": a learning rate.
RealBounds positive_float();
// "a finite number > 0", "a finite number in [0, 1]", "a finite number > 0 that fits a 32-bit
// float (1.2e-38 to 3.4e38)", ... as used in the error messages.
std::string describe(const RealBounds& bounds);

// Parses `text` as a finite decimal real number within `bounds`. Throws UsageError
// "<option>: expected <describe(bounds)>, got '<text>'" for anything else.
double parse_real(std::string_view option, std::string_view text, const RealBounds& bounds);

// Adds `name` to `app` as an option whose value is parsed with parse_integer / parse_real into
// `target` while app.parse() runs; a bad value makes app.parse() throw CLI::ValidationError
// carrying the UsageError message. The help text shows the allowed range.
template <std::integral T>
CLI::Option* add_integer(CLI::App& app, const std::string& name, T& target, T min, T max,
                         const std::string& description);
CLI::Option* add_real(CLI::App& app, const std::string& name, double& target,
                      const RealBounds& bounds, const std::string& description);

// Handles a CLI::ParseError from app.parse() for a program run as rank `rank` (see
// axon::launcher_rank()): --help goes to stdout (exit 0), anything else is a usage error,
// "<program>: error: <message>" plus a hint on stderr (exit 2). Only rank 0 prints. Right for a
// single process; under a launcher use agree_on_command_line, since ranks may be given
// different command lines (MPMD launches, wrapper scripts). Returns the exit code.
int exit_on_parse_error(const CLI::App& app, const CLI::ParseError& error, int rank);

// How app.parse() (and the program's own checks of the options) ended on this rank.
struct ParseOutcome {
  enum class Kind { ok = 0, help = 1, usage_error = 2 };
  Kind kind = Kind::ok;
  std::string message;  // the help text, or the error message
};
// The outcome that a CLI::ParseError stands for (--help/--version: help, else usage_error).
ParseOutcome outcome_of(const CLI::App& app, const CLI::ParseError& error);

// Prints `outcome` as exit_on_parse_error does (rank 0 only: help on stdout, an error with a
// hint on stderr; nothing for ok) and returns its exit code (0 for ok or help, 2 for an error).
int report_parse_outcome(const CLI::App& app, const ParseOutcome& outcome, int rank);

// Agrees on the parse outcome across the ranks of `comm` (one all-reduce of a few doubles) before
// any rank exits, so that no rank leaves while another waits for it in MPI. Every rank must call
// it, with or without an error. Returns nothing when every rank parsed its command line; else the
// exit code every rank returns, after all printing is done (a barrier):
//  - every rank has the same outcome (the same help text or the same error): rank 0 prints it
//    once, as exit_on_parse_error does; exit 0 for help, 2 for an error;
//  - the outcomes differ (the ranks got different command lines): each rank whose outcome
//    differs from rank 0's prints its error prefixed "rank R: " (rank 0 prints its own error,
//    if any, the same way), the help text is printed once, by the lowest rank that asked for it,
//    with a note that the command lines differ, rank 0 says that every rank exits 2, and every
//    rank exits 2: a job whose ranks disagree on their command line is a usage error.
// For a non-zero code it calls axon::mark_failure_collective(): every rank exits together, so MPI
// finalizes cleanly instead of aborting the job.
std::optional<int> agree_on_command_line(Communicator& comm, const CLI::App& app, const ParseOutcome& outcome);

// Thrown on every rank by run_on_all_ranks after the failure has been reported: the caller
// exits non-zero without printing it again.
class ReportedError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Runs `step` (e.g. loading the data) on every rank of `comm`, then agrees on the outcome with
// one tiny all-reduce. If every rank succeeded it returns. Otherwise each rank throws
// ReportedError after the failure was printed to stderr as "<program>: error: <message>":
// once, by rank 0, when every rank failed with the same message; else by each failing rank,
// prefixed "rank R: ". All printing is done before any rank returns (a barrier), so the MPI
// abort that follows a non-zero exit cannot cut off another rank's message. Every rank must call it.
void run_on_all_ranks(Communicator& comm, const std::string& program,
                      const std::function<void()>& step);

// ---- implementation of the templates ------------------------------------------------------

namespace detail {
// The digits of a plain decimal integer, without an optional single leading '+' (or '-' for
// signed types); empty if `text` is not of that form.
std::string_view decimal_digits(std::string_view text, bool allow_minus, bool& negative);
[[noreturn]] void throw_integer_error(std::string_view option, std::string_view text,
                                      const std::string& min, const std::string& max);
}  // namespace detail

template <std::integral T>
T parse_integer(std::string_view option, std::string_view text, T min, T max) {
  bool negative = false;
  const std::string_view digits = detail::decimal_digits(text, std::is_signed_v<T>, negative);
  // Magnitude accumulated in the unsigned type, checked before each step: no overflow, ever.
  using U = std::make_unsigned_t<T>;
  const U limit = negative ? U(U(0) - static_cast<U>(std::numeric_limits<T>::min()))
                           : static_cast<U>(std::numeric_limits<T>::max());
  bool ok = !digits.empty();
  U magnitude = 0;
  for (char c : digits) {
    const U d = static_cast<U>(c - '0');
    if (magnitude > (limit - d) / 10) {
      ok = false;
      break;
    }
    magnitude = static_cast<U>(magnitude * 10 + d);
  }
  T value{};
  if (ok) {
    value = negative ? static_cast<T>(U(0) - magnitude) : static_cast<T>(magnitude);
    ok = value >= min && value <= max;
  }
  if (!ok) detail::throw_integer_error(option, text, std::to_string(min), std::to_string(max));
  return value;
}

template <std::integral T>
CLI::Option* add_integer(CLI::App& app, const std::string& name, T& target, T min, T max,
                         const std::string& description) {
  CLI::Option* option = app.add_option_function<std::string>(
      name,
      [&target, name, min, max](const std::string& text) {
        try {
          target = parse_integer<T>(name, text, min, max);
        } catch (const UsageError& e) {
          throw CLI::ValidationError(e.what());
        }
      },
      description + " (an integer in [" + std::to_string(min) + ", " + std::to_string(max) + "])");
  option->type_name("INT");
  option->default_str(std::to_string(target));
  return option;
}

}  // namespace axon::cli
