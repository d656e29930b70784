// axon-bench: cluster benchmarking, under axonrun, mpirun or srun.
//
//   axonrun -n 2 bin/axon-bench collectives --min-bytes 1K --max-bytes 64M --compare-mpi
//   axonrun -n 2 bin/axon-bench train --model mlp_big --threads 1 --batch-size 64
//
// `collectives` times allreduce, reduce_scatter, allgather and broadcast through Axon's
// Communicator over a range of sizes and prints a table in the style of nccl-tests (size, count,
// time, algbw, busbw, wrong values; NVIDIA/nccl-tests doc/PERFORMANCE.md defines the two
// bandwidths): after a barrier each rank times `--iters` calls back to back, the per-call time
// is averaged over the ranks (nccl-tests' default, -a 1), algbw = S / t and busbw = algbw × the
// collective's factor (allreduce 2(n-1)/n, reduce_scatter and allgather (n-1)/n, broadcast 1),
// S being the whole array: the all-reduced buffer, reduce_scatter's input, allgather's output.
// After the timed calls the inputs are filled again with rank-dependent values whose result is
// known exactly, one more call is made, and every element is checked. `--compare-mpi` also times
// the raw MPI call (MPI_Allreduce, MPI_Reduce_scatter_block, MPI_Allgather, MPI_Bcast) on the
// same buffers, interleaved with Axon's calls (Axon, MPI, MPI, Axon: load from other processes
// hits both alike), and prints the ratio of the bus bandwidths.
//
// `train` measures training throughput (samples/s) on synthetic Fashion-MNIST-shaped data at the
// world size it was launched with, for each --threads value, and the share of the training time
// each rank spent inside the Tensor collectives (the gradient all-reduce); bench/scaling.sh runs
// it over world sizes.
//
// Exit status: 0; 1 when a value was wrong or a run failed; 2 for a usage error.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#ifdef AXON_BENCH_WITH_MPI
#include <mpi.h>
#endif

#include "axon/cli.h"
#include "axon/communicator.h"
#include "axon/cuda.h"
#include "axon/data.h"
#include "axon/model.h"
#include "axon/optimizers.h"
#include "axon/trainer.h"
#include "timing_communicator.h"

using namespace axon;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// "8", "1K", "64M", "1G" (binary multiples: K = 1024), as nccl-tests' -b/-e accept.
size_t parse_size(const std::string& option, const std::string& text) {
  size_t multiplier = 1;
  std::string digits = text;
  if (!digits.empty()) {
    const char unit = digits.back();
    if (unit == 'K' || unit == 'k') multiplier = size_t{1} << 10;
    if (unit == 'M' || unit == 'm') multiplier = size_t{1} << 20;
    if (unit == 'G' || unit == 'g') multiplier = size_t{1} << 30;
    if (multiplier != 1) digits.pop_back();
  }
  const size_t limit = (size_t{1} << 40) / multiplier;  // 1 TiB: far beyond any buffer here
  try {
    return cli::parse_integer<size_t>(option, digits, 1, limit) * multiplier;
  } catch (const cli::UsageError&) {
    throw CLI::ValidationError(fmt::format("{}: expected a size in bytes from 1 to 1T, as a number with an optional "
                                           "K, M or G suffix (binary: 1K = 1024), got '{}'",
                                           option, text));
  }
}

// ---- collectives --------------------------------------------------------------------------

enum class Collective { allreduce, reduce_scatter, allgather, broadcast };
const char* name_of(Collective c) {
  switch (c) {
    case Collective::allreduce: return "allreduce";
    case Collective::reduce_scatter: return "reduce_scatter";
    case Collective::allgather: return "allgather";
    case Collective::broadcast: return "broadcast";
  }
  return "?";
}

// nccl-tests' bus bandwidth factor for n ranks (doc/PERFORMANCE.md, "Summary").
double busbw_factor(Collective c, int n) {
  switch (c) {
    case Collective::allreduce: return 2.0 * (n - 1) / n;
    case Collective::reduce_scatter:
    case Collective::allgather: return static_cast<double>(n - 1) / n;
    case Collective::broadcast: return 1.0;
  }
  return 1.0;
}

struct CollectiveOptions {
  std::vector<std::string> collectives{"allreduce", "reduce_scatter", "allgather", "broadcast"};
  std::string min_bytes = "8", max_bytes = "256M";
  size_t min = 8, max = size_t{256} << 20;
  int step_factor = 2;
  int iters = 20, warmup = 5, rounds = 1;
  std::string backend = "auto", dtype_name = "f32", op_name = "sum", average = "mean", mode = "blocking",
              mpi_mode = "blocking", stat = "mean";
  int root = 0;
  bool json = false, compare_mpi = false;
};

ReduceOp parse_op(const std::string& name) {
  if (name == "sum") return ReduceOp::sum;
  if (name == "max") return ReduceOp::max;
  if (name == "min") return ReduceOp::min;
  return ReduceOp::avg;
}

