#include "axon/trainer.h"

#include <fmt/format.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <memory>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

#include "axon/agreement.h"
#include "axon/autograd.h"
#include "axon/backend.h"
#include "axon/cuda.h"
#include "axon/ops.h"
#include "axon/losses.h"
#include "axon/metrics.h"
#include "axon/model_tools.h"
#include "axon/preemption.h"

namespace axon {

namespace {

using Clock = std::chrono::steady_clock;

// SplitMix64's finalizer (Steele et al. 2014): a bijective mix of 64 bits.
uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// A progress line on stderr: percent, step/total, samples/s, ETA, loss and accuracy. Live
// (redrawn with \r) on a terminal, or when the launcher tells us the job's terminal is one
// (AXON_PROGRESS_TTY=1, set by axonrun); otherwise a line per 10%. The live figures are rank 0's
// shard scaled to the world; the epoch's last line (finish) prints the figures the result records.
class ProgressLine {
 public:
  ProgressLine(bool enabled, int epoch, int epochs, size_t steps)
      : enabled_(enabled), epoch_(epoch), epochs_(epochs), steps_(steps), start_(Clock::now()), last_(start_) {
    const char* tty = std::getenv("AXON_PROGRESS_TTY");
    live_ = (tty && std::strcmp(tty, "1") == 0) || isatty(STDERR_FILENO);
  }

  // Whether update() would print now: the caller reads the metrics (a device sync) only then.
  bool due(size_t step, bool final_update) const {
    if (!enabled_) return false;
    if (final_update) return true;
    if (live_) return Clock::now() - last_ >= std::chrono::milliseconds(100);
    return (steps_ ? step * 10 / steps_ : 10) != last_decile_;
  }

  void update(size_t step, double loss, double acc, int64_t samples) {
    if (!due(step, false)) return;
    const auto now = Clock::now();
    last_ = now;
    last_decile_ = steps_ ? step * 10 / steps_ : 10;
    const double elapsed = std::chrono::duration<double>(now - start_).count();
    const double rate = elapsed > 0 ? static_cast<double>(samples) / elapsed : 0.0;
    const double eta = step > 0 && steps_ > step ? elapsed / static_cast<double>(step) * static_cast<double>(steps_ - step) : 0.0;
    print(step, loss, acc, rate, fmt::format("  ETA {:.0f}s", eta), false);
  }

  // The epoch's final line, with the reduced figures of the epoch result.
  void finish(int64_t steps_done, double loss, double acc, double samples_per_s) {
    if (!enabled_) return;
    print(static_cast<size_t>(steps_done), loss, acc, samples_per_s, "", true);
  }

 private:
  void print(size_t step, double loss, double acc, double rate, const std::string& tail, bool final_line) {
    constexpr int width = 24;
    const int filled = steps_ ? static_cast<int>(width * step / steps_) : width;
    std::string bar(static_cast<size_t>(filled), '=');
    bar.resize(width, ' ');
    const int percent = steps_ ? static_cast<int>(100 * step / steps_) : 100;
    std::fprintf(stderr, "%sepoch %d/%d [%s] %3d%% %zu/%zu  loss %.4f  acc %.4f  %.0f samples/s%s%s", live_ ? "\r" : "",
                 epoch_, epochs_, bar.c_str(), percent, step, steps_, loss, acc, rate, tail.c_str(),
                 live_ && !final_line ? "" : "\n");
    std::fflush(stderr);
  }

