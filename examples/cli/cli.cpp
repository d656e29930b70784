// Strict number parsing and rank-aware error reporting for the example programs (see axon/cli.h).
#include "axon/cli.h"

#include <fmt/format.h>

#include <charconv>
#include <cmath>
#include <cstdio>
#include <limits>
#include <span>
#include <vector>

#include "axon/communicator.h"

namespace axon::cli {

namespace detail {

std::string_view decimal_digits(std::string_view text, bool allow_minus, bool& negative) {
  negative = false;
  std::string_view digits = text;
  if (!digits.empty() && (digits[0] == '+' || (allow_minus && digits[0] == '-'))) {
    negative = digits[0] == '-';
    digits.remove_prefix(1);
  }
  if (digits.empty()) return {};
  for (char c : digits)
    if (c < '0' || c > '9') return {};
  // "010" is octal to strtol (and to CLI11): rather than guess, refuse leading zeros.
  if (digits.size() > 1 && digits[0] == '0') return {};
  return digits;
}

void throw_integer_error(std::string_view option, std::string_view text, const std::string& min,
                         const std::string& max) {
  throw UsageError(fmt::format("{}: expected an integer in [{}, {}], got '{}'", option, min, max, text));
}

}  // namespace detail

RealBounds greater_than(double value) {
  RealBounds b;
  b.lower = value;
  b.lower_open = true;
  return b;
}

RealBounds in_range(double lower, double upper) {
  RealBounds b;
  b.lower = lower;
  b.upper = upper;
  return b;
}

RealBounds as_float(RealBounds bounds) {
  bounds.as_float = true;
  return bounds;
}

RealBounds positive_float() { return as_float(greater_than(0)); }

namespace {

bool allows(const RealBounds& b, double value) {
  return (b.lower_open ? value > b.lower : value >= b.lower) &&
         (b.upper_open ? value < b.upper : value <= b.upper);
}

// 0, or a normal float: the cast to float neither flushes it to 0 nor makes it inf.
bool fits_float(double value) {
  const double magnitude = std::fabs(value);
  return value == 0.0 || (magnitude >= std::numeric_limits<float>::min() &&
                          magnitude <= std::numeric_limits<float>::max());
}

}  // namespace

std::string describe(const RealBounds& b) {
  const bool has_lower = std::isfinite(b.lower), has_upper = std::isfinite(b.upper);
  std::string text = "a finite number";
  if (has_lower && has_upper)
    text = fmt::format("a finite number in {}{}, {}{}", b.lower_open ? '(' : '[', b.lower, b.upper,
                       b.upper_open ? ')' : ']');
  else if (has_lower)
    text = fmt::format("a finite number {} {}", b.lower_open ? ">" : ">=", b.lower);
  else if (has_upper)
    text = fmt::format("a finite number {} {}", b.upper_open ? "<" : "<=", b.upper);
  if (b.as_float) {
    // The magnitudes of the normal floats; "or 0" / "in magnitude" only where they apply.
    const bool negatives = allows(b, -1.0) || b.lower < 0;
    text += " that fits a 32-bit float (1.2e-38 to 3.4e38";
    if (negatives) text += " in magnitude";
    if (allows(b, 0.0)) text += ", or 0";
    text += ")";
  }
  return text;
}

double parse_real(std::string_view option, std::string_view text, const RealBounds& bounds) {
  std::string_view body = text;
  if (!body.empty() && body[0] == '+') body.remove_prefix(1);
  // from_chars: locale-independent, no whitespace, no hex ("0x10" stops after the 0 and is
  // caught as trailing text), and it reports overflow and underflow instead of saturating.
  double value = 0;
  bool ok = !body.empty() && body[0] != '+';  // "++1" is not a number
  if (ok) {
    const auto [end, ec] = std::from_chars(body.data(), body.data() + body.size(), value);
    ok = ec == std::errc() && end == body.data() + body.size() && std::isfinite(value);
  }
  if (ok) ok = allows(bounds, value) && (!bounds.as_float || fits_float(value));
  if (!ok) throw UsageError(fmt::format("{}: expected {}, got '{}'", option, describe(bounds), text));
  return value;
}

CLI::Option* add_real(CLI::App& app, const std::string& name, double& target, const RealBounds& bounds,
                      const std::string& description) {
  CLI::Option* option = app.add_option_function<std::string>(
      name,
      [&target, name, bounds](const std::string& text) {
        try {
          target = parse_real(name, text, bounds);
        } catch (const UsageError& e) {
          throw CLI::ValidationError(e.what());
        }
      },
      description + " (" + describe(bounds) + ")");
  option->type_name("NUMBER");
  option->default_str(fmt::format("{}", target));
  return option;
}

int report_parse_outcome(const CLI::App& app, const ParseOutcome& outcome, int rank) {
  if (outcome.kind == ParseOutcome::Kind::ok) return 0;
  const std::string& program = app.get_name();
  const bool help = outcome.kind == ParseOutcome::Kind::help;
  if (rank == 0) {
    if (help) {
      std::fputs(outcome.message.c_str(), stdout);
      std::fflush(stdout);
    } else {
      std::fprintf(stderr, "%s: error: %s\nRun '%s --help' for usage.\n", program.c_str(), outcome.message.c_str(),
                   program.c_str());
    }
  }
  return help ? 0 : 2;
}

int exit_on_parse_error(const CLI::App& app, const CLI::ParseError& error, int rank) {
  return report_parse_outcome(app, outcome_of(app, error), rank);
}

namespace {

// FNV-1a, cut to 52 bits so that it survives a trip through a double exactly.
double message_hash(const std::string& text) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : text) h = (h ^ c) * 1099511628211ull;
  return static_cast<double>(h >> 12);
}