// The test pattern: rank s's input element k. Small integers, exact in every dtype (bf16 holds
// integers to 256 exactly), different across ranks and positions so that a block in the wrong
// place or a missing rank is seen.
double pattern(int s, size_t k) { return static_cast<double>((static_cast<size_t>(s) * 3 + k) % 11 + 1); }

double reduce_expected(ReduceOp op, int n, size_t k) {
  double acc = pattern(0, k);
  for (int s = 1; s < n; ++s) {
    const double v = pattern(s, k);
    if (op == ReduceOp::max) acc = std::max(acc, v);
    else if (op == ReduceOp::min) acc = std::min(acc, v);
    else acc += v;
  }
  return op == ReduceOp::avg ? acc / n : acc;
}

// The value as stored in `dtype` (what a correct result must equal, up to the tolerance).
double stored(DType dtype, double v) {
  if (dtype == DType::f32) return static_cast<float>(v);
  if (dtype == DType::bf16) return static_cast<float>(bf16(static_cast<float>(v)));
  return v;
}

template <class T>
double as_double(T v) {
  if constexpr (std::is_same_v<T, bf16>) return static_cast<float>(v);
  else return static_cast<double>(v);
}

// Fills a host tensor with value(k).
template <class T, class F>
void fill_typed(Tensor& t, F value) {
  T* p = t.data_as<T>();
  const size_t n = static_cast<size_t>(t.numel());
  for (size_t k = 0; k < n; ++k) p[k] = T(static_cast<std::conditional_t<std::is_same_v<T, bf16>, float, T>>(value(k)));
}
template <class F>
void fill(Tensor& t, F value) {
  Tensor host = t.device().is_cuda() ? Tensor::empty(t.shape(), TensorOptions{t.dtype(), Device::cpu()}) : t;
  switch (t.dtype()) {
    case DType::f32: fill_typed<float>(host, value); break;
    case DType::f64: fill_typed<double>(host, value); break;
    default: fill_typed<bf16>(host, value); break;
  }
  if (t.device().is_cuda()) t.copy_from(host);
}

// Elements of `t` that differ from expected(k) by more than the tolerance.
template <class T, class F>
int64_t count_wrong_typed(const Tensor& t, F expected, double tolerance) {
  const T* p = t.data_as<T>();
  const size_t n = static_cast<size_t>(t.numel());
  int64_t wrong = 0;
  for (size_t k = 0; k < n; ++k) {
    const double want = expected(k), got = as_double(p[k]);
    if (!(std::fabs(got - want) <= tolerance * std::max(1.0, std::fabs(want)))) ++wrong;
  }
  return wrong;
}
template <class F>
int64_t count_wrong(const Tensor& t, F expected, double tolerance) {
  const Tensor host = t.device().is_cuda() ? t.to(Device::cpu()) : t;
  switch (t.dtype()) {
    case DType::f32: return count_wrong_typed<float>(host, expected, tolerance);
    case DType::f64: return count_wrong_typed<double>(host, expected, tolerance);
    default: return count_wrong_typed<bf16>(host, expected, tolerance);
  }
}

// Overwrites element 0 with a value no collective here produces.
void corrupt_first(Tensor& t) {
  Tensor host = t.to(Device::cpu()).to(DType::f64);
  host.data_as<double>()[0] = 1e6;
  t.copy_from(host.to(t.dtype()).to(t.device()));
}

// Relative tolerance of a result: exact where the arithmetic is (sums, min, max of small
// integers); avg divides (MPI: sum, then × 1/n); bf16 results are rounded once, or (NCCL) in
// every step of the ring.
double tolerance_for(DType dtype, ReduceOp op) {
  if (dtype == DType::bf16) return 1e-2;
  if (op != ReduceOp::avg) return 0.0;
  return dtype == DType::f32 ? 1e-6 : 1e-12;
}

// The buffers of one collective at one size, and how to run it through Axon and through MPI.
struct Case {
  Collective collective;
  size_t count = 0;  // elements per call: the all-reduced/broadcast buffer, one rank's block otherwise
  size_t bytes = 0;  // S: the whole array (nccl-tests' size column)
  Tensor a, b;       // allreduce/broadcast: a; reduce_scatter: a (n·count) -> b (count); allgather: a (count) -> b (n·count)
};

class CollectiveBench {
 public:
  CollectiveBench(Communicator& comm, const CollectiveOptions& o, DType dtype, Device device)
      : comm_(comm), o_(o), dtype_(dtype), device_(device), op_(parse_op(o.op_name)), n_(comm.size()) {
#ifdef AXON_BENCH_WITH_MPI
    if (o_.compare_mpi) MPI_Comm_dup(MPI_COMM_WORLD, &mpi_comm_);
#endif
  }
  ~CollectiveBench() {
#ifdef AXON_BENCH_WITH_MPI
    if (mpi_comm_ != MPI_COMM_NULL) MPI_Comm_free(&mpi_comm_);
#endif
  }

