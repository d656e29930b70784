#include "axon/callbacks.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <stdexcept>

#include "axon/checkpoint.h"

namespace axon {

namespace fs = std::filesystem;

namespace {

const char* mode_name(MonitorMode m) { return m == MonitorMode::min ? "min" : "max"; }

// The monitored metric, or an error naming it and the ones there are.
double metric(const LoopState& state, const std::string& name, const char* who) {
  const auto it = state.metrics.find(name);
  if (it != state.metrics.end()) return it->second;
  std::string have;
  for (const auto& [k, v] : state.metrics) have += (have.empty() ? "" : ", ") + k;
  throw std::invalid_argument(fmt::format("{}: no metric '{}' at epoch {} (metrics: {}){}", who, name, state.epoch, have,
                                          name.rfind("validation_", 0) == 0 ? "; validation metrics need validation data" : ""));
}

double worst(MonitorMode mode) {
  return mode == MonitorMode::min ? std::numeric_limits<double>::infinity() : -std::numeric_limits<double>::infinity();
}

// JSON has no infinity: an unset "best" is saved as null.
nlohmann::json number_or_null(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }
double number_or(const nlohmann::json& j, double fallback) { return j.is_number() ? j.get<double>() : fallback; }

class EarlyStopping final : public Callback {
 public:
  explicit EarlyStopping(EarlyStoppingOptions o) : o_(std::move(o)), best_(worst(o_.mode)) {
    if (o_.patience < 1) throw std::invalid_argument(fmt::format("early_stopping: patience must be >= 1, got {}", o_.patience));
    if (!(o_.min_delta >= 0.0))
      throw std::invalid_argument(fmt::format("early_stopping: min_delta must be >= 0, got {}", o_.min_delta));
  }
  std::string name() const override { return "early_stopping"; }
  void attach(Trainer& trainer) override {
    trainer.on(Event::epoch_completed, [this](Trainer& t, LoopState& s) { epoch_completed(t, s); });
  }
  nlohmann::json state() const override {
    return {{"best", number_or_null(best_)}, {"wait", wait_}, {"best_epoch", best_epoch_}, {"stopped_epoch", stopped_epoch_}};
  }
  void load_state(const nlohmann::json& j) override {
    best_ = number_or(j.at("best"), worst(o_.mode));
    wait_ = j.at("wait").get<int>();
    best_epoch_ = j.at("best_epoch").get<int>();
    stopped_epoch_ = j.at("stopped_epoch").get<int>();
  }

 private:
  void epoch_completed(Trainer& trainer, LoopState& s) {
    const double value = metric(s, o_.monitor, "early_stopping");
    const bool better = o_.mode == MonitorMode::min ? value < best_ - o_.min_delta : value > best_ + o_.min_delta;
    if (better) {
      best_ = value;
      best_epoch_ = s.epoch;
      wait_ = 0;
      if (o_.restore_best) best_values_ = trainer.parameters().flat_values().clone();
      return;
    }
    if (++wait_ < o_.patience) return;
    stopped_epoch_ = s.epoch;
    s.halt = true;
    if (o_.restore_best && best_values_.defined()) {
      Tensor values = trainer.parameters().flat_values();
      values.copy_from(best_values_);
    }
    if (trainer.communicator().is_root())
      std::fprintf(stderr, "axon: early stopping after epoch %d: %s has not improved on %.6g (epoch %d, mode %s) for %d epoch(s)%s\n",
                   s.epoch, o_.monitor.c_str(), best_, best_epoch_, mode_name(o_.mode), wait_,
                   o_.restore_best && best_values_.defined() ? "; parameters restored to that epoch's" : "");
  }

  EarlyStoppingOptions o_;
  double best_;
  int wait_ = 0, best_epoch_ = 0, stopped_epoch_ = 0;
  Tensor best_values_;
};

class ModelCheckpoint final : public Callback {
 public:
  explicit ModelCheckpoint(ModelCheckpointOptions o) : o_(std::move(o)), best_(worst(o_.mode)) {
    if (o_.dir.empty()) throw std::invalid_argument("model_checkpoint: dir is empty");
    if (o_.every_epochs < 0 || o_.every_steps < 0 || o_.keep_last < 0)
      throw std::invalid_argument(fmt::format("model_checkpoint: every_epochs ({}), every_steps ({}) and keep_last ({}) must be >= 0",
                                              o_.every_epochs, o_.every_steps, o_.keep_last));
    if (o_.every_epochs == 0 && o_.every_steps == 0)
      throw std::invalid_argument("model_checkpoint: every_epochs and every_steps are both 0: it would never save");
  }
  std::string name() const override { return "model_checkpoint"; }
  void attach(Trainer& trainer) override {
    if (o_.every_steps > 0)
      trainer.on(Event::iteration_completed, [this](Trainer& t, LoopState& s) {
        // Only after a batch that stepped the optimizer (not inside a gradient-accumulation group).
        if (s.stepped && s.global_step > 0 && s.global_step % o_.every_steps == 0 && s.global_step != last_saved_) save(t);
      });
    trainer.on(Event::epoch_completed, [this](Trainer& t, LoopState& s) { epoch_completed(t, s); });
  }
  nlohmann::json state() const override {
    return {{"last_saved_step", last_saved_}, {"best", number_or_null(best_)}, {"best_path", best_path_}};
  }
  void load_state(const nlohmann::json& j) override {
    last_saved_ = j.at("last_saved_step").get<int64_t>();
    best_ = number_or(j.at("best"), worst(o_.mode));
    best_path_ = j.at("best_path").get<std::string>();
  }

