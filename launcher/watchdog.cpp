// axonrun's watchdog (see watchdog.h).
#include "watchdog.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <tuple>

namespace axon::launcher {

namespace {

std::string seconds_ago(std::int64_t then_ns, std::int64_t now_ns) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f s", static_cast<double>(now_ns - then_ns) / 1e9);
  return text;
}

std::string collective(const heartbeat::Record& r) { return "collective #" + std::to_string(r.seq) + " (" + r.op + ")"; }

}  // namespace

std::string list_ranks(const std::vector<int>& ranks) {
  std::string text;
  for (size_t i = 0; i < ranks.size(); ++i) {
    if (i > 0) text += i + 1 == ranks.size() ? " and " : ", ";
    text += std::to_string(ranks[i]);
  }
  return text;
}

namespace {

// A rank's record, or none when the file is missing or every read was torn. Ranks rewrite the
// line in place through a shared mapping, without a lock, so it is read twice and kept when both
// reads agree. A rank that rewrites it faster than it can be read twice (tight loops of small
// collectives) is making progress: after a few tries the last read that parses is taken.
std::optional<heartbeat::Record> read_record(const std::string& path) {
  auto read_line = [&]() -> std::optional<std::string> {
    std::ifstream in(path);
    std::string line;
    if (!in || !std::getline(in, line)) return std::nullopt;
    return line;
  };
  std::optional<heartbeat::Record> latest;
  for (int attempt = 0; attempt < 4; ++attempt) {
    const std::optional<std::string> first = read_line(), second = read_line();
    if (!first || !second) return std::nullopt;
    if (*first == *second) return heartbeat::parse(*first + "\n");
    if (auto record = heartbeat::parse(*second + "\n")) latest = record;
  }
  return latest;
}

}  // namespace

Watchdog::Watchdog(std::string dir, int world_size, double timeout_s)
    : dir_(std::move(dir)), world_size_(world_size), timeout_s_(timeout_s), started_ns_(heartbeat::now_ns()) {
  char host[256] = "?";
  if (::gethostname(host, sizeof host - 1) == 0) host_ = host;
  for (char& c : host_)
    if (c == ' ' || c == '\n') c = '_';
}

Watchdog::~Watchdog() {
  for (auto& [rank, info] : ranks_)
    if (info.pidfd >= 0) ::close(info.pidfd);
}

void Watchdog::scan() {
  // Ranks 0..world_size-1 when the world is known; else the files that are there.
  std::vector<int> candidates;
  if (world_size_ > 0) {
    for (int r = 0; r < world_size_; ++r) candidates.push_back(r);
  } else {
    for (int r = 0; r < 1 << 16; ++r) {
      if (::access(heartbeat::file_for(dir_, r).c_str(), F_OK) != 0) break;
      candidates.push_back(r);
    }
  }
  for (int r : candidates) {
    std::optional<heartbeat::Record> record = read_record(heartbeat::file_for(dir_, r));
    if (!record || record->rank != r) continue;  // torn by a rewrite: the next scan reads it
    auto [it, fresh] = ranks_.try_emplace(r);
    RankInfo& info = it->second;
    // A record from a process that replaced this rank (a restarted job) starts afresh.
    if (!fresh && info.record.pid != record->pid) {
      if (info.pidfd >= 0) ::close(info.pidfd);
      info = RankInfo{};
      fresh = true;
    }
    info.record = *record;
    if (fresh) {
      info.local = record->host == host_;
      if (info.local) {
        info.pidfd = static_cast<int>(::syscall(SYS_pidfd_open, static_cast<pid_t>(record->pid), 0));
        if (info.pidfd < 0) record_end(info);  // already gone (ESRCH)
        else ::fcntl(info.pidfd, F_SETFD, FD_CLOEXEC);
      }
    }
  }
}

std::vector<int> Watchdog::pidfds() const {
  std::vector<int> fds;
  for (const auto& [rank, info] : ranks_)
    if (info.pidfd >= 0) fds.push_back(info.pidfd);
  return fds;
}

void Watchdog::record_end(RankInfo& info) {
  if (info.pidfd >= 0) ::close(info.pidfd);
  info.pidfd = -1;
  if (info.gone) return;
  info.gone = true;
  info.gone_ns = heartbeat::now_ns();
  // Its last words: an "exited" record written just before the end.
  if (auto record = read_record(heartbeat::file_for(dir_, info.record.rank)); record && record->pid == info.record.pid)
    info.record = *record;
}

void Watchdog::process_ended(int pidfd) {
  for (auto& [rank, info] : ranks_) {
    if (info.pidfd == pidfd) record_end(info);
  }
}

void Watchdog::reap_all() {
  for (auto& [rank, info] : ranks_) {
    if (info.pidfd < 0) continue;
    pollfd ready{info.pidfd, POLLIN, 0};  // a pidfd is readable once its process has ended
    if (::poll(&ready, 1, 0) > 0) record_end(info);
  }
}

std::vector<pid_t> Watchdog::live_local_pids() const {
  std::vector<pid_t> pids;
  for (const auto& [rank, info] : ranks_) {
    if (info.local && !info.gone && info.record.pid > 0) pids.push_back(static_cast<pid_t>(info.record.pid));
  }
  return pids;
}

int Watchdog::local_ranks() const {
  int n = 0;
  for (const auto& [rank, info] : ranks_) n += info.local ? 1 : 0;
  return n;
}

