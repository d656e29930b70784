// axonrun: start an Axon program on N local ranks through Open MPI's mpirun.
//
//   axonrun -n N [--mpirun PATH] [--dry-run] [--] program [args...]
//
// The arguments are parsed by hand: everything from the program name on must reach
// the program untouched, even words that look like axonrun options.
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "axon/cpu_budget.h"

extern char** environ;

#ifndef AXON_VERSION
#define AXON_VERSION ""
#endif

namespace axon {
namespace {

constexpr int kLaunchError = 2;  // exit code when axonrun itself cannot start the job

// A mistake on the command line; main() adds a pointer to --help.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Options {
  int ranks = 0;                     // 0 until -n is given
  std::string mpirun;                // from --mpirun; empty when not given
  bool dry_run = false;
  bool help = false;
  bool version = false;
  std::vector<std::string> command;  // the program, then its arguments
};

void print_usage(std::FILE* out) {
  std::fputs(
      "Usage: axonrun -n N [--mpirun PATH] [--dry-run] [--] program [args...]\n"
      "\n"
      "Start program on N local ranks with Open MPI's mpirun.\n"
      "\n"
      "Options:\n"
      "  -n N           number of ranks (a positive integer)\n"
      "  --mpirun PATH  mpirun to use (default: $AXON_MPIRUN, else mpirun on PATH)\n"
      "  --dry-run      print the mpirun command line and exit\n"
      "  -h, --help     show this help and exit\n"
      "  --version      show the version and exit\n"
      "  --             end of axonrun options (needed if the program name starts with '-')\n"
      "\n"
      "Everything from the program name on is passed to the program untouched.\n"
      "When N exceeds the CPU cores (or the cgroup CPU quota), --oversubscribe --bind-to none is added.\n"
      "\n"
      "Threads: each Axon program runs OPENBLAS_NUM_THREADS, else OMP_NUM_THREADS BLAS threads per\n"
      "rank; unset, the CPUs it may use (affinity mask, cgroup quota) / ranks on the machine.\n"
      "An invalid value of either variable is an error (exit code 2).\n"
      "\n"
      "The exit code is the job's; 2 means axonrun could not start the job.\n",
      out);
}

int parse_ranks(std::string_view text) {
  int ranks = 0;
  const char* end = text.data() + text.size();
  auto [stop, err] = std::from_chars(text.data(), end, ranks);
  if (text.empty() || err != std::errc() || stop != end || ranks <= 0) {
    throw UsageError("-n expects a positive integer number of ranks, got '" + std::string(text) + "'");
  }
  return ranks;
}

Options parse_args(int argc, char** argv) {
  Options opts;
  int i = 1;
  // Fetches the word after an option such as "-n 4".
  auto value_of = [&](std::string_view option) -> std::string_view {
    if (i + 1 >= argc) throw UsageError("option " + std::string(option) + " needs a value");
    return argv[++i];
  };

  for (; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--") {
      ++i;
      break;
    }
    if (arg.size() < 2 || arg[0] != '-') break;  // the program name: stop parsing here

    if (arg == "-h" || arg == "--help") {
      opts.help = true;
      return opts;
    } else if (arg == "--version") {
      opts.version = true;
      return opts;
    } else if (arg == "--dry-run") {
      opts.dry_run = true;
    } else if (arg == "-n") {
      opts.ranks = parse_ranks(value_of(arg));
    } else if (arg.starts_with("-n")) {
      opts.ranks = parse_ranks(arg.substr(2));  // "-n4"
    } else if (arg == "--mpirun" || arg.starts_with("--mpirun=")) {
      opts.mpirun = arg == "--mpirun" ? value_of(arg) : arg.substr(std::string_view("--mpirun=").size());
      if (opts.mpirun.empty()) throw UsageError("--mpirun needs a path");
    } else {
      throw UsageError("unknown option '" + std::string(arg) +
                       "' (put -- before a program whose name starts with '-')");
    }
  }

  opts.command.assign(argv + i, argv + argc);
  if (opts.ranks == 0) throw UsageError("missing -n N, the number of ranks to start");
  if (opts.command.empty()) throw UsageError("missing the program to run");
  return opts;
}

bool is_executable_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(path.c_str(), X_OK) == 0;
}