 private:
  void epoch_completed(Trainer& trainer, LoopState& s) {
    bool improved = false;
    if (!o_.monitor.empty()) {
      const double value = metric(s, o_.monitor, "model_checkpoint");
      improved = o_.mode == MonitorMode::min ? value < best_ : value > best_;
      if (improved) best_ = value;
    }
    const bool due = o_.every_epochs > 0 && s.epoch % o_.every_epochs == 0;
    std::string path;
    if ((due || improved) && s.global_step != last_saved_) path = save(trainer);
    else if (improved) path = (fs::path(o_.dir) / checkpoint_name(s.global_step)).string();
    if (improved) best_path_ = path;
    prune(trainer);
  }

  std::string save(Trainer& trainer) {
    // Recorded first, so the checkpoint's own copy of this state names the step it is.
    const int64_t previous = last_saved_;
    last_saved_ = trainer.loop_state().global_step;
    std::string path;
    try {
      path = trainer.save_checkpoint(o_.dir);
    } catch (...) {
      last_saved_ = previous;
      throw;
    }
    last_written_ = path;
    prune(trainer);
    return path;
  }

  // Of the checkpoints up to the one this run wrote last, the newest keep_last stay, and the best
  // one; rank 0 removes the others. Checkpoints with higher steps (another run's) are left alone,
  // and a removal is a rename first, so a half-deleted directory never looks like a checkpoint.
  void prune(Trainer& trainer) {
    if (o_.keep_last == 0 || last_written_.empty() || !trainer.communicator().is_root()) return;
    std::vector<std::string> all = list_checkpoints(o_.dir);
    std::error_code ec;
    const auto written = std::find_if(all.begin(), all.end(), [&](const std::string& p) { return fs::equivalent(p, last_written_, ec); });
    if (written == all.end()) return;
    const size_t upto = static_cast<size_t>(written - all.begin()) + 1;  // oldest first, so [0, upto)
    for (size_t i = 0; i + static_cast<size_t>(o_.keep_last) < upto; ++i) {
      if (!best_path_.empty() && fs::equivalent(all[i], best_path_, ec)) continue;
      const fs::path doomed = fs::path(o_.dir) / fmt::format(".tmp-del-{}-{}", fs::path(all[i]).filename().string(), ::getpid());
      fs::rename(all[i], doomed, ec);
      if (!ec) fs::remove_all(doomed, ec);
    }
  }

  ModelCheckpointOptions o_;
  double best_;
  int64_t last_saved_ = -1;
  std::string best_path_, last_written_;
};

class ReduceLROnPlateau final : public Callback {
 public:
  explicit ReduceLROnPlateau(ReduceLROnPlateauOptions o) : o_(std::move(o)), best_(worst(o_.mode)) {
    if (!(o_.factor > 0.0 && o_.factor < 1.0))
      throw std::invalid_argument(fmt::format("reduce_lr_on_plateau: factor must be in (0, 1), got {}", o_.factor));
    if (o_.patience < 0 || o_.cooldown < 0 || !(o_.threshold >= 0.0) || !(o_.min_lr >= 0.0))
      throw std::invalid_argument("reduce_lr_on_plateau: patience, cooldown, threshold and min_lr must be >= 0");
  }
  std::string name() const override { return "reduce_lr_on_plateau"; }
  void attach(Trainer& trainer) override {
    trainer.on(Event::epoch_completed, [this](Trainer& t, LoopState& s) { epoch_completed(t, s); });
  }
  nlohmann::json state() const override {
    return {{"best", number_or_null(best_)}, {"bad_epochs", bad_}, {"cooldown_left", cooldown_left_}};
  }
  void load_state(const nlohmann::json& j) override {
    best_ = number_or(j.at("best"), worst(o_.mode));
    bad_ = j.at("bad_epochs").get<int>();
    cooldown_left_ = j.at("cooldown_left").get<int>();
  }

