// The MPI backend over MPI_COMM_WORLD.
#include <mpi.h>

#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <limits>
#include <string>
#include <vector>

#include "axon/agreement.h"
#include "axon/backend.h"
#include "axon/communicator.h"
#include "axon/heartbeat.h"
#include "axon/rank_env.h"
#include "comm_internal.h"

namespace axon {

namespace {

// MPI stays initialized until the process exits, and how it ends depends on how the process
// exits: a success finalizes; a failure (exit status != 0, e.g. main returning 1 after catching
// an error) aborts the whole job, so the other ranks do not wait in a collective for this one.
// glibc's on_exit() hands us the exit status, which atexit() does not. A failure that every rank
// shares (mark_failure_collective) finalizes as well.
void finish_mpi(int status, void*) {
  heartbeat::exiting(status);  // for axonrun's watchdog, even when the program finalized MPI itself
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  if (status == 0 || failure_is_collective()) {
    // Every rank is exiting here too (a failure they all decided alike): a clean finalize keeps
    // each rank's message and exit status, where an abort would kill ranks mid-sentence.
    MPI_Finalize();
  } else {
    int rank = -1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    std::fprintf(stderr, "axon: rank %d is exiting with status %d; stopping the whole job\n", rank, status);
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, status);
  }
}

void ensure_mpi_initialized() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized) return;
  int provided = 0;
  // SERIALIZED: a communication thread may issue collectives (bucketed all-reduce, later; it
  // must check `provided` then).
  if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided) != MPI_SUCCESS)
    throw CommError("mpi: MPI_Init_thread failed");
  on_exit(finish_mpi, nullptr);
}

MPI_Op to_mpi(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum: return MPI_SUM;
    case ReduceOp::avg: return MPI_SUM;  // then scaled by 1/size
    case ReduceOp::max: return MPI_MAX;
    case ReduceOp::min: return MPI_MIN;
  }
  return MPI_SUM;
}

std::string mpi_error_text(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, text, &len);
  return std::string(text, static_cast<size_t>(len));
}

// What a non-blocking collective is, for its error message: "mpi allreduce(f32, sum) of 1000
// elements on rank 1 of 2". Kept as plain fields and formatted only on failure: formatting on
// every call cost ~0.3 us, a tenth of a 1 KiB MPI_Iallreduce between two ranks of one machine.
struct Description {
  const char* op = "";
  DType dtype = DType::f32;
  size_t n = 0;
  const char* reduce = nullptr;  // the reduce op's name, if any
  int root = -1;                 // broadcast's root, if any
  int rank = 0, size = 1;
  std::string str() const {
    std::string detail = reduce ? std::string(", ") + reduce : root >= 0 ? ", root " + std::to_string(root) : "";
    return fmt::format("mpi {}({}{}) of {} elements on rank {} of {}", op, dtype_name(dtype), detail, n, rank, size);
  }
};

// A non-blocking MPI collective. `finish` runs once, after completion, on the thread that
// observed it (scaling for avg, copying a staged buffer back to a bf16 or GPU tensor).
class MpiWork final : public Work {
 public:
  MpiWork(MPI_Request request, Description what, std::function<void()> finish)
      : request_(request), what_(what), finish_(std::move(finish)) {}
  ~MpiWork() override {
    // A handle dropped without wait(): the buffers it holds must outlive MPI's use of them, and
    // its result is still finished (scaled for avg, copied back when staged).
    if (!done_ && request_ != MPI_REQUEST_NULL) {
      int finalized = 0;
      MPI_Finalized(&finalized);
      if (finalized) return;
      try {
        complete(MPI_Wait(&request_, MPI_STATUS_IGNORE));
      } catch (...) {  // no one is left to tell
      }
    }
  }

  void wait() override {
    if (done_) return rethrow();
    complete(MPI_Wait(&request_, MPI_STATUS_IGNORE));
  }
  bool test() override {
    if (done_) {
      rethrow();
      return true;
    }
    int flag = 0;
    const int code = MPI_Test(&request_, &flag, MPI_STATUS_IGNORE);
    if (code != MPI_SUCCESS || flag) complete(code);
    return done_;
  }

