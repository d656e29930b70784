// The first trainer: epochs × batches of data-parallel training with evaluation.
//
// Each rank trains on its own shard of every epoch (DistributedSampler), gradients are averaged
// across ranks after backward, and every rank applies the same optimizer step, so parameters stay
// identical everywhere. Reported losses and accuracies are reduced over all ranks, so every rank
// (and rank 0's log) sees the global numbers.
#pragma once

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "axon/communicator.h"
#include "axon/data.h"
#include "axon/data_parallel.h"
#include "axon/hooks.h"
#include "axon/reducer.h"
#include "axon/zero.h"
#include "axon/model.h"
#include "axon/optimizers.h"

namespace axon {

// output: the model's output, f32 {batch, ...} on the parameters' device; labels: i32 {batch} on
// the same device. Returns a one-element loss.
using LossFn = std::function<Tensor(const Tensor& output, const Tensor& labels)>;

struct TrainOptions {
  int epochs = 1;
  size_t batch_size = 128;  // per rank, as in PyTorch DDP: the global batch is batch_size × ranks
  uint64_t seed = 0;
  bool shuffle = true;
  bool drop_last = false;
  bool progress = true;  // a live progress line on rank 0 (stderr)
  size_t eval_batch_size = 1000;
  // Mixed precision (the seed's policy): the parameters stay the optimizer's f32 master weights;
  // forward and backward run on a copy of them in compute_dtype (bf16), the model output is
  // converted to f32 before the loss, and the gradients back to f32 before the all-reduce.
  DType compute_dtype = DType::f32;
  // How often (in steps) the loss is read back to the host and checked for non-finite values.
  // 0: every step on the CPU (free there), every 50 steps on a GPU, where each read waits for the
  // device. Between checks a non-finite loss or gradient is still caught at the next check, by
  // then possibly after optimizer steps; the error names the range of steps.
  int check_every = 0;
  // Capture one training step (forward, backward, the all-reduce when NCCL carries it, the
  // optimizer step and the metric sums) in a CUDA graph after two eager steps, then replay it for
  // every full batch that is not a check step; checks, the last partial batch and evaluation run
  // eagerly. Needs parameters on a CUDA device, and the NCCL backend when there are several
  // ranks (MPI stages through the host, which a graph cannot capture); the optimizer is switched
  // to capturable mode (Optimizer::set_capturable). The trainer's constructor throws
  // std::invalid_argument naming what is missing.
  bool cuda_graph = false;
  // Gradient accumulation: an optimizer step every grad_accum batches (micro-batches of
  // batch_size), on the mean of their gradients; the last step of an epoch may average fewer.
  // Not with cuda_graph (the constructor says so).
  int grad_accum = 1;
  // Also evaluate the validation data every this many optimizer steps (0: at epoch ends only);
  // the results are in LoopState::metrics at that step's iteration_completed (validated = true).
  int64_t validate_every_steps = 0;
  // With a preemption handler installed (axon/preemption.h): at the first check step after a
  // preemption signal reached any rank, write a checkpoint here (when not empty) and halt the loop
  // on every rank; LoopState::preempted then names the signal. Checks come every check_every steps.
  std::string preemption_checkpoint_dir{};
  // Data parallelism over several ranks (axon/reducer.h). Gradients are all-reduced in buckets
  // of bucket_bytes (the first of first_bucket_bytes), each started as soon as backward has
  // produced its gradients; bucket_bytes = 0 makes one all-reduce of the whole gradient after
  // backward instead. Mixed precision and cuda_graph always use the latter.
  size_t bucket_bytes = 25u << 20;
  size_t first_bucket_bytes = 1u << 20;
  // Parameters a forward leaves unused get their (zero) gradient reduced anyway; false makes
  // such a step an error naming them.
  bool find_unused_parameters = false;
  // ZeRO (axon/zero.h): 0 off; 1 shards the optimizer state over the ranks; 2 also
  // reduce-scatters the gradients. Needs an element-wise optimizer (Optimizer::elementwise) and
  // no cuda_graph; the constructor throws std::invalid_argument otherwise. Checkpoints hold
  // whole buffers, so a run resumes at any world size and ZeRO stage.
  int zero_stage = 0;
  // Hooks on layers (axon/hooks.h), run in every training forward (HookMode train or both) and
  // evaluation forward (inference or both); the caller keeps them alive while the trainer runs.
  const Hooks* hooks = nullptr;
};

// The events of the training loop, in the order of the seed's Axon.Loop: started, then per epoch
// epoch_started, per step iteration_started and iteration_completed, then epoch_completed (or
// epoch_halted when a handler ended the epoch early), and finally completed (or halted).
enum class Event { started, epoch_started, iteration_started, iteration_completed, epoch_completed, epoch_halted,
                   halted, completed };
const char* event_name(Event event);

// What event handlers see, and how they stop the loop. Identical on every rank: metrics are
// reduced over the ranks before any handler sees them, and halt requests are agreed (a request
// on any rank halts every rank at the same point).
struct LoopState {
  int epoch = 0;            // 1-based epoch in progress (or just completed)
  int epochs = 0;           // the epochs the loop runs (TrainOptions::epochs)
  int64_t iteration = 0;    // 1-based step within the epoch at iteration events; steps done at epoch events
  int64_t global_step = 0;  // optimizer steps since training began (across resumes)
  // At epoch_completed/epoch_halted and later: train_loss, train_accuracy, samples_per_s,
  // epoch_seconds, lr, and validation_loss/validation_accuracy when there is validation data.
  std::map<std::string, double> metrics;
  std::vector<std::map<std::string, double>> history;  // metrics of every finished epoch
  // At iteration_completed: validation ran after this step (TrainOptions::validate_every_steps);
  // metrics then hold validation_loss and validation_accuracy, and the epoch's running
  // train_loss and train_accuracy (this rank's shard).
  bool validated = false;
  // At iteration_completed: this batch ended with an optimizer step (false for the first batches
  // of a gradient-accumulation group).
  bool stepped = false;
  bool halt_epoch = false;  // set by a handler: end this epoch after the current step
  bool halt = false;        // set by a handler: end training after the current step or epoch
  int preempted = 0;        // the preemption signal that halted training (axon/preemption.h), or 0
  std::string preemption_checkpoint;  // the checkpoint written then, if any
};

class Trainer;
using EventHandler = std::function<void(Trainer& trainer, LoopState& state)>;
// Which occurrences of an event call the handler: every `every`-th (counted from the first), only
// the first when `once`.
struct EventFilter {
  int64_t every = 1;
  bool once = false;
};

// A callback: a named set of handlers with state that checkpoints keep (EarlyStopping's best
// value and patience counter, ...). See axon/callbacks.h for the built-in ones.
class Callback {
 public:
  virtual ~Callback() = default;
  virtual std::string name() const = 0;  // unique per trainer: the key of its checkpointed state
  virtual void attach(Trainer& trainer) = 0;
  virtual nlohmann::json state() const { return nullptr; }
  virtual void load_state(const nlohmann::json& state) { (void)state; }
};

// Metrics over zero samples were not measured: loss and accuracy are then empty, never 0.
struct EvalResult {
  std::optional<double> loss;      // mean loss per sample; empty when samples == 0
  std::optional<double> accuracy;  // fraction in [0, 1]; empty when samples == 0
  int64_t samples = 0;             // all ranks
};

// Training or evaluation produced a non-finite loss or gradient. Thrown on every rank at the
// same step (the decision is made from values all ranks share), before the optimizer step, so
// the parameters hold the last finite values. Programs exit with kExitNonFinite on it.
class NonFiniteError : public std::runtime_error {
 public:
  NonFiniteError(const std::string& message, int epoch, int64_t step, double value)
      : std::runtime_error(message), epoch(epoch), step(step), value(value) {}
  int epoch;      // 1-based; 0 outside fit
  int64_t step;   // 1-based step within the epoch; 0 for an evaluation
  double value;   // the non-finite loss or gradient norm
};

// Exit status of the example programs when training stops on a non-finite number.
inline constexpr int kExitNonFinite = 3;
// Exit status of the example programs when a preemption signal stopped training (after writing a
// checkpoint when they have a checkpoint folder): batch scripts requeue on it.
inline constexpr int kExitPreempted = 4;

struct EpochResult {
  int epoch = 0;
  double train_loss = 0.0;
  double train_accuracy = 0.0;
  double train_seconds = 0.0;  // slowest rank
  int64_t train_samples = 0;   // all ranks
  EvalResult test;             // samples == 0 when there was no test set
};

struct TrainResult {
  std::vector<EpochResult> epochs;
  double train_seconds = 0.0;
  int64_t train_samples = 0;
  double samples_per_second() const { return train_seconds > 0 ? static_cast<double>(train_samples) / train_seconds : 0.0; }
};

class Trainer {
 public:
  // The model's output feeds `loss` (default: softmax cross-entropy on logits).
  Trainer(Model model, Parameters& params, Optimizer& optimizer, Communicator& comm, TrainOptions options,
          LossFn loss = {});