 private:
  // torch.optim.lr_scheduler.ReduceLROnPlateau.step, threshold_mode "rel".
  void epoch_completed(Trainer& trainer, LoopState& s) {
    const double value = metric(s, o_.monitor, "reduce_lr_on_plateau");
    const bool better = o_.mode == MonitorMode::min ? value < best_ * (1.0 - o_.threshold) : value > best_ * (1.0 + o_.threshold);
    if (better) {
      best_ = value;
      bad_ = 0;
    } else {
      ++bad_;
    }
    if (cooldown_left_ > 0) {
      --cooldown_left_;
      bad_ = 0;
    }
    if (bad_ <= o_.patience) return;
    Optimizer& opt = trainer.optimizer();
    const double old_lr = opt.learning_rate(), new_lr = std::max(old_lr * o_.factor, o_.min_lr);
    if (old_lr - new_lr > 1e-8) {
      opt.set_learning_rate(new_lr);
      s.metrics["lr"] = new_lr;
      if (trainer.communicator().is_root())
        std::fprintf(stderr, "axon: epoch %d: %s has not improved for %d epoch(s): learning rate %g -> %g\n", s.epoch,
                     o_.monitor.c_str(), bad_, old_lr, new_lr);
    }
    cooldown_left_ = o_.cooldown;
    bad_ = 0;
  }

  ReduceLROnPlateauOptions o_;
  double best_;
  int bad_ = 0, cooldown_left_ = 0;
};

std::vector<std::string> split_csv_line(const std::string& line) {
  std::vector<std::string> out{""};
  for (char c : line) {
    if (c == ',') out.emplace_back();
    else if (c != '\r') out.back() += c;
  }
  return out;
}

class CsvLogger final : public Callback {
 public:
  explicit CsvLogger(std::string path) : path_(std::move(path)) {
    if (path_.empty()) throw std::invalid_argument("csv_logger: path is empty");
  }
  std::string name() const override { return "csv_logger"; }
  void attach(Trainer& trainer) override {
    trainer.on(Event::epoch_completed, [this](Trainer& t, LoopState& s) { write(t, s); });
    trainer.on(Event::epoch_halted, [this](Trainer& t, LoopState& s) { write(t, s); });
  }

 private:
  void write(Trainer& trainer, const LoopState& s) {
    if (!trainer.communicator().is_root()) return;
    if (columns_.empty()) {
      // A file from an earlier (resumed) run keeps its columns; else this epoch's metrics decide.
      std::ifstream existing(path_);
      std::string header;
      if (existing && std::getline(existing, header) && !header.empty()) {
        columns_ = split_csv_line(header);
      } else {
        columns_ = {"epoch", "global_step"};
        for (const auto& [k, v] : s.metrics) columns_.push_back(k);
        append(fmt::format("{}\n", fmt::join(columns_, ",")));
      }
    }
    std::vector<std::string> cells;
    for (const std::string& c : columns_) {
      if (c == "epoch") cells.push_back(std::to_string(s.epoch));
      else if (c == "global_step") cells.push_back(std::to_string(s.global_step));
      else if (auto it = s.metrics.find(c); it != s.metrics.end()) cells.push_back(fmt::format("{}", it->second));
      else cells.emplace_back();
    }
    append(fmt::format("{}\n", fmt::join(cells, ",")));
  }

  void append(const std::string& text) {
    std::error_code ec;
    if (fs::path(path_).has_parent_path()) fs::create_directories(fs::path(path_).parent_path(), ec);
    std::FILE* f = std::fopen(path_.c_str(), "a");
    if (!f) throw std::runtime_error(fmt::format("csv_logger: cannot open {}: {}", path_, std::strerror(errno)));
    const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
    const bool closed = std::fclose(f) == 0;
    if (!ok || !closed) throw std::runtime_error(fmt::format("csv_logger: cannot write {}: {}", path_, std::strerror(errno)));
  }

  std::string path_;
  std::vector<std::string> columns_;
};

// ---- TensorBoard: protocol buffers and TFRecord framing, by hand ----

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out += static_cast<char>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  out += static_cast<char>(v);
}
void put_key(std::string& out, int field, int wire_type) { put_varint(out, static_cast<uint64_t>(field) << 3 | static_cast<uint64_t>(wire_type)); }
template <class T>
void put_fixed(std::string& out, T v) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &v, sizeof(T));  // little-endian hosts (x86-64, aarch64)
  out.append(bytes, sizeof(T));
}
void put_bytes(std::string& out, int field, const std::string& bytes) {
  put_key(out, field, 2);
  put_varint(out, bytes.size());
  out += bytes;
}