 private:
  void complete(int code) {
    done_ = true;
    if (code != MPI_SUCCESS) error_ = fmt::format("{} failed: {}", what_.str(), mpi_error_text(code));
    else if (finish_) {
      try {
        finish_();
      } catch (const std::exception& e) {
        error_ = fmt::format("{}: finishing failed: {}", what_.str(), e.what());
      }
    }
    finish_ = nullptr;  // drops the buffers it held
    rethrow();
  }
  void rethrow() const {
    if (!error_.empty()) throw CommError(error_);
  }

  MPI_Request request_;
  Description what_;
  std::function<void()> finish_;
  bool done_ = false;
  std::string error_;
};

// How non-blocking collectives make progress (AXON_MPI_PROGRESS):
//   "test" (default): MPI's non-blocking collectives, advanced inside MPI calls — Work::test(),
//                     which the reducer calls at every grad-ready hook, and wait();
//   "thread":         a communication thread makes every MPI call of this communicator, in
//                     issue order, so collectives advance while the caller computes (needs
//                     MPI_THREAD_SERIALIZED; a costlier hand-off for small blocking calls).
// docs/distributed.md compares the two.
bool progress_thread_requested() {
  const char* v = std::getenv("AXON_MPI_PROGRESS");
  if (!v || !*v || std::strcmp(v, "test") == 0) return false;
  if (std::strcmp(v, "thread") == 0) return true;
  throw CommError(fmt::format("mpi: AXON_MPI_PROGRESS='{}': expected test or thread", v));
}

// A collective queued for the communication thread.
class ThreadWork final : public Work {
 public:
  ThreadWork(Description what, std::function<void()> finish) : what_(what), finish_(std::move(finish)) {}

  // On the communication thread.
  void complete(int code) {
    // MPI's error text is read here, on the communication thread, the only one calling MPI.
    std::string text = code == MPI_SUCCESS ? std::string() : mpi_error_text(code);
    std::lock_guard<std::mutex> lock(mutex_);
    code_ = code;
    code_text_ = std::move(text);
    done_ = true;
    cv_.notify_all();
  }
  void wait() override {
    std::unique_lock<std::mutex> lock(mutex_);
    cv_.wait(lock, [&] { return done_; });
    lock.unlock();
    finish();
  }
  bool test() override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!done_) return false;
    }
    finish();
    return true;
  }

 private:
  // On the caller's thread, once: the staged copy-back and scaling, then the verdict.
  void finish() {
    if (!finished_) {
      finished_ = true;
      if (code_ != MPI_SUCCESS) error_ = fmt::format("{} failed: {}", what_.str(), code_text_);
      else if (finish_) {
        try {
          finish_();
        } catch (const std::exception& e) {
          error_ = fmt::format("{}: finishing failed: {}", what_.str(), e.what());
        }
      }
      finish_ = nullptr;
    }
    if (!error_.empty()) throw CommError(error_);
  }

  Description what_;
  std::function<void()> finish_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;
  int code_ = MPI_SUCCESS;
  std::string code_text_;
  bool finished_ = false;
  std::string error_;
};

