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
#include <span>
#include <string>
#include <vector>

#include "axon/communicator.h"
#include "axon/data.h"
#include "axon/data_parallel.h"
#include "axon/model.h"
#include "axon/optimizers.h"

namespace axon {

using LossFn = std::function<Tensor(const Tensor& output, std::span<const int32_t> labels)>;

struct TrainOptions {
  int epochs = 1;
  size_t batch_size = 128;  // per rank, as in PyTorch DDP: the global batch is batch_size × ranks
  uint64_t seed = 0;
  bool shuffle = true;
  bool drop_last = false;
  bool progress = true;  // a live progress line on rank 0 (stderr)
  size_t eval_batch_size = 1000;
};

struct EvalResult {
  double loss = 0.0;
  double accuracy = 0.0;
  int64_t samples = 0;
};

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

  TrainResult fit(const data::Dataset& train, const data::Dataset* test = nullptr);
  // Loss and accuracy over the whole dataset; each rank evaluates a disjoint slice and the sums
  // are reduced, so all ranks return the same numbers.
  EvalResult evaluate(const data::Dataset& dataset);
  // One optimization step on a batch; returns this rank's loss.
  double train_step(const Tensor& x, std::span<const int32_t> labels);

 private:
  Tensor make_batch(const data::Dataset& dataset, std::span<const size_t> indices, std::vector<int32_t>& labels) const;
  struct StepResult {
    double loss;
    Tensor output;  // the model's output for the batch, detached (for metrics)
  };
  StepResult run_step(const Tensor& x, std::span<const int32_t> labels);

  Model model_;
  ModelPlan plan_;
  Parameters& params_;
  Optimizer& optimizer_;
  Communicator& comm_;
  TrainOptions options_;
  LossFn loss_;
  Generator rng_;
  DataParallel data_parallel_;
  bool synced_ = false;
};

// A hash of the parameter names and shapes, equal on ranks that built the same model.
uint64_t layout_fingerprint(const Parameters& params);
// SHA-256 (hex) of the parameter values in canonical order, as little-endian fp32 bytes.
std::string parameters_sha256(const Parameters& params);

}  // namespace axon
