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

int exit_on_parse_error(const CLI::App& app, const CLI::ParseError& error, int rank) {
  const bool help = error.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success);
  if (rank == 0) {
    if (help) {
      std::fputs(app.help().c_str(), stdout);
      std::fflush(stdout);
    } else {
      std::fprintf(stderr, "%s: error: %s\nRun '%s --help' for usage.\n", app.get_name().c_str(), error.what(),
                   app.get_name().c_str());
    }
  }
  return help ? 0 : 2;
}

namespace {

// FNV-1a, cut to 52 bits so that it survives a trip through a double exactly.
double message_hash(const std::string& text) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : text) h = (h ^ c) * 1099511628211ull;
  return static_cast<double>(h >> 12);
}

}  // namespace

void run_on_all_ranks(Communicator& comm, const std::string& program, const std::function<void()>& step) {
  std::string message;
  bool failed = false;
  try {
    step();
  } catch (const std::exception& e) {
    failed = true;
    message = e.what();
  }
  // {failed, hash}: the max and min over ranks tell whether any/all failed and whether all
  // messages are the same. A rank that succeeded contributes hash -1, which no message has.
  double low[2] = {failed ? 1.0 : 0.0, failed ? message_hash(message) : -1.0};
  double high[2] = {low[0], low[1]};
  comm.allreduce(std::span<double>(low, 2), ReduceOp::min);
  comm.allreduce(std::span<double>(high, 2), ReduceOp::max);
  if (high[0] == 0.0) return;  // nobody failed
  const bool same_everywhere = low[0] == 1.0 && low[1] == high[1];
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