  // Runs every size of one collective; returns the wrong values over all ranks.
  int64_t run(Collective c, bool print_header) {
    if (print_header) header();
    int64_t wrong_total = 0;
    const size_t word = dtype_size(dtype_);
    for (size_t size = o_.min; size <= o_.max; size *= static_cast<size_t>(o_.step_factor)) {
      Case k;
      k.collective = c;
      const bool blocks = c == Collective::reduce_scatter || c == Collective::allgather;
      k.count = blocks ? size / (word * static_cast<size_t>(n_)) : size / word;
      if (k.count == 0) {  // smaller than one element (per rank): nothing to time
        if (o_.step_factor == 1) break;
        continue;
      }
      k.bytes = k.count * word * (blocks ? static_cast<size_t>(n_) : 1);
      const TensorOptions to{dtype_, device_};
      const int64_t count = static_cast<int64_t>(k.count), whole = count * n_;
      if (c == Collective::reduce_scatter) k.a = Tensor::empty({whole}, to), k.b = Tensor::empty({count}, to);
      else if (c == Collective::allgather) k.a = Tensor::empty({count}, to), k.b = Tensor::empty({whole}, to);
      else k.a = Tensor::empty({count}, to);
      fill_inputs(k);
      wrong_total += row(k);
      if (o_.step_factor == 1) break;
    }
    return wrong_total;
  }

 private:
  void header() {
    if (comm_.rank() != 0 || o_.json) return;
    std::printf("#\n# %-14s %12s %12s %6s %6s %9s %8s %8s %8s", "collective", "size(B)", "count", "type", "redop", "time(us)",
                "algbw", "busbw", "#wrong");
    if (o_.compare_mpi) std::printf(" %12s %8s %7s", "mpi time(us)", "mpi bus", "ratio");
    std::printf("\n# %-14s %12s %12s %6s %6s %9s %8s %8s %8s", "", "", "(elements)", "", "", "", "(GB/s)", "(GB/s)", "");
    if (o_.compare_mpi) std::printf(" %12s %8s %7s", "", "(GB/s)", "bus/mpi");
    std::printf("\n");
    std::fflush(stdout);
  }

  void fill_inputs(Case& k) {
    const int me = comm_.rank();
    switch (k.collective) {
      case Collective::allreduce:
      case Collective::reduce_scatter: fill(k.a, [me](size_t i) { return pattern(me, i); }); break;
      case Collective::allgather: fill(k.a, [me](size_t i) { return pattern(me, i); }); break;
      case Collective::broadcast:
        // Non-roots start from values that are wrong everywhere, so a broadcast that did not
        // happen is counted.
        fill(k.a, [me, root = o_.root](size_t i) { return me == root ? pattern(root, i) : -1.0; });
        break;
    }
    if (k.b.defined()) fill(k.b, [](size_t) { return -1.0; });
  }

  void axon_call(Case& k) {
    const bool async = o_.mode == "async";
    switch (k.collective) {
      case Collective::allreduce:
        if (async) comm_.allreduce_async(k.a, op_)->wait();
        else comm_.allreduce(k.a, op_);
        break;
      case Collective::reduce_scatter:
        if (async) comm_.reduce_scatter_async(k.a, k.b, op_)->wait();
        else comm_.reduce_scatter(k.a, k.b, op_);
        break;
      case Collective::allgather:
        if (async) comm_.allgather_async(k.a, k.b)->wait();
        else comm_.allgather(k.a, k.b);
        break;
      case Collective::broadcast:
        if (async) comm_.broadcast_async(k.a, o_.root)->wait();
        else comm_.broadcast(k.a, o_.root);
        break;
    }
  }

#ifdef AXON_BENCH_WITH_MPI
  // The same operation straight through MPI on the same host buffers (in place for allreduce, as
  // Axon's is). avg is MPI_SUM and a scaling pass, the work Axon's MPI backend does.
  void mpi_call(Case& k) {
    const MPI_Datatype type = dtype_ == DType::f64 ? MPI_DOUBLE : MPI_FLOAT;
    const MPI_Op op = op_ == ReduceOp::max ? MPI_MAX : op_ == ReduceOp::min ? MPI_MIN : MPI_SUM;
    if (k.count > static_cast<size_t>(std::numeric_limits<int>::max()))
      throw CommError(fmt::format("raw MPI {}: {} elements exceed MPI's int count (--max-bytes is too large for "
                                  "--compare-mpi)", name_of(k.collective), k.count));
    const int count = static_cast<int>(k.count);
    int code = MPI_SUCCESS;
    if (o_.mpi_mode == "nonblocking") {
      // MPI_I<collective> and MPI_Wait: Open MPI runs these through coll/libnbc.
      MPI_Request request = MPI_REQUEST_NULL;
      switch (k.collective) {
        case Collective::allreduce:
          code = MPI_Iallreduce(MPI_IN_PLACE, k.a.raw_data(), count, type, op, mpi_comm_, &request);
          break;
        case Collective::reduce_scatter:
          code = MPI_Ireduce_scatter_block(k.a.raw_data(), k.b.raw_data(), count, type, op, mpi_comm_, &request);
          break;
        case Collective::allgather:
          code = MPI_Iallgather(k.a.raw_data(), count, type, k.b.raw_data(), count, type, mpi_comm_, &request);
          break;
        case Collective::broadcast: code = MPI_Ibcast(k.a.raw_data(), count, type, o_.root, mpi_comm_, &request); break;
      }
      if (code == MPI_SUCCESS) code = MPI_Wait(&request, MPI_STATUS_IGNORE);
      if (op_ == ReduceOp::avg && k.collective == Collective::allreduce) scale(k.a);
      if (op_ == ReduceOp::avg && k.collective == Collective::reduce_scatter) scale(k.b);
    } else switch (k.collective) {
      case Collective::allreduce:
        code = MPI_Allreduce(MPI_IN_PLACE, k.a.raw_data(), count, type, op, mpi_comm_);
        if (op_ == ReduceOp::avg) scale(k.a);
        break;
      case Collective::reduce_scatter:
        code = MPI_Reduce_scatter_block(k.a.raw_data(), k.b.raw_data(), count, type, op, mpi_comm_);
        if (op_ == ReduceOp::avg) scale(k.b);
        break;
      case Collective::allgather:
        code = MPI_Allgather(k.a.raw_data(), count, type, k.b.raw_data(), count, type, mpi_comm_);
        break;
      case Collective::broadcast: code = MPI_Bcast(k.a.raw_data(), count, type, o_.root, mpi_comm_); break;
    }
    if (code != MPI_SUCCESS)
      throw CommError(fmt::format("raw MPI {} of {} elements failed on rank {} (error code {})", name_of(k.collective),
                                  k.count, comm_.rank(), code));
  }
  void scale(Tensor& t) {
    const double f = 1.0 / n_;
    if (dtype_ == DType::f64) {
      double* p = t.data_as<double>();
      for (int64_t i = 0; i < t.numel(); ++i) p[i] *= f;
    } else {
      float* p = t.data_as<float>();
      for (int64_t i = 0; i < t.numel(); ++i) p[i] *= static_cast<float>(f);
    }
  }
#else
  void mpi_call(Case&) { throw CommError("axon-bench was built without MPI: --compare-mpi is not available"); }
#endif

