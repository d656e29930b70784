// Rank heartbeats (see axon/heartbeat.h). Standard library and POSIX only: axonrun compiles it in.
#include "axon/heartbeat.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string_view>
#include <system_error>
#include <thread>

namespace axon::heartbeat {

// The record as its fixed-width line, kWidth characters then '\n' (defined below).
void format_into(const Record& r, char* out);

namespace {

constexpr size_t kWidth = 255;  // the line's length without '\n'
constexpr const char* kMagic = "axon-heartbeat 1 ";

// One thread's collectives. Only its owner writes it, with plain stores (release: no locked
// instruction on the hot path); the publisher sums all slots. A thread that ends frees its slot
// for the next new thread, counts kept, so slots are as many as threads calling collectives at once.
struct Slot {
  std::atomic<std::uint64_t> entered{0};    // outermost collectives entered on this thread
  std::atomic<std::uint64_t> completed{0};  // ... and left (returned or threw)
  int depth = 0;                            // nesting on this thread: owner only
  std::atomic<bool> in_use{false};
  Slot* next = nullptr;  // the list is append-only; slots are never freed
};

// This thread's slot (null until its first collective after start()); trivial, so reading it
// costs one load. t_finished: the thread's exit handlers have freed it.
thread_local Slot* t_slot = nullptr;
thread_local bool t_finished = false;

struct Writer {
  // Read by collective_begin() and collective_end() without the mutex: atomics only.
  std::atomic<bool> active{false};      // start() has run: the record is kept (and written when fd >= 0)
  std::atomic<Slot*> slots{nullptr};    // every thread's slot
  std::atomic<const char*> op{"none"};  // the last collective entered on any thread (a literal)

  std::mutex mutex;  // guards the rest
  int fd = -1;
  char* mapped = nullptr;  // the file's line, memory-mapped: rewriting it costs no system call
  Record record;
  double collective_timeout_s = 0;

  // Folds the slots into the record; true when state, seq or op changed (since_ns is then
  // `now`: the change is dated when seen, at most one publishing period late). seq counts the
  // collectives entered on all threads; the rank is inside one while any thread is.
  bool sync_locked(std::int64_t now) {
    if (record.state == State::exited) return false;
    std::uint64_t seq = 0;
    bool inside = false;
    for (Slot* s = slots.load(std::memory_order_acquire); s; s = s->next) {
      // completed first: its owner stores entered before completed, so entered >= completed.
      const std::uint64_t completed = s->completed.load(std::memory_order_acquire);
      const std::uint64_t entered = s->entered.load(std::memory_order_acquire);
      seq += entered;
      inside = inside || entered != completed;
    }
    const char* current_op = op.load(std::memory_order_relaxed);
    const State state = inside ? State::collective : State::running;
    bool changed = false;
    if (state != record.state || seq != record.seq) {
      record.state = state;
      record.seq = seq;
      record.since_ns = now;
      changed = true;
    }
    if (record.op != current_op) {
      record.op = current_op;
      changed = true;
    }
    return changed;
  }
  void write_locked(std::int64_t now) {
    if (fd < 0) return;
    record.updated_ns = now;
    char line[kWidth + 1];
    format_into(record, line);
    if (mapped) {
      // The watchdog reads the file twice and keeps a record only when both reads agree, so a
      // read that overlaps this copy is discarded, as a torn pwrite was.
      std::memcpy(mapped, line, sizeof line);
      return;
    }
    if (::pwrite(fd, line, sizeof line, 0) != static_cast<ssize_t>(sizeof line)) {
      // A full disk or a folder that went away: stop writing; the watchdog then ignores the
      // stale record's age only after the rank's last update (see docs/launching.md).
      ::close(fd);
      fd = -1;
    }
  }
};

Writer& writer() {
  static Writer* w = new Writer;  // never destroyed: exiting() runs from on_exit handlers
  return *w;
}

bool parse_field(std::string_view& rest, std::string_view key, std::string_view& value) {
  while (rest.starts_with(' ')) rest.remove_prefix(1);
  if (!rest.starts_with(key) || rest.size() <= key.size() || rest[key.size()] != '=') return false;
  rest.remove_prefix(key.size() + 1);
  size_t end = rest.find(' ');
  value = rest.substr(0, end);
  rest.remove_prefix(end == std::string_view::npos ? rest.size() : end);
  return !value.empty();
}

template <typename T>
bool parse_number(std::string_view text, T& out) {
  if (text.empty() || text.size() > 20) return false;
  bool negative = text.front() == '-';
  if (negative) text.remove_prefix(1);
  if (text.empty()) return false;
  unsigned long long n = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    n = n * 10 + static_cast<unsigned long long>(c - '0');
  }
  out = negative ? static_cast<T>(-static_cast<long long>(n)) : static_cast<T>(n);
  return true;
}

// tmpfs and ext2/3/4: local, so a store into a shared mapping is what every reader sees at once,
// and not copy-on-write, so a store into the block written once never needs new space (on btrfs,
// reflinked xfs or an overlay, a full disk would turn a store into SIGBUS; they keep pwrite).
bool local_file_system(int fd) {
  struct statfs info {};
  if (::fstatfs(fd, &info) != 0) return false;
  switch (static_cast<unsigned long>(info.f_type)) {
    case 0x01021994UL:  // tmpfs
    case 0x0000EF53UL:  // ext2, ext3, ext4
      return true;
    default:
      return false;
  }
}

}  // namespace