std::string Watchdog::where(int rank) const {
  auto it = ranks_.find(rank);
  if (it == ranks_.end()) return "";
  return " (pid " + std::to_string(it->second.record.pid) + ", host " + it->second.record.host + ")";
}

std::optional<Failure> Watchdog::first_failure() const {
  std::optional<Failure> first;
  std::int64_t first_ns = 0;
  for (const auto& [rank, info] : ranks_) {
    const heartbeat::Record& r = info.record;
    std::int64_t when = 0;
    Failure failure{.rank = rank, .pid = r.pid, .host = r.host};
    if (r.state == heartbeat::State::exited) {
      if (r.status == 0) continue;
      failure.exited = true;
      failure.status = r.status;
      when = r.since_ns;
    } else if (info.gone) {
      when = info.gone_ns;
    } else {
      continue;
    }
    if (!first || when < first_ns) {
      first = failure;
      first_ns = when;
    }
  }
  return first;
}

std::optional<std::vector<std::string>> Watchdog::stuck(std::vector<int>& blamed) const {
  blamed.clear();
  if (timeout_s_ <= 0 || ranks_.empty()) return std::nullopt;
  const std::int64_t now = heartbeat::now_ns();
  // The newest sign of life of any rank still running.
  std::int64_t newest = 0;
  bool any_live = false;
  for (const auto& [rank, info] : ranks_) {
    if (info.gone || info.record.state == heartbeat::State::exited) continue;
    any_live = true;
    newest = std::max(newest, info.record.updated_ns);
  }
  if (!any_live) return std::nullopt;  // the launcher ends the job on its own
  const auto timeout_ns = static_cast<std::int64_t>(timeout_s_ * 1e9);
  if (now - newest < timeout_ns) return std::nullopt;

  std::vector<std::string> lines;
  char head[160];
  std::snprintf(head, sizeof head, "watchdog: no rank has entered or left a collective for %s (--timeout %g); stopping the job",
                seconds_ago(newest, now).c_str(), timeout_s_);
  lines.push_back(head);

  // Ranks that never registered or that exited while the others still run.
  for (int r = 0; r < world_size_; ++r) {
    if (!ranks_.count(r)) {
      blamed.push_back(r);
      lines.push_back("watchdog: rank " + std::to_string(r) +
                      " never reached Axon's communicator (no heartbeat file): stuck before it, or not an Axon program");
    }
  }
  using Key = std::tuple<std::uint64_t, int>;  // (collectives entered, inside one)
  auto key = [](const heartbeat::Record& r) {
    return r.state == heartbeat::State::collective ? Key{r.seq, 1} : Key{r.seq, 0};
  };
  std::optional<Key> lowest, highest;
  for (const auto& [rank, info] : ranks_) {
    if (info.gone || info.record.state == heartbeat::State::exited) {
      if (info.record.state == heartbeat::State::exited) {
        blamed.push_back(rank);
        lines.push_back("watchdog: rank " + std::to_string(rank) + where(rank) + " exited with status " +
                        std::to_string(info.record.status) + " " + seconds_ago(info.record.since_ns, now) +
                        " ago while other ranks still run");
      }
      continue;
    }
    Key k = key(info.record);
    if (!lowest || k < *lowest) lowest = k;
    if (!highest || *highest < k) highest = k;
  }
  // When every live rank is equally far, they are all stuck, unless ranks blamed above (never
  // registered, exited) explain why they wait.
  const bool none_blamed_yet = blamed.empty();
  for (const auto& [rank, info] : ranks_) {
    if (info.gone || info.record.state == heartbeat::State::exited) continue;
    const heartbeat::Record& r = info.record;
    const bool behind = key(r) == *lowest && (*lowest < *highest || none_blamed_yet);
    std::string line = "watchdog: rank " + std::to_string(rank) + where(rank);
    if (r.state == heartbeat::State::collective) {
      line += (behind ? " is stuck inside " : " waits inside ") + collective(r) + " since " + seconds_ago(r.since_ns, now);
    } else if (r.seq == 0) {
      line += std::string(behind ? " is stuck outside a collective" : " is outside a collective") +
              ", before its first one, for " + seconds_ago(r.since_ns, now);
    } else {
      line += std::string(behind ? " is stuck outside a collective" : " is outside a collective") + ": its last, " +
              collective(r) + ", ended " + seconds_ago(r.since_ns, now) + " ago";
    }
    if (behind) blamed.push_back(rank);
    lines.push_back(line);
  }
  if (lowest && *lowest == *highest && std::get<1>(*lowest) == 1 && blamed.size() > 1) {
    lines.push_back("watchdog: every rank is inside a collective that cannot complete: mismatched collectives "
                    "(AXON_DISTRIBUTED_DEBUG=1 names them) or a broken network");
  } else if (lowest && *lowest == *highest && std::get<1>(*lowest) == 0 && blamed.size() > 1) {
    lines.push_back("watchdog: every rank is outside a collective: a computation longer than --timeout? "
                    "(raise it with --timeout S, or 0 to turn the watchdog off)");
  }
  std::sort(blamed.begin(), blamed.end());
  blamed.erase(std::unique(blamed.begin(), blamed.end()), blamed.end());
  return lines;
}

}  // namespace axon::launcher