// Searches PATH the way the shell does; an empty PATH entry means the current directory.
std::optional<std::string> find_on_path(const std::string& name) {
  const char* env = std::getenv("PATH");
  std::string_view path = (env && *env) ? env : "/usr/local/bin:/usr/bin:/bin";
  while (true) {
    size_t colon = path.find(':');
    std::string dir(path.substr(0, colon));
    std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
    if (is_executable_file(candidate)) return candidate;
    if (colon == std::string_view::npos) return std::nullopt;
    path.remove_prefix(colon + 1);
  }
}

// Order: --mpirun, then $AXON_MPIRUN, then mpirun on PATH.
std::string resolve_mpirun(const Options& opts) {
  std::string requested = opts.mpirun;
  std::string source = "--mpirun";
  if (requested.empty()) {
    const char* env = std::getenv("AXON_MPIRUN");
    if (env && *env) {
      requested = env;
      source = "AXON_MPIRUN";
    }
  }

  if (requested.empty()) {
    if (auto found = find_on_path("mpirun")) return *found;
    throw std::runtime_error(
        "mpirun not found on PATH; install Open MPI (e.g. `apt-get install openmpi-bin`) "
        "or give its path with --mpirun or AXON_MPIRUN");
  }
  if (requested.find('/') == std::string::npos) {
    if (auto found = find_on_path(requested)) return *found;
    throw std::runtime_error("mpirun '" + requested + "' (from " + source + ") not found on PATH");
  }
  if (!is_executable_file(requested)) {
    throw std::runtime_error("mpirun '" + requested + "' (from " + source + ") is not an executable file");
  }
  return requested;
}

// Checked here so a typo gives one clear line instead of an mpirun error page per rank.
void check_program(const std::string& program) {
  if (program.find('/') == std::string::npos) {
    if (!find_on_path(program)) throw std::runtime_error("program '" + program + "' not found on PATH");
    return;
  }
  struct stat st {};
  if (::stat(program.c_str(), &st) != 0) {
    throw std::runtime_error("program '" + program + "': " + std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) throw std::runtime_error("program '" + program + "' is not a regular file");
  if (::access(program.c_str(), X_OK) != 0) {
    throw std::runtime_error("program '" + program + "' is not executable (no execute permission)");
  }
}

// Open MPI gives one slot per physical core by default (not per hardware thread), so
// count distinct cores among the CPUs we may run on. Falls back to the online CPU count.
int available_slots() {
  long online = ::sysconf(_SC_NPROCESSORS_ONLN);
  int fallback = online > 0 ? static_cast<int>(online) : 1;

  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (::sched_getaffinity(0, sizeof(allowed), &allowed) != 0) return fallback;

  std::set<std::pair<int, int>> cores;  // (package, core) pairs
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (!CPU_ISSET(cpu, &allowed)) continue;
    std::string topology = "/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/";
    std::ifstream package_file(topology + "physical_package_id");
    std::ifstream core_file(topology + "core_id");
    int package = 0, core = 0;
    if (!(package_file >> package) || !(core_file >> core)) return fallback;
    cores.emplace(package, core);
  }
  return cores.empty() ? fallback : static_cast<int>(cores.size());
}

std::vector<std::string> build_mpirun_argv(const std::string& mpirun, const Options& opts) {
  std::vector<std::string> args = {mpirun, "-np", std::to_string(opts.ranks)};
  // The CPUs counted the way Axon programs count them (affinity mask and cgroup quota, shared
  // code in axon/cpu_budget.h): under a quota of fewer CPUs than ranks, binding each rank to its
  // own core gains nothing.
  const int slots = std::min(available_slots(), usable_cpus().cpus);
  if (opts.ranks > slots) {
    // Open MPI refuses more ranks than cores unless told; binding would pile ranks on one core.
    args.insert(args.end(), {"--oversubscribe", "--bind-to", "none"});
  }
  args.insert(args.end(), opts.command.begin(), opts.command.end());
  return args;
}

std::string shell_quote(const std::string& word) {
  bool plain = !word.empty() && word.find_first_not_of(
                                    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                    "0123456789_@%+=:,./-") == std::string::npos;
  if (plain) return word;
  std::string quoted = "'";
  for (char c : word) {
    if (c == '\'') quoted += "'\\''";
    else quoted += c;
  }
  return quoted + "'";
}

std::string join_quoted(const std::vector<std::string>& words) {
  std::string line;
  for (const auto& word : words) {
    if (!line.empty()) line += ' ';
    line += shell_quote(word);
  }
  return line;
}

std::string signal_name(int signo) {
  const char* abbrev = ::sigabbrev_np(signo);
  return abbrev ? std::string("SIG") + abbrev : std::to_string(signo);
}