  // Times `iters` calls, started together after a barrier. --stat mean (nccl-tests): one clock
  // around the loop, appended as a single total; median/min: each call timed on its own (GPU
  // calls synchronized one by one), appended one by one.
  template <class F>
  void timed(int iters, F call, std::vector<double>& samples) {
    if (iters <= 0) return;
    comm_.barrier();
    if (o_.stat == "mean") {
      const auto start = Clock::now();
      for (int i = 0; i < iters; ++i) call();
      if (device_.is_cuda()) cuda::synchronize(device_.index);
      samples.push_back(seconds_since(start));
      return;
    }
    for (int i = 0; i < iters; ++i) {
      const auto start = Clock::now();
      call();
      if (device_.is_cuda()) cuda::synchronize(device_.index);
      samples.push_back(seconds_since(start));
    }
  }
  // This rank's seconds per call from the samples of `iters` calls, as --stat says.
  double per_call(std::vector<double> samples, int iters) const {
    if (o_.stat == "mean") {
      double total = 0;
      for (double x : samples) total += x;
      return total / iters;
    }
    if (o_.stat == "min") return *std::min_element(samples.begin(), samples.end());
    const size_t mid = samples.size() / 2;
    std::nth_element(samples.begin(), samples.begin() + static_cast<std::ptrdiff_t>(mid), samples.end());
    double median = samples[mid];
    if (samples.size() % 2 == 0) median = (median + *std::max_element(samples.begin(), samples.begin() + static_cast<std::ptrdiff_t>(mid))) / 2;
    return median;
  }

  // The per-call time over ranks, as --average says (nccl-tests -a: 0 rank 0, 1 mean, 2 min, 3 max).
  double over_ranks(double seconds) {
    std::vector<double> sum{seconds, comm_.rank() == 0 ? seconds : 0.0};
    comm_.allreduce(std::span<double>(sum), ReduceOp::sum);
    std::vector<double> mx{seconds, -seconds};
    comm_.allreduce(std::span<double>(mx), ReduceOp::max);
    if (o_.average == "rank0") return sum[1];
    if (o_.average == "max") return mx[0];
    if (o_.average == "min") return -mx[1];
    return sum[0] / n_;
  }