const char* state_name(State state) {
  switch (state) {
    case State::running: return "running";
    case State::collective: return "collective";
    case State::exited: return "exited";
  }
  return "running";
}

std::string file_for(const std::string& dir, int rank) { return dir + "/rank-" + std::to_string(rank); }

std::int64_t now_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

void format_into(const Record& r, char* out) {
  // Appends with std::to_chars: snprintf's format parsing cost ~1 µs per record on a VM, and the
  // record is rewritten twice per collective.
  char* p = out;
  char* const end = out + kWidth;
  auto text = [&](std::string_view t, size_t max = kWidth) {
    const size_t n = std::min({t.size(), max, static_cast<size_t>(end - p)});
    std::memcpy(p, t.data(), n);
    p += n;
  };
  auto number = [&](auto v) {
    const auto result = std::to_chars(p, end, v);
    if (result.ec == std::errc()) p = result.ptr;  // else (no room left) the number is dropped
  };
  text(kMagic);
  text("rank=");
  number(r.rank);
  text(" pid=");
  number(r.pid);
  text(" host=");
  text(r.host.empty() ? std::string_view("?") : std::string_view(r.host), 64);
  text(" state=");
  text(state_name(r.state));
  text(" seq=");
  number(static_cast<unsigned long long>(r.seq));
  text(" op=");
  text(r.op.empty() ? std::string_view("none") : std::string_view(r.op), 32);
  text(" since=");
  number(static_cast<long long>(r.since_ns));
  text(" updated=");
  number(static_cast<long long>(r.updated_ns));
  text(" status=");
  number(r.status);
  std::memset(p, ' ', static_cast<size_t>(end - p));
  out[kWidth] = '\n';
}

std::string format(const Record& r) {
  char line[kWidth + 1];
  format_into(r, line);
  return std::string(line, sizeof line);
}

std::optional<Record> parse(std::string_view line) {
  if (!line.starts_with(kMagic) || !line.ends_with('\n')) return std::nullopt;
  line.remove_prefix(std::strlen(kMagic));
  Record r;
  std::string_view v;
  std::string_view rest = line;
  if (!parse_field(rest, "rank", v) || !parse_number(v, r.rank)) return std::nullopt;
  if (!parse_field(rest, "pid", v) || !parse_number(v, r.pid)) return std::nullopt;
  if (!parse_field(rest, "host", v)) return std::nullopt;
  r.host = v;
  if (!parse_field(rest, "state", v)) return std::nullopt;
  if (v == "running") r.state = State::running;
  else if (v == "collective") r.state = State::collective;
  else if (v == "exited") r.state = State::exited;
  else return std::nullopt;
  if (!parse_field(rest, "seq", v) || !parse_number(v, r.seq)) return std::nullopt;
  if (!parse_field(rest, "op", v)) return std::nullopt;
  r.op = v;
  if (!parse_field(rest, "since", v) || !parse_number(v, r.since_ns)) return std::nullopt;
  if (!parse_field(rest, "updated", v) || !parse_number(v, r.updated_ns)) return std::nullopt;
  if (!parse_field(rest, "status", v) || !parse_number(v, r.status)) return std::nullopt;
  while (rest.starts_with(' ')) rest.remove_prefix(1);
  if (rest != "\n") return std::nullopt;
  return r;
}