  // Trains for options.epochs epochs, evaluating `test` (when given) after each. Collective: every
  // rank calls it. Before its first collective it checks that all ranks agree on everything
  // that decides the collectives they will make (dataset sizes, sample shapes, label checksums,
  // batch sizes, epochs, steps per epoch, shuffle, drop_last, seed, parameter layout, optimizer
  // config and step count, BLAS threads) and throws CommError on every rank naming each difference and each
  // rank's value. Throws std::invalid_argument naming the dataset's source when the training set
  // is empty (or smaller than the world with drop_last), and NonFiniteError when a loss, the
  // averaged gradient or the updated parameters are not finite (checked every check_every steps). A test set with 0 samples is allowed: its metrics are empty.
  TrainResult fit(const data::Dataset& train, const data::Dataset* test = nullptr);
  // Loss and accuracy over the whole dataset; each rank evaluates a disjoint slice and the sums
  // are reduced, so all ranks return the same numbers. Collective; checks first that the ranks
  // agree on the dataset (size, sample shape, label checksum), the eval batch size and the
  // parameter layout. Empty loss/accuracy for 0 samples; NonFiniteError for a non-finite loss.
  EvalResult evaluate(const data::Dataset& dataset);
  // One optimization step on a batch; returns this rank's loss. Collective. Throws
  // NonFiniteError (on every rank) when any rank's loss or the averaged gradient is not finite.
  double train_step(const Tensor& x, std::span<const int32_t> labels);