  int64_t row(Case& k) {
    auto axon = [&] { axon_call(k); };
    auto mpi = [&] { mpi_call(k); };
    for (int i = 0; i < o_.warmup; ++i) axon();
    if (o_.compare_mpi)
      for (int i = 0; i < o_.warmup; ++i) mpi();
    std::vector<double> axon_s, mpi_s;
    if (o_.compare_mpi) {
      // Axon, MPI, MPI, Axon, in --rounds groups: a load that rises or falls during the row
      // weighs on both alike. Each side makes --iters calls in all.
      const int rounds = std::min(o_.rounds, o_.iters);
      for (int r = 0; r < rounds; ++r) {
        const int calls = o_.iters / rounds + (r < o_.iters % rounds ? 1 : 0);
        const int first = calls / 2, second = calls - first;
        timed(first, axon, axon_s);
        timed(first, mpi, mpi_s);
        timed(second, mpi, mpi_s);
        timed(second, axon, axon_s);
      }
    } else {
      timed(o_.iters, axon, axon_s);
    }
    const double t = over_ranks(per_call(axon_s, o_.iters));
    const double t_mpi = o_.compare_mpi ? over_ranks(per_call(mpi_s, o_.iters)) : 0.0;

    // The check: fresh inputs, one call, every element.
    fill_inputs(k);
    axon_call(k);
    // Self-test (tests/distributed/test_axon_bench.cpp): a corrupted result must be counted.
    if (const char* inject = std::getenv("AXON_BENCH_INJECT_WRONG_VALUE"); inject && *inject == '1' && comm_.rank() == 1)
      corrupt_first((k.collective == Collective::reduce_scatter || k.collective == Collective::allgather) ? k.b : k.a);
    const double tol = tolerance_for(dtype_, op_);
    const int me = comm_.rank(), n = n_;
    const DType dt = dtype_;
    const ReduceOp op = op_;
    int64_t wrong = 0;
    switch (k.collective) {
      case Collective::allreduce:
        wrong = count_wrong(k.a, [&](size_t i) { return stored(dt, reduce_expected(op, n, i)); }, tol);
        break;
      case Collective::reduce_scatter: {
        const size_t offset = static_cast<size_t>(me) * k.count;
        wrong = count_wrong(k.b, [&](size_t i) { return stored(dt, reduce_expected(op, n, offset + i)); }, tol);
        break;
      }
      case Collective::allgather: {
        const size_t block = k.count;
        wrong = count_wrong(k.b, [&](size_t i) { return pattern(static_cast<int>(i / block), i % block); }, 0.0);
        break;
      }
      case Collective::broadcast:
        wrong = count_wrong(k.a, [&](size_t i) { return pattern(o_.root, i); }, 0.0);
        break;
    }
    std::vector<double> w{static_cast<double>(wrong)};
    comm_.allreduce(std::span<double>(w), ReduceOp::sum);
    const int64_t wrong_all = static_cast<int64_t>(w[0]);

    const double algbw = static_cast<double>(k.bytes) / t / 1e9;
    const double busbw = algbw * busbw_factor(k.collective, n);
    const double busbw_mpi = o_.compare_mpi ? static_cast<double>(k.bytes) / t_mpi / 1e9 * busbw_factor(k.collective, n) : 0.0;
    if (comm_.rank() == 0) {
      const char* redop = k.collective == Collective::allreduce || k.collective == Collective::reduce_scatter
                              ? o_.op_name.c_str()
                              : "none";
      if (o_.json) {
        std::string line = fmt::format(
            "{{\"op\":\"{}\",\"bytes\":{},\"count\":{},\"dtype\":\"{}\",\"redop\":\"{}\",\"ranks\":{},\"backend\":\"{}\","
            "\"mode\":\"{}\",\"stat\":\"{}\",\"time_us\":{:.3f},\"algbw_GBps\":{:.4f},\"busbw_GBps\":{:.4f},\"errors\":{}",
            name_of(k.collective), k.bytes, k.count, o_.dtype_name, redop, n, comm_.backend(), o_.mode, o_.stat, t * 1e6, algbw,
            busbw, wrong_all);
        if (o_.compare_mpi)
          line += fmt::format(",\"mpi_mode\":\"{}\",\"mpi_time_us\":{:.3f},\"mpi_busbw_GBps\":{:.4f},\"ratio\":{:.4f}",
                              o_.mpi_mode, t_mpi * 1e6, busbw_mpi, t_mpi / t);
        std::printf("%s}\n", line.c_str());
      } else {
        std::printf("  %-14s %12zu %12zu %6s %6s %9.2f %8.3f %8.3f %8lld", name_of(k.collective), k.bytes, k.count,
                    o_.dtype_name.c_str(), redop, t * 1e6, algbw, busbw, static_cast<long long>(wrong_all));
        if (o_.compare_mpi) std::printf(" %12.2f %8.3f %7.3f", t_mpi * 1e6, busbw_mpi, t_mpi / t);
        std::printf("\n");
      }
      std::fflush(stdout);
    }
    busbw_sum_ += busbw;
    ++rows_;
    return wrong_all;
  }

 public:
  double average_busbw() const { return rows_ ? busbw_sum_ / rows_ : 0.0; }

 private:
  Communicator& comm_;
  const CollectiveOptions& o_;
  DType dtype_;
  Device device_;
  ReduceOp op_;
  int n_;
  double busbw_sum_ = 0.0;
  int rows_ = 0;
#ifdef AXON_BENCH_WITH_MPI
  MPI_Comm mpi_comm_ = MPI_COMM_NULL;
#endif
};

