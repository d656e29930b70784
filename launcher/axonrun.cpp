// axonrun: start an Axon program on N ranks per node through Open MPI's mpirun, or through
// Slurm's srun inside a Slurm allocation, watch its ranks, and end the whole job when one fails
// or the job stops making progress.
//
//   axonrun [-n N | --nproc-per-node N] [--nnodes M] [--hosts h1,h2 | --hostfile F]
//           [--backend mpi|nccl|auto] [--max-restarts K] [--timeout S] [--tag-output] [--dry-run]
//           [--] program [args...]
//
// The arguments are parsed by hand: everything from the program name on must reach
// the program untouched, even words that look like axonrun options.
#include <fcntl.h>
#include <poll.h>
#include <sys/syscall.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "axon/cpu_budget.h"
#include "axon/heartbeat.h"
#include "axon/rank_env.h"
#include "watchdog.h"

extern char** environ;

#ifndef AXON_VERSION
#define AXON_VERSION ""
#endif

namespace axon {
namespace {

constexpr int kLaunchError = 2;  // exit code when axonrun itself cannot start the job
constexpr int kExitPreempted = 4;  // the ranks checkpointed and stopped: axon::kExitPreempted (axon/trainer.h)

// A mistake on the command line; main() adds a pointer to --help.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Options {
  int ranks = 0;                     // ranks per node (-n, --nproc-per-node); 0 until given
  int nnodes = 0;                    // --nnodes; 0 until given
  std::vector<std::string> hosts;    // --hosts, or the hosts of --hostfile
  std::string hostfile;              // --hostfile
  std::string backend;               // --backend: mpi, nccl or auto; "" when not given
  double timeout = 25;               // --timeout: seconds without progress before the watchdog stops the job
  int max_restarts = 0;              // --max-restarts: times a failed job is started again
  double term_timeout = 30;          // --term-timeout: seconds a job has to stop after SIGTERM (0: stop at once)
  bool tag_output = false;           // --tag-output
  std::string launcher = "auto";     // --launcher: auto, mpirun or srun
  std::string heartbeat_dir;         // --heartbeat-dir: where the heartbeat folder is made
  std::string mpirun;                // from --mpirun; empty when not given
  bool dry_run = false;
  bool allow_many_ranks = false;     // --allow-many-ranks: no upper bound on -n
  bool help = false;
  bool version = false;
  std::vector<std::string> command;  // the program, then its arguments
};

void print_usage(std::FILE* out) {
  std::fputs(
      "Usage: axonrun [-n N | --nproc-per-node N] [--nnodes M] [--hosts h1,h2 | --hostfile F]\n"
      "               [--backend mpi|nccl|auto] [--max-restarts K] [--timeout S] [--tag-output] [--dry-run]\n"
      "               [--] program [args...]\n"
      "\n"
      "Start program on N ranks per node (N x M ranks in all) and watch them. Inside a Slurm\n"
      "allocation (SLURM_JOB_ID set) the job is started with srun (--mpi=pmix where Slurm has it),\n"
      "otherwise with Open MPI's mpirun.\n"
      "\n"
      "Options:\n"
      "  -n N, --nproc-per-node N\n"
      "                 ranks per node (a positive integer); under srun, default: the allocation's\n"
      "                 tasks; with --backend nccl, default: the GPUs of this machine\n"
      "  --nnodes M     nodes (default: the hosts given, the allocation's nodes, else 1)\n"
      "  --hosts h1,h2  the nodes to start ranks on (mpirun: N slots on each; srun: --nodelist)\n"
      "  --hostfile F   the same, one host per line ('host [slots=K]'; '#' starts a comment)\n"
      "  --backend B    mpi, nccl or auto: exported to the ranks as AXON_BACKEND (Axon programs\n"
      "                 take it as their default --backend)\n"
      "  --timeout S    seconds a job may go without any rank entering or leaving a collective\n"
      "                 before the watchdog stops it, naming the stuck ranks (default 25, so that a\n"
      "                 stuck job ends within 30 s; 0: off)\n"
      "  --max-restarts K\n"
      "                 start a failed job again, up to K times (default 0); each start exports\n"
      "                 AXON_RESTART_COUNT (0, 1, ...). The program resumes from its newest valid\n"
      "                 checkpoint when given one, e.g. fashion_mnist --checkpoint-dir D --resume auto.\n"
      "                 A job stopped by a signal to axonrun or preempted (exit 4) is not restarted\n"
      "  --term-timeout S\n"
      "                 seconds a job has to checkpoint and exit after SIGTERM before axonrun stops it\n"
      "                 (default 30; 0: SIGTERM stops the job at once)\n"
      "  --tag-output   prefix every output line with its rank (mpirun --tag-output, srun --label)\n"
      "  --launcher L   auto, mpirun or srun (default auto: srun inside a Slurm allocation,\n"
      "                 unless --mpirun is given)\n"
      "  --mpirun PATH  mpirun to use (default: $AXON_MPIRUN, else mpirun on PATH)\n"
      "                 (srun: $AXON_SRUN, else srun on PATH)\n"
      "  --heartbeat-dir DIR\n"
      "                 where the ranks' heartbeat folder is made (default $TMPDIR or /tmp); on a\n"
      "                 shared file system for ranks on other nodes\n"
      "  --dry-run      print the command line that would start the job and exit\n"
      "  --allow-many-ranks\n"
      "                 allow N above 64 ranks per usable CPU (at most 4096 without this flag)\n"
      "  -h, --help     show this help and exit\n"
      "  --version      show the version and exit\n"
      "  --             end of axonrun options (needed if the program name starts with '-')\n"
      "\n"
      "Everything from the program name on is passed to the program untouched.\n"
      "Ranks are not bound to cores (--bind-to none, srun --cpu-bind=none): each runs multi-threaded\n"
      "BLAS on the CPUs axonrun may use. When N exceeds the CPU cores (or the cgroup CPU quota),\n"
      "--oversubscribe is added.\n"
      "Open MPI's banners are filtered out of stderr; a rank that dies of a signal is named\n"
      "(\"axonrun: rank 1 (pid 1234) was killed by signal 9 (SIGKILL)\"). Set\n"
      "OMPI_MCA_orte_execute_quiet yourself to get mpirun's stderr unfiltered. When the job\n"
      "fails, axonrun's last line says how, and which rank failed first.\n"
      "\n"
      "Watchdog: each rank of an Axon program records in a heartbeat file when it enters and leaves\n"
      "a collective. When no rank has done either for --timeout seconds, axonrun names the stuck\n"
      "ranks, kills the job's processes and exits 124.\n"
      "\n"
      "Threads: each Axon program runs OPENBLAS_NUM_THREADS, else OMP_NUM_THREADS BLAS threads per\n"
      "rank; unset, the CPUs it may use (affinity mask, cgroup quota) / ranks on the machine.\n"
      "axonrun warns about an invalid value of either variable and starts the job: ranks given\n"
      "--threads ignore it, the others reject it.\n"
      "\n"
      "Signals: SIGTERM is preemption: it is passed on to every rank (SIGTERM to the local ranks,\n"
      "SIGUSR1 through mpirun/srun to ranks it cannot signal itself); Axon programs with a\n"
      "checkpoint folder write a checkpoint at the next step boundary and exit 4, and so does\n"
      "axonrun. A second SIGTERM, or --term-timeout seconds without the job ending, stops it at\n"
      "once (exit 143). SIGINT, SIGHUP, SIGQUIT and SIGALRM stop the whole job at once; axonrun\n"
      "then exits 128 + the signal number (130 for SIGINT). If axonrun is killed (even by\n"
      "SIGKILL), mpirun gets SIGTERM and stops the ranks. SIGUSR1 and SIGUSR2 are passed on to\n"
      "every rank and the job goes on: Axon programs with a checkpoint folder checkpoint and\n"
      "exit 4 (preemption, e.g. Slurm's --signal=B:USR1@60; slurm/requeue.sbatch).\n"
      "\n"
      "Exit code: the first failing rank's (of the last start, with --max-restarts); 4 when the\n"
      "ranks were preempted; 128 + N when stopped by signal N; 124 when the watchdog stopped a\n"
      "stuck job; 2 when axonrun could not start the job.\n",
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

int parse_nodes(std::string_view text) {
  int nodes = 0;
  const char* end = text.data() + text.size();
  auto [stop, err] = std::from_chars(text.data(), end, nodes);
  if (text.empty() || err != std::errc() || stop != end || nodes <= 0 || nodes > 100000) {
    throw UsageError("--nnodes expects a positive integer number of nodes, got '" + std::string(text) + "'");
  }
  return nodes;
}

int parse_restarts(std::string_view text) {
  int restarts = -1;
  const char* end = text.data() + text.size();
  auto [stop, err] = std::from_chars(text.data(), end, restarts);
  if (text.empty() || err != std::errc() || stop != end || restarts < 0 || restarts > 10000) {
    throw UsageError("--max-restarts expects a number of restarts from 0 to 10000, got '" + std::string(text) + "'");
  }
  return restarts;
}

double parse_timeout(std::string_view text) {
  double seconds = -1;
  const char* end = text.data() + text.size();
  auto [stop, err] = std::from_chars(text.data(), end, seconds);
  // At most a week: more is a typo, and 0 already turns the watchdog off.
  if (text.empty() || err != std::errc() || stop != end || !(seconds >= 0) || seconds > 7 * 24 * 3600.0) {
    throw UsageError("--timeout expects seconds, a number from 0 (no watchdog) to 604800, got '" + std::string(text) + "'");
  }
  return seconds;
}

// A host name as mpirun and srun take it: letters, digits, '.', '-', '_'.
std::string checked_host(std::string_view host, const std::string& where) {
  if (host.empty() || host.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_") !=
                          std::string_view::npos) {
    throw UsageError(where + ": '" + std::string(host) + "' is not a host name (letters, digits, '.', '-', '_')");
  }
  return std::string(host);
}

std::vector<std::string> parse_hosts(std::string_view list) {
  std::vector<std::string> hosts;
  const std::string where = "--hosts '" + std::string(list) + "'";
  while (true) {
    size_t comma = list.find(',');
    hosts.push_back(checked_host(list.substr(0, comma), where));
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return hosts;
}

// "host [slots=K] [...]" per line, '#' to the end of a line is a comment; the first word counts.
std::vector<std::string> read_hostfile(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw UsageError("--hostfile '" + path + "': cannot open: " + std::strerror(errno));
  std::vector<std::string> hosts;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    line = line.substr(0, line.find('#'));
    size_t start = line.find_first_not_of(" \t\r");
    if (start == std::string::npos) continue;
    size_t end = line.find_first_of(" \t\r", start);
    hosts.push_back(checked_host(std::string_view(line).substr(start, end == std::string::npos ? end : end - start),
                                 "--hostfile " + path + ":" + std::to_string(number)));
  }
  if (hosts.empty()) throw UsageError("--hostfile '" + path + "' names no host");
  return hosts;
}

Options parse_args(int argc, char** argv) {
  Options opts;
  int i = 1;
  // Fetches the word after an option such as "-n 4".
  auto value_of = [&](std::string_view option) -> std::string_view {
    if (i + 1 >= argc) throw UsageError("option " + std::string(option) + " needs a value");
    return argv[++i];
  };
  // "--name VALUE" or "--name=VALUE": true and the value in `value` when `arg` is option `name`.
  std::string_view value;
  auto option = [&](std::string_view arg, std::string_view name) {
    if (arg == name) {
      value = value_of(name);
      return true;
    }
    if (arg.size() > name.size() && arg.starts_with(name) && arg[name.size()] == '=') {
      value = arg.substr(name.size() + 1);
      return true;
    }
    return false;
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
    } else if (arg == "--allow-many-ranks") {
      opts.allow_many_ranks = true;
    } else if (arg == "--tag-output") {
      opts.tag_output = true;
    } else if (arg == "-n") {
      opts.ranks = parse_ranks(value_of(arg));
    } else if (option(arg, "--nproc-per-node")) {
      opts.ranks = parse_ranks(value);
    } else if (arg.starts_with("-n") && !arg.starts_with("--")) {
      opts.ranks = parse_ranks(arg.substr(2));  // "-n4"
    } else if (option(arg, "--nnodes")) {
      opts.nnodes = parse_nodes(value);
    } else if (option(arg, "--hosts")) {
      if (!opts.hostfile.empty()) throw UsageError("give either --hosts or --hostfile, not both");
      opts.hosts = parse_hosts(value);
    } else if (option(arg, "--hostfile")) {
      if (!opts.hosts.empty()) throw UsageError("give either --hosts or --hostfile, not both");
      if (value.empty()) throw UsageError("--hostfile needs a path");
      opts.hostfile = value;
      opts.hosts = read_hostfile(opts.hostfile);
    } else if (option(arg, "--backend")) {
      if (value != "mpi" && value != "nccl" && value != "auto")
        throw UsageError("--backend expects mpi, nccl or auto, got '" + std::string(value) + "'");
      opts.backend = value;
    } else if (option(arg, "--timeout")) {
      opts.timeout = parse_timeout(value);
    } else if (option(arg, "--max-restarts")) {
      opts.max_restarts = parse_restarts(value);
    } else if (option(arg, "--term-timeout")) {
      try {
        opts.term_timeout = parse_timeout(value);
      } catch (const UsageError&) {
        throw UsageError("--term-timeout expects seconds, a number from 0 (SIGTERM stops the job at once) to 604800, got '" +
                         std::string(value) + "'");
      }
    } else if (option(arg, "--launcher")) {
      if (value != "auto" && value != "mpirun" && value != "srun")
        throw UsageError("--launcher expects auto, mpirun or srun, got '" + std::string(value) + "'");
      opts.launcher = value;
    } else if (option(arg, "--heartbeat-dir")) {
      if (value.empty()) throw UsageError("--heartbeat-dir needs a path");
      opts.heartbeat_dir = value;
    } else if (option(arg, "--mpirun")) {
      opts.mpirun = value;
      if (opts.mpirun.empty()) throw UsageError("--mpirun needs a path");
    } else {
      throw UsageError("unknown option '" + std::string(arg) +
                       "' (put -- before a program whose name starts with '-')");
    }
  }

  opts.command.assign(argv + i, argv + argc);
  if (!opts.hosts.empty() && opts.nnodes > static_cast<int>(opts.hosts.size())) {
    throw UsageError("--nnodes " + std::to_string(opts.nnodes) + " but only " + std::to_string(opts.hosts.size()) +
                     " host" + (opts.hosts.size() == 1 ? "" : "s") + " given");
  }
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

// Order: the flag (--mpirun), then the variable ($AXON_MPIRUN / $AXON_SRUN), then the name on PATH.
std::string resolve_tool(const std::string& flag_value, const char* flag, const char* variable, const char* name,
                         const char* install_hint) {
  std::string requested = flag_value;
  std::string source = flag;
  if (requested.empty()) {
    const char* env = std::getenv(variable);
    if (env && *env) {
      requested = env;
      source = variable;
    }
  }
  if (requested.empty()) {
    if (auto found = find_on_path(name)) return *found;
    throw std::runtime_error(std::string(name) + " not found on PATH; " + install_hint);
  }
  if (requested.find('/') == std::string::npos) {
    if (auto found = find_on_path(requested)) return *found;
    throw std::runtime_error(std::string(name) + " '" + requested + "' (from " + source + ") not found on PATH");
  }
  if (!is_executable_file(requested)) {
    throw std::runtime_error(std::string(name) + " '" + requested + "' (from " + source + ") is not an executable file");
  }
  return requested;
}

std::string resolve_mpirun(const Options& opts) {
  return resolve_tool(opts.mpirun, "--mpirun", "AXON_MPIRUN", "mpirun",
                      "install Open MPI (e.g. `apt-get install openmpi-bin`) or give its path with --mpirun or AXON_MPIRUN");
}

std::string resolve_srun() {
  return resolve_tool("", "", "AXON_SRUN", "srun", "install Slurm's client (`apt-get install slurm-client`) or set AXON_SRUN");
}

// Inside a Slurm allocation: SLURM_JOB_ID is set (sbatch, salloc, srun).
bool in_slurm_allocation() {
  const char* job = std::getenv("SLURM_JOB_ID");
  return job && *job;
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

// A typo such as -n 99999 would start that many processes on one machine and could exhaust it
// (memory, pids) before the first rank reports anything. --allow-many-ranks lifts the bound.
constexpr int kRanksPerCpu = 64;
constexpr int kMaxRanks = 4096;

void check_rank_limit(const Options& opts) {
  if (opts.allow_many_ranks) return;
  const UsableCpus cpus = usable_cpus();
  const int limit = std::min(kMaxRanks, kRanksPerCpu * cpus.cpus);
  if (opts.ranks > limit) {
    throw UsageError("-n " + std::to_string(opts.ranks) + " is more than " + std::to_string(limit) +
                     " ranks, the limit for " + std::to_string(cpus.cpus) + " usable CPU" + (cpus.cpus == 1 ? "" : "s") +
                     " (" + cpus.source + "; " + std::to_string(kRanksPerCpu) + " ranks per CPU, at most " +
                     std::to_string(kMaxRanks) + "); pass --allow-many-ranks to start them anyway");
  }
}

// Variables the ranks on other nodes need: mpirun passes its environment on to local ranks only.
std::vector<std::string> exported_variables(const Options& opts) {
  std::vector<std::string> names = {"AXON_LAUNCHER", heartbeat::kDirVariable};
  if (!opts.backend.empty()) names.push_back("AXON_BACKEND");
  if (opts.max_restarts > 0) names.push_back("AXON_RESTART_COUNT");
  for (const char* name : {"AXON_DISTRIBUTED_DEBUG", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"})
    if (std::getenv(name)) names.push_back(name);
  return names;
}

std::vector<std::string> build_mpirun_argv(const std::string& mpirun, const Options& opts, int nodes) {
  const int world = opts.ranks * nodes;
  std::vector<std::string> args = {mpirun, "-np", std::to_string(world)};
  if (opts.hosts.empty()) {
    // The CPUs counted the way Axon programs count them (affinity mask and cgroup quota, shared
    // code in axon/cpu_budget.h): under a quota of fewer CPUs than ranks, the ranks oversubscribe.
    const int slots = std::min(available_slots(), usable_cpus().cpus);
    // Open MPI refuses more ranks than cores unless told.
    if (opts.ranks > slots) args.push_back("--oversubscribe");
  } else {
    // N slots on each of the first `nodes` hosts; mpirun fills them in order (rank r on host r / N).
    std::string list;
    for (int h = 0; h < nodes; ++h) list += (h ? "," : "") + opts.hosts[static_cast<size_t>(h)] + ":" + std::to_string(opts.ranks);
    args.insert(args.end(), {"--host", list});
  }
  // Always unbound: with ranks <= cores mpirun's default (bind-to core) pins each rank to one
  // core, and then cpu_budget(), which divides the affinity mask by the ranks on the node,
  // divides a second time: a rank's multi-threaded BLAS would run on one core, and the thread
  // count in the run's record would differ from the same program started without axonrun.
  args.insert(args.end(), {"--bind-to", "none"});
  if (opts.tag_output) args.push_back("--tag-output");
  if (!opts.hosts.empty()) {
    for (const std::string& name : exported_variables(opts)) args.insert(args.end(), {"-x", name});
  }
  args.insert(args.end(), opts.command.begin(), opts.command.end());
  return args;
}

// "pmix" when this Slurm has the PMIx plugin (srun --mpi=list) and the user did not choose one
// (SLURM_MPI_TYPE); "" to leave Slurm's default.
std::string srun_mpi_type(const std::string& srun) {
  if (const char* chosen = std::getenv("SLURM_MPI_TYPE"); chosen && *chosen) return "";
  std::string quoted = "'";
  for (char c : srun) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  quoted += "'";
  FILE* pipe = ::popen((quoted + " --mpi=list 2>&1").c_str(), "r");
  if (!pipe) return "";
  std::string text;
  char buffer[4096];
  while (size_t n = std::fread(buffer, 1, sizeof buffer, pipe)) text.append(buffer, n);
  ::pclose(pipe);
  // Slurm 22.05 lists one plugin per line, e.g. "srun: pmix" or "\tpmix".
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    size_t end = line.find_last_not_of(" \t\r");
    if (end == std::string::npos) continue;
    line.resize(end + 1);
    size_t start = line.find_last_of(" \t:");
    if (line.substr(start == std::string::npos ? 0 : start + 1) == "pmix") return "pmix";
  }
  return "";
}

// nodes: 0 when srun is to take the allocation's.
std::vector<std::string> build_srun_argv(const std::string& srun, const Options& opts, int nodes,
                                         const std::string& mpi_type) {
  std::vector<std::string> args = {srun};
  if (nodes > 0) args.push_back("--nodes=" + std::to_string(nodes));
  if (opts.ranks > 0) {
    if (nodes > 0) args.push_back("--ntasks=" + std::to_string(opts.ranks * nodes));
    args.push_back("--ntasks-per-node=" + std::to_string(opts.ranks));
  }
  if (!opts.hosts.empty()) {
    std::string list;
    for (int h = 0; h < nodes; ++h) list += (h ? "," : "") + opts.hosts[static_cast<size_t>(h)];
    args.push_back("--nodelist=" + list);
  }
  // One failed task ends the step (srun's default waits for the others); unbound, as with mpirun.
  args.insert(args.end(), {"--kill-on-bad-exit=1", "--cpu-bind=none"});
  if (!mpi_type.empty()) args.push_back("--mpi=" + mpi_type);
  if (opts.tag_output) args.push_back("--label");
  args.insert(args.end(), opts.command.begin(), opts.command.end());
  return args;
}

// GPUs this process may use: CUDA_VISIBLE_DEVICES's entries, else the /dev/nvidiaK devices.
int visible_gpus() {
  if (const char* visible = std::getenv("CUDA_VISIBLE_DEVICES")) {
    std::string_view list = visible;
    if (list.empty()) return 0;
    return static_cast<int>(std::count(list.begin(), list.end(), ',')) + 1;
  }
  int count = 0;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/dev", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.size() > 6 && name.starts_with("nvidia") &&
        name.find_first_not_of("0123456789", 6) == std::string::npos)
      ++count;
  }
  return count;
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

// Set when StderrFilter has named a rank killed by a signal.
bool g_rank_signal_named = false;

// Writes all of text to fd. Once a write fails (a closed pipe: EPIPE, with SIGPIPE ignored) it
// gives up for good, so that axonrun keeps draining mpirun's stderr instead of dying or blocking.
class Sink {
 public:
  explicit Sink(int fd) : fd_(fd) {}
  void write(std::string_view text) {
    while (!broken_ && !text.empty()) {
      ssize_t n = ::write(fd_, text.data(), text.size());
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        broken_ = true;
        return;
      }
      text.remove_prefix(static_cast<size_t>(n));
    }
  }

 private:
  int fd_;
  bool broken_ = false;
};

// mpirun's stderr (its own messages and the ranks' stderr) on its way to axonrun's stderr. Every
// line passes unchanged and at once, except Open MPI's own boxed messages (show_help: text between
// two lines of dashes): "mpirun noticed that process rank R with PID P on node H exited on signal
// S (...)" becomes one axonrun line naming the rank and signal; the banners that only repeat
// axonrun's summary (MPI_ABORT, "Primary job terminated normally...") are dropped; any other box
// (e.g. "not enough slots") passes unchanged. Open MPI writes a box in one go, so holding it until
// its closing line delays nothing; a box left open for kBoxIdleMs is written out as it is.
class StderrFilter {
 public:
  explicit StderrFilter(int fd) : out_(fd) {}

  void feed(std::string_view bytes) {
    idle_ms_ = 0;
    while (!bytes.empty()) {
      size_t end = bytes.find_first_of("\n\r");
      if (end == std::string_view::npos) {
        partial_.append(bytes);
        return;
      }
      partial_.append(bytes.substr(0, end + 1));
      bytes.remove_prefix(end + 1);
      line(std::exchange(partial_, {}));
    }
  }

  // Called when no bytes came for elapsed_ms: a partial line (a progress bar) goes out now.
  void idle(int elapsed_ms) {
    idle_ms_ += elapsed_ms;
    if (in_box_ && idle_ms_ >= kBoxIdleMs) release_box();
    if (!in_box_ && !partial_.empty()) {
      out_.write(partial_);
      partial_.clear();
      continuing_ = true;  // the rest of this line is not a line start: pass it as it comes
    }
  }

  // End of the stream: everything still held goes out as it is.
  void finish() {
    if (in_box_) release_box();
    out_.write(partial_);
    partial_.clear();
  }

 private:
  static constexpr int kBoxIdleMs = 500;
  static constexpr size_t kMaxBoxLines = 100;

  static std::string_view content(std::string_view text) {
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.remove_suffix(1);
    return text;
  }
  // Open MPI's box rule: a line of 74 dashes.
  static bool is_rule(std::string_view text) {
    text = content(text);
    return text.size() >= 70 && text.find_first_not_of('-') == std::string_view::npos;
  }

  void line(std::string text) {
    if (continuing_) {
      continuing_ = false;
      out_.write(text);
      return;
    }
    if (!in_box_) {
      if (is_rule(text)) {
        in_box_ = true;
        box_.push_back(std::move(text));
      } else if (!is_aggregate_note(content(text))) {
        out_.write(text);
      }
      return;
    }
    box_.push_back(std::move(text));
    if (is_rule(box_.back())) close_box();
    else if (box_.size() > kMaxBoxLines) release_box();  // not an Open MPI box after all
  }

  void release_box() {
    for (const auto& text : box_) out_.write(text);
    box_.clear();
    in_box_ = false;
  }

  void close_box() {
    std::string body;
    for (size_t i = 1; i + 1 < box_.size(); ++i) body += content(box_[i]), body += '\n';
    if (auto report = signal_report(body)) {
      out_.write(*report);
      g_rank_signal_named = true;
    } else if (!is_banner(body)) {
      release_box();
      return;
    }
    box_.clear();
    in_box_ = false;
  }

  // "axonrun: rank 1 (pid 1234) was killed by signal 9 (SIGKILL)" from Open MPI's
  // "<tool> noticed that process rank 1 with PID 1234 on node vm exited on signal 9 (Killed)."
  // Open MPI 4.1 often reports PID 0 (it did not record it): then the pid is left out.
  static std::optional<std::string> signal_report(const std::string& body) {
    size_t at = body.find("noticed that process rank ");
    if (at == std::string::npos || body.find("exited on signal") == std::string::npos) return std::nullopt;
    int rank = -1, signo = -1;
    long pid = -1;
    if (std::sscanf(body.c_str() + at, "noticed that process rank %d with PID %ld on node %*s exited on signal %d", &rank,
                    &pid, &signo) != 3 ||
        rank < 0 || signo <= 0) {
      return std::nullopt;
    }
    std::string who = "axonrun: rank " + std::to_string(rank);
    if (pid > 0) who += " (pid " + std::to_string(pid) + ")";
    return who + " was killed by signal " + std::to_string(signo) + " (" + signal_name(signo) + ")\n";
  }

  // Boxes that only say "a rank failed, the job was stopped": axonrun's last line says that.
  static bool is_banner(const std::string& body) {
    for (const char* phrase : {"Primary job  terminated normally", "Primary job terminated normally", "MPI_ABORT was invoked",
                               "has exited due to process rank", "detected that one or more processes exited with non-zero"}) {
      if (body.find(phrase) != std::string::npos) return true;
    }
    return false;
  }

  // "[vm:123] 1 more process has sent help message help-mpi-api.txt / mpi-abort" and the
  // "Set MCA parameter "orte_base_help_aggregate" to 0..." hint that follows: counts of the
  // dropped banners.
  bool is_aggregate_note(std::string_view text) {
    if (text.find("has sent help message help-mpi-api.txt / mpi-abort") != std::string_view::npos ||
        text.find("have sent help message help-mpi-api.txt / mpi-abort") != std::string_view::npos) {
      dropped_note_ = true;
      return true;
    }
    if (dropped_note_ && text.find("orte_base_help_aggregate") != std::string_view::npos) return true;
    dropped_note_ = false;
    return false;
  }

  Sink out_;
  std::string partial_;            // bytes of a line whose end has not come yet
  bool continuing_ = false;        // the start of the current line was already written
  bool in_box_ = false;
  std::vector<std::string> box_;   // the open box's lines, rules included
  int idle_ms_ = 0;
  bool dropped_note_ = false;
};

// Signals that stop the job. Each would terminate axonrun by default; caught, it stops the
// job instead and axonrun exits 128 + its number. (SIGTERM first asks the job to checkpoint and
// stop, see term_job; a second one, or the --term-timeout, stops it like the others.) SIGINT goes on to mpirun as SIGINT (what a
// terminal's Ctrl-C sends the whole foreground group anyway); the others become SIGTERM, the one
// signal mpirun documents as "kill the job" (it forwards SIGUSR1/2 to the ranks, which would
// die of them or ignore them, and its handling of SIGHUP/SIGQUIT is not a documented contract).
// SIGKILL cannot be caught: see start_mpirun for how the job still ends with axonrun.
constexpr int kStopSignals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGALRM};
// Signals passed on to the ranks as they are, the job going on: SIGUSR1/SIGUSR2 are how clusters
// ask for a checkpoint before a time limit or preemption (Slurm's --signal); mpirun and srun
// forward them to every rank, whose preemption handler (axon/preemption.h) checkpoints and exits.
constexpr int kForwardedSignals[] = {SIGUSR1, SIGUSR2};

// The running mpirun, for the signal handler; 0 when there is none.
std::atomic<pid_t> g_child{0};
// The first stop signal axonrun received; 0 when none. It, not mpirun's status, sets the exit code.
std::atomic<int> g_stop_signal{0};
// Whether the stop signal has been sent on to a launcher (once only).
std::atomic<bool> g_stop_delivered{false};
static_assert(std::atomic<bool>::is_always_lock_free, "signal handler needs a lock-free flag");
// The preemption signal (SIGTERM) axonrun received and is passing on to the ranks; 0 when none.
std::atomic<int> g_preempt_signal{0};
// Whether SIGTERM means preemption (--term-timeout > 0) rather than an immediate stop.
std::atomic<bool> g_term_is_preemption{true};
static_assert(std::atomic<pid_t>::is_always_lock_free, "signal handler needs a lock-free pid");
static_assert(std::atomic<int>::is_always_lock_free, "signal handler needs a lock-free int");

extern "C" void forward_to_job(int signo) {
  int saved_errno = errno;
  pid_t child = g_child.load();
  if (child > 0) ::kill(child, signo);
  errno = saved_errno;
}

extern "C" void stop_job(int signo) {
  int saved_errno = errno;
  int none = 0;
  // Only the first signal goes on: mpirun treats a second one within seconds as "terminate at
  // once", which could skip stopping the ranks.
  if (g_stop_signal.compare_exchange_strong(none, signo)) {
    pid_t child = g_child.load();
    if (child > 0 && !g_stop_delivered.exchange(true)) ::kill(child, signo == SIGINT ? SIGINT : SIGTERM);
  }
  errno = saved_errno;
}

// A stop signal that came while no launcher ran (between two starts of --max-restarts) is
// delivered to the next one as soon as it exists; see run_and_wait.
void deliver_pending_stop(pid_t child) {
  const int signo = g_stop_signal.load();
  if (signo != 0 && !g_stop_delivered.exchange(true)) ::kill(child, signo == SIGINT ? SIGINT : SIGTERM);
}

// SIGTERM is how clusters preempt a job and how `kill` stops one. The first SIGTERM while a job
// runs only records the request: monitor() passes it on to the ranks (a handler cannot walk the
// watchdog's list of rank processes), which checkpoint at their next step boundary and exit 4.
// A SIGTERM between two starts, a second SIGTERM, or one with --term-timeout 0 stops the job.
extern "C" void term_job(int signo) {
  int saved_errno = errno;
  int none = 0;
  const bool first = g_term_is_preemption.load() && g_child.load() > 0 && g_stop_signal.load() == 0 &&
                     g_preempt_signal.compare_exchange_strong(none, signo);
  if (!first) stop_job(signo);
  errno = saved_errno;
}

// Starts mpirun with fork + exec so that the child can bind its lifetime to ours before exec:
// PR_SET_PDEATHSIG makes the kernel send mpirun SIGTERM when axonrun dies, even of SIGKILL, and
// mpirun answers SIGTERM by killing its ranks. The getppid() check closes the race where axonrun
// died between fork and prctl (the child would already belong to another parent). Only
// async-signal-safe calls run in the child; an exec failure comes back through a CLOEXEC pipe.
// stderr_fd: where mpirun's stderr goes (-1: axonrun's own); sigpipe: the SIGPIPE action to give
// it back (axonrun ignores SIGPIPE while it forwards stderr).
pid_t start_mpirun(const std::vector<std::string>& args, const sigset_t& handled, const sigset_t& child_mask,
                   int stderr_fd, const struct sigaction& sigpipe) {
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
    for (int signo : kForwardedSignals) {
      if (::sigismember(&handled, signo) == 1) ::signal(signo, SIG_DFL);
    }
    ::sigaction(SIGPIPE, &sigpipe, nullptr);
    if (stderr_fd >= 0 && ::dup2(stderr_fd, STDERR_FILENO) < 0) ::_exit(kLaunchError);
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

// What the watchdog decided while the job ran.
struct Watch {
  launcher::Watchdog* dog = nullptr;  // null: no heartbeat folder (nothing to watch)
  bool stopped = false;               // the watchdog stopped a stuck job
  std::vector<int> blamed;            // the stuck ranks it named
  double stalled_s = 0;
  int world = 0;                      // ranks in the job; 0 when srun takes the allocation's
  double term_timeout = 30;           // --term-timeout
  bool preempt_forwarded = false;     // a SIGTERM to axonrun was passed on to the ranks
  bool term_timed_out = false;        // ...and the job did not stop within --term-timeout
};

// Kills the local processes of ranks that still run (SIGKILL: a stuck or stopped rank may not
// answer SIGTERM). Returns how many it killed.
int kill_local_ranks(const launcher::Watchdog& dog) {
  int killed = 0;
  for (pid_t pid : dog.live_local_pids()) {
    if (::kill(pid, SIGKILL) == 0) ++killed;
  }
  return killed;
}

// "<before>2.5<after>"
std::string fmt_seconds(const char* before, double seconds, const char* after) {
  char text[64];
  std::snprintf(text, sizeof text, "%g", seconds);
  return before + std::string(text) + after;
}

// Passes a preemption request (SIGTERM to axonrun) on to every rank: SIGTERM straight to each
// local rank process the watchdog knows, which Axon's preemption handler turns into a checkpoint
// and exit 4. mpirun would answer a SIGTERM by killing the ranks (srun by SIGKILL), so ranks that
// axonrun cannot signal itself (on other nodes, or not registered yet) get SIGUSR1 through the
// launcher instead, which both forward and Axon programs take the same way.
// When no rank has a heartbeat file (not Axon programs, which know nothing of checkpoints, or a
// job still starting) SIGTERM stops the job as any stop signal does. Returns false then.
bool forward_preemption(pid_t launcher_pid, Watch& watch) {
  watch.dog->scan();
  if (watch.dog->registered() == 0) return false;
  const std::vector<pid_t> local = watch.dog->live_local_pids();
  for (pid_t pid : local) ::kill(pid, SIGTERM);
  const bool all_local = watch.world > 0 && watch.dog->registered() == watch.world &&
                         watch.dog->local_ranks() == watch.world;
  if (!all_local) ::kill(launcher_pid, SIGUSR1);
  std::fprintf(stderr,
               "axonrun: SIGTERM: asking the job to write a checkpoint and stop (passed on to %s); a second SIGTERM%s "
               "stops it at once\n",
               all_local ? "every rank" : "the ranks, SIGUSR1 through the launcher to those on other nodes or not yet started",
               watch.term_timeout > 0 ? fmt_seconds(", or ", watch.term_timeout, " s (--term-timeout) without it ending,").c_str()
                                      : "");
  std::fflush(stderr);
  return true;
}

// Until the launcher (mpirun or srun) exits: forwards its stderr through a StderrFilter (when
// err_fd >= 0), notes each local rank's end as it happens (pidfds), and every kScanMs reads the
// heartbeats; a stuck job is reported and its processes killed. The launcher is left unreaped.
// Every wait is bounded by the launcher's own lifetime, plus kDrainMs for output still in the
// pipe: a process that inherited the pipe and outlives the launcher cannot hold axonrun.
void monitor(pid_t pid, int err_fd, Watch& watch) {
  constexpr int kPollMs = 100, kScanMs = 250, kDrainMs = 2000, kKillGraceMs = 10000;
  StderrFilter filter(STDERR_FILENO);
  char buffer[65536];
  // Reads what is there; false at end of stream.
  auto read_some = [&]() {
    ssize_t n = ::read(err_fd, buffer, sizeof buffer);
    if (n > 0) filter.feed(std::string_view(buffer, static_cast<size_t>(n)));
    return n > 0 || (n < 0 && (errno == EINTR || errno == EAGAIN));
  };
  bool open = err_fd >= 0;
  auto last_scan = std::chrono::steady_clock::now() - std::chrono::milliseconds(kScanMs);
  bool stop_pending = false;  // the watchdog sent SIGTERM at stop_sent; SIGKILL follows after the grace
  auto stop_sent = std::chrono::steady_clock::now();
  auto preempt_sent = std::chrono::steady_clock::now();
  while (true) {
    siginfo_t info{};
    if (::waitid(P_PID, pid, &info, WEXITED | WNOHANG | WNOWAIT) < 0 && errno != EINTR) {
      throw std::runtime_error(std::string("waiting for the launcher failed: ") + std::strerror(errno));
    }
    if (info.si_pid == pid) break;  // exited

    std::vector<pollfd> fds;
    if (open) fds.push_back({err_fd, POLLIN, 0});
    if (watch.dog) {
      for (int fd : watch.dog->pidfds()) fds.push_back({fd, POLLIN, 0});
    }
    int n = ::poll(fds.data(), fds.size(), kPollMs);  // a stop signal interrupts it (EINTR): just go round
    bool stderr_ready = false;
    for (const pollfd& p : fds) {
      if (!(p.revents & (POLLIN | POLLHUP | POLLERR))) continue;
      if (p.fd == err_fd) stderr_ready = true;
      else watch.dog->process_ended(p.fd);
    }
    if (stderr_ready) open = read_some();
    else if (n == 0) filter.idle(kPollMs);
    if (!open && err_fd >= 0 && !watch.dog) {
      // mpirun closed its stderr and there is nothing else to watch: wait for it to exit.
      ::waitid(P_PID, pid, &info, WEXITED | WNOWAIT);
      break;
    }

    const auto now = std::chrono::steady_clock::now();
    if (watch.dog && !watch.preempt_forwarded && g_preempt_signal.load() != 0 && g_stop_signal.load() == 0) {
      filter.finish();  // a partial line of a rank's output ends before axonrun's
      if (forward_preemption(pid, watch)) {
        watch.preempt_forwarded = true;
        preempt_sent = now;
      } else {
        g_preempt_signal.store(0);
        stop_job(SIGTERM);
      }
    }
    if (watch.preempt_forwarded && !watch.term_timed_out && g_stop_signal.load() == 0 && watch.term_timeout > 0 &&
        now - preempt_sent > std::chrono::duration<double>(watch.term_timeout)) {
      watch.term_timed_out = true;
      filter.finish();
      std::fprintf(stderr, "axonrun: the job did not stop within %g s after SIGTERM (--term-timeout); stopping it\n",
                   watch.term_timeout);
      std::fflush(stderr);
      stop_job(SIGTERM);
      stop_sent = now;
      stop_pending = true;
    }
    if (watch.dog && now - last_scan >= std::chrono::milliseconds(kScanMs)) {
      last_scan = now;
      watch.dog->scan();
      if (!watch.stopped && g_stop_signal.load() == 0) {
        if (auto report = watch.dog->stuck(watch.blamed)) {
          watch.stopped = true;
          filter.finish();
          for (const std::string& line : *report) std::fprintf(stderr, "axonrun: %s\n", line.c_str());
          std::fflush(stderr);
          kill_local_ranks(*watch.dog);
          ::kill(pid, SIGTERM);
          stop_sent = now;
          stop_pending = true;
        }
      }
    }
    // A launcher that does not stop within the grace period after the watchdog's stop is killed.
    if (stop_pending && now - stop_sent > std::chrono::milliseconds(kKillGraceMs)) {
      ::kill(pid, SIGKILL);
      stop_pending = false;
    }
  }
  // The launcher has exited: take what is left, for a bounded time.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kDrainMs);
  while (open) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd ready{err_fd, POLLIN, 0};
    int n = ::poll(&ready, 1, static_cast<int>(std::min<long long>(left.count(), kPollMs)));
    if (n > 0) open = read_some();
    else if (n == 0) break;  // the launcher is gone and the pipe is quiet
  }
  filter.finish();
}

// After the launcher has exited: waits up to kGraceMs for local ranks to end, then kills those
// that outlived it, so that no rank is left behind. Says which ones it killed.
void reap_local_ranks(launcher::Watchdog& dog, const std::string& launcher_name) {
  constexpr int kGraceMs = 3000;
  dog.scan();
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kGraceMs);
  while (true) {
    dog.reap_all();
    if (dog.live_local_pids().empty() || std::chrono::steady_clock::now() > deadline) break;
    std::vector<pollfd> fds;
    for (int fd : dog.pidfds()) fds.push_back({fd, POLLIN, 0});
    ::poll(fds.data(), fds.size(), 100);
  }
  for (pid_t pid : dog.live_local_pids()) {
    if (::kill(pid, SIGKILL) == 0) {
      std::fprintf(stderr, "axonrun: a rank process (pid %d) outlived %s; killed it\n", static_cast<int>(pid),
                   launcher_name.c_str());
    }
  }
}

// Starts the launcher, stops it on any of kStopSignals, and returns its wait status. With
// filter_stderr, its stderr comes through a pipe and a StderrFilter; stdout is untouched.
int run_and_wait(const std::vector<std::string>& args, bool filter_stderr, Watch& watch) {
  sigset_t handled, previous;
  sigemptyset(&handled);
  for (int signo : kStopSignals) {
    struct sigaction current {};
    ::sigaction(signo, nullptr, &current);
    if (current.sa_handler == SIG_IGN) continue;  // e.g. nohup, a background job: keep ignoring it
    struct sigaction action {};
    action.sa_handler = signo == SIGTERM ? term_job : stop_job;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    ::sigaction(signo, &action, nullptr);
    sigaddset(&handled, signo);
  }
  for (int signo : kForwardedSignals) {
    struct sigaction current {};
    ::sigaction(signo, nullptr, &current);
    if (current.sa_handler == SIG_IGN) continue;
    struct sigaction action {};
    action.sa_handler = forward_to_job;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    ::sigaction(signo, &action, nullptr);
    sigaddset(&handled, signo);
  }

  // A reader of axonrun's stderr that goes away must not kill axonrun (and leave the job to the
  // parent-death signal) while it forwards mpirun's stderr: writes then fail with EPIPE instead.
  // mpirun gets the original action back.
  struct sigaction sigpipe {};
  ::sigaction(SIGPIPE, nullptr, &sigpipe);
  int err_pipe[2] = {-1, -1};
  if (filter_stderr) {
    if (::pipe2(err_pipe, O_CLOEXEC) != 0) throw std::runtime_error(std::string("pipe failed: ") + std::strerror(errno));
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    sigemptyset(&ignore.sa_mask);
    ::sigaction(SIGPIPE, &ignore, nullptr);
  }

  // Hold the signals until g_child is set, so none can arrive with nowhere to go; one that
  // arrives meanwhile is delivered at the unblock below and stops the fresh mpirun.
  ::sigprocmask(SIG_BLOCK, &handled, &previous);
  pid_t pid = 0;
  try {
    pid = start_mpirun(args, handled, previous, err_pipe[1], sigpipe);
  } catch (...) {
    ::sigprocmask(SIG_SETMASK, &previous, nullptr);
    if (filter_stderr) {
      ::close(err_pipe[0]);
      ::close(err_pipe[1]);
    }
    throw;
  }
  g_child.store(pid);
  ::sigprocmask(SIG_SETMASK, &previous, nullptr);
  deliver_pending_stop(pid);

  if (filter_stderr) {
    ::close(err_pipe[1]);  // mpirun holds the only write end: its exit ends the stream
    ::fcntl(err_pipe[0], F_SETFL, O_NONBLOCK);
  }
  if (filter_stderr || watch.dog) monitor(pid, err_pipe[0], watch);
  if (filter_stderr) ::close(err_pipe[0]);

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

// The ranks' heartbeat folder, removed with everything in it when axonrun is done.
class HeartbeatDir {
 public:
  explicit HeartbeatDir(const std::string& parent) {
    std::string base = parent;
    if (base.empty()) {
      const char* tmp = std::getenv("TMPDIR");
      base = tmp && *tmp ? tmp : "/tmp";
    }
    if (parent.empty()) remove_stale(base);
    std::string pattern = base + "/axonrun-" + std::to_string(::getpid()) + "-XXXXXX";
    if (!::mkdtemp(pattern.data())) {
      throw std::runtime_error("cannot make the heartbeat folder in '" + base + "': " + std::strerror(errno) +
                               " (choose another with --heartbeat-dir)");
    }
    path_ = pattern;
  }
  ~HeartbeatDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  HeartbeatDir(const HeartbeatDir&) = delete;
  HeartbeatDir& operator=(const HeartbeatDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  // Folders "axonrun-<pid>-XXXXXX" of axonruns that are gone without removing theirs (killed with
  // SIGKILL). Only in the default temporary folder, which belongs to this machine.
  static void remove_stale(const std::string& base) {
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(base, ec)) {
      const std::string name = entry.path().filename().string();
      if (!name.starts_with("axonrun-")) continue;
      const size_t dash = name.find('-', 8);
      if (dash == std::string::npos || name.size() != dash + 7) continue;
      pid_t pid = 0;
      auto [end, err] = std::from_chars(name.data() + 8, name.data() + dash, pid);
      if (err != std::errc() || end != name.data() + dash || pid <= 0) continue;
      if (::kill(pid, 0) == 0 || errno != ESRCH) continue;  // its axonrun still runs
      std::error_code ignored;
      std::filesystem::remove_all(entry.path(), ignored);
    }
  }

  std::string path_;
};

// How one start of the job ended: its exit code, the summary line (without "axonrun: "; empty
// when it succeeded), and whether --max-restarts may start it again: a failure may be restarted,
// a stop that someone asked for (a signal to axonrun, a preemption: exit 4) may not.
struct Attempt {
  int code = 0;
  bool restartable = false;
  std::string summary;
};

// Starts the job once, watches it until it ends, and reaps what is left of it.
Attempt run_attempt(const std::vector<std::string>& args, const Options& opts, int world, const std::string& launcher_name,
                    const std::string& job, bool filter_stderr) {
  HeartbeatDir heartbeats(opts.heartbeat_dir);
  ::setenv(heartbeat::kDirVariable, heartbeats.path().c_str(), 1);
  launcher::Watchdog dog(heartbeats.path(), world, opts.timeout);
  Watch watch;
  watch.dog = &dog;
  watch.world = world;
  watch.term_timeout = opts.term_timeout;
  g_rank_signal_named = false;

  int status = run_and_wait(args, filter_stderr, watch);
  reap_local_ranks(dog, launcher_name);
  Attempt result;
  if (int signo = g_stop_signal.load(); signo != 0) {
    // A cancel, not a crash: whatever mpirun returned while stopping, report the signal.
    result.code = 128 + signo;
    result.summary = "job stopped by " + signal_name(signo) + " (sent to axonrun" +
                     (watch.term_timed_out ? ", and the job did not stop within --term-timeout" : "") + "); exit code " +
                     std::to_string(result.code);
    return result;
  }
  if (watch.stopped) {
    constexpr int kStuck = 124;  // as timeout(1)
    const size_t n = watch.blamed.size();
    char text[256];
    std::snprintf(text, sizeof text, "job stopped by the watchdog: rank%s %s %s stuck (no progress for %g s); exit code %d",
                  n == 1 ? "" : "s", launcher::list_ranks(watch.blamed).c_str(), n == 1 ? "is" : "are", opts.timeout, kStuck);
    return {kStuck, true, text + job};
  }
  if (WIFSIGNALED(status)) {
    int signo = WTERMSIG(status);
    return {128 + signo, true, "job killed by signal " + signal_name(signo)};
  }
  int code = WEXITSTATUS(status);
  // The first failing rank's own exit status is the job's (srun returns the largest of all).
  // A launcher that says all is well is believed: a rank may end without an exit record and
  // still have succeeded (_exit(0)).
  launcher::Failure failure{};  // a plain copy: GCC 12 takes a std::optional of it for uninitialized
  bool first = false;
  if (code != 0) {
    if (std::optional<launcher::Failure> found = dog.first_failure()) {
      failure = *found;
      first = true;
    }
  }
  if (first && failure.exited) code = failure.status;
  // Open MPI 4.1 prints its "exited on signal" notice only some of the time (it races with the
  // other ranks' exits); mpirun's exit code is then all there is: 128 + S for a rank killed by S,
  // which a rank's own exit(128 + S) cannot be told from.
  if (filter_stderr && !g_rank_signal_named && !first && code > 128 && code - 128 < NSIG) {
    std::fprintf(stderr, "axonrun: a rank was killed by signal %d (%s) or exited with code %d; Open MPI did not say which rank\n",
                 code - 128, signal_name(code - 128).c_str(), code);
  }
  result.code = code;
  if (const int signo = g_preempt_signal.load(); signo != 0 && code != 0 && code != kExitPreempted) {
    // Ranks without a preemption handler (no checkpoint folder) died of the SIGTERM passed on,
    // or failed while stopping: a stop someone asked for all the same, never restarted.
    result.summary = "job stopped by " + signal_name(signo) + " (sent to axonrun); exit code " + std::to_string(code);
    if (code != 128 + signo) result.summary += " (the ranks' own)";
    return result;
  }
  if (code == kExitPreempted) {
    // The ranks' "preempted" status: they wrote a checkpoint because the job was asked to stop
    // (SIGTERM or SIGUSR1 to axonrun, or a signal from the cluster to the ranks themselves).
    const int signo = g_preempt_signal.load();
    result.summary = "job preempted" + (signo ? " by " + signal_name(signo) + " (passed on to the ranks)" : std::string()) +
                     ": the ranks wrote a checkpoint and exited " + std::to_string(code) +
                     " (resume it from the checkpoint, e.g. --resume auto)" + job;
    return result;
  }
  if (code != 0) {
    std::string how;
    if (first) {
      how = ": rank " + std::to_string(failure.rank) + " (pid " + std::to_string(failure.pid) + ", host " + failure.host +
            ") failed first: ";
      if (failure.exited) how += "exit status " + std::to_string(failure.status);
      else if (code > 128 && code - 128 < NSIG) how += "killed by signal " + std::to_string(code - 128) + " (" + signal_name(code - 128) + ")";
      else how += "ended without exiting (killed by a signal)";
      how += opts.tag_output ? "; its output is above, tagged with its rank" : "; its output is above (--tag-output marks each line's rank)";
    }
    result.restartable = true;
    result.summary = "job failed with exit code " + std::to_string(code) + how + job;
  }
  return result;
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

  // axonrun started as one rank of a job (`srun -n 4 axonrun ...`) starts a whole job per rank.
  try {
    const RankEnvironment outer = rank_environment();
    if (outer.launched() && outer.world_size > 1) {
      std::fprintf(stderr,
                   "axonrun: warning: axonrun itself runs as rank %d of %d (%s launcher variables): each of those %d "
                   "processes starts a job of its own; start axonrun once, outside mpirun or srun\n",
                   outer.rank, outer.world_size, outer.source.c_str(), outer.world_size);
    }
  } catch (const RankEnvironmentError&) {
    // Not axonrun's concern: its ranks get variables of their own from mpirun or srun.
  }
  // auto: srun inside an allocation, unless an mpirun was named on the command line.
  const bool use_srun =
      opts.launcher == "srun" || (opts.launcher == "auto" && in_slurm_allocation() && opts.mpirun.empty());
  if (opts.ranks == 0 && opts.backend == "nccl") {
    opts.ranks = visible_gpus();
    if (opts.ranks == 0) throw UsageError("--backend nccl without -n: no GPU is visible here; give -n N");
  }
  if (opts.ranks == 0 && !use_srun) throw UsageError("missing -n N, the number of ranks to start");
  // Nodes: --nnodes, else the hosts given, else (srun) the allocation's, else 1.
  int nodes = opts.nnodes;
  if (nodes == 0 && !opts.hosts.empty()) nodes = static_cast<int>(opts.hosts.size());
  if (nodes == 0 && use_srun) {
    nodes = parse_index_variable("SLURM_JOB_NUM_NODES", std::getenv("SLURM_JOB_NUM_NODES"))
                .value_or(parse_index_variable("SLURM_NNODES", std::getenv("SLURM_NNODES")).value_or(0));
  }
  if (nodes == 0) nodes = 1;
  if (!use_srun && nodes > 1 && opts.hosts.empty()) {
    throw UsageError("--nnodes " + std::to_string(nodes) + " needs --hosts or --hostfile (or a Slurm allocation)");
  }

  std::string tool = use_srun ? resolve_srun() : resolve_mpirun(opts);
  check_program(opts.command[0]);
  if (opts.ranks > 0) check_rank_limit(opts);
  // The program may ignore the thread variables (fashion_mnist does when given --threads), so a
  // bad one is only a warning here; axonrun's own slot arithmetic never reads them.
  try {
    (void)cpu_budget(std::max(opts.ranks, 1));
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "axonrun: warning: %s; ranks started without --threads will reject it\n", e.what());
  }
  const int world = opts.ranks * nodes;  // 0 when srun takes the allocation's tasks
  std::vector<std::string> args = use_srun ? build_srun_argv(tool, opts, opts.ranks > 0 || opts.nnodes > 0 ? nodes : 0,
                                                             srun_mpi_type(tool))
                                           : build_mpirun_argv(tool, opts, nodes);
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
  if (!opts.backend.empty()) ::setenv("AXON_BACKEND", opts.backend.c_str(), 1);
  // mpirun hands the ranks pipes, not our terminal; tell them when a live progress line will show.
  if (::isatty(STDERR_FILENO)) ::setenv("AXON_PROGRESS_TTY", "1", 1);
  // Open MPI's banners ("MPI_ABORT was invoked...", "Primary job terminated normally, but...")
  // repeat what axonrun's last line says and bury the failing rank's own message, but
  // orte_execute_quiet=1 would also hide the one line that names a rank killed by a signal. So
  // Open MPI stays verbose and axonrun filters its stderr (StderrFilter) - unless the user set
  // the variable: then mpirun's stderr is theirs, unfiltered.
  const bool filter_stderr = std::getenv("OMPI_MCA_orte_execute_quiet") == nullptr;
  if (filter_stderr) ::setenv("OMPI_MCA_orte_execute_quiet", "0", 1);  // an MCA params file must not hide it
  g_term_is_preemption.store(opts.term_timeout > 0);

  const std::string launcher_name = use_srun ? "srun" : "mpirun";
  const std::string job = " (" + (world > 0 ? std::to_string(world) + " rank" + (world == 1 ? "" : "s") + ", " : "") +
                          "command: " + join_quoted(opts.command) + ")";
  // Each start is a fresh job (new heartbeat folder, new ranks); the program tells a restart from
  // AXON_RESTART_COUNT (like torchrun's TORCHELASTIC_RESTART_COUNT) or simply resumes from its
  // newest checkpoint (fashion_mnist --resume auto).
  for (int attempt = 0;; ++attempt) {
    ::setenv("AXON_RESTART_COUNT", std::to_string(attempt).c_str(), 1);
    Attempt result = run_attempt(args, opts, world, launcher_name, job, filter_stderr);
    if (result.code == 0 || !result.restartable || attempt >= opts.max_restarts) {
      if (!result.summary.empty()) {
        std::string tail;
        if (result.restartable && opts.max_restarts > 0) {
          tail = "; gave up after " + std::to_string(attempt) + " restart" + (attempt == 1 ? "" : "s") + " (" +
                 std::to_string(attempt + 1) + " starts, --max-restarts " + std::to_string(opts.max_restarts) + ")";
        } else if (attempt > 0) {
          tail = " (after " + std::to_string(attempt) + " restart" + (attempt == 1 ? "" : "s") + ")";
        }
        std::fprintf(stderr, "axonrun: %s%s\n", result.summary.c_str(), tail.c_str());
      } else if (attempt > 0) {
        std::fprintf(stderr, "axonrun: job succeeded after %d restart%s\n", attempt, attempt == 1 ? "" : "s");
      }
      return result.code;
    }
    if (const int signo = g_stop_signal.load(); signo != 0) {
      // Stopped while the failed start was being reaped: no restart.
      std::fprintf(stderr, "axonrun: %s\naxonrun: job stopped by %s (sent to axonrun) before a restart; exit code %d\n",
                   result.summary.c_str(), signal_name(signo).c_str(), 128 + signo);
      return 128 + signo;
    }
    std::fprintf(stderr, "axonrun: %s\naxonrun: restarting the job (restart %d of %d, AXON_RESTART_COUNT=%d)\n",
                 result.summary.c_str(), attempt + 1, opts.max_restarts, attempt + 1);
    std::fflush(stderr);
  }
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