// The running mpirun, for the signal handler; 0 when there is none.
std::atomic<pid_t> g_child{0};
static_assert(std::atomic<pid_t>::is_always_lock_free, "signal handler needs a lock-free pid");

extern "C" void forward_signal(int signo) {
  int saved_errno = errno;
  pid_t child = g_child.load();
  if (child > 0) ::kill(child, signo);
  errno = saved_errno;
}

// Starts mpirun, forwards SIGINT/SIGTERM to it, and returns its wait status.
int run_and_wait(const std::vector<std::string>& args) {
  sigset_t forwarded, previous;
  sigemptyset(&forwarded);
  for (int signo : {SIGINT, SIGTERM}) {
    struct sigaction current {};
    ::sigaction(signo, nullptr, &current);
    if (current.sa_handler == SIG_IGN) continue;  // e.g. a background job: keep ignoring it
    struct sigaction action {};
    action.sa_handler = forward_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    ::sigaction(signo, &action, nullptr);
    sigaddset(&forwarded, signo);
  }

  // Hold the signals until g_child is set, so none can arrive with nowhere to go.
  ::sigprocmask(SIG_BLOCK, &forwarded, &previous);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setsigmask(&attr, &previous);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);

  std::vector<char*> argv;
  for (const auto& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);

  pid_t pid = 0;
  int err = ::posix_spawn(&pid, args[0].c_str(), nullptr, &attr, argv.data(), environ);
  posix_spawnattr_destroy(&attr);
  if (err == 0) g_child.store(pid);
  ::sigprocmask(SIG_SETMASK, &previous, nullptr);
  if (err != 0) throw std::runtime_error("cannot start '" + args[0] + "': " + std::strerror(err));

  // Wait without reaping first: until it is reaped the pid cannot be reused, so the
  // handler can never signal an unrelated process.
  siginfo_t info{};
  while (::waitid(P_PID, pid, &info, WEXITED | WNOWAIT) < 0) {
    if (errno != EINTR) throw std::runtime_error(std::string("waiting for mpirun failed: ") + std::strerror(errno));
  }
  g_child.store(0);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throw std::runtime_error(std::string("waiting for mpirun failed: ") + std::strerror(errno));
  }
  return status;
}

int run(int argc, char** argv) {
  Options opts = parse_args(argc, argv);
  if (opts.help) {
    print_usage(stdout);
    return 0;
  }
  if (opts.version) {
    std::string_view version = AXON_VERSION;
    std::printf("axonrun (Axon) %s\n", version.empty() ? "unknown" : version.data());
    return 0;
  }

  std::string mpirun = resolve_mpirun(opts);
  check_program(opts.command[0]);
  // A bad OMP_NUM_THREADS / OPENBLAS_NUM_THREADS fails here once, not once per rank.
  (void)cpu_budget(opts.ranks);
  std::vector<std::string> args = build_mpirun_argv(mpirun, opts);
  if (opts.dry_run) {
    std::printf("%s\n", join_quoted(args).c_str());
    return 0;
  }

  // Open MPI refuses to run as root unless both variables are set.
  if (::geteuid() == 0) {
    ::setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    ::setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
  }
  ::setenv("AXON_LAUNCHER", "axonrun", 1);
  // mpirun hands the ranks pipes, not our terminal; tell them when a live progress line will show.
  if (::isatty(STDERR_FILENO)) ::setenv("AXON_PROGRESS_TTY", "1", 1);

  int status = run_and_wait(args);
  if (WIFSIGNALED(status)) {
    int signo = WTERMSIG(status);
    std::fprintf(stderr, "axonrun: job killed by signal %s\n", signal_name(signo).c_str());
    return 128 + signo;
  }
  int code = WEXITSTATUS(status);
  if (code != 0) {
    std::fprintf(stderr, "axonrun: job failed with exit code %d (%d rank%s, command: %s)\n", code,
                 opts.ranks, opts.ranks == 1 ? "" : "s", join_quoted(opts.command).c_str());
  }
  return code;
}

}  // namespace
}  // namespace axon

int main(int argc, char** argv) {
  try {
    return axon::run(argc, argv);
  } catch (const axon::UsageError& e) {
    std::fprintf(stderr, "axonrun: error: %s\nRun 'axonrun --help' for usage.\n", e.what());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "axonrun: error: %s\n", e.what());
  }
  return axon::kLaunchError;
}