int run_collectives(Communicator& world, const CollectiveOptions& o) {
  // The backend: NCCL for GPU buffers when asked (or by default where it is built in and a GPU
  // is there, unless --compare-mpi), else the MPI (or, for one process, local) communicator on host buffers.
  const bool gpu = cuda::device_count() > 0;
  // --compare-mpi times MPI on host buffers, so auto then means mpi.
  const bool use_nccl =
      o.backend == "nccl" || (o.backend == "auto" && gpu && !nccl_version().empty() && !o.compare_mpi);
  std::unique_ptr<Communicator> nccl;
  Device device = Device::cpu();
  if (use_nccl) {
    if (!gpu)
      throw CommError(fmt::format("--backend nccl: no CUDA device on rank {} ({})", world.rank(),
                                  cuda::built_with_cuda() ? "none visible" : "Axon was built without CUDA"));
    device = Device::cuda(cuda::device_for_local_rank(local_rank()));
    nccl = make_nccl_communicator(world, device);
  }
  Communicator& comm = nccl ? *nccl : world;
  const DType dtype = parse_dtype(o.dtype_name);
  if (comm.rank() == 0 && !o.json) {
    std::printf("# axon-bench collectives: %d rank(s), backend %s%s, dtype %s, op %s, %s calls, iters %d, warmup %d, "
                "time: %s per call, %s over ranks\n",
                comm.size(), comm.backend().c_str(), use_nccl ? fmt::format(" ({})", device.str()).c_str() : "",
                o.dtype_name.c_str(), o.op_name.c_str(), o.mode.c_str(), o.iters, o.warmup, o.stat.c_str(),
                o.average.c_str());
    std::printf("# algbw = size / time; busbw = algbw x 2(n-1)/n (allreduce), (n-1)/n (reduce_scatter, allgather), "
                "1 (broadcast), as nccl-tests\n");
    if (o.compare_mpi)
      std::printf("# ratio = Axon busbw / raw MPI busbw (%s MPI calls) on the same buffers, timed interleaved in %d round(s)\n",
                  o.mpi_mode.c_str(), o.rounds);
    std::fflush(stdout);
  }
  CollectiveBench bench(comm, o, dtype, device);
  int64_t wrong = 0;
  bool first = true;
  for (const std::string& name : o.collectives) {
    Collective c = name == "allreduce"        ? Collective::allreduce
                   : name == "reduce_scatter" ? Collective::reduce_scatter
                   : name == "allgather"      ? Collective::allgather
                                              : Collective::broadcast;
    wrong += bench.run(c, first);
    first = false;
  }
  if (comm.rank() == 0 && !o.json) {
    std::printf("# Out of bounds values : %lld %s\n# Avg bus bandwidth    : %.4f GB/s\n#\n", static_cast<long long>(wrong),
                wrong == 0 ? "OK" : "FAILED", bench.average_busbw());
    std::fflush(stdout);
  }
  if (wrong != 0) {
    if (comm.rank() == 0) std::fprintf(stderr, "axon-bench: error: %lld wrong value(s) (see the #wrong column)\n", static_cast<long long>(wrong));
    mark_failure_collective();  // every rank saw the same total: exit together
    return 1;
  }
  return 0;
}

// ---- train ----------------------------------------------------------------------------------

struct TrainBenchOptions {
  std::string model = "mlp_big", optimizer = "adam";
  std::vector<int> threads{1};
  size_t batch_size = 128, samples = 60000;
  int epochs = 1;
  double lr = 1e-3, baseline = 0.0;
  uint64_t seed = 0;
  bool json = false;
};

Model build_model(const std::string& name) {
  if (name == "mlp") return input({-1, 784}) | dense(128, Activation::relu) | dense(10);
  return input({-1, 784}) | dense(1024, Activation::relu) | dense(1024, Activation::relu) | dense(10);
}

