// Rank heartbeats: how axonrun's watchdog sees each rank's progress. Standard library and POSIX
// only, so that axonrun (which depends on nothing else in Axon) compiles it in as well.
//
// axonrun creates a folder and exports it as AXON_HEARTBEAT_DIR. Each rank that makes an MPI
// communicator keeps one file there, "rank-<R>", holding one fixed-width line:
//
//   axon-heartbeat 1 rank=1 pid=4242 host=vm state=collective seq=7 op=allreduce since=<ns>
//       updated=<ns> status=0
//
// state is "running" (outside a collective; seq collectives completed), "collective" (inside
// collective number seq, op, since `since`), or "exited" (status). Times are CLOCK_REALTIME
// nanoseconds, so ranks on other nodes compare when the folder is on a shared file system.
//
// The per-collective cost is a few nanoseconds (BM_HeartbeatPerCollective): collective_begin()
// and collective_end() only store into the calling thread's counters in process memory
// (collectives entered and the op; collectives left), with no locked instruction, no clock read,
// no formatting and no system call. The line is rewritten from those counters by a publisher
// thread every kPublishPeriodMs, only when they changed (a stuck main thread leaves the line, and
// its `updated` time, as they were: the thread publishes progress, it does not beat), and at
// once by start(), progress() and exiting(). `since` and `updated` are the
// times the publisher saw the change, at most kPublishPeriodMs late. On tmpfs and ext4 the line
// is a store into the memory-mapped file, elsewhere (network file systems: ranks on other nodes)
// a pwrite; either way the watchdog reads it twice to rule out a torn read.
// docs/launching.md explains how the watchdog decides that a job is stuck.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace axon::heartbeat {

// The environment variable naming the folder; ranks write nothing when it is unset.
inline constexpr const char* kDirVariable = "AXON_HEARTBEAT_DIR";
// Seconds a rank may wait inside one collective before it exits with kCollectiveTimeoutStatus
// (unset: no limit). The in-rank fallback for jobs without axonrun's watchdog (bare mpirun or
// srun, ranks on nodes that do not share the heartbeat folder).
inline constexpr const char* kCollectiveTimeoutVariable = "AXON_COLLECTIVE_TIMEOUT";
inline constexpr int kCollectiveTimeoutStatus = 124;
// How often the publisher thread rewrites a changed record, and checks AXON_COLLECTIVE_TIMEOUT.
inline constexpr int kPublishPeriodMs = 100;

enum class State { running, collective, exited };

struct Record {
  int rank = 0;
  long pid = 0;
  std::string host;
  State state = State::running;
  std::uint64_t seq = 0;    // collectives completed (running), or the one in progress (collective)
  std::string op = "none";  // the collective in progress or the last one; no spaces
  std::int64_t since_ns = 0;    // when the current state began (as the publisher saw it)
  std::int64_t updated_ns = 0;  // when the record was last rewritten: progress seen, progress(), exit
  int status = 0;               // exit status (state exited)
};

// "running", "collective", "exited".
const char* state_name(State state);
// The file of rank `rank` in `dir`: "<dir>/rank-<rank>".
std::string file_for(const std::string& dir, int rank);
// The record as one line, padded with spaces to a fixed width (ends with '\n').
std::string format(const Record& record);
// A line written by format(); nullopt when it is not one (e.g. torn by a concurrent rewrite).
std::optional<Record> parse(std::string_view line);
// CLOCK_REALTIME in nanoseconds.
std::int64_t now_ns();

// AXON_COLLECTIVE_TIMEOUT in seconds; nullopt when unset. Throws std::invalid_argument naming the
// variable and its value when it is not plain decimal seconds in (0, 604800].
std::optional<double> collective_timeout_from_env();

// This process's heartbeat writer. All functions are no-ops until start(); the file is written
// only when AXON_HEARTBEAT_DIR is set. They never throw (a heartbeat that cannot be written must
// not stop training: the watchdog then does not see this rank, which docs/launching.md
// describes). Thread-safe: seq counts the collectives entered on every thread, nested ones on one
// thread (a NCCL communicator forwarding to the MPI one) once; the rank is "collective" while any
// thread is inside one.
//
// start(): writes the first record and starts the publisher thread (when AXON_HEARTBEAT_DIR is
// set or collective_timeout_s > 0). With collective_timeout_s > 0 that thread also ends the
// process (_exit with kCollectiveTimeoutStatus, after a message naming the rank and the
// collective) once the rank has been inside one collective that long (measured from when the
// thread saw it enter: up to kPublishPeriodMs later than requested).
void start(int rank, double collective_timeout_s = 0);
// The hot path: plain stores into this thread's counters, nothing else (BM_HeartbeatPerCollective;
// a thread's first call after start() takes a slot, once). op must outlive the process (a string
// literal): only the pointer is kept. An end without a begin (one made before start()) is ignored.
void collective_begin(const char* op);
void collective_end();
// Progress without a collective: rewrites the record now, with the latest collective counts and
// a fresh time, so that the watchdog does not take a long phase without collectives (writing a
// checkpoint, loading a large data set) for a hang. Call it every few seconds in such a phase.
void progress();
// Rewrites the record as "exited" with `status`, at once; the publisher then stops writing.
void exiting(int status);

}  // namespace axon::heartbeat
