// The CPU convolution through oneDNN (Debian's libdnnl-dev, 2.x API): forward, backward data
// and backward weights on Axon's own channels-last tensors, so no activation is ever reordered.
// oneDNN's brgemm convolutions are 3-8× faster than im2col + GEMM on the cnn's layers
// (docs/benchmarks.md, "The CNN"); PyTorch's CPU convolution is the same library.
//
// Each geometry gets its primitives once, cached by geometry: creating a primitive descriptor
// walks oneDNN's implementation list and JIT-compiles code (milliseconds), executing it does not.
// The kernel is reordered every call from Axon's {k..., cin/groups, cout} into the blocked
// layout oneDNN picks (it changes every step; a few hundred KB at most), into a buffer the
// cache owns, so a training step allocates nothing here.
#include "onednn_conv.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <iterator>

#include <fmt/format.h>

#include <stdexcept>

#ifdef AXON_HAS_ONEDNN
#include <omp.h>
#include <pthread.h>

#include <map>
#include <memory>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <optional>
#include <unordered_map>
#include <vector>
#endif

namespace axon::cpu_detail {

namespace {
std::atomic<bool> g_enabled{true};
std::atomic<int64_t> g_calls{0}, g_gemm_calls{0};
}  // namespace

int64_t onednn_calls() { return g_calls.load(); }
int64_t onednn_gemm_calls() { return g_gemm_calls.load(); }

namespace {
std::atomic<bool> g_team_started{false};
}  // namespace

bool onednn_team_started() { return g_team_started.load(std::memory_order_relaxed); }

bool onednn_built() {
#ifdef AXON_HAS_ONEDNN
  return true;
#else
  return false;
#endif
}

void set_onednn_enabled(bool enabled) { g_enabled.store(enabled); }
bool onednn_enabled() { return onednn_built() && g_enabled.load(); }

#ifndef AXON_HAS_ONEDNN

bool onednn_conv_supported(const ConvGeometry&, int, int64_t, DType) { return false; }
void onednn_conv_forward(const Tensor&, const Tensor&, const Tensor*, const ConvGeometry&, Tensor&) {
  throw std::logic_error("conv: Axon was built without oneDNN");
}
void onednn_conv_backward_data(const Tensor&, const Tensor&, const ConvGeometry&, Tensor&) {
  throw std::logic_error("conv: Axon was built without oneDNN");
}
void onednn_conv_backward_weights(const Tensor&, const Tensor&, const ConvGeometry&, float, Tensor&, Tensor*, float) {
  throw std::logic_error("conv: Axon was built without oneDNN");
}
void onednn_set_num_threads(int) {}
std::string onednn_version() { return ""; }
bool onednn_sgemm(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t, float, float*,
                  int64_t) {
  return false;
}

#else

namespace {

using dnnl::memory;
using Dims = memory::dims;

dnnl::engine& engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

// oneDNN's CPU stream runs each primitive to completion on the calling thread (its OpenMP team),
// so one stream per thread is all the synchronization needed.
dnnl::stream& stream() {
  thread_local dnnl::stream s(engine());
  return s;
}

// A channels-last tensor {batch, spatial..., channels} as oneDNN's logical {N, C, spatial...}.
memory::desc activation_desc(int64_t batch, const int64_t* spatial, int dims, int64_t channels) {
  Dims shape{batch, channels}, strides{0, 1};
  for (int d = 0; d < dims; ++d) shape.push_back(spatial[d]);
  int64_t step = channels;
  strides.resize(shape.size());
  for (int d = dims - 1; d >= 0; --d) {
    strides[static_cast<size_t>(d + 2)] = step;
    step *= spatial[d];
  }
  strides[0] = step;
  return memory::desc(shape, memory::data_type::f32, strides);
}

// Axon's kernel {k..., cg, cout} (group g's output channels are columns g·coutg ... (g+1)·coutg − 1)
// as oneDNN's logical {OC, IC, k...}, or {G, OCg, ICg, k...} with groups.
memory::desc kernel_desc(const ConvGeometry& g, int dims, int64_t cout) {
  const int64_t cg = g.channels / g.groups, coutg = cout / g.groups;
  Dims shape, strides;
  if (g.groups > 1) {
    shape = {g.groups, coutg, cg};
    strides = {coutg, 1, cout};
  } else {
    shape = {cout, cg};
    strides = {1, cout};
  }
  const size_t first = shape.size();
  for (int d = 0; d < dims; ++d) shape.push_back(g.kernel[d]);
  strides.resize(shape.size());
  int64_t step = cg * cout;
  for (int d = dims - 1; d >= 0; --d) {
    strides[first + static_cast<size_t>(d)] = step;
    step *= g.kernel[d];
  }
  return memory::desc(shape, memory::data_type::f32, strides);
}

// oneDNN's right padding for Axon's geometry: what makes its output-size formula
// (in − k_eff + pad_l + pad_r) / stride + 1 give g.out (never negative: trailing input that no
// window reads needs none). nullopt if no such padding exists.
std::optional<int64_t> pad_right(const ConvGeometry& g, int d) {
  const int64_t k_eff = (g.kernel[d] - 1) * g.kernel_dilation[d] + 1;
  const int64_t r = std::max<int64_t>(0, (g.out[d] - 1) * g.stride[d] + k_eff - g.in[d] - g.pad_lo[d]);
  if ((g.in[d] - k_eff + g.pad_lo[d] + r) / g.stride[d] + 1 != g.out[d]) return std::nullopt;
  return r;
}

// A reorder from one buffer layout to another, with `src`/`dst` handles set per call.
struct Reorder {
  memory src, dst;
  dnnl::reorder prim;
  Reorder(const memory::desc& from, const memory::desc& to, bool accumulate) : src(from, engine(), nullptr), dst(to, engine(), nullptr) {
    dnnl::primitive_attr attr;
    if (accumulate) {  // dst += reordered src: the gradient accumulation of grads.target's beta = 1
      dnnl::post_ops ops;
      ops.append_sum(1.0f);
      attr.set_post_ops(ops);
    }
    prim = dnnl::reorder(dnnl::reorder::primitive_desc(engine(), from, engine(), to, attr));
  }
  void run(const void* from, void* to) {
    src.set_data_handle(const_cast<void*>(from));
    dst.set_data_handle(to);
    prim.execute(stream(), src, dst);
  }
};

// oneDNN's layout of the kernel for one primitive, and the buffer it is reordered into (none
// when oneDNN takes Axon's layout as it is).
struct KernelCopy {
  memory mem;
  std::optional<Reorder> from_user;
  KernelCopy(const memory::desc& user, const memory::desc& wanted) {
    if (wanted == user) return;
    mem = memory(wanted, engine());
    from_user.emplace(user, wanted, false);
  }
  // The kernel in the primitive's layout: `user` itself, or its reordered copy.
  memory& get(memory& user) {
    if (!from_user) return user;
    from_user->run(user.get_data_handle(), mem.get_data_handle());
    return mem;
  }
};

// Every primitive of one (geometry, output channels) convolution, each made on first use: a
// forward pass with or without bias, and the backward passes a step needs (the first layer's input
// needs no gradient, a frozen layer's kernel none).
struct ConvPrimitives {
  std::mutex running;  // the memory handles below are set per call: one call at a time
  memory::desc src_md, dst_md, kernel_md, bias_md;
  Dims strides, dilates, pad_l, pad_r;
  memory src, dst, kernel, bias;  // Axon's buffers; handles set per call