namespace {

// The publisher: every kPublishPeriodMs, rewrites the record when the hot path's words changed
// (never otherwise, so that a stuck main thread's record stays stale), and applies
// AXON_COLLECTIVE_TIMEOUT: ends this process when it has been inside one collective that long.
// _exit so that no exit handler touches MPI, which the main thread is inside of. The launcher
// (mpirun, srun --kill-on-bad-exit) then ends the job.
void publish_and_watch() {
  Writer& w = writer();
  while (true) {
    ::usleep(kPublishPeriodMs * 1000);
    std::lock_guard lock(w.mutex);
    if (w.record.state == State::exited) return;
    const std::int64_t now = now_ns();
    if (w.sync_locked(now)) w.write_locked(now);
    if (w.collective_timeout_s <= 0 || w.record.state != State::collective) continue;
    const double waited = static_cast<double>(now - w.record.since_ns) / 1e9;
    if (waited < w.collective_timeout_s) continue;
    std::fprintf(stderr,
                 "axon: rank %d (pid %ld, host %s): collective #%llu (%s) has waited %.1f s for the other ranks "
                 "(AXON_COLLECTIVE_TIMEOUT=%g); exiting with status %d to stop the job (a rank that has not reached "
                 "this collective is stuck; axonrun's watchdog names it)\n",
                 w.record.rank, w.record.pid, w.record.host.c_str(), static_cast<unsigned long long>(w.record.seq),
                 w.record.op.c_str(), waited, w.collective_timeout_s, kCollectiveTimeoutStatus);
    std::fflush(stderr);
    w.record.state = State::exited;
    w.record.status = kCollectiveTimeoutStatus;
    w.record.since_ns = now_ns();
    w.write_locked(w.record.since_ns);
    ::_exit(kCollectiveTimeoutStatus);
  }
}

}  // namespace

std::optional<double> collective_timeout_from_env() {
  const char* text = std::getenv(kCollectiveTimeoutVariable);
  if (!text || !*text) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  const double seconds = std::strtod(text, &end);
  // Plain decimal seconds: no hex, inf or nan, nothing after the number, positive, at most a week.
  const bool plain = std::strspn(text, "0123456789.") == std::strlen(text);
  if (!plain || end == text || *end != '\0' || errno != 0 || !(seconds > 0) || seconds > 7 * 24 * 3600.0) {
    throw std::invalid_argument(std::string(kCollectiveTimeoutVariable) + "='" + text +
                                "' is not a number of seconds > 0 (at most 604800)");
  }
  return seconds;
}

void start(int rank, double collective_timeout_s) {
  Writer& w = writer();
  std::lock_guard lock(w.mutex);
  if (w.active.load(std::memory_order_relaxed)) return;
  char host[256] = "?";
  if (::gethostname(host, sizeof host - 1) != 0) std::strcpy(host, "?");
  for (char* p = host; *p; ++p)
    if (*p == ' ' || *p == '\n') *p = '_';
  const std::int64_t now = now_ns();
  w.record = Record{.rank = rank, .pid = static_cast<long>(::getpid()), .host = host, .state = State::running,
                    .seq = 0, .op = "none", .since_ns = now, .updated_ns = 0, .status = 0};
  w.collective_timeout_s = collective_timeout_s > 0 ? collective_timeout_s : 0;
  w.active.store(true, std::memory_order_relaxed);
  const char* dir = std::getenv(kDirVariable);
  if (dir && *dir) {
    const std::string path = file_for(dir, rank);
    w.fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);  // RDWR: mmap needs it
    if (w.fd < 0) {
      std::fprintf(stderr, "axon: warning: rank %d cannot write its heartbeat file %s: %s (the launcher's watchdog will not see this rank)\n",
                   rank, path.c_str(), std::strerror(errno));
    }
    w.write_locked(now);
    // Map the record (written once above, so its block exists and a later store cannot meet a
    // full disk as SIGBUS), on tmpfs and ext4 only (local_file_system): on a network one (NFS,
    // Lustre, GPFS: the multi-node watchdog's shared folder) stores into a mapping reach other
    // nodes only when the page is written back, so there each update stays a pwrite, as when
    // mapping fails.
    if (w.fd >= 0 && local_file_system(w.fd)) {
      void* p = ::mmap(nullptr, kWidth + 1, PROT_READ | PROT_WRITE, MAP_SHARED, w.fd, 0);
      if (p != MAP_FAILED) w.mapped = static_cast<char*>(p);
    }
  }
  if (w.fd < 0 && w.collective_timeout_s <= 0) return;
  try {
    std::thread(publish_and_watch).detach();
  } catch (const std::system_error& e) {  // out of threads: train on, unwatched (never throw)
    std::fprintf(stderr, "axon: warning: rank %d cannot start its heartbeat thread: %s (its heartbeat file "
                 "shows no progress, so the launcher's watchdog may stop the job after --timeout; "
                 "AXON_COLLECTIVE_TIMEOUT is off)\n", rank, e.what());
  }
}

