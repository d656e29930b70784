// The "tcp" backend: host collectives through the TCP store (axon/tcp_store.h), for jobs started
// with torchrun-style variables alone (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), no MPI.
//
// Correctness over speed: every collective is a star through rank 0. Collective number s: each
// rank r > 0 sets "c/<s>/<r>" to a header (operation, dtype, reduce op or root, element count)
// and its data; rank 0 takes those keys, checks that every rank called the same collective,
// reduces in rank order (0, 1, 2, ...: for two ranks bit-identical to MPI's sum) or picks the
// root's data, and sets "c/<s>/out", which the other ranks read. Rank 0 then erases
// "c/<s-1>/out": every rank has read it, since each has contributed to collective s. Waits have no
// timeout (a slow rank is not a dead one; AXON_COLLECTIVE_TIMEOUT and axonrun's watchdog catch
// hangs), but a rank that dies ends them at once, with an error naming it (the store notices the
// closed connection).
#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "axon/agreement.h"
#include "axon/backend.h"
#include "axon/communicator.h"
#include "axon/rank_env.h"
#include "axon/tcp_store.h"

namespace axon {

namespace {

enum class Kind : std::uint32_t { allreduce = 1, broadcast = 2, barrier = 3 };

struct Header {
  Kind kind;
  std::uint32_t dtype;  // 0 none, 1 f32, 2 f64, 3 bytes
  std::int64_t arg;     // the reduce op, or the broadcast root
  std::uint64_t count;  // elements
};

std::string describe(const Header& h) {
  static const char* dtypes[] = {"", "float", "double", "bytes"};
  static const char* ops[] = {"sum", "max", "min", "avg"};
  switch (h.kind) {
    case Kind::allreduce:
      return fmt::format("allreduce({}, {}) of {} elements", dtypes[h.dtype & 3], h.arg >= 0 && h.arg < 4 ? ops[h.arg] : "?",
                         h.count);
    case Kind::broadcast:
      return fmt::format("broadcast({}, root {}) of {} elements", dtypes[h.dtype & 3], h.arg, h.count);
    case Kind::barrier:
      return "barrier";
  }
  return "an unknown collective";
}

template <class T>
void combine(std::span<T> acc, const T* other, ReduceOp op) {
  for (size_t i = 0; i < acc.size(); ++i) {
    switch (op) {
      case ReduceOp::sum:
      case ReduceOp::avg: acc[i] += other[i]; break;  // divided by the world size at the end
      case ReduceOp::max: acc[i] = std::max(acc[i], other[i]); break;
      case ReduceOp::min: acc[i] = std::min(acc[i], other[i]); break;
    }
  }
}

class TcpCommunicator final : public Communicator {
 public:
  explicit TcpCommunicator(std::unique_ptr<TcpStore> store) : store_(std::move(store)) {}

  std::string backend() const override { return "tcp"; }
  int rank() const override { return store_->rank(); }
  int size() const override { return store_->world_size(); }

  void allreduce(std::span<float> data, ReduceOp op) override { reduce(data, 1, op); }
  void allreduce(std::span<double> data, ReduceOp op) override { reduce(data, 2, op); }
  void broadcast(std::span<float> data, int root) override {
    bcast(std::as_writable_bytes(data), 1, data.size(), root);
  }
  void broadcast(std::span<std::byte> data, int root) override { bcast(data, 3, data.size(), root); }
  // Tensors: as the MPI backend, avg is the sum followed by one multiplication by 1/size on the
  // staged f32/f64 values (so the tcp and MPI backends train to the same bits); the other ops go
  // through the default (staged through host memory, bf16 reduced in f32).
  void allreduce(Tensor& data, ReduceOp op) override {
    if (op != ReduceOp::avg || size() == 1 || data.numel() == 0) return Communicator::allreduce(data, op);
    Tensor host = data.detach().to(Device::cpu());
    if (host.dtype() == DType::bf16) host = host.to(DType::f32);
    Communicator::allreduce(host, ReduceOp::sum);
    axon::backend(host.device()).unary(UnaryOp::mul_scalar, host, 1.0 / size(), host);
    if (host.raw_data() != data.raw_data()) data.copy_from(host.to(data.dtype()).to(data.device()));
  }
  void barrier() override {
    std::span<std::byte> none;
    collective(Header{Kind::barrier, 0, 0, 0}, none, [](std::vector<std::string>&, std::span<std::byte>) {});
  }

 private:
  template <class T>
  void reduce(std::span<T> data, std::uint32_t dtype, ReduceOp op) {
    const Header h{Kind::allreduce, dtype, static_cast<std::int64_t>(op), data.size()};
    collective(h, std::as_writable_bytes(data), [&](std::vector<std::string>& parts, std::span<std::byte> mine) {
      std::span<T> acc(reinterpret_cast<T*>(mine.data()), data.size());
      for (size_t r = 1; r < parts.size(); ++r) {
        // Copied out: a std::string's bytes need not be aligned for T.
        std::vector<T> other(data.size());
        std::memcpy(other.data(), parts[r].data() + sizeof(Header), data.size() * sizeof(T));
        combine(acc, other.data(), op);
      }
      // As the MPI backend's span all-reduce: the sum, divided once.
      if (op == ReduceOp::avg)
        for (T& x : acc) x /= static_cast<T>(size());
    });
  }

  void bcast(std::span<std::byte> data, std::uint32_t dtype, size_t count, int root) {
    if (root < 0 || root >= size())
      throw CommError(fmt::format("tcp broadcast: root {} is not a rank of this world of {} (on rank {})", root, size(), rank()));
    collective(Header{Kind::broadcast, dtype, root, count}, data, [&](std::vector<std::string>& parts, std::span<std::byte> mine) {
      if (root != 0) std::memcpy(mine.data(), parts[static_cast<size_t>(root)].data() + sizeof(Header), mine.size());
    });
  }