  struct Forward {
    dnnl::convolution_forward::primitive_desc pd;
    dnnl::convolution_forward prim;
    std::optional<KernelCopy> kernel;
  };
  std::optional<Forward> fwd[2];  // [with bias]

  std::optional<dnnl::convolution_backward_data> bwd_data;
  std::optional<KernelCopy> bwd_data_kernel;

  struct BackwardWeights {
    dnnl::convolution_backward_weights prim;
    memory diff_kernel;                           // in oneDNN's layout
    bool diff_kernel_is_user = false;             // ... which is Axon's own
    std::optional<Reorder> to_user, add_to_user;  // diff_kernel into dw: written, or accumulated
    memory diff_bias;                             // {cout}, when with bias
  };
  std::optional<BackwardWeights> bwd_weights[2];  // [with the bias gradient]

  memory::desc any_kernel() const { return memory::desc(kernel_md.dims(), memory::data_type::f32, memory::format_tag::any); }

  // Each make_* builds everything first and stores it last, so an exception (no implementation,
  // out of memory) leaves nothing half-made for the next call to run.
  Forward& forward(bool with_bias) {
    std::optional<Forward>& f = fwd[with_bias];
    if (f) return *f;
    using dnnl::convolution_forward;
    const auto training = dnnl::prop_kind::forward_training;
    const auto direct = dnnl::algorithm::convolution_direct;
    const convolution_forward::desc d =
        with_bias ? convolution_forward::desc(training, direct, src_md, any_kernel(), bias_md, dst_md, strides, dilates, pad_l, pad_r)
                  : convolution_forward::desc(training, direct, src_md, any_kernel(), dst_md, strides, dilates, pad_l, pad_r);
    Forward made;
    made.pd = convolution_forward::primitive_desc(d, engine());
    made.prim = convolution_forward(made.pd);
    made.kernel.emplace(kernel_md, made.pd.weights_desc());
    f.emplace(std::move(made));
    return *f;
  }
  // The backward passes' hint: a forward pass of this geometry, bias or not.
  const dnnl::convolution_forward::primitive_desc& hint() { return (fwd[1] ? *fwd[1] : forward(false)).pd; }