  // Calls `handler` at `event` (filtered). Handlers run on every rank, in the order added.
  Trainer& on(Event event, EventHandler handler, EventFilter filter = {});
  // Attaches a callback (it subscribes its handlers) and keeps its state in checkpoints. Throws
  // std::invalid_argument when a callback of the same name is already attached.
  Trainer& add_callback(std::shared_ptr<Callback> callback);

  // Writes a checkpoint of the current position (between steps: after fit, or from an event
  // handler) to dir/step-<global step> (axon/checkpoint.h). Collective: rank 0 writes, every rank
  // returns or throws CheckpointError alike (a full disk on rank 0 stops every rank). Returns the
  // checkpoint's path.
  std::string save_checkpoint(const std::string& dir);
  // Restores parameters, optimizer state and step count, learning rate, the loop position (epoch,
  // step within it, the epoch's partial loss and accuracy sums), metric history and callback state from `path` (a checkpoint, or a folder of them: the newest valid one), so that
  // the next fit() continues exactly where the saved run was: the rest of the run is
  // bit-identical to an uninterrupted one on the same number of ranks and threads. Call on every
  // rank. Throws CheckpointError naming the file and check that failed, or std::invalid_argument
  // when the checkpoint is for another model (parameter names or shapes), another optimizer, or,
  // mid-epoch, another world size, batch size, seed or shuffle setting. Collective: the ranks
  // agree that each loaded the same checkpoint, so one rank's failure (a shard file only it
  // reads) throws on every rank alike. Returns the path used.
  std::string load_checkpoint(const std::string& path);

  const LoopState& loop_state() const { return state_; }
  Optimizer& optimizer() { return optimizer_; }
  // Seconds this rank has spent waiting for gradient reductions after backward (the part of the
  // communication not hidden behind backward), summed over all steps so far; 0 on one rank.
  double gradient_wait_seconds() const { return gradient_wait_seconds_ + (reducer_ ? reducer_->wait_seconds() : 0.0); }
  Parameters& parameters() { return params_; }
  Communicator& communicator() { return comm_; }
  const TrainOptions& options() const { return options_; }

