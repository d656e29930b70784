// Runs a shell command as a user would, for end-to-end tests: exit code, output, duration.
#pragma once

#include <dirent.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

namespace axon::testing {

struct CommandResult {
  int code;            // exit status, or 128 + signal number
  std::string output;  // all of stdout, then all of stderr
  double seconds;
  std::string stdout_text;  // stdout alone
};

// stdout and stderr are read apart: under mpirun they come from different processes (mpirun
// forwards the ranks' stdout, axonrun their stderr), so merged into one pipe a long stdout line
// can be cut by a stderr line. `output` keeps each stream whole.
inline CommandResult run_command(const std::string& command) {
  const auto start = std::chrono::steady_clock::now();
  char err_path[] = "/tmp/axon_test_stderr_XXXXXX";
  const int err_fd = ::mkstemp(err_path);
  if (err_fd < 0) return {-1, "mkstemp failed", 0.0, ""};
  ::close(err_fd);
  std::string out;
  FILE* pipe = popen(("{ " + command + "\n} 2>" + err_path).c_str(), "r");
  if (!pipe) {
    ::unlink(err_path);
    return {-1, "popen failed", 0.0, ""};
  }
  std::array<char, 4096> buf;
  while (size_t n = fread(buf.data(), 1, buf.size(), pipe)) out.append(buf.data(), n);
  const int status = pclose(pipe);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::ifstream err_file(err_path, std::ios::binary);
  std::string err((std::istreambuf_iterator<char>(err_file)), std::istreambuf_iterator<char>());
  ::unlink(err_path);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), out + err, seconds, out};
}

// Every live process whose environment holds AXON_TEST_JOB=marker: axonrun, mpirun or srun and
// the ranks all inherit it, and a process re-parented to init keeps it.
inline std::vector<pid_t> job_processes(const std::string& marker) {
  const std::string entry = "AXON_TEST_JOB=" + marker;
  std::vector<pid_t> found;
  DIR* proc = ::opendir("/proc");
  if (!proc) return found;
  while (dirent* d = ::readdir(proc)) {
    char* end = nullptr;
    long pid = std::strtol(d->d_name, &end, 10);
    if (*end != '\0' || pid <= 0) continue;
    std::ifstream environ_file("/proc/" + std::string(d->d_name) + "/environ", std::ios::binary);
    std::string text((std::istreambuf_iterator<char>(environ_file)), std::istreambuf_iterator<char>());
    // A zombie's environment reads empty: it no longer runs, so it does not count.
    size_t at = text.find(entry);
    if (at != std::string::npos && (at == 0 || text[at - 1] == '\0') &&
        (at + entry.size() == text.size() || text[at + entry.size()] == '\0')) {
      found.push_back(static_cast<pid_t>(pid));
    }
  }
  ::closedir(proc);
  return found;
}

// Waits (bounded) until no process of the job is left; kills any that are, so a failure
// does not leave ranks running.
inline bool job_gone_within(const std::string& marker, std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (job_processes(marker).empty()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  for (pid_t pid : job_processes(marker)) ::kill(pid, SIGKILL);
  return false;
}

}  // namespace axon::testing
