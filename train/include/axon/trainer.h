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
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "axon/communicator.h"
#include "axon/data.h"
#include "axon/data_parallel.h"
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

 private:
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
  StepResult run_step(const Batch& batch, bool check, int epoch, int64_t step, int64_t first_unchecked);
  // Queues loss_sum += loss × rows and correct += the rows whose argmax is the label (no host sync).
  static void accumulate_metrics(const StepResult& result, const Batch& batch, Tensor& loss_sum, Tensor& correct);
  void sync_parameters();
  EvalResult evaluate_agreed(const data::Dataset& dataset, int epoch);

  Model model_;
  ModelPlan plan_;
  Parameters& params_;
  Optimizer& optimizer_;
  Communicator& comm_;
  TrainOptions options_;
  LossFn loss_;
  Generator rng_;
  DataParallel data_parallel_;
  Parameters compute_params_;  // the compute-dtype copy under mixed precision; empty otherwise
  bool synced_ = false;
  bool capturing_ = false;  // run_step is being recorded into a CUDA graph
};

// A hash of the parameter names and shapes, equal on ranks that built the same model.
uint64_t layout_fingerprint(const Parameters& params);
// SHA-256 (hex) of the parameter values in canonical order, as little-endian fp32 bytes (copied
// from the device first).
std::string parameters_sha256(const Parameters& params);

}  // namespace axon