  bool enabled_, live_ = false;
  int epoch_, epochs_;
  size_t steps_;
  size_t last_decile_ = 0;
  Clock::time_point start_, last_;
};

}  // namespace

Trainer::Trainer(Model model, Parameters& params, Optimizer& optimizer, Communicator& comm, TrainOptions options,
                 LossFn loss)
    : model_(std::move(model)),
      plan_(plan(model_)),
      params_(params),
      optimizer_(optimizer),
      comm_(comm),
      options_(options),
      loss_(loss ? std::move(loss)
                 : LossFn([](const Tensor& output, const Tensor& labels) { return softmax_cross_entropy(output, labels); })),
      data_parallel_(comm, params.flat_values(), params.flat_grads()) {
  if (params_.dtype() != DType::f32)
    throw std::invalid_argument(fmt::format("trainer: parameters must be f32 master weights, got {} (set "
                                            "TrainOptions::compute_dtype for mixed precision)",
                                            dtype_name(params_.dtype())));
  if (!is_floating(options_.compute_dtype))
    throw std::invalid_argument(fmt::format("trainer: compute dtype {} is not floating", dtype_name(options_.compute_dtype)));
  if (options_.compute_dtype != DType::f32) {
    compute_params_ = params_.to(params_.device(), options_.compute_dtype);
    // Model state stays f32 and is shared: training updates the master copy's running statistics.
    compute_params_.share_state(params_);
  }
  if (options_.check_every < 0)
    throw std::invalid_argument(fmt::format("trainer: check_every must be >= 0, got {}", options_.check_every));
  if (options_.check_every == 0) options_.check_every = params_.device().is_cpu() ? 1 : 50;
  if (options_.epochs < 1) throw std::invalid_argument(fmt::format("trainer: epochs must be >= 1, got {}", options_.epochs));
  if (options_.batch_size < 1) throw std::invalid_argument("trainer: batch size must be >= 1");
  if (options_.cuda_graph) {
    if (!params_.device().is_cuda())
      throw std::invalid_argument(fmt::format("trainer: cuda_graph needs the parameters on a CUDA device, they are on {}",
                                              params_.device().str()));
    if (comm_.size() > 1 && comm_.backend() != "nccl")
      throw std::invalid_argument(fmt::format(
          "trainer: cuda_graph with {} ranks needs the nccl communication backend, this job uses {} (which copies "
          "gradients through host memory, something a CUDA graph cannot capture)",
          comm_.size(), comm_.backend()));
    if (options_.grad_accum != 1)
      throw std::invalid_argument(fmt::format("trainer: cuda_graph with grad_accum {} is not supported (a graph "
                                              "captures one whole step); use grad_accum 1",
                                              options_.grad_accum));
    optimizer_.set_capturable(true);
  }
  if (options_.validate_every_steps < 0)
    throw std::invalid_argument(fmt::format("trainer: validate_every_steps must be >= 0, got {}", options_.validate_every_steps));
  if (options_.grad_accum < 1)
    throw std::invalid_argument(fmt::format("trainer: grad_accum must be >= 1, got {}", options_.grad_accum));
  if (options_.eval_batch_size < 1) throw std::invalid_argument("trainer: eval batch size must be >= 1");
  // Frozen parameters (Parameters::freeze): the optimizer must leave them alone, which an
  // optimizer from skip_frozen() made for this very set does (axon/model_tools.h).
  if (const std::vector<std::string> frozen = params_.frozen_names(); !frozen.empty()) {
    const std::vector<std::string>* skipped = skipped_parameters(optimizer_);
    if (!skipped || *skipped != frozen) {
      std::string names;
      for (const auto& n : frozen) names += (names.empty() ? "" : ", ") + n;
      throw std::invalid_argument(fmt::format(
          "trainer: parameters {} are frozen, but the optimizer {} would step {}; wrap it with skip_frozen(params, "
          "optimizer) after freezing (axon/model_tools.h)",
          names, optimizer_.name(), skipped ? "another set of frozen parameters" : "them"));
    }
  }
  if (options_.zero_stage < 0 || options_.zero_stage > 2)
    throw std::invalid_argument(fmt::format("trainer: zero_stage must be 0, 1 or 2, got {}", options_.zero_stage));
  if (options_.zero_stage > 0) {
    if (!optimizer_.elementwise())
      throw std::invalid_argument(fmt::format(
          "trainer: ZeRO stage {} needs an element-wise optimizer (sgd, adam, adamw), and {} is not one: its update "
          "depends on norms or groups over the whole buffer",
          options_.zero_stage, optimizer_.name()));
    if (options_.cuda_graph)
      throw std::invalid_argument(fmt::format("trainer: ZeRO stage {} with cuda_graph is not supported", options_.zero_stage));
    zero_ = std::make_unique<ZeroSharding>(comm_, params_.flat_values(), params_.flat_grads(), options_.zero_stage);
  }
  // The bucketed reducer hooks the parameters that backward differentiates: the f32 weights
  // (mixed precision differentiates the bf16 copy, whose gradients are averaged after the cast).
  const bool overlap = comm_.size() > 1 && options_.bucket_bytes > 0 && compute_params_.size() == 0 &&
                       !options_.cuda_graph && options_.zero_stage != 2;
  if (overlap) {
    std::vector<ReducerParameter> watched;
    const size_t base = params_.flat_values().offset();
    for (const auto& entry : params_.entries())
      watched.push_back({entry.name, entry.value, entry.value.offset() - base, static_cast<size_t>(entry.value.numel())});
    reducer_ = std::make_unique<Reducer>(
        comm_, std::move(watched), params_.flat_grads(),
        // Frozen parameters get no gradient from backward: their (zero) slices are reduced as unused.
        ReducerOptions{options_.bucket_bytes, options_.first_bucket_bytes,
                       options_.find_unused_parameters || !params_.frozen_names().empty()});
  }
}

Trainer::ResidentData Trainer::make_resident(const data::Dataset& dataset) const {
  const Device device = params_.device();
  if (device.is_cpu() || dataset.count == 0) return {};
  const int64_t count = static_cast<int64_t>(dataset.count), size = static_cast<int64_t>(dataset.sample_size);
  Tensor images = Tensor::from_blob(const_cast<float*>(dataset.images.data()), {count, size});
  Tensor labels = Tensor::from_blob(const_cast<int32_t*>(dataset.labels.data()), {count}, {DType::i32, Device::cpu()});
  return {images.to(device), labels.to(device)};
}

Trainer::Batch Trainer::make_batch(const data::Dataset& dataset, std::span<const size_t> indices,
                                   const ResidentData& resident, const Tensor& device_indices) const {
  // The model's input declares either flat samples {batch, features} or {batch, ...sample shape}.
  const Shape& declared = plan_.layers[plan_.input_layers.at(0)].output_shape;
  Shape shape{static_cast<int64_t>(indices.size())};
  if (declared.size() == 2) {
    shape.push_back(static_cast<int64_t>(dataset.sample_size));
  } else {
    for (size_t d : dataset.sample_shape) shape.push_back(static_cast<int64_t>(d));
  }
  if (shape_numel(shape) != static_cast<int64_t>(indices.size() * dataset.sample_size))
    throw std::invalid_argument(fmt::format(
        "trainer: dataset samples of shape {} ({} values) do not fill a batch of shape {} for input {}",
        shape_str(Shape(dataset.sample_shape.begin(), dataset.sample_shape.end())), dataset.sample_size,
        shape_str(shape), shape_str(declared)));
  if (resident.images.defined() && device_indices.defined())
    return {gather_rows(resident.images, device_indices).reshape(shape), gather_rows(resident.labels, device_indices)};
  Tensor x = Tensor::empty(shape);
  Tensor labels = Tensor::empty({static_cast<int64_t>(indices.size())}, {DType::i32, Device::cpu()});
  data::gather(dataset, indices, x.data(), labels.data_as<int32_t>());
  const Device device = params_.device();
  return {x.to(device), labels.to(device)};
}

double Trainer::train_step(const Tensor& x, std::span<const int32_t> labels) {
  const int64_t step = optimizer_.steps() + 1;
  rng_stream_ = (uint64_t{1} << 62) + static_cast<uint64_t>(step);  // apart from fit()'s batch numbers
  Tensor host_labels = Tensor::from_vector({static_cast<int64_t>(labels.size())},
                                           std::vector<int32_t>(labels.begin(), labels.end()), {DType::i32, Device::cpu()});
  return run_step({x.to(params_.device()), host_labels.to(params_.device())}, true, 0, step, step).loss.item_double();
}

bool Trainer::any_rank(bool value) {
  if (comm_.size() == 1) return value;
  std::vector<double> flag{value ? 1.0 : 0.0};
  comm_.allreduce(flag, ReduceOp::max);
  return flag[0] != 0.0;
}

void Trainer::sync_parameters() {
  if (synced_) return;
  // Same model and same starting point on every rank, checked before the first collective.
  data_parallel_.verify_layout(layout_fingerprint(params_));
  data_parallel_.broadcast_parameters();
  if (comm_.size() > 1 && params_.state_count() > 0) {
    Tensor state = params_.flat_state();
    comm_.broadcast(state, 0);
  }
  synced_ = true;
}

void Trainer::sync_state() {
  // Each rank's running statistics follow its own batches; they are averaged over the ranks where
  // they are used or saved (evaluation, the end of an epoch, checkpoints), so every rank evaluates
  // and saves the same model. One all-reduce of the flat state buffer.
  if (comm_.size() < 2 || params_.state_count() == 0) return;
  Tensor state = params_.flat_state();
  comm_.allreduce(state, ReduceOp::sum);
  backend(state.device()).unary(UnaryOp::mul_scalar, state, 1.0 / comm_.size(), state);
}

namespace {

std::string where_from(const data::Dataset& ds) { return ds.source.empty() ? "(in memory)" : ds.source; }

std::string shape_text(const std::vector<size_t>& shape) {
  std::string out;
  for (size_t d : shape) out += fmt::format("{}{}", out.empty() ? "" : "x", d);
  return out.empty() ? "scalar" : out;
}

uint64_t label_checksum(const data::Dataset& ds) { return fnv1a64(ds.labels.data(), ds.labels.size() * sizeof(int32_t)); }

void add_dataset_facts(Agreement& facts, const std::string& which, const data::Dataset& ds) {
  facts.add_uint(which + " dataset size", ds.count)
      .add_string(which + " sample shape", shape_text(ds.sample_shape))
      .add_hash(which + " label checksum", label_checksum(ds));
}

// Steps per epoch from the sampler's arithmetic, without making one (it throws on empty data).
size_t steps_per_epoch(size_t count, size_t world, size_t batch, bool drop_last) {
  const size_t per_rank = drop_last ? count / world : (count + world - 1) / world;
  return (per_rank + batch - 1) / batch;
}

std::string lr_hint(double lr) {
  return fmt::format("the learning rate ({}) is probably too high: try a lower one", lr);
}

}  // namespace

Trainer::StepResult Trainer::run_step(const Batch& batch, bool check, int epoch, int64_t step,
                                      int64_t first_unchecked, bool accumulate, int micro_batches) {
  sync_parameters();
  if (!accumulate) params_.zero_grad();
  const bool mixed = compute_params_.size() > 0;
  if (mixed) {
    // This step's compute copy of the master weights: one cast kernel over the flat buffer.
    Tensor compute = compute_params_.flat_values();
    backend(compute.device()).cast(compute, params_.flat_values());
    compute_params_.zero_grad();
  }
  const Parameters& weights = mixed ? compute_params_ : params_;
  Tensor x = mixed ? batch.x.to(options_.compute_dtype) : batch.x;
  // A captured step would replay the same random draws forever: stochastic layers get no host
  // generator while capturing (they need a device-side one to be captured).
  // This batch's random draws (dropout masks) come from a generator seeded by (seed, rank, batch
  // number): a resumed run draws what the uninterrupted one drew, with no generator state to save.
  Generator rng(splitmix64(options_.seed ^ splitmix64(static_cast<uint64_t>(comm_.rank()) + 1) ^
                           splitmix64(rng_stream_ + 0x632BE59BD9B4E019ull)));
  if (reducer_) {
    reducer_->set_no_sync(micro_batches == 0);  // accumulate locally until the group's last batch
    reducer_->prepare_for_backward();
  }
  ForwardContext ctx{true, capturing_ ? nullptr : &rng};
  ctx.hooks = options_.hooks;
  Tensor output = forward(plan_, weights, x, ctx);
  if (output.dtype() != DType::f32) output = output.to(DType::f32);  // the loss is computed in f32
  Tensor loss = loss_(output, batch.labels);
  loss.backward();
  Tensor grads = params_.flat_grads();
  if (mixed) {
    if (accumulate) {
      Tensor widened = compute_params_.flat_grads().to(DType::f32);
      backend(grads.device()).binary(BinaryOp::add, grads, widened, grads);
    } else {
      backend(grads.device()).cast(grads, compute_params_.flat_grads());
    }
  }
  if (micro_batches == 0) return {loss.detach(), output.detach()};  // the update comes with a later batch

  // Where we are, for error messages only (built when needed: this runs every step).
  auto at = [&] {
    if (epoch == 0) return fmt::format("step {}", step);
    return first_unchecked < step ? fmt::format("epoch {}, steps {}-{}", epoch, first_unchecked, step)
                                  : fmt::format("epoch {}, step {}", epoch, step);
  };
  double value = 0.0;
  bool loss_finite = true;
  if (check) {
    value = loss.item_double();
    loss_finite = std::isfinite(value);
    // A non-finite loss on one rank must stop every rank at this same step, without a collective
    // of its own: it poisons this rank's gradient, and the gradient all-reduce below carries it to
    // every rank, which then all see the same non-finite averaged gradient.
    // (The reducer starts the bucket holding element 0 only in finalize(), after this.)
    if (!loss_finite && grads.numel() > 0) Tensor::view_of(grads.storage(), grads.offset(), {1}).fill(NAN);
  }
  // Average over the ranks: the whole buffer (bucketed or in one all-reduce), or with ZeRO
  // stage 2 only this rank's shard, by a reduce-scatter.
  const bool scattered = options_.zero_stage == 2;
  const auto reduce_begin = std::chrono::steady_clock::now();
  if (reducer_) reducer_->finalize();  // times its own wait
  else if (!scattered) data_parallel_.average_gradients();
  Tensor whole_or_shard = scattered ? zero_->reduce_gradients() : grads;
  if (!reducer_ && comm_.size() > 1)
    gradient_wait_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - reduce_begin).count();
  // The mean of the accumulated batches' gradients (each already a mean over its rows); scaled
  // after the reduction, which the reducer may have started during backward.
  if (micro_batches > 1)
    backend(grads.device()).unary(UnaryOp::mul_scalar, whole_or_shard, 1.0 / micro_batches, whole_or_shard);
  // What the optimizer steps with: the averaged gradient, or (ZeRO) this rank's shard of it.
  Tensor averaged = zero_ && !scattered ? zero_->reduce_gradients() : whole_or_shard;
  if (check) {
    // Every rank holds the same averaged gradient, so all decide alike; with ZeRO-2 each holds
    // only its shard, so the verdict is agreed through one small all-reduce.
    bool grads_finite = all_finite(whole_or_shard).item() != 0.0f;
    if (scattered) grads_finite = !any_rank(!grads_finite);
    if (!loss_finite)
      throw NonFiniteError(fmt::format("trainer: non-finite loss {} at {} on rank {}; training stopped on every rank "
                                       "before the optimizer step; {}",
                                       value, at(), comm_.rank(), lr_hint(optimizer_.learning_rate())),
                           epoch, step, value);
    if (!grads_finite) {
      double norm2 = 0.0;
      for (double g : whole_or_shard.to_double_vector()) norm2 += g * g;
      throw NonFiniteError(fmt::format("trainer: non-finite gradient (norm {}{}) at {}, averaged over {} rank(s) (rank {}'s "
                                       "loss was {}); training stopped on every rank before the optimizer step; {}",
                                       std::sqrt(norm2), scattered ? " of this rank's ZeRO shard" : "", at(),
                                       comm_.size(), comm_.rank(), value,
                                       lr_hint(optimizer_.learning_rate())),
                           epoch, step, std::sqrt(norm2));
    }
  }
  if (zero_) {
    // Each rank updates its shard (the optimizer's state is shard-sized), then all gather.
    optimizer_.step(zero_->parameter_shard(), averaged);
    zero_->gather_parameters();
  } else {
    Tensor values = params_.flat_values();
    optimizer_.step(values, averaged);
  }
  // A finite gradient can still overflow the update (a huge learning rate): every rank holds the
  // same parameters, so every rank decides alike here too (with ZeRO, through an all-reduce of
  // the shards' flags).
  if (check && (zero_ ? any_rank(optimizer_.nonfinite_flag().item() != 0.0f) : optimizer_.nonfinite_flag().item() != 0.0f))
    throw NonFiniteError(fmt::format("trainer: the parameters are not finite after the optimizer step at {} (the loss "
                                     "was {}, the averaged gradient finite); training stopped on every rank; {}",
                                     at(), value, lr_hint(optimizer_.learning_rate())),
                         epoch, step, std::numeric_limits<double>::infinity());
  return {loss.detach(), output.detach()};
}