 private:
  // load_checkpoint on this rank alone; returns the path and sets `global_step`.
  std::string load_checkpoint_here(const std::string& path, int64_t& global_step);
  // A batch on the parameters' device: inputs (f32) and i32 labels.
  struct Batch {
    Tensor x, labels;
  };
  // A dataset copied once to the parameters' device (GPUs: batches are then gathered there
  // instead of copied over each step). Empty on the CPU, where batches are gathered directly.
  struct ResidentData {
    Tensor images, labels;  // {count, sample_size} f32 and {count} i32
  };
  ResidentData make_resident(const data::Dataset& dataset) const;
  // The batch of `indices` (positions into the dataset); `device_indices` holds the same indices
  // as i64 on the device when the dataset is resident.
  Batch make_batch(const data::Dataset& dataset, std::span<const size_t> indices, const ResidentData& resident = {},
                   const Tensor& device_indices = {}) const;
  struct StepResult {
    Tensor loss;    // one f32 element on the device, detached
    Tensor output;  // the model's output for the batch, f32, detached (for metrics)
  };
  // One step. With check = true the loss is read on the host and the averaged gradient checked
  // for non-finite values (NonFiniteError naming `at`); otherwise nothing waits for the device.
  // Gradient accumulation: `accumulate` adds this batch's gradient to the previous ones' (no
  // zeroing first), and `micro_batches` > 0 makes it the last of that many, which then updates
  // (their mean gradient). A plain step is accumulate = false, micro_batches = 1.
  StepResult run_step(const Batch& batch, bool check, int epoch, int64_t step, int64_t first_unchecked,
                      bool accumulate = false, int micro_batches = 1);
  // Calls the handlers of `event`; with halts_possible, agrees on halt requests across ranks.
  void fire(Event event, bool halts_possible);
  bool has_handlers(Event event) const;
  // Queues loss_sum += loss × rows and correct += the rows whose argmax is the label (no host sync).
  static void accumulate_metrics(const StepResult& result, const Batch& batch, Tensor& loss_sum, Tensor& correct);
  void sync_parameters();
  // Whether `value` holds on any rank (one small all-reduce when there are several).
  bool any_rank(bool value);
  // Averages the model state (batch_norm's running statistics) over the ranks; collective.
  void sync_state();
  EvalResult evaluate_agreed(const data::Dataset& dataset, int epoch);

  Model model_;
  ModelPlan plan_;
  Parameters& params_;
  Optimizer& optimizer_;
  Communicator& comm_;
  TrainOptions options_;
  LossFn loss_;
  uint64_t rng_stream_ = 0;  // the batch number that seeds this step's random draws
  bool resumed_ = false;     // load_checkpoint set the start position below
  DataParallel data_parallel_;
  std::unique_ptr<Reducer> reducer_;    // bucketed all-reduce, when used (see TrainOptions)
  std::unique_ptr<ZeroSharding> zero_;  // ZeRO stage 1 or 2, when used
  double gradient_wait_seconds_ = 0.0;  // in the all-reduce/reduce-scatter made after backward
  Parameters compute_params_;  // the compute-dtype copy under mixed precision; empty otherwise
  bool synced_ = false;
  bool capturing_ = false;  // run_step is being recorded into a CUDA graph

  // The loop's position and history (checkpointed), and where a resumed fit() starts.
  LoopState state_;
  std::vector<EpochResult> history_;
  int start_epoch_ = 0;       // 0-based
  int64_t start_step_ = 0;    // steps of that epoch already done
  double start_loss_sum_ = 0.0, start_correct_ = 0.0, start_samples_ = 0.0;
  // While fit() runs: the epoch's device sums and sample count, for a mid-epoch checkpoint.
  Tensor* live_loss_sum_ = nullptr;
  Tensor* live_correct_ = nullptr;
  double live_samples_ = 0.0;
  int64_t live_steps_done_ = 0;
  int live_epoch_ = -1;       // 0-based epoch in progress, -1 outside fit()
  int64_t live_steps_per_epoch_ = 0;
  // The training set of the running or last fit (size, label checksum), saved in checkpoints, and
  // the one a loaded mid-epoch checkpoint was saved with (checked when fit() resumes).
  uint64_t train_count_ = 0, train_checksum_ = 0;
  bool resume_needs_same_data_ = false;
  uint64_t resume_train_count_ = 0, resume_train_checksum_ = 0;
  bool resume_halted_ = false;  // the checkpoint was saved after training had halted (early stopping)
  struct Subscription {
    Event event;
    EventHandler handler;
    EventFilter filter;
    int64_t seen = 0;
  };
  std::vector<Subscription> handlers_;
  std::vector<std::shared_ptr<Callback>> callbacks_;
  nlohmann::json pending_callback_state_ = nlohmann::json::object();  // loaded before the callback was added
};

// A hash of the parameter names and shapes, equal on ranks that built the same model.
uint64_t layout_fingerprint(const Parameters& params);
// SHA-256 (hex) of the parameter values in canonical order, as little-endian fp32 bytes (copied
// from the device first).
std::string parameters_sha256(const Parameters& params);

}  // namespace axon