// tensorflow.Event: wall_time = 1 (double), step = 2 (int64), file_version = 3 (string),
// summary = 5 (Summary); Summary: value = 1 (repeated Value); Value: tag = 1, simple_value = 2 (float).
std::string event(double wall_time, int64_t step, const std::string* file_version,
                  const std::vector<std::pair<std::string, float>>& scalars) {
  std::string e;
  put_key(e, 1, 1);
  put_fixed(e, wall_time);
  put_key(e, 2, 0);
  put_varint(e, static_cast<uint64_t>(step));
  if (file_version) put_bytes(e, 3, *file_version);
  if (!scalars.empty()) {
    std::string summary;
    for (const auto& [tag, value] : scalars) {
      std::string v;
      put_bytes(v, 1, tag);
      put_key(v, 2, 5);
      put_fixed(v, value);
      put_bytes(summary, 1, v);
    }
    put_bytes(e, 5, summary);
  }
  return e;
}

std::string tfrecord(const std::string& data) {
  std::string out;
  const uint64_t length = data.size();
  put_fixed(out, length);
  put_fixed(out, masked_crc32c(&length, sizeof length));
  out += data;
  put_fixed(out, masked_crc32c(data.data(), data.size()));
  return out;
}

double unix_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

class TensorBoardLogger final : public Callback {
 public:
  explicit TensorBoardLogger(std::string dir) : dir_(std::move(dir)) {
    if (dir_.empty()) throw std::invalid_argument("tensorboard_logger: dir is empty");
  }
  std::string name() const override { return "tensorboard_logger"; }
  void attach(Trainer& trainer) override {
    trainer.on(Event::epoch_completed, [this](Trainer& t, LoopState& s) { write(t, s, "epoch/", s.epoch); });
    trainer.on(Event::epoch_halted, [this](Trainer& t, LoopState& s) { write(t, s, "epoch/", s.epoch); });
    // Validation between epoch ends (TrainOptions::validate_every_steps), at the global step.
    if (trainer.options().validate_every_steps > 0)
      trainer.on(Event::iteration_completed, [this](Trainer& t, LoopState& s) {
        if (s.validated) write(t, s, "step/", s.global_step);
      });
  }

 private:
  void write(Trainer& trainer, const LoopState& s, const std::string& prefix, int64_t step) {
    if (!trainer.communicator().is_root()) return;
    if (path_.empty()) {
      std::error_code ec;
      fs::create_directories(dir_, ec);
      if (ec) throw std::runtime_error(fmt::format("tensorboard_logger: cannot create {}: {}", dir_, ec.message()));
      char host[256] = "localhost";
      gethostname(host, sizeof host - 1);
      path_ = (fs::path(dir_) / fmt::format("events.out.tfevents.{}.{}.{}.axon", static_cast<int64_t>(unix_seconds()),
                                            host, ::getpid()))
                  .string();
      const std::string version = "brain.Event:2";
      append(tfrecord(event(unix_seconds(), 0, &version, {})));
    }
    std::vector<std::pair<std::string, float>> scalars;
    for (const auto& [k, v] : s.metrics) scalars.emplace_back(prefix + k, static_cast<float>(v));
    append(tfrecord(event(unix_seconds(), step, nullptr, scalars)));
  }

  void append(const std::string& bytes) {
    std::FILE* f = std::fopen(path_.c_str(), "ab");
    if (!f) throw std::runtime_error(fmt::format("tensorboard_logger: cannot open {}: {}", path_, std::strerror(errno)));
    const bool ok = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
    const bool closed = std::fclose(f) == 0;
    if (!ok || !closed) throw std::runtime_error(fmt::format("tensorboard_logger: cannot write {}: {}", path_, std::strerror(errno)));
  }

  std::string dir_, path_;
};

}  // namespace

uint32_t crc32c(const void* data, size_t size) {
  // Table-driven, reflected polynomial 0x82F63B78 (RFC 3720 appendix B.4).
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t crc = 0xFFFFFFFFu;
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < size; ++i) crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return crc ^ 0xFFFFFFFFu;
}

uint32_t masked_crc32c(const void* data, size_t size) {
  const uint32_t crc = crc32c(data, size);
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

std::shared_ptr<Callback> early_stopping(EarlyStoppingOptions options) {
  return std::make_shared<EarlyStopping>(std::move(options));
}
std::shared_ptr<Callback> model_checkpoint(ModelCheckpointOptions options) {
  return std::make_shared<ModelCheckpoint>(std::move(options));
}
std::shared_ptr<Callback> reduce_lr_on_plateau(ReduceLROnPlateauOptions options) {
  return std::make_shared<ReduceLROnPlateau>(std::move(options));
}
std::shared_ptr<Callback> csv_logger(std::string path) { return std::make_shared<CsvLogger>(std::move(path)); }
std::shared_ptr<Callback> tensorboard_logger(std::string dir) {
  return std::make_shared<TensorBoardLogger>(std::move(dir));
}

}  // namespace axon