int run_train(Communicator& comm, const TrainBenchOptions& o) {
  data::Dataset train;
  cli::run_on_all_ranks(comm, "axon-bench", [&] { train = data::synthetic_fashion_mnist(o.samples, o.seed); });
  if (comm.rank() == 0 && !o.json) {
    std::printf("# axon-bench train: %s, %s, synthetic Fashion-MNIST (%zu samples), %d epoch(s), %d rank(s), backend %s\n",
                o.model.c_str(), o.optimizer.c_str(), o.samples, o.epochs, comm.size(), comm.backend().c_str());
    std::printf("# efficiency = samples/s / (ranks x baseline); comm = share of each rank's training time inside the "
                "gradient collectives (mean, max over ranks)\n");
    std::printf("# %5s %8s %10s %12s %12s %9s %10s %9s %9s\n", "ranks", "threads", "batch/rank", "global batch",
                "samples/s", "speedup", "efficiency", "comm", "comm max");
    std::fflush(stdout);
  }
  for (int threads : o.threads) {
    set_num_threads(threads);
    Model model = build_model(o.model);
    Parameters params = init(model, o.seed);
    auto optimizer = make_optimizer(o.optimizer, o.lr);
    bench::TimingCommunicator timing(comm);
    TrainOptions options;
    options.epochs = o.epochs;
    options.batch_size = o.batch_size;
    options.seed = o.seed;
    options.progress = false;
    Trainer trainer(model, params, *optimizer, timing, options);
    timing.reset();  // the constructor's agreement checks are not training
    const auto start = Clock::now();
    TrainResult result = trainer.fit(train);
    const double fit_s = seconds_since(start);
    // Per rank: its share of the fit inside the gradient collectives; mean and max over ranks.
    const double share = fit_s > 0 ? timing.tensor_seconds / fit_s : 0.0;
    std::vector<double> v{share, share};
    comm.allreduce(std::span<double>(v.data(), 1), ReduceOp::sum);
    comm.allreduce(std::span<double>(v.data() + 1, 1), ReduceOp::max);
    const double share_mean = v[0] / comm.size(), share_max = v[1];
    const double sps = result.samples_per_second();
    const double speedup = o.baseline > 0 ? sps / o.baseline : std::nan("");
    const double efficiency = o.baseline > 0 ? speedup / comm.size() : std::nan("");
    if (comm.rank() == 0) {
      if (o.json) {
        auto num = [](double x) { return std::isnan(x) ? std::string("null") : fmt::format("{:.4f}", x); };
        std::printf("{\"bench\":\"train\",\"model\":\"%s\",\"ranks\":%d,\"threads\":%d,\"batch_size\":%zu,\"global_batch\":%zu,"
                    "\"samples\":%lld,\"seconds\":%.4f,\"samples_per_s\":%.2f,\"speedup\":%s,\"efficiency\":%s,"
                    "\"comm_share\":%.4f,\"comm_share_max\":%.4f,\"grad_collectives\":%lld,\"backend\":\"%s\"}\n",
                    o.model.c_str(), comm.size(), threads, o.batch_size, o.batch_size * static_cast<size_t>(comm.size()),
                    static_cast<long long>(result.train_samples), result.train_seconds, sps, num(speedup).c_str(),
                    num(efficiency).c_str(), share_mean, share_max, timing.tensor_calls, comm.backend().c_str());
      } else {
        const std::string sp = o.baseline > 0 ? fmt::format("{:.2f}x", speedup) : "-";
        const std::string ef = o.baseline > 0 ? fmt::format("{:.1f}%", 100 * efficiency) : "-";
        std::printf("  %5d %8d %10zu %12zu %12.0f %9s %10s %8.1f%% %8.1f%%\n", comm.size(), threads, o.batch_size,
                    o.batch_size * static_cast<size_t>(comm.size()), sps, sp.c_str(), ef.c_str(), 100 * share_mean,
                    100 * share_max);
      }
      std::fflush(stdout);
    }
  }
  return 0;
}

