// axonrun's watchdog: reads the ranks' heartbeat files (axon/heartbeat.h), watches the local
// ranks' processes, finds the first rank that failed, and decides when a job is stuck.
//
// A job is stuck when no live rank has entered or left a collective (or registered) for the
// timeout. The ranks to blame are those the others wait for: ranks that never registered, ranks
// that exited while others wait, and the ranks furthest behind (fewest collectives; outside a
// collective before inside); when all are equally far, all of them (e.g. all inside collective
// #7: mismatched collectives or a broken network). docs/launching.md describes the design.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "axon/heartbeat.h"

namespace axon::launcher {

// One rank as the watchdog knows it.
struct RankInfo {
  heartbeat::Record record;  // the last record read
  bool local = false;        // on this host: its pid can be watched and killed
  int pidfd = -1;            // a pidfd for local ranks, -1 once it has exited (or for remote ranks)
  bool gone = false;         // its process has ended
  std::int64_t gone_ns = 0;  // when the watchdog saw it end
};

// The first failure of a job, in time.
struct Failure {
  int rank = -1;
  long pid = 0;
  std::string host;
  bool exited = false;  // true: exited with `status`; false: ended without exiting (a signal)
  int status = 0;
};

class Watchdog {
 public:
  // dir: the heartbeat folder; world_size: the ranks expected (0 when unknown); timeout_s: 0 for
  // no stall detection.
  Watchdog(std::string dir, int world_size, double timeout_s);
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // Reads every heartbeat file; opens a pidfd for each new local rank.
  void scan();
  // The pidfds to poll (readable when that rank's process ends).
  std::vector<int> pidfds() const;
  // Called with a pidfd that poll() found readable: records that rank's end.
  void process_ended(int pidfd);
  // After the job: marks every local rank whose process has ended.
  void reap_all();

  // When the job is stuck: the report lines (each without "axonrun: "), the blamed ranks first
  // in `blamed`. nullopt when it is not stuck (or stall detection is off).
  std::optional<std::vector<std::string>> stuck(std::vector<int>& blamed) const;
  // The first failure seen: the earliest non-zero exit, or the earliest end without an exit.
  std::optional<Failure> first_failure() const;
  // Pids of local ranks whose processes still run.
  std::vector<pid_t> live_local_pids() const;
  // Ranks with a heartbeat file.
  int registered() const { return static_cast<int>(ranks_.size()); }
  // Ranks with a heartbeat file that run on this host.
  int local_ranks() const;

  // " (pid 1234, host vm)" for rank r, "" when unknown.
  std::string where(int rank) const;

 private:
  void record_end(RankInfo& info);

  std::string dir_;
  int world_size_;
  double timeout_s_;
  std::string host_;
  std::int64_t started_ns_;
  std::map<int, RankInfo> ranks_;
};

// "1, 3 and 4"
std::string list_ranks(const std::vector<int>& ranks);

}  // namespace axon::launcher