namespace {

// Frees this thread's slot when the thread ends.
struct SlotOwner {
  Slot* slot = nullptr;
  ~SlotOwner() {
    if (!slot) return;
    if (slot->depth > 0) {  // ended inside a collective (cannot happen through the RAII marks)
      slot->depth = 0;
      slot->completed.store(slot->entered.load(std::memory_order_relaxed), std::memory_order_release);
    }
    slot->in_use.store(false, std::memory_order_release);
    t_slot = nullptr;
    t_finished = true;
  }
};

// The slow path, once per thread: a free slot, or a new one.
Slot* acquire_slot() {
  Writer& w = writer();
  if (t_finished || !w.active.load(std::memory_order_acquire)) return nullptr;
  Slot* mine = nullptr;
  for (Slot* s = w.slots.load(std::memory_order_acquire); s && !mine; s = s->next) {
    bool in_use = false;
    if (s->in_use.compare_exchange_strong(in_use, true, std::memory_order_acq_rel)) mine = s;
  }
  if (!mine) {
    mine = new Slot;  // never freed: the publisher may be reading it
    mine->in_use.store(true, std::memory_order_relaxed);
    Slot* head = w.slots.load(std::memory_order_relaxed);
    do {
      mine->next = head;
    } while (!w.slots.compare_exchange_weak(head, mine, std::memory_order_release, std::memory_order_relaxed));
  }
  static thread_local SlotOwner owner;
  owner.slot = mine;
  t_slot = mine;
  return mine;
}

}  // namespace

void collective_begin(const char* op) {
  Slot* s = t_slot;
  if (!s && !(s = acquire_slot())) return;  // before start(): nothing is kept
  if (s->depth++ > 0) return;               // nested: counted once
  // The op before the count (release), so that a publisher that sees the count sees its op.
  writer().op.store(op, std::memory_order_relaxed);
  s->entered.store(s->entered.load(std::memory_order_relaxed) + 1, std::memory_order_release);
}

void collective_end() {
  Slot* s = t_slot;
  if (!s || s->depth == 0) return;  // no collective_begin() to match (one before start())
  if (--s->depth > 0) return;
  s->completed.store(s->entered.load(std::memory_order_relaxed), std::memory_order_release);
}

void progress() {
  Writer& w = writer();
  std::lock_guard lock(w.mutex);
  if (!w.active.load(std::memory_order_relaxed) || w.record.state == State::exited) return;
  const std::int64_t now = now_ns();
  w.sync_locked(now);
  w.write_locked(now);
}

void exiting(int status) {
  Writer& w = writer();
  std::lock_guard lock(w.mutex);
  if (!w.active.load(std::memory_order_relaxed)) return;
  const std::int64_t now = now_ns();
  w.sync_locked(now);  // the collectives completed up to now
  w.record.state = State::exited;
  w.record.status = status;
  w.record.since_ns = now;
  w.write_locked(now);
}

}  // namespace axon::heartbeat
