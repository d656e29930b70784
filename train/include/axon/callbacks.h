// Built-in callbacks for the Trainer's loop (axon/trainer.h): early stopping, checkpoints,
// learning-rate reduction on a plateau, CSV and TensorBoard logs. A user's own callback is a
// lambda given to Trainer::on, or a Callback subclass when it has state to checkpoint.
//
// They decide from LoopState::metrics, which are reduced over all ranks before any handler runs,
// so every rank takes the same decision at the same epoch; only rank 0 writes files.
// Metric names: train_loss, train_accuracy, validation_loss, validation_accuracy, lr,
// epoch_seconds, samples_per_s.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "axon/trainer.h"

namespace axon {

enum class MonitorMode { min, max };

// Stops training when `monitor` has not improved by more than min_delta for `patience` epochs
// (Keras' EarlyStopping, the seed's early_stop): after epoch_completed with no improvement for
// the patience-th time, it halts the loop. With restore_best the parameters are set back to the
// best epoch's on halting. Throws std::invalid_argument at the first epoch when the metric does
// not exist (naming the metric and the ones that do), and for patience < 1 or min_delta < 0.
struct EarlyStoppingOptions {
  std::string monitor = "validation_loss";
  MonitorMode mode = MonitorMode::min;
  int patience = 3;
  double min_delta = 0.0;
  bool restore_best = false;
};
std::shared_ptr<Callback> early_stopping(EarlyStoppingOptions options = {});

// Saves a checkpoint (Trainer::save_checkpoint) into `dir` after every `every_epochs` epochs
// and/or every `every_steps` optimizer steps (0 turns either off), keeping the newest `keep_last`
// (0 keeps all) and, when `monitor` is set, also the best one by that metric.
struct ModelCheckpointOptions {
  std::string dir{};
  int every_epochs = 1;
  int64_t every_steps = 0;
  int keep_last = 0;
  std::string monitor{};  // empty: no best-keeping
  MonitorMode mode = MonitorMode::min;
};
std::shared_ptr<Callback> model_checkpoint(ModelCheckpointOptions options);

// Multiplies the learning rate by `factor` when `monitor` has not improved for `patience`
// epochs, then waits `cooldown` epochs, never going below min_lr. Improvement as PyTorch's
// ReduceLROnPlateau with threshold_mode "rel": better than best·(1 ∓ threshold).
struct ReduceLROnPlateauOptions {
  std::string monitor = "validation_loss";
  MonitorMode mode = MonitorMode::min;
  double factor = 0.1;
  int patience = 10;
  double threshold = 1e-4;
  int cooldown = 0;
  double min_lr = 0.0;
};
std::shared_ptr<Callback> reduce_lr_on_plateau(ReduceLROnPlateauOptions options = {});

// Appends one row per epoch to `path` (rank 0): epoch, global_step and every metric, in a fixed
// column order (the first epoch's metrics, sorted by name); a resumed run appends below the rows
// already there. Throws std::runtime_error naming the file when it cannot be written.
std::shared_ptr<Callback> csv_logger(std::string path);

// Writes a TensorBoard event file in `dir` (rank 0): every metric as a scalar named
// "epoch/<metric>" at step = epoch, and with TrainOptions::validate_every_steps the metrics of
// each validation as "step/<metric>" at step = global step. The file is TFRecord-framed (length, masked CRC32C of the
// length, data, masked CRC32C of the data) tensorflow.Event protocol buffers, written by hand:
// the first event holds file_version "brain.Event:2", each later one a Summary of simple values.
// Throws std::runtime_error naming the file when it cannot be written.
std::shared_ptr<Callback> tensorboard_logger(std::string dir);

// CRC-32C (Castagnoli), the checksum of TFRecord framing, and TensorFlow's masking of it.
uint32_t crc32c(const void* data, size_t size);
uint32_t masked_crc32c(const void* data, size_t size);

}  // namespace axon