  void make_backward_data() {
    dnnl::convolution_backward_data::desc d(dnnl::algorithm::convolution_direct, src_md, any_kernel(), dst_md, strides,
                                            dilates, pad_l, pad_r);
    dnnl::convolution_backward_data::primitive_desc pd(d, engine(), hint());
    dnnl::convolution_backward_data prim(pd);
    KernelCopy kernel_copy(kernel_md, pd.weights_desc());
    bwd_data_kernel.emplace(std::move(kernel_copy));
    bwd_data.emplace(std::move(prim));  // last: it marks the pair as made
  }

  BackwardWeights& backward_weights(bool with_bias) {
    std::optional<BackwardWeights>& w = bwd_weights[with_bias];
    if (w) return *w;
    using dnnl::convolution_backward_weights;
    const auto direct = dnnl::algorithm::convolution_direct;
    const convolution_backward_weights::desc d =
        with_bias ? convolution_backward_weights::desc(direct, src_md, any_kernel(), bias_md, dst_md, strides, dilates, pad_l, pad_r)
                  : convolution_backward_weights::desc(direct, src_md, any_kernel(), dst_md, strides, dilates, pad_l, pad_r);
    const convolution_backward_weights::primitive_desc pd(d, engine(), hint());
    BackwardWeights made;
    made.prim = convolution_backward_weights(pd);
    made.diff_kernel = memory(pd.diff_weights_desc(), engine());
    made.diff_kernel_is_user = pd.diff_weights_desc() == kernel_md;
    made.to_user.emplace(pd.diff_weights_desc(), kernel_md, false);
    made.add_to_user.emplace(pd.diff_weights_desc(), kernel_md, true);
    if (with_bias) made.diff_bias = memory(bias_md, engine());
    w.emplace(std::move(made));
    return *w;
  }
};

// A oneDNN primitive keeps the thread count it was made for, and OpenMP's thread count is a
// per-thread setting: so each call sets the calling thread's count to Axon's (set_num_threads),
// and the cache key includes it (as oneDNN's own primitive cache does). GNU libgomp keeps its thread
// team across fork() though the child has none of those threads, so a forked child runs oneDNN on
// one thread, with primitives made for one thread (it would wait forever for the parent's team).
std::atomic<int> g_threads{0};  // set_num_threads' count; 0: OpenMP's default
std::atomic<bool> g_forked{false};

int threads_for_this_call() {
  if (g_forked.load()) return 1;
  const int wanted = g_threads.load();
  const int threads = wanted > 0 ? wanted : omp_get_max_threads();
  if (omp_get_max_threads() != threads) omp_set_num_threads(threads);
  if (threads > 1) g_team_started.store(true, std::memory_order_relaxed);
  return threads;
}

// Entries are shared: a call keeps its entry alive even if the cache evicts it meanwhile.
struct Cache {
  static constexpr size_t kCapacity = 64;  // geometries (oneDNN's own cache holds 1024 primitives)
  std::mutex mutex;
  struct Entry {
    std::shared_ptr<ConvPrimitives> primitives;
    uint64_t last_use = 0;
  };
  std::map<std::array<int64_t, 27>, Entry> entries;
  uint64_t uses = 0;
};
Cache& cache() {
  static Cache* c = new Cache;  // never destroyed: primitives may outlive static destruction order
  return *c;
}

// fork() while another thread holds the cache's mutex would leave it locked in the child for good:
// the handlers hold it across the fork.
const bool g_fork_handlers = [] {
  return pthread_atfork([] { cache().mutex.lock(); }, [] { cache().mutex.unlock(); },
                        [] {
                          g_forked.store(true);
                          omp_set_num_threads(1);
                          cache().mutex.unlock();
                        }) == 0;
}();

// Everything that makes a primitive: its thread count, the spatial rank, the output channels and
// the geometry (an array, so a lookup in the step allocates nothing).
std::array<int64_t, 27> key_of(const ConvGeometry& g, int dims, int64_t cout, int threads) {
  std::array<int64_t, 27> k{threads, dims, cout, g.batch, g.channels, g.groups};
  for (int d = 0; d < 3; ++d) {
    const int64_t per_dim[] = {g.in[d], g.out[d], g.kernel[d], g.stride[d], g.pad_lo[d], g.input_dilation[d], g.kernel_dilation[d]};
    std::copy(std::begin(per_dim), std::end(per_dim), k.begin() + 6 + 7 * d);
  }
  return k;
}

std::shared_ptr<ConvPrimitives> make_primitives(const ConvGeometry& g, int dims, int64_t cout) {
  auto p = std::make_shared<ConvPrimitives>();
  p->src_md = activation_desc(g.batch, g.in, dims, g.channels);
  p->dst_md = activation_desc(g.batch, g.out, dims, cout);
  p->kernel_md = kernel_desc(g, dims, cout);
  p->bias_md = memory::desc({cout}, memory::data_type::f32, memory::format_tag::a);
  for (int d = 0; d < dims; ++d) {
    p->strides.push_back(g.stride[d]);
    p->dilates.push_back(g.kernel_dilation[d] - 1);  // oneDNN counts the holes: 0 is dense
    p->pad_l.push_back(g.pad_lo[d]);
    p->pad_r.push_back(*pad_right(g, d));
  }
  p->src = memory(p->src_md, engine(), nullptr);
  p->dst = memory(p->dst_md, engine(), nullptr);
  p->kernel = memory(p->kernel_md, engine(), nullptr);
  p->bias = memory(p->bias_md, engine(), nullptr);
  return p;
}

// The entry of this geometry at this call's thread count; the least recently used one goes when
// the cache is full (shapes that vary, e.g. a last partial batch, would otherwise pile up).
std::shared_ptr<ConvPrimitives> primitives(const ConvGeometry& g, int dims, int64_t cout) {
  (void)g_fork_handlers;
  const int threads = threads_for_this_call();
  Cache& c = cache();
  std::lock_guard lock(c.mutex);
  auto [it, inserted] = c.entries.try_emplace(key_of(g, dims, cout, threads));
  if (inserted) {
    try {
      it->second.primitives = make_primitives(g, dims, cout);
    } catch (...) {
      c.entries.erase(it);
      throw;
    }
    if (c.entries.size() > Cache::kCapacity) {
      auto oldest = c.entries.begin();
      for (auto e = c.entries.begin(); e != c.entries.end(); ++e)
        if (e->second.last_use < oldest->second.last_use && e != it) oldest = e;
      if (oldest != it) c.entries.erase(oldest);
    }
  }
  it->second.last_use = ++c.uses;
  return it->second.primitives;
}

// Runs f, turning oneDNN's errors into exceptions that name the op, the geometry and the status.
template <class F>
void guarded(const char* op, const ConvGeometry& g, int dims, int64_t cout, F&& f) {
  try {
    f();
  } catch (const dnnl::error& e) {
    std::string geometry = fmt::format("input {{batch {}, spatial", g.batch);
    for (int d = 0; d < dims; ++d) geometry += fmt::format(" {}", g.in[d]);
    geometry += fmt::format(", channels {}}}, output channels {}, groups {}, per spatial dim (kernel/stride/pad_lo/dilation)", g.channels, cout, g.groups);
    for (int d = 0; d < dims; ++d)
      geometry += fmt::format(" {}/{}/{}/{}", g.kernel[d], g.stride[d], g.pad_lo[d], g.kernel_dilation[d]);
    throw std::runtime_error(
        fmt::format("{} on cpu (oneDNN, f32): {} (status {}) for {}", op, e.what(), static_cast<int>(e.status), geometry));
  }
}

// Counts the pass, then runs f on the primitives of this geometry, locked against another call
// on them, with oneDNN's errors turned into ones naming the pass and the geometry. `dims` is the
// tensors' rank − 2 (channels last); the caller checked onednn_conv_supported.
template <class F>
void run_pass(const char* op, const ConvGeometry& g, int dims, int64_t cout, F&& f) {
  g_calls.fetch_add(1);
  guarded(op, g, dims, cout, [&] {
    const std::shared_ptr<ConvPrimitives> entry = primitives(g, dims, cout);
    std::lock_guard lock(entry->running);
    f(*entry);
  });
}

}  // namespace

bool onednn_conv_supported(const ConvGeometry& g, int dims, int64_t cout, DType dtype) {
  if (!onednn_enabled() || dtype != DType::f32 || dims < 1 || dims > 3) return false;
  if (g.batch < 1 || g.channels < 1 || cout < 1 || cout % g.groups != 0) return false;
  for (int d = 0; d < dims; ++d)
    if (g.input_dilation[d] != 1 || g.out[d] < 1 || !pad_right(g, d)) return false;  // input dilation: conv_transpose's
  for (int d = dims; d < 3; ++d)
    if (g.in[d] != 1 || g.out[d] != 1 || g.kernel[d] != 1) return false;
  return true;
}

void onednn_conv_forward(const Tensor& x, const Tensor& kernel, const Tensor* bias, const ConvGeometry& g, Tensor& out) {
  run_pass("conv", g, static_cast<int>(x.dim()) - 2, kernel.size(-1), [&](ConvPrimitives& p) {
    ConvPrimitives::Forward& f = p.forward(bias != nullptr);
    p.src.set_data_handle(const_cast<void*>(x.raw_data()));
    p.dst.set_data_handle(out.raw_data());
    p.kernel.set_data_handle(const_cast<void*>(kernel.raw_data()));
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, p.src}, {DNNL_ARG_WEIGHTS, f.kernel->get(p.kernel)}, {DNNL_ARG_DST, p.dst}};
    if (bias) {
      p.bias.set_data_handle(const_cast<void*>(bias->raw_data()));
      args.emplace(DNNL_ARG_BIAS, p.bias);
    }
    f.prim.execute(stream(), args);
  });
}