// The communication thread: runs queued MPI calls one at a time, in order.
class ProgressThread {
 public:
  ProgressThread() : thread_([this] { run(); }) {}
  ~ProgressThread() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void push(std::function<int()> call, std::shared_ptr<ThreadWork> work) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      queue_.push_back({std::move(call), std::move(work)});
    }
    cv_.notify_all();
  }

 private:
  struct Task {
    std::function<int()> call;
    std::shared_ptr<ThreadWork> work;
  };
  void run() {
    for (;;) {
      Task task;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopping, nothing left
        task = std::move(queue_.front());
        queue_.pop_front();
      }
      task.work->complete(task.call());
    }
  }
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Task> queue_;
  bool stop_ = false;
  std::thread thread_;
};

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator() {
    ensure_mpi_initialized();
    if (progress_thread_requested()) {
      int provided = MPI_THREAD_SINGLE;
      MPI_Query_thread(&provided);
      if (provided < MPI_THREAD_SERIALIZED)
        throw CommError(fmt::format("mpi: AXON_MPI_PROGRESS=thread needs MPI_THREAD_SERIALIZED, but this MPI granted "
                                    "thread level {} (0 single, 1 funneled, 2 serialized, 3 multiple)",
                                    provided));
      progress_ = std::make_unique<ProgressThread>();
    }
    // Our own communicator, with errors returned (not fatal) so we can say what failed.
    check(MPI_Comm_dup(MPI_COMM_WORLD, &comm_), "MPI_Comm_dup", 0);
    check(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler", 0);
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
  }
  ~MpiCommunicator() override {
    progress_.reset();  // finishes what is queued, then joins
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Comm_free(&comm_);
  }

  std::string backend() const override { return "mpi"; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void allreduce(std::span<float> data, ReduceOp op) override {
    const int n = count(data.size(), "allreduce");
    check(blocking([&] { return MPI_Allreduce(MPI_IN_PLACE, data.data(), n, MPI_FLOAT, to_mpi(op), comm_); }),
          "allreduce(float)", data.size());
    if (op == ReduceOp::avg)
      for (float& x : data) x /= static_cast<float>(size_);
  }
  void allreduce(std::span<double> data, ReduceOp op) override {
    const int n = count(data.size(), "allreduce");
    check(blocking([&] { return MPI_Allreduce(MPI_IN_PLACE, data.data(), n, MPI_DOUBLE, to_mpi(op), comm_); }),
          "allreduce(double)", data.size());
    if (op == ReduceOp::avg)
      for (double& x : data) x /= static_cast<double>(size_);
  }
  void broadcast(std::span<float> data, int root) override {
    check_root(root);
    const int n = count(data.size(), "broadcast");
    check(blocking([&] { return MPI_Bcast(data.data(), n, MPI_FLOAT, root, comm_); }), "broadcast(float)", data.size());
  }
  void broadcast(std::span<std::byte> data, int root) override {
    check_root(root);
    const int n = count(data.size(), "broadcast");
    check(blocking([&] { return MPI_Bcast(data.data(), n, MPI_BYTE, root, comm_); }), "broadcast(bytes)", data.size());
  }
  void barrier() override {
    check(blocking([&] { return MPI_Barrier(comm_); }), "barrier", 0);
  }

  // ---- Tensor collectives: the *_async forms through MPI's non-blocking collectives ----
  // Host f32 and f64 tensors are handed to MPI as they are; bf16 and GPU tensors through a host
  // f32/f64 staging copy made now and copied back on completion.

  // The blocking forms call MPI's blocking collectives: Open MPI runs MPI_Iallreduce and friends
  // through coll/libnbc, which at 2 ranks on one machine took 1.8x as long as coll/tuned's
  // MPI_Allreduce at 1 KiB and 2x at 1 MiB (docs/benchmarks.md, "Collectives: axon-bench").
  void allreduce(Tensor& data, ReduceOp op) override {
    detail::check_collective_tensor("allreduce", data, *this);
    if (data.numel() == 0) return;
    Staged buf = stage(data, true);
    const size_t n = static_cast<size_t>(data.numel());
    const int c = count(n, "allreduce");
    void* p = buf.host.raw_data();
    const MPI_Datatype type = mpi_type(buf.host);
    check(blocking([&] { return MPI_Allreduce(MPI_IN_PLACE, p, c, type, to_mpi(op), comm_); }), "allreduce", n);
    if (op == ReduceOp::avg) axon::backend(buf.host.device()).unary(UnaryOp::mul_scalar, buf.host, 1.0 / size_, buf.host);
    buf.copy_back(data);
  }
  void broadcast(Tensor& data, int root) override {
    detail::check_collective_tensor("broadcast", data, *this);
    check_root(root);
    if (data.numel() == 0) return;
    Staged buf = stage(data, false);
    const int c = count(static_cast<size_t>(buf.host.numel()), "broadcast");
    void* p = buf.host.raw_data();
    const MPI_Datatype type = element_type(buf.host);
    check(blocking([&] { return MPI_Bcast(p, c, type, root, comm_); }), "broadcast", static_cast<size_t>(data.numel()));
    buf.copy_back(data);
  }
  void reduce_scatter(const Tensor& input, Tensor& output, ReduceOp op) override {
    detail::check_scatter_shapes("reduce_scatter", input, output, *this);
    if (output.numel() == 0) return;
    Staged in = stage(input, true), out = stage(output, true, /*copy_values=*/false);
    const size_t n = static_cast<size_t>(output.numel());
    const int c = count(n, "reduce_scatter");
    const void* src = in.host.raw_data();
    void* dst = out.host.raw_data();
    const MPI_Datatype type = mpi_type(in.host);
    check(blocking([&] { return MPI_Reduce_scatter_block(src, dst, c, type, to_mpi(op), comm_); }), "reduce_scatter", n);
    if (op == ReduceOp::avg) axon::backend(out.host.device()).unary(UnaryOp::mul_scalar, out.host, 1.0 / size_, out.host);
    out.copy_back(output);
  }
  void allgather(const Tensor& input, Tensor& output) override {
    detail::check_scatter_shapes("allgather", output, input, *this);
    if (input.numel() == 0) return;
    Staged in = stage(input, false), out = stage(output, false, /*copy_values=*/false);
    const int c = count(static_cast<size_t>(in.host.numel()), "allgather");
    const void* src = in.host.raw_data();
    void* dst = out.host.raw_data();
    const MPI_Datatype type = element_type(in.host);
    check(blocking([&] { return MPI_Allgather(src, c, type, dst, c, type, comm_); }), "allgather",
          static_cast<size_t>(input.numel()));
    out.copy_back(output);
  }

  std::shared_ptr<Work> allreduce_async(Tensor& data, ReduceOp op) override {
    detail::check_collective_tensor("allreduce", data, *this);
    if (data.numel() == 0) return completed_work();
    Staged buf = stage(data, true);
    const size_t n = static_cast<size_t>(data.numel());
    const Description what = describe("allreduce", data, n, reduce_op_name(op));
    const int c = count(n, "allreduce");
    void* p = buf.host.raw_data();
    const MPI_Datatype type = mpi_type(buf.host);
    const int world = size_;
    return launch([=, this](MPI_Request* r) { return MPI_Iallreduce(MPI_IN_PLACE, p, c, type, to_mpi(op), comm_, r); },
                  "allreduce", n, what, [data, buf, op, world]() mutable {
      if (op == ReduceOp::avg) axon::backend(buf.host.device()).unary(UnaryOp::mul_scalar, buf.host, 1.0 / world, buf.host);
      buf.copy_back(data);
    });
  }

  std::shared_ptr<Work> broadcast_async(Tensor& data, int root) override {
    detail::check_collective_tensor("broadcast", data, *this);
    check_root(root);
    if (data.numel() == 0) return completed_work();
    // Bytes: a bf16 tensor goes as it is, no widening needed.
    Staged buf = stage(data, false);
    const int c = count(static_cast<size_t>(buf.host.numel()), "broadcast");
    void* p = buf.host.raw_data();
    const MPI_Datatype type = element_type(buf.host);
    return launch([=, this](MPI_Request* r) { return MPI_Ibcast(p, c, type, root, comm_, r); }, "broadcast",
                  static_cast<size_t>(data.numel()),
                  describe("broadcast", data, static_cast<size_t>(data.numel()), nullptr, root),
                  [data, buf]() mutable { buf.copy_back(data); });
  }

  std::shared_ptr<Work> reduce_scatter_async(const Tensor& input, Tensor& output, ReduceOp op) override {
    detail::check_scatter_shapes("reduce_scatter", input, output, *this);
    if (output.numel() == 0) return completed_work();
    Staged in = stage(input, true), out = stage(output, true, /*copy_values=*/false);
    const size_t n = static_cast<size_t>(output.numel());
    const int c = count(n, "reduce_scatter");
    const void* src = in.host.raw_data();
    void* dst = out.host.raw_data();
    const MPI_Datatype type = mpi_type(in.host);
    const int world = size_;
    return launch([=, this](MPI_Request* r) { return MPI_Ireduce_scatter_block(src, dst, c, type, to_mpi(op), comm_, r); },
                  "reduce_scatter", n, describe("reduce_scatter", input, n, reduce_op_name(op)),
                                     [output, in, out, op, world]() mutable {
                                       if (op == ReduceOp::avg)
                                         axon::backend(out.host.device()).unary(UnaryOp::mul_scalar, out.host, 1.0 / world, out.host);
                                       out.copy_back(output);
                                     });
  }

  std::shared_ptr<Work> allgather_async(const Tensor& input, Tensor& output) override {
    detail::check_scatter_shapes("allgather", output, input, *this);
    if (input.numel() == 0) return completed_work();
    // Bytes, like broadcast: no arithmetic, so bf16 travels as it is.
    Staged in = stage(input, false), out = stage(output, false, /*copy_values=*/false);
    const int c = count(static_cast<size_t>(in.host.numel()), "allgather");
    const void* src = in.host.raw_data();
    void* dst = out.host.raw_data();
    const MPI_Datatype type = element_type(in.host);
    return launch([=, this](MPI_Request* r) { return MPI_Iallgather(src, c, type, dst, c, type, comm_, r); },
                  "allgather", static_cast<size_t>(input.numel()),
                  describe("allgather", input, static_cast<size_t>(input.numel()), nullptr),
                  [output, in, out]() mutable { out.copy_back(output); });
  }

  void send(const Tensor& data, int dst, int tag) override {
    detail::check_collective_tensor("send", data, *this);
    detail::check_peer("send", dst, *this);
    Staged buf = stage(data, false);
    const int c = count(static_cast<size_t>(buf.host.numel()), "send");
    const MPI_Datatype type = element_type(buf.host);
    check(blocking([&] { return MPI_Send(buf.host.raw_data(), c, type, dst, tag, comm_); }), "send",
          static_cast<size_t>(data.numel()));
  }
  void recv(Tensor& data, int src, int tag) override {
    detail::check_collective_tensor("recv", data, *this);
    detail::check_peer("recv", src, *this);
    Staged buf = stage(data, false, /*copy_values=*/false);
    MPI_Status status;
    const int c = count(static_cast<size_t>(buf.host.numel()), "recv");
    const MPI_Datatype type = element_type(buf.host);
    check(blocking([&] { return MPI_Recv(buf.host.raw_data(), c, type, src, tag, comm_, &status); }), "recv",
          static_cast<size_t>(data.numel()));
    int got = 0;
    MPI_Get_count(&status, type, &got);
    if (got != c)
      throw CommError(fmt::format("mpi recv on rank {} of {}: rank {} sent {} elements but {} {} elements were expected",
                                  rank_, size_, src, got, data.numel(), dtype_name(data.dtype())));
    buf.copy_back(data);
  }

 private:
  // Starts a non-blocking collective: here (test mode), or queued for the communication thread,
  // which starts it and waits for it there.
  template <typename Start>
  std::shared_ptr<Work> launch(Start start, const char* op, size_t n, Description what, std::function<void()> finish) {
    if (progress_) {
      auto work = std::make_shared<ThreadWork>(what, std::move(finish));
      progress_->push(
          [start]() mutable {
            MPI_Request request = MPI_REQUEST_NULL;
            const int code = start(&request);
            return code != MPI_SUCCESS ? code : MPI_Wait(&request, MPI_STATUS_IGNORE);
          },
          work);
      return work;
    }
    MPI_Request request = MPI_REQUEST_NULL;
    check(start(&request), op, n);
    return std::make_shared<MpiWork>(request, what, std::move(finish));
  }
  // A blocking MPI call: made here, or (thread mode) by the communication thread after everything
  // queued before it, so that MPI sees one thread and one order.
  template <typename Call>
  int blocking(Call call) {
    if (!progress_) return call();
    auto work = std::make_shared<ThreadWork>(Description{}, nullptr);
    int code = MPI_SUCCESS;
    progress_->push([&] { return code = call(); }, work);
    try {
      work->wait();
    } catch (const CommError&) {
    }
    return code;
  }

  // The host buffer MPI works on: the tensor itself when it is a host f32/f64 tensor (or any
  // host tensor when only bytes move), else a host copy (widened to f32 from bf16 when
  // `arithmetic`), written back by copy_back.
  struct Staged {
    Tensor host;
    bool staged = false;
    void copy_back(Tensor& t) const {
      if (staged) t.copy_from(host.to(t.dtype()).to(t.device()));
    }
  };
  static Staged stage(const Tensor& t, bool arithmetic, bool copy_values = true) {
    const bool widen = arithmetic && t.dtype() == DType::bf16;
    if (!t.device().is_cuda() && !widen) return {t, false};
    const DType dtype = widen ? DType::f32 : t.dtype();
    if (!copy_values) return {Tensor::empty(t.shape(), TensorOptions{dtype, Device::cpu()}), true};
    Tensor host = t.detach().to(Device::cpu());
    return {widen ? host.to(DType::f32) : host, true};
  }
  // The MPI type of one element as stored, for calls that only move data (broadcast, allgather,
  // send/recv): counts stay in elements, so MPI's int count limits elements, not bytes.
  static MPI_Datatype element_type(const Tensor& t) {
    switch (t.dtype()) {
      case DType::f64: return MPI_DOUBLE;
      case DType::bf16: return MPI_UINT16_T;
      case DType::i32: return MPI_INT32_T;
      case DType::i64: return MPI_INT64_T;
      default: return MPI_FLOAT;
    }
  }
  static MPI_Datatype mpi_type(const Tensor& t) { return t.dtype() == DType::f64 ? MPI_DOUBLE : MPI_FLOAT; }
  Description describe(const char* op, const Tensor& t, size_t n, const char* reduce, int root = -1) const {
    return Description{op, t.dtype(), n, reduce, root, rank_, size_};
  }

  void check(int code, const char* what, size_t n) const {
    if (code == MPI_SUCCESS) return;
    throw CommError(fmt::format("mpi {} of {} elements failed on rank {} of {}: {}", what, n, rank_, size_, mpi_error_text(code)));
  }
  int count(size_t n, const char* what) const {
    // Larger buffers would need chunking; nobody reduces 8 GiB in one call yet.
    if (n > static_cast<size_t>(std::numeric_limits<int>::max()))
      throw CommError(fmt::format("mpi {}: {} elements exceed MPI's int count on rank {}", what, n, rank_));
    return static_cast<int>(n);
  }
  void check_root(int root) const {
    if (root < 0 || root >= size_)
      throw CommError(fmt::format("mpi broadcast: root {} is not a rank of this world of {} (on rank {})", root, size_, rank_));
  }

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
  std::unique_ptr<ProgressThread> progress_;  // AXON_MPI_PROGRESS=thread
};

}  // namespace