  // Runs collective number ++seq_. `data` is sent by every rank (an all-reduce), or only by the
  // root (a broadcast), and receives the result; `compute` runs on rank 0 with every rank's
  // message (header + data; index 0 unused) and rank 0's own buffer, which becomes the result.
  template <class Compute>
  void collective(const Header& h, std::span<std::byte> data, Compute compute) {
    const std::uint64_t seq = ++seq_;
    const std::string prefix = fmt::format("c/{}/", seq);
    const bool sends = h.kind == Kind::allreduce || (h.kind == Kind::broadcast && h.arg == rank());
    try {
      if (rank() != 0) {
        std::string message(sizeof h, '\0');
        std::memcpy(message.data(), &h, sizeof h);
        if (sends) message.append(reinterpret_cast<const char*>(data.data()), data.size());
        store_->set(prefix + std::to_string(rank()), message);
        const std::string out = store_->get_no_timeout(prefix + "out");
        if (out.empty() || out[0] != 'k') throw CommError(out.empty() ? std::string("empty reply") : out.substr(1));
        if (out.size() - 1 != data.size())
          throw CommError(fmt::format("rank 0 sent {} bytes for a buffer of {}", out.size() - 1, data.size()));
        if (!data.empty()) std::memcpy(data.data(), out.data() + 1, data.size());
        return;
      }
      std::vector<std::string> parts(static_cast<size_t>(size()));
      std::string mismatch;
      for (int r = 1; r < size(); ++r) {
        std::string& part = parts[static_cast<size_t>(r)];
        part = store_->take_no_timeout(prefix + std::to_string(r));
        Header theirs{};
        if (part.size() >= sizeof theirs) std::memcpy(&theirs, part.data(), sizeof theirs);
        const bool they_send = theirs.kind == Kind::allreduce || (theirs.kind == Kind::broadcast && theirs.arg == r);
        const size_t width = theirs.dtype == 1 ? 4 : theirs.dtype == 2 ? 8 : 1;
        const bool same = part.size() >= sizeof theirs && theirs.kind == h.kind && theirs.dtype == h.dtype &&
                          theirs.arg == h.arg && theirs.count == h.count &&
                          part.size() == sizeof theirs + (they_send ? theirs.count * width : 0);
        if (!same && mismatch.empty()) {
          mismatch = fmt::format("tcp collective mismatch at call {}: rank 0 calls {}, rank {} calls {}", seq, describe(h), r,
                                 part.size() >= sizeof theirs ? describe(theirs) : "something unreadable");
        }
      }
      if (seq > 1) store_->erase(fmt::format("c/{}/out", seq - 1));
      if (!mismatch.empty()) {
        store_->set(prefix + "out", "e" + mismatch);
        throw CommError(mismatch);
      }
      compute(parts, data);
      std::string out = "k";
      out.append(reinterpret_cast<const char*>(data.data()), data.size());
      store_->set(prefix + "out", out);
    } catch (const StoreError& e) {
      throw CommError(fmt::format("tcp {} on rank {} of {} (collective #{}): {}", describe(h), rank(), size(), seq, e.what()));
    } catch (const CommError& e) {
      if (std::string_view(e.what()).starts_with("tcp ")) throw;
      throw CommError(fmt::format("tcp {} on rank {} of {} (collective #{}): {}", describe(h), rank(), size(), seq, e.what()));
    }
  }

  std::unique_ptr<TcpStore> store_;
  std::uint64_t seq_ = 0;
};

}  // namespace

std::unique_ptr<Communicator> make_tcp_communicator() {
  const RankEnvironment env = rank_environment();
  if (env.master_addr.empty() || !env.master_port) {
    throw CommError(fmt::format("tcp: rank {} of {} ({} launcher variables) needs MASTER_ADDR and MASTER_PORT (the address "
                                "and port of rank 0's store); {} not set",
                                env.rank, env.world_size, env.source,
                                env.master_addr.empty() && !env.master_port ? "neither is"
                                : env.master_addr.empty()                   ? "MASTER_ADDR is"
                                                                            : "MASTER_PORT is"));
  }
  std::unique_ptr<TcpStore> store;
  try {
    store = std::make_unique<TcpStore>(env.master_addr, *env.master_port, env.rank, env.world_size, env.rank == 0,
                                       store_timeout_from_env());
    store->rendezvous("rdzv");
  } catch (const StoreError& e) {
    throw CommError(e.what());
  }
  std::unique_ptr<Communicator> comm = std::make_unique<TcpCommunicator>(std::move(store));
  // As for MPI (mpi_communicator.cpp): the debug checks change the sequence of collectives, so
  // all ranks must have them or none.
  const bool debug = distributed_debug_enabled();
  std::vector<double> flags(static_cast<size_t>(comm->size()), 0.0);
  flags[static_cast<size_t>(comm->rank())] = debug ? 1.0 : 0.0;
  comm->allreduce(std::span<double>(flags), ReduceOp::sum);
  std::string with, without;
  for (size_t r = 0; r < flags.size(); ++r) {
    std::string& list = flags[r] != 0.0 ? with : without;
    list += (list.empty() ? "" : ", ") + std::to_string(r);
  }
  if (!with.empty() && !without.empty()) {
    mark_failure_collective();
    throw DisagreementError(fmt::format(
        "tcp: AXON_DISTRIBUTED_DEBUG=1 is set on rank(s) {} but not on rank(s) {} (seen on rank {}); set it for every rank",
        with, without, comm->rank()));
  }
  return with_heartbeat(debug ? with_collective_checks(std::move(comm)) : std::move(comm));
}

}  // namespace axon