void onednn_conv_backward_data(const Tensor& grad, const Tensor& kernel, const ConvGeometry& g, Tensor& dx) {
  run_pass("conv backward (data)", g, static_cast<int>(dx.dim()) - 2, kernel.size(-1), [&](ConvPrimitives& p) {
    if (!p.bwd_data) p.make_backward_data();
    p.dst.set_data_handle(const_cast<void*>(grad.raw_data()));
    p.src.set_data_handle(dx.raw_data());
    p.kernel.set_data_handle(const_cast<void*>(kernel.raw_data()));
    p.bwd_data->execute(stream(), {{DNNL_ARG_DIFF_DST, p.dst}, {DNNL_ARG_WEIGHTS, p.bwd_data_kernel->get(p.kernel)},
                                   {DNNL_ARG_DIFF_SRC, p.src}});
  });
}

void onednn_conv_backward_weights(const Tensor& x, const Tensor& grad, const ConvGeometry& g, float beta, Tensor& dw,
                                  Tensor* db, float db_beta) {
  run_pass("conv backward (weights)", g, static_cast<int>(x.dim()) - 2, dw.size(-1), [&](ConvPrimitives& p) {
    ConvPrimitives::BackwardWeights& w = p.backward_weights(db != nullptr);
    p.src.set_data_handle(const_cast<void*>(x.raw_data()));
    p.dst.set_data_handle(const_cast<void*>(grad.raw_data()));
    const bool direct = w.diff_kernel_is_user && beta == 0.0f;  // oneDNN writes Axon's layout itself
    if (direct) p.kernel.set_data_handle(dw.raw_data());
    std::unordered_map<int, memory> args{
        {DNNL_ARG_SRC, p.src}, {DNNL_ARG_DIFF_DST, p.dst}, {DNNL_ARG_DIFF_WEIGHTS, direct ? p.kernel : w.diff_kernel}};
    const bool bias_direct = db && db_beta == 0.0f;
    if (db) {
      if (bias_direct) p.bias.set_data_handle(db->raw_data());
      args.emplace(DNNL_ARG_DIFF_BIAS, bias_direct ? p.bias : w.diff_bias);
    }
    w.prim.execute(stream(), args);
    if (!direct) (beta == 0.0f ? *w.to_user : *w.add_to_user).run(w.diff_kernel.get_data_handle(), dw.raw_data());
    if (db && !bias_direct) {  // accumulate: db += diff_bias
      const float* from = static_cast<const float*>(w.diff_bias.get_data_handle());
      float* to = static_cast<float*>(db->raw_data());
      for (int64_t c = 0; c < db->numel(); ++c) to[c] += from[c];
    }
  });
}

bool onednn_sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                  const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (!onednn_enabled() || !onednn_team_started() || g_forked.load()) return false;
  threads_for_this_call();
  g_gemm_calls.fetch_add(1);
  const dnnl_status_t status =
      dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  if (status != dnnl_success)
    throw std::runtime_error(fmt::format("gemm on cpu (oneDNN sgemm, f32): status {} for m {}, n {}, k {}, lda {}, ldb {}, ldc {}",
                                         static_cast<int>(status), m, n, k, lda, ldb, ldc));
  return true;
}

void onednn_set_num_threads(int threads) {
  g_threads.store(threads);
  omp_set_num_threads(g_forked.load() ? 1 : threads);
}

std::string onednn_version() {
  const dnnl_version_t* v = dnnl_version();
  return fmt::format("oneDNN {}.{}.{}", v->major, v->minor, v->patch);
}

#endif

}  // namespace axon::cpu_detail