std::unique_ptr<Communicator> make_mpi_communicator() {
  // The launcher's variables must describe the world MPI started: torchrun-style variables alone
  // (RANK, WORLD_SIZE) give an MPI singleton, which would train alone while believing otherwise.
  // Read before MPI starts: a singleton exports PMIX_RANK=0 for itself.
  const RankEnvironment env = rank_environment();
  std::unique_ptr<Communicator> comm = std::make_unique<MpiCommunicator>();
  if (env.launched() && (env.rank != comm->rank() || env.world_size != comm->size())) {
    throw CommError(fmt::format(
        "mpi: the {} launcher variables say this is rank {} of {}, but MPI started rank {} of {}: Axon's ranks meet "
        "through MPI, so start the job with axonrun, mpirun or srun{}",
        env.source, env.rank, env.world_size, comm->rank(), comm->size(),
#ifdef AXON_HAS_TCP_STORE
        env.source == "torchrun" ? ", or set MASTER_ADDR and MASTER_PORT to meet through Axon's TCP store (no MPI)" : ""
#else
        env.source == "torchrun" ? " (this Axon was built without Boost.Asio, so it has no TCP store for MASTER_ADDR and "
                                   "MASTER_PORT)"
                                 : ""
#endif
        ));
  }
  // The debug checks add a collective before every collective, so they decide the sequence of
  // collectives themselves: all ranks must have them or none. One small all-reduce finds out.
  const bool debug = distributed_debug_enabled();
  std::vector<double> flags(static_cast<size_t>(comm->size()), 0.0);
  flags[static_cast<size_t>(comm->rank())] = debug ? 1.0 : 0.0;
  comm->allreduce(std::span<double>(flags), ReduceOp::sum);
  std::string with, without;  // "0, 2" and "1"
  for (size_t r = 0; r < flags.size(); ++r) {
    std::string& list = flags[r] != 0.0 ? with : without;
    list += (list.empty() ? "" : ", ") + std::to_string(r);
  }
  if (!with.empty() && !without.empty()) {
    mark_failure_collective();  // every rank throws here alike
    throw DisagreementError(fmt::format(
        "mpi: AXON_DISTRIBUTED_DEBUG=1 is set on rank(s) {} but not on rank(s) {} (seen on rank {}); set it for the "
        "whole job (mpirun -x AXON_DISTRIBUTED_DEBUG=1, or export it before axonrun)",
        with, without, comm->rank()));
  }
  return with_heartbeat(debug ? with_collective_checks(std::move(comm)) : std::move(comm));
}

}  // namespace axon