void Trainer::accumulate_metrics(const StepResult& result, const Batch& batch, Tensor& loss_sum, Tensor& correct) {
  Backend& be = backend(loss_sum.device());
  // A custom loss may return {1} or {1, 1}: the running sum is a scalar.
  Tensor weighted = result.loss.reshape({}).to(DType::f64);
  be.unary(UnaryOp::mul_scalar, weighted, static_cast<double>(batch.labels.numel()), weighted);
  be.binary(BinaryOp::add, loss_sum, weighted, loss_sum);
  be.accumulate_correct(result.output, batch.labels, correct);
}

TrainResult Trainer::fit(const data::Dataset& train, const data::Dataset* test) {
  FlushDenormalsGuard flush_denormals;
  const size_t world = static_cast<size_t>(comm_.size());
  const size_t steps = steps_per_epoch(train.count, world, options_.batch_size, options_.drop_last);

  // Everything that decides how many collectives this rank makes and of what size, agreed on
  // before the first one: a rank with other data or options would otherwise post a different
  // collective than its peers (memory corruption in MPI) or stop early (a hang).
  Agreement facts;
  add_dataset_facts(facts, "train", train);
  facts.add_uint("test set given", test ? 1 : 0);
  add_dataset_facts(facts, "test", test ? *test : data::Dataset{});
  facts.add_uint("batch size", options_.batch_size)
      .add_uint("eval batch size", options_.eval_batch_size)
      .add_uint("epochs", static_cast<uint64_t>(options_.epochs))
      .add_uint("steps per epoch", steps)
      .add_uint("shuffle", options_.shuffle)
      .add_uint("drop_last", options_.drop_last)
      .add_uint("seed", options_.seed)
      .add_uint("grad_accum", static_cast<uint64_t>(options_.grad_accum))
      .add_uint("validate every steps", static_cast<uint64_t>(options_.validate_every_steps))
      .add_uint("parameter count", params_.count())
      .add_hash("parameter layout fingerprint", layout_fingerprint(params_))
      .add_string("optimizer", optimizer_.config())
      // Each decides the sequence and sizes of the gradient collectives.
      .add_uint("ZeRO stage", static_cast<uint64_t>(options_.zero_stage))
      .add_uint("gradient bucket bytes (0: after backward)", reducer_ ? options_.bucket_bytes : 0)
      .add_uint("first gradient bucket bytes", reducer_ ? options_.first_bucket_bytes : 0)
      .add_uint("find_unused_parameters", options_.find_unused_parameters)
      // Not a collective count, but params_sha256 depends on it (BLAS sums in another order), and
      // the result records one value for the whole job.
      .add_uint("BLAS threads per rank (--threads)", static_cast<uint64_t>(num_threads()))
      .add_uint("optimizer steps taken", static_cast<uint64_t>(optimizer_.steps()))
      .add_uint("resumed at epoch", resumed_ ? static_cast<uint64_t>(start_epoch_) : 0)
      .add_uint("resumed at step", resumed_ ? static_cast<uint64_t>(start_step_) : 0)
      .add_string("event handlers", [&] {
        std::string counts;  // per event: ranks must make the same halt agreements at the same events
        for (Event e : {Event::started, Event::epoch_started, Event::iteration_started, Event::iteration_completed,
                        Event::epoch_completed, Event::epoch_halted, Event::halted, Event::completed})
          counts += fmt::format("{}={} ", event_name(e),
                                std::count_if(handlers_.begin(), handlers_.end(), [e](const Subscription& h) { return h.event == e; }));
        return counts;
      }())
      .add_uint("preemption handler installed", preemption_handler_installed() ? 1 : 0);
  facts.verify(comm_, "trainer");

  // The ranks agree on these, so they all fail here alike.
  if (train.count == 0)
    throw std::invalid_argument(
        fmt::format("trainer: the training set {} has no samples: nothing to train on", where_from(train)));
  if (options_.drop_last && train.count < world)
    throw std::invalid_argument(fmt::format(
        "trainer: the training set {} has {} samples, fewer than the {} ranks: drop_last leaves every rank nothing",
        where_from(train), train.count, world));
  if (params_.count() == 0) throw std::invalid_argument("trainer: the model has no parameters to train");
  if (resumed_ && start_step_ > static_cast<int64_t>(steps))
    throw std::invalid_argument(fmt::format("trainer: the checkpoint is at step {} of an epoch, but an epoch here has "
                                            "only {} steps (another dataset?)",
                                            start_step_, steps));

  train_count_ = train.count;
  train_checksum_ = label_checksum(train);
  if (resumed_ && resume_needs_same_data_ && (resume_train_count_ != train_count_ || resume_train_checksum_ != train_checksum_))
    throw std::invalid_argument(fmt::format(
        "trainer: the checkpoint was saved in the middle of an epoch of a training set of {} samples (label checksum "
        "{:016x}); this one, {}, has {} samples (label checksum {:016x}): the rest of that epoch would differ",
        resume_train_count_, resume_train_checksum_, where_from(train), train_count_, train_checksum_));
  data::DistributedSampler sampler(train.count, comm_.rank(), comm_.size(), options_.seed, options_.shuffle,
                                   options_.drop_last);
  sync_parameters();
  const ResidentData resident = make_resident(train);
  const Device device = params_.device();
  // Local sums [loss × samples, correct], kept on the device and read back only at checks. They
  // outlive the epochs, so a captured step keeps adding into the same two values.
  Tensor loss_sum = Tensor::zeros({}, {DType::f64, device});
  Tensor correct = Tensor::zeros({}, {DType::f64, device});
  // CUDA graph mode: the captured step, and the device buffer its batch indices are copied into
  // before each replay (the graph reads the batch through it). A learning-rate change (a
  // callback's) takes a new capture: the graph holds the rate it was captured with.
  constexpr int kEagerStepsBeforeCapture = 2;  // optimizer state, cuBLAS and the allocator warmed up
  std::unique_ptr<cuda::Graph> graph;
  double graph_lr = 0.0;
  Tensor graph_indices;
  int eager_full_steps = 0;

  TrainResult result;
  const bool resuming = resumed_;
  if (!resuming) {
    history_.clear();
    state_.history.clear();
    start_epoch_ = 0;
    start_step_ = 0;
    start_loss_sum_ = start_correct_ = start_samples_ = 0.0;
  }
  result.epochs = history_;
  state_.epochs = options_.epochs;
  state_.global_step = optimizer_.steps();
  state_.halt = state_.halt_epoch = false;
  state_.preempted = 0;
  state_.preemption_checkpoint.clear();
  const bool watch_preemption = preemption_handler_installed();
  // Whatever ends fit(), its position is no longer "inside an epoch".
  struct LiveReset {
    Trainer* t;
    ~LiveReset() {
      t->live_loss_sum_ = t->live_correct_ = nullptr;
      t->live_epoch_ = -1;
      t->resumed_ = false;
    }
  } live_reset{this};
  const bool iteration_handlers = has_handlers(Event::iteration_started) || has_handlers(Event::iteration_completed);
  live_steps_per_epoch_ = static_cast<int64_t>(steps);
  if (resuming && resume_halted_) state_.halt = true;  // it had stopped (early stopping): nothing to train
  fire(Event::started, false);
  for (int epoch = start_epoch_; epoch < options_.epochs && !state_.halt; ++epoch) {
    const std::vector<size_t> indices = sampler.indices(static_cast<uint64_t>(epoch));
    // With a resident dataset, this epoch's sample order goes to the device in one copy.
    Tensor epoch_indices;
    if (resident.images.defined())
      epoch_indices = Tensor::from_vector({static_cast<int64_t>(indices.size())},
                                          std::vector<int64_t>(indices.begin(), indices.end()), {DType::i64, Device::cpu()})
                          .to(params_.device());
    ProgressLine progress(options_.progress && comm_.is_root(), epoch + 1, options_.epochs, steps);

    // [loss × samples, correct, samples], then each rank's seconds in its own slot: one all-reduce
    // per epoch whose size depends only on the world size. A resumed epoch starts from the sums
    // its checkpoint recorded.
    const bool continued = resuming && epoch == start_epoch_;
    const size_t first_step = continued ? static_cast<size_t>(start_step_) : 0;
    loss_sum.fill(continued ? start_loss_sum_ : 0.0);
    correct.fill(continued ? start_correct_ : 0.0);
    std::vector<double> totals(3 + world, 0.0);
    totals[2] = continued ? start_samples_ : 0.0;
    live_epoch_ = epoch;
    live_loss_sum_ = &loss_sum;
    live_correct_ = &correct;
    live_samples_ = totals[2];
    live_steps_done_ = static_cast<int64_t>(first_step);
    state_.epoch = epoch + 1;
    state_.iteration = static_cast<int64_t>(first_step);
    state_.halt_epoch = false;
    fire(Event::epoch_started, false);
    int64_t first_unchecked = static_cast<int64_t>(first_step) + 1;
    bool check_pending = false;
    bool halted_in_epoch = false;
    const size_t accum = static_cast<size_t>(options_.grad_accum);
    const auto start = Clock::now();
    for (size_t step = first_step; step < steps; ++step) {
      const size_t begin = step * options_.batch_size;
      const size_t n = std::min(options_.batch_size, indices.size() - begin);
      const Tensor step_indices = epoch_indices.defined()
                                      ? Tensor::view_of(epoch_indices.storage(), begin, {static_cast<int64_t>(n)}, DType::i64)
                                      : Tensor();
      const std::span<const size_t> batch_indices = std::span<const size_t>(indices).subspan(begin, n);
      const bool last = step + 1 == steps;
      state_.iteration = static_cast<int64_t>(step + 1);
      rng_stream_ = static_cast<uint64_t>(epoch) * steps + step;
      if (iteration_handlers) fire(Event::iteration_started, false);
      // Gradient accumulation groups of `accum` batches from the epoch's start; the last may be short.
      const size_t position = step % accum, group_size = std::min(accum, steps - (step - position));
      const bool updates = position + 1 == group_size;
      check_pending = check_pending || last || (step + 1) % static_cast<size_t>(options_.check_every) == 0;
      const bool check = updates && check_pending;
      if (check) check_pending = false;
      const bool replayable = options_.cuda_graph && !check && n == options_.batch_size;
      if (graph && optimizer_.learning_rate() != graph_lr) graph.reset();
      if (replayable && !graph && eager_full_steps >= kEagerStepsBeforeCapture) {
        graph_indices = Tensor::empty({static_cast<int64_t>(n)}, {DType::i64, device});
        graph = std::make_unique<cuda::Graph>(device.index);
        graph_lr = optimizer_.learning_rate();
        const int64_t steps_before = optimizer_.steps();
        capturing_ = true;
        try {
          graph->capture([&] {
            const Batch batch = make_batch(train, batch_indices, resident, graph_indices);
            accumulate_metrics(run_step(batch, false, epoch + 1, static_cast<int64_t>(step + 1), first_unchecked), batch,
                               loss_sum, correct);
          });
        } catch (...) {
          capturing_ = false;
          throw;
        }
        capturing_ = false;
        optimizer_.set_steps(steps_before);  // the capture recorded a step without running it
      }
      if (replayable && graph) {
        graph_indices.copy_from(step_indices);  // queued before the replay that reads it
        graph->replay();
        optimizer_.count_replayed_step();
      } else {
        const Batch batch = make_batch(train, batch_indices, resident, step_indices);
        accumulate_metrics(run_step(batch, check, epoch + 1, static_cast<int64_t>(step + 1), first_unchecked,
                                    position > 0, updates ? static_cast<int>(group_size) : 0),
                           batch, loss_sum, correct);
        if (n == options_.batch_size) ++eager_full_steps;
      }
      if (check) first_unchecked = static_cast<int64_t>(step + 2);
      totals[2] += static_cast<double>(n);
      live_samples_ = totals[2];
      live_steps_done_ = static_cast<int64_t>(step + 1);
      state_.global_step = optimizer_.steps();
      if (check && progress.due(step + 1, false)) {
        // Rank 0's line shows its own shard; the epoch summary below is global.
        progress.update(step + 1, loss_sum.item_double() / totals[2], correct.item_double() / totals[2],
                        static_cast<int64_t>(totals[2]) * comm_.size());
      }
      state_.validated = false;
      state_.stepped = updates;
      if (test && options_.validate_every_steps > 0 && updates && !last &&
          optimizer_.steps() % options_.validate_every_steps == 0) {
        const EvalResult v = evaluate_agreed(*test, epoch + 1);
        state_.metrics["train_loss"] = loss_sum.item_double() / totals[2];
        state_.metrics["train_accuracy"] = correct.item_double() / totals[2];
        if (v.loss) state_.metrics["validation_loss"] = *v.loss;
        if (v.accuracy) state_.metrics["validation_accuracy"] = *v.accuracy;
        state_.validated = true;
      }
      if (iteration_handlers) fire(Event::iteration_completed, true);
      state_.validated = false;
      if (watch_preemption && check) {
        // A signal that reached any rank stops all of them here, at the same step.
        std::vector<double> signal{static_cast<double>(preemption_signal())};
        if (world > 1) comm_.allreduce(signal, ReduceOp::max);
        if (signal[0] != 0.0) {
          state_.preempted = static_cast<int>(signal[0]);
          if (!options_.preemption_checkpoint_dir.empty())
            state_.preemption_checkpoint = save_checkpoint(options_.preemption_checkpoint_dir);
          state_.halt = true;
        }
      }
      if ((state_.halt || state_.halt_epoch) && updates) {
        halted_in_epoch = !last;
        break;
      }
    }
    // Preempted (agreed on every rank): the checkpoint is written; no validation or epoch logs for
    // the part-epoch, which the resumed run completes.
    if (state_.preempted) break;
    totals[0] = loss_sum.item_double();
    totals[1] = correct.item_double();
    totals[3 + static_cast<size_t>(comm_.rank())] = seconds_since(start);
    comm_.allreduce(totals, ReduceOp::sum);

    EpochResult er;
    er.epoch = epoch + 1;
    er.train_loss = totals[0] / totals[2];
    er.train_accuracy = totals[1] / totals[2];
    er.train_seconds = *std::max_element(totals.begin() + 3, totals.end());
    er.train_samples = static_cast<int64_t>(totals[2]);  // the whole epoch's, a resumed part included
    // One throughput figure everywhere: all ranks' samples this run over the slowest rank's seconds.
    const double run_samples = (totals[2] - (continued ? start_samples_ * static_cast<double>(world) : 0.0));
    progress.finish(live_steps_done_, er.train_loss, er.train_accuracy,
                    er.train_seconds > 0 ? run_samples / er.train_seconds : 0.0);
    sync_state();
    if (test) er.test = evaluate_agreed(*test, epoch + 1);
    result.train_seconds += er.train_seconds;
    result.train_samples += static_cast<int64_t>(run_samples);
    result.epochs.push_back(er);
    history_.push_back(er);

    std::map<std::string, double> metrics{{"train_loss", er.train_loss},
                                          {"train_accuracy", er.train_accuracy},
                                          {"epoch_seconds", er.train_seconds},
                                          {"samples_per_s", er.train_seconds > 0 ? run_samples / er.train_seconds : 0.0},
                                          {"lr", optimizer_.learning_rate()}};
    if (er.test.loss) metrics["validation_loss"] = *er.test.loss;
    if (er.test.accuracy) metrics["validation_accuracy"] = *er.test.accuracy;
    state_.metrics = metrics;
    state_.history.push_back(metrics);
    state_.iteration = live_steps_done_;
    // From here a checkpoint records the next epoch's start.
    live_loss_sum_ = live_correct_ = nullptr;
    live_samples_ = 0.0;
    live_steps_done_ = 0;
    live_epoch_ = epoch + 1;
    resumed_ = false;
    fire(halted_in_epoch ? Event::epoch_halted : Event::epoch_completed, true);
  }
  fire(state_.halt ? Event::halted : Event::completed, false);
  return result;
}

