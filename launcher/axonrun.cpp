// axonrun: start an Axon program on N local ranks through Open MPI's mpirun.
//
//   axonrun -n N [--mpirun PATH] [--dry-run] [--] program [args...]
//
// The arguments are parsed by hand: everything from the program name on must reach
// the program untouched, even words that look like axonrun options.
#include <sched.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
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
      "Open MPI's own banners are off (OMPI_MCA_orte_execute_quiet=1 unless set); when the job\n"
      "fails, axonrun's last line says how.\n"
      "\n"
      "Threads: each Axon program runs OPENBLAS_NUM_THREADS, else OMP_NUM_THREADS BLAS threads per\n"
      "rank; unset, the CPUs it may use (affinity mask, cgroup quota) / ranks on the machine.\n"
      "An invalid value of either variable is an error (exit code 2).\n"
      "\n"
      "Signals: SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 and SIGALRM stop the whole job;\n"
      "axonrun then exits 128 + the signal number (130 for SIGINT, 143 for SIGTERM). If axonrun\n"
      "is killed (even by SIGKILL), mpirun gets SIGTERM and stops the ranks.\n"
      "\n"
      "Exit code: the job's; 128 + N when stopped by signal N; 2 when axonrun could not start the job.\n",
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

// Signals that stop the job. Each would terminate axonrun by default; caught, it stops the
// job instead and axonrun exits 128 + its number. SIGINT goes on to mpirun as SIGINT (what a
// terminal's Ctrl-C sends the whole foreground group anyway); the others become SIGTERM, the one
// signal mpirun documents as "kill the job" (it forwards SIGUSR1/2 to the ranks, which would
// die of them or ignore them, and its handling of SIGHUP/SIGQUIT is not a documented contract).
// SIGKILL cannot be caught: see start_mpirun for how the job still ends with axonrun.
constexpr int kStopSignals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGALRM};

// The running mpirun, for the signal handler; 0 when there is none.
std::atomic<pid_t> g_child{0};
// The first stop signal axonrun received; 0 when none. It, not mpirun's status, sets the exit code.
std::atomic<int> g_stop_signal{0};
static_assert(std::atomic<pid_t>::is_always_lock_free, "signal handler needs a lock-free pid");
static_assert(std::atomic<int>::is_always_lock_free, "signal handler needs a lock-free int");

extern "C" void stop_job(int signo) {
  int saved_errno = errno;
  int none = 0;
  // Only the first signal goes on: mpirun treats a second one within seconds as "terminate at
  // once", which could skip stopping the ranks.
  if (g_stop_signal.compare_exchange_strong(none, signo)) {
    pid_t child = g_child.load();
    if (child > 0) ::kill(child, signo == SIGINT ? SIGINT : SIGTERM);
  }
  errno = saved_errno;
}

// Starts mpirun with fork + exec so that the child can bind its lifetime to ours before exec:
// PR_SET_PDEATHSIG makes the kernel send mpirun SIGTERM when axonrun dies, even of SIGKILL, and
// mpirun answers SIGTERM by killing its ranks. The getppid() check closes the race where axonrun
// died between fork and prctl (the child would already belong to another parent). Only
// async-signal-safe calls run in the child; an exec failure comes back through a CLOEXEC pipe.
pid_t start_mpirun(const std::vector<std::string>& args, const sigset_t& handled, const sigset_t& child_mask) {
  std::vector<char*> argv;
  for (const auto& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);

  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0) throw std::runtime_error(std::string("pipe failed: ") + std::strerror(errno));
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    int err = errno;
    ::close(report[0]);
    ::close(report[1]);
    throw std::runtime_error("cannot start '" + args[0] + "': fork failed: " + std::strerror(err));
  }
  if (pid == 0) {
    ::close(report[0]);
    if (::prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || ::getppid() != parent) ::_exit(kLaunchError);
    // Default actions before unblocking: a SIGTERM from the parent-death signal that is already
    // pending must end this child, not run axonrun's handler here and be lost. The mask survives
    // exec, and mpirun must see its signals.
    for (int signo : kStopSignals) {
      if (::sigismember(&handled, signo) == 1) ::signal(signo, SIG_DFL);
    }
    ::sigprocmask(SIG_SETMASK, &child_mask, nullptr);
    ::execve(argv[0], argv.data(), environ);
    int err = errno;
    ssize_t written = ::write(report[1], &err, sizeof err);
    (void)written;  // nothing more to do if even this fails: the parent sees exit code 127
    ::_exit(127);
  }
  ::close(report[1]);
  int err = 0;
  ssize_t got;
  while ((got = ::read(report[0], &err, sizeof err)) < 0 && errno == EINTR) {
  }
  ::close(report[0]);
  if (got == static_cast<ssize_t>(sizeof err)) {
    ::waitpid(pid, nullptr, 0);
    throw std::runtime_error("cannot start '" + args[0] + "': " + std::strerror(err));
  }
  return pid;
}

// Starts mpirun, stops it on any of kStopSignals, and returns its wait status.
int run_and_wait(const std::vector<std::string>& args) {
  sigset_t handled, previous;
  sigemptyset(&handled);
  for (int signo : kStopSignals) {
    struct sigaction current {};
    ::sigaction(signo, nullptr, &current);
    if (current.sa_handler == SIG_IGN) continue;  // e.g. nohup, a background job: keep ignoring it
    struct sigaction action {};
    action.sa_handler = stop_job;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    ::sigaction(signo, &action, nullptr);
    sigaddset(&handled, signo);
  }

  // Hold the signals until g_child is set, so none can arrive with nowhere to go; one that
  // arrives meanwhile is delivered at the unblock below and stops the fresh mpirun.
  ::sigprocmask(SIG_BLOCK, &handled, &previous);
  pid_t pid = 0;
  try {
    pid = start_mpirun(args, handled, previous);
  } catch (...) {
    ::sigprocmask(SIG_SETMASK, &previous, nullptr);
    throw;
  }
  g_child.store(pid);
  ::sigprocmask(SIG_SETMASK, &previous, nullptr);

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

  // Open MPI's banners ("MPI_ABORT was invoked...", "Primary job terminated normally, but...")
  // repeat what axonrun's last line says and bury the failing rank's own message. Quiet unless
  // the user chose otherwise (set it to 0 to see them).
  ::setenv("OMPI_MCA_orte_execute_quiet", "1", 0);

  int status = run_and_wait(args);
  if (int signo = g_stop_signal.load(); signo != 0) {
    // A cancel, not a crash: whatever mpirun returned while stopping, report the signal.
    std::fprintf(stderr, "axonrun: job stopped by %s (sent to axonrun); exit code %d\n", signal_name(signo).c_str(),
                 128 + signo);
    return 128 + signo;
  }
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