int run(int argc, char** argv) {
  CLI::App app{"Benchmark Axon's collectives and data-parallel training (under axonrun, mpirun or srun)", "axon-bench"};
  app.require_subcommand(1);
  CollectiveOptions co;
  // axonrun --backend B exports AXON_BACKEND=B to the ranks: the default of --backend.
  if (const char* backend = std::getenv("AXON_BACKEND"); backend && *backend) co.backend = backend;
  CLI::App* coll = app.add_subcommand("collectives", "Time allreduce, reduce_scatter, allgather and broadcast over a range of sizes");
  coll->add_option("--collectives", co.collectives, "Which collectives, in order (comma-separated)")
      ->delimiter(',')
      ->check(CLI::IsMember({"allreduce", "reduce_scatter", "allgather", "broadcast"}))
      ->default_str("allreduce,reduce_scatter,allgather,broadcast");
  coll->add_option("-b,--min-bytes", co.min_bytes, "Smallest size S in bytes (K, M, G: binary multiples)")->default_str("8");
  coll->add_option("-e,--max-bytes", co.max_bytes, "Largest size S in bytes")->default_str("256M");
  cli::add_integer(*coll, "-f,--step-factor", co.step_factor, 1, 1024, "Multiply the size by this each row (1: one row)");
  cli::add_integer(*coll, "-n,--iters", co.iters, 1, 1000000, "Timed calls per size");
  cli::add_integer(*coll, "-w,--warmup", co.warmup, 0, 1000000, "Untimed calls before the timed ones");
  coll->add_option("--backend", co.backend, "mpi, nccl (GPU buffers), or auto (nccl where built in and a GPU is there)")
      ->check(CLI::IsMember({"auto", "mpi", "nccl"}))
      ->default_str("auto");
  coll->add_option("-d,--dtype", co.dtype_name, "Element type")->check(CLI::IsMember({"f32", "bf16", "f64"}))->default_str("f32");
  coll->add_option("-o,--op", co.op_name, "Reduction of allreduce and reduce_scatter")
      ->check(CLI::IsMember({"sum", "max", "min", "avg"}))
      ->default_str("sum");
  cli::add_integer(*coll, "-r,--root", co.root, 0, 1 << 30, "Root rank of broadcast");
  coll->add_option("-a,--average", co.average,
                   "The per-call time reported: mean over ranks (nccl-tests' default), max, min or rank0")
      ->check(CLI::IsMember({"mean", "max", "min", "rank0"}))
      ->default_str("mean");
  coll->add_option("--stat", co.stat,
                   "Time per call: mean of a timed loop (nccl-tests), or median/min of individually timed calls (robust "
                   "against a rank being descheduled on a shared, loaded machine)")
      ->check(CLI::IsMember({"mean", "median", "min"}))
      ->default_str("mean");
  coll->add_option("--mode", co.mode, "blocking calls, or async: the *_async call and wait()")
      ->check(CLI::IsMember({"blocking", "async"}))
      ->default_str("blocking");
  coll->add_option("--mpi-mode", co.mpi_mode,
                   "With --compare-mpi: the raw calls are blocking (MPI_Allreduce, ...) or nonblocking (MPI_Iallreduce, "
                   "... and MPI_Wait)")
      ->check(CLI::IsMember({"blocking", "nonblocking"}))
      ->default_str("blocking");
  cli::add_integer(*coll, "--rounds", co.rounds, 1, 1000000,
                   "With --compare-mpi: split the timed calls into this many Axon-MPI-MPI-Axon groups");
  coll->add_flag("--json", co.json, "One JSON object per row on stdout instead of the table");
  coll->add_flag("--compare-mpi", co.compare_mpi,
                 "Also time the raw MPI collective on the same buffers, interleaved, and print the ratio (mpi backend, "
                 "f32 or f64)");

  TrainBenchOptions to;
  CLI::App* tr = app.add_subcommand("train", "Training throughput at this world size for each --threads value");
  tr->add_option("--model", to.model, "Model")->check(CLI::IsMember({"mlp", "mlp_big"}))->default_str("mlp_big");
  tr->add_option("--threads", to.threads, "Threads per rank; a comma-separated list runs one measurement each")
      ->delimiter(',')
      ->check(CLI::Range(1, 1024))
      ->default_str("1");
  cli::add_integer(*tr, "--batch-size", to.batch_size, size_t{1}, size_t{1} << 20, "Samples per rank per step");
  cli::add_integer(*tr, "--samples", to.samples, size_t{1}, size_t{1} << 24, "Synthetic training samples (all ranks)");
  cli::add_integer(*tr, "--epochs", to.epochs, 1, 1000, "Passes over the samples");
  tr->add_option("--optimizer", to.optimizer, "Optimizer")->check(CLI::IsMember(optimizer_names()))->default_str("adam");
  cli::add_real(*tr, "--lr", to.lr, cli::positive_float(), "Learning rate");
  cli::add_real(*tr, "--baseline-samples-per-s", to.baseline, cli::greater_than(0),
                "1-rank throughput to compute speedup and scaling efficiency against");
  cli::add_integer(*tr, "--seed", to.seed, uint64_t{0}, std::numeric_limits<uint64_t>::max(), "Seed of data and weights");
  tr->add_flag("--json", to.json, "One JSON object per measurement on stdout instead of the table");

  cli::ParseOutcome parsed;
  try {
    app.parse(argc, argv);
    if (coll->parsed()) {
      co.min = parse_size("--min-bytes", co.min_bytes);
      co.max = parse_size("--max-bytes", co.max_bytes);
      if (co.min > co.max)
        throw CLI::ValidationError("--min-bytes", fmt::format("{} is larger than --max-bytes {}", co.min_bytes, co.max_bytes));
      if (co.backend != "auto" && co.backend != "mpi" && co.backend != "nccl")
        throw CLI::ValidationError("--backend", "AXON_BACKEND='" + co.backend + "': expected mpi, nccl or auto");
      if (co.compare_mpi && co.backend == "nccl")
        throw CLI::ValidationError("--compare-mpi", "times MPI on host buffers: use it with --backend mpi");
      if (co.compare_mpi && co.dtype_name == "bf16")
        throw CLI::ValidationError("--compare-mpi", "MPI has no bf16 type: use --dtype f32 or f64");
#ifndef AXON_BENCH_WITH_MPI
      if (co.compare_mpi) throw CLI::ValidationError("--compare-mpi", "axon-bench was built without MPI");
#endif
    }
  } catch (const CLI::ParseError& e) {
    if (!launched_with_ranks()) return cli::exit_on_parse_error(app, e, launcher_rank());
    parsed = cli::outcome_of(app, e);
  }
  std::unique_ptr<Communicator> world;
  if (launched_with_ranks()) {
    try {
      world = make_communicator();
    } catch (const std::exception&) {
      if (parsed.kind == cli::ParseOutcome::Kind::ok) throw;
      return cli::report_parse_outcome(app, parsed, launcher_rank());
    }
    if (std::optional<int> code = cli::agree_on_command_line(*world, app, parsed)) return *code;
  } else {
    world = make_communicator();
  }
  if (coll->parsed()) {
    if (co.root >= world->size()) {
      if (world->rank() == 0)
        std::fprintf(stderr, "axon-bench: error: --root %d: not a rank of this world of %d\n", co.root, world->size());
      mark_failure_collective();
      return 2;
    }
    if (co.compare_mpi && world->backend() != "mpi") {
      if (world->rank() == 0)
        std::fprintf(stderr, "axon-bench: error: --compare-mpi needs the MPI backend (start under axonrun, mpirun or srun)\n");
      return 2;
    }
    return run_collectives(*world, co);
  }
  return run_train(*world, to);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const cli::ReportedError&) {
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "axon-bench: error: %s\n", e.what());
    return 1;
  }
}