// What the ranks agreed on, from one max all-reduce: max(-x) is -min(x), so the minimum, the
// maximum and rank 0's value of each input come back together (inputs must be >= 0; ranks
// other than 0 contribute -1 to rank 0's slots, which no input has).
struct Agreed {
  std::vector<double> min, max, root;
};

Agreed agree(Communicator& comm, const std::vector<double>& values) {
  const size_t n = values.size();
  std::vector<double> buffer(3 * n);
  for (size_t i = 0; i < n; ++i) {
    buffer[i] = values[i];
    buffer[n + i] = -values[i];
    buffer[2 * n + i] = comm.rank() == 0 ? values[i] : -1.0;
  }
  comm.allreduce(std::span<double>(buffer), ReduceOp::max);
  Agreed a;
  for (size_t i = 0; i < n; ++i) {
    a.max.push_back(buffer[i]);
    a.min.push_back(-buffer[n + i]);
    a.root.push_back(buffer[2 * n + i]);
  }
  return a;
}

}  // namespace

ParseOutcome outcome_of(const CLI::App& app, const CLI::ParseError& error) {
  if (error.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success))
    return {ParseOutcome::Kind::help, app.help()};
  return {ParseOutcome::Kind::usage_error, error.what()};
}

std::optional<int> agree_on_command_line(Communicator& comm, const CLI::App& app, const ParseOutcome& outcome) {
  using Kind = ParseOutcome::Kind;
  const double kind = static_cast<double>(outcome.kind);
  const double hash = outcome.kind == Kind::ok ? 0.0 : message_hash(outcome.message);
  // The lowest rank that asked for help: the maximum of size - rank over those ranks (0 elsewhere).
  const double help_rank = outcome.kind == Kind::help ? static_cast<double>(comm.rank()) : comm.size();
  const Agreed a = agree(comm, {kind, hash, static_cast<double>(comm.size()) - help_rank});
  if (a.max[0] == static_cast<double>(Kind::ok)) return std::nullopt;  // every rank parsed its command line

  const std::string& program = app.get_name();
  const bool same_everywhere = a.min[0] == a.max[0] && a.min[1] == a.max[1];
  int code = 2;
  if (same_everywhere) {
    // The usual case: one command line for all ranks. Printed once, as for a single process.
    code = report_parse_outcome(app, outcome, comm.rank());
  } else {
    const int lowest_help_rank = comm.size() - static_cast<int>(a.max[2]);
    const bool like_rank_0 = kind == a.root[0] && hash == a.root[1];
    if (outcome.kind == Kind::usage_error && (comm.rank() == 0 || !like_rank_0))
      std::fprintf(stderr, "%s: error: rank %d: %s\n", program.c_str(), comm.rank(), outcome.message.c_str());
    if (outcome.kind == Kind::help && comm.rank() == lowest_help_rank) {
      std::fprintf(stderr, "%s: rank %d: --help, but the ranks' command lines differ; the help text:\n", program.c_str(),
                   comm.rank());
      std::fflush(stderr);
      std::fputs(outcome.message.c_str(), stdout);
      std::fflush(stdout);
    }
    if (comm.rank() == 0)
      std::fprintf(stderr,
                   "%s: error: the ranks were given different command lines (see above); every rank exits with "
                   "code 2\nRun '%s --help' for usage.\n",
                   program.c_str(), program.c_str());
  }
  std::fflush(stdout);
  std::fflush(stderr);
  comm.barrier();  // all printing done before any rank exits
  if (code != 0) mark_failure_collective();  // every rank exits together: finalize, do not abort
  return code;
}

void run_on_all_ranks(Communicator& comm, const std::string& program, const std::function<void()>& step) {
  std::string message;
  bool failed = false;
  try {
    step();
  } catch (const std::exception& e) {
    failed = true;
    message = e.what();
  }
  // {failed, hash}: the min and max over ranks tell whether any/all failed and whether all
  // messages are the same. A rank that succeeded contributes hash 0 with failed 0.
  const Agreed a = agree(comm, {failed ? 1.0 : 0.0, failed ? message_hash(message) : 0.0});
  if (a.max[0] == 0.0) return;  // nobody failed
  const bool same_everywhere = a.min[0] == 1.0 && a.min[1] == a.max[1];
  if (same_everywhere) {
    if (comm.rank() == 0) std::fprintf(stderr, "%s: error: %s\n", program.c_str(), message.c_str());
  } else if (failed) {
    std::fprintf(stderr, "%s: error: rank %d: %s\n", program.c_str(), comm.rank(), message.c_str());
  }
  std::fflush(stderr);
  comm.barrier();
  throw ReportedError(failed ? message : "another rank failed");
}

}  // namespace axon::cli