const char* event_name(Event event) {
  switch (event) {
    case Event::started: return "started";
    case Event::epoch_started: return "epoch_started";
    case Event::iteration_started: return "iteration_started";
    case Event::iteration_completed: return "iteration_completed";
    case Event::epoch_completed: return "epoch_completed";
    case Event::epoch_halted: return "epoch_halted";
    case Event::halted: return "halted";
    case Event::completed: return "completed";
  }
  return "?";
}

Trainer& Trainer::on(Event event, EventHandler handler, EventFilter filter) {
  if (!handler) throw std::invalid_argument(fmt::format("trainer: empty handler for event {}", event_name(event)));
  if (filter.every < 1)
    throw std::invalid_argument(fmt::format("trainer: event filter every must be >= 1, got {} (event {})", filter.every,
                                            event_name(event)));
  handlers_.push_back({event, std::move(handler), filter, 0});
  return *this;
}

bool Trainer::has_handlers(Event event) const {
  return std::any_of(handlers_.begin(), handlers_.end(), [event](const Subscription& s) { return s.event == event; });
}

Trainer& Trainer::add_callback(std::shared_ptr<Callback> callback) {
  if (!callback) throw std::invalid_argument("trainer: add_callback given no callback");
  for (const auto& c : callbacks_)
    if (c->name() == callback->name())
      throw std::invalid_argument(fmt::format("trainer: a callback named '{}' is already attached", callback->name()));
  callback->attach(*this);
  if (pending_callback_state_.contains(callback->name())) {
    callback->load_state(pending_callback_state_[callback->name()]);
    pending_callback_state_.erase(callback->name());
  }
  callbacks_.push_back(std::move(callback));
  return *this;
}

void Trainer::fire(Event event, bool halts_possible) {
  bool any = false;
  for (Subscription& s : handlers_) {
    if (s.event != event) continue;
    any = true;
    const int64_t occurrence = s.seen++;
    if (s.filter.once && occurrence > 0) continue;
    if (occurrence % s.filter.every != 0) continue;
    s.handler(*this, state_);
  }
  // A halt asked for on one rank halts all of them at the same point, or ranks would wait for each
  // other in different collectives.
  if (halts_possible && any && comm_.size() > 1) {
    std::vector<double> flags{state_.halt ? 1.0 : 0.0, state_.halt_epoch ? 1.0 : 0.0};
    comm_.allreduce(flags, ReduceOp::max);
    state_.halt = flags[0] != 0.0;
    state_.halt_epoch = flags[1] != 0.0;
  }
}

EvalResult Trainer::evaluate(const data::Dataset& dataset) {
  Agreement facts;
  add_dataset_facts(facts, "evaluation", dataset);
  facts.add_uint("eval batch size", options_.eval_batch_size)
      .add_hash("parameter layout fingerprint", layout_fingerprint(params_));
  facts.verify(comm_, "trainer: evaluate");
  return evaluate_agreed(dataset, 0);
}

EvalResult Trainer::evaluate_agreed(const data::Dataset& dataset, int epoch) {
  NoGradGuard no_grad;
  FlushDenormalsGuard flush_denormals;
  sync_state();
  // A contiguous, disjoint slice per rank: no sample is counted twice, none is skipped. The one
  // all-reduce below has a fixed size, however many batches (maybe none) this rank's slice has.
  const size_t world = static_cast<size_t>(comm_.size()), rank = static_cast<size_t>(comm_.rank());
  const size_t begin = dataset.count * rank / world, end = dataset.count * (rank + 1) / world;
  std::vector<double> sums(3, 0.0);
  std::vector<size_t> indices;
  const Device device = params_.device();
  Tensor correct = Tensor::zeros({}, {DType::f64, device});
  for (size_t b = begin; b < end; b += options_.eval_batch_size) {
    const size_t n = std::min(options_.eval_batch_size, end - b);
    indices.resize(n);
    for (size_t i = 0; i < n; ++i) indices[i] = b + i;
    const Batch batch = make_batch(dataset, indices);
    // Evaluation runs in f32 on the master weights, whatever the training precision.
    ForwardContext ctx;
    ctx.hooks = options_.hooks;  // inference mode: HookMode::inference and both
    Tensor output = forward(plan_, params_, batch.x, ctx);
    sums[0] += loss_(output, batch.labels).item_double() * static_cast<double>(n);
    backend(device).accumulate_correct(output, batch.labels, correct);
    sums[2] += static_cast<double>(n);
  }
  sums[1] = correct.item_double();
  comm_.allreduce(sums, ReduceOp::sum);
  EvalResult r;
  r.samples = static_cast<int64_t>(sums[2]);
  if (r.samples == 0) return r;  // not measured: loss and accuracy stay empty
  // The reduced sum is the same on every rank, so every rank throws here or none does.
  if (!std::isfinite(sums[0]))
    throw NonFiniteError(
        fmt::format("trainer: non-finite evaluation loss {} over {} samples of {}{}; {}", sums[0] / sums[2], r.samples,
                    where_from(dataset), epoch > 0 ? fmt::format(" after epoch {}", epoch) : "",
                    lr_hint(optimizer_.learning_rate())),
        epoch, 0, sums[0] / sums[2]);
  r.loss = sums[0] / sums[2];
  r.accuracy = sums[1] / sums[2];
  return r;
}

uint64_t layout_fingerprint(const Parameters& params) {
  // FNV-1a over "name:dims;" — stable across runs and platforms (std::hash is not).
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](const std::string& s) {
    for (unsigned char c : s) {
      h ^= c;
      h *= 1099511628211ull;
    }
  };
  for (const auto& entry : params.entries()) mix(entry.name + ":" + shape_str(entry.value.shape()) + ";");
  // Model state too (nothing is mixed in for models without it, so their fingerprints are unchanged).
  for (const auto& entry : params.state_entries()) mix("state " + entry.name + ":" + shape_str(entry.value.shape()) + ";");
  return h;
}

std::string parameters_sha256(const Parameters& params) {
  static_assert(sizeof(float) == 4);
  const std::vector<float> values = params.flat_values().to_vector();
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  // x86-64 and aarch64 are little-endian, so the in-memory bytes are the canonical bytes.
  if (EVP_Digest(values.data(), values.size() * sizeof(float), digest, &length, EVP_sha256(), nullptr) != 1)
    throw std::runtime_error("parameters_sha256: OpenSSL EVP_Digest failed");
  std::string hex;
  for (unsigned int i = 0; i < length; ++i) hex += fmt::format("{:02x}", digest[i]);
  return hex;
}

}  // namespace axon
