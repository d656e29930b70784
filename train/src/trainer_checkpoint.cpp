// Trainer::save_checkpoint and Trainer::load_checkpoint: what a checkpoint holds about the run,
// and how a resumed fit() continues it exactly (axon/checkpoint.h has the files and their checks).
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <map>
#include <set>
#include <stdexcept>

#include "axon/checkpoint.h"
#include "axon/trainer.h"

#ifndef AXON_VERSION
#define AXON_VERSION "unknown"
#endif

namespace axon {

namespace {

constexpr const char* kModelFile = "model.safetensors";
constexpr const char* kOptimizerFile = "optimizer.safetensors";

// "optimizer-rank-00001-of-00004.safetensors": rank 1's ZeRO shard of the optimizer state.
std::string shard_file_name(size_t rank, size_t world) {
  return fmt::format("optimizer-rank-{:05d}-of-{:05d}.safetensors", rank, world);
}

nlohmann::json epoch_to_json(const EpochResult& e) {
  nlohmann::json j = {{"epoch", e.epoch},
                      {"train_loss", e.train_loss},
                      {"train_accuracy", e.train_accuracy},
                      {"train_seconds", e.train_seconds},
                      {"train_samples", e.train_samples},
                      {"test_samples", e.test.samples}};
  if (e.test.loss) j["test_loss"] = *e.test.loss;
  if (e.test.accuracy) j["test_accuracy"] = *e.test.accuracy;
  return j;
}

EpochResult epoch_from_json(const nlohmann::json& j) {
  EpochResult e;
  e.epoch = j.at("epoch").get<int>();
  e.train_loss = j.at("train_loss").get<double>();
  e.train_accuracy = j.at("train_accuracy").get<double>();
  e.train_seconds = j.at("train_seconds").get<double>();
  e.train_samples = j.at("train_samples").get<int64_t>();
  e.test.samples = j.at("test_samples").get<int64_t>();
  if (j.contains("test_loss")) e.test.loss = j["test_loss"].get<double>();
  if (j.contains("test_accuracy")) e.test.accuracy = j["test_accuracy"].get<double>();
  return e;
}

}  // namespace

std::string Trainer::save_checkpoint(const std::string& dir) {
  const int64_t step = optimizer_.steps();
  const std::string path = (std::filesystem::path(dir) / checkpoint_name(step)).string();
  const size_t world = static_cast<size_t>(comm_.size()), rank = static_cast<size_t>(comm_.rank());
  // The position: inside fit() the epoch in progress and its steps done; else where a resumed
  // fit() would start, or after the epochs trained so far.
  int epoch = static_cast<int>(history_.size());
  int64_t step_in_epoch = 0;
  double loss_sum = 0.0, correct = 0.0, samples = 0.0;
  if (live_epoch_ >= 0) {
    epoch = live_epoch_;
    step_in_epoch = live_steps_done_;
    samples = live_samples_;
    if (live_loss_sum_) {
      loss_sum = live_loss_sum_->item_double();
      correct = live_correct_->item_double();
    }
    if (live_loss_sum_ && options_.grad_accum > 1 && step_in_epoch % options_.grad_accum != 0 &&
        step_in_epoch != live_steps_per_epoch_)
      throw std::logic_error(fmt::format(
          "trainer: save_checkpoint at step {} of epoch {}, inside a gradient-accumulation group of {} batches (the "
          "accumulated gradient is not saved); save at a multiple of {} steps",
          step_in_epoch, epoch + 1, options_.grad_accum, options_.grad_accum));
  } else if (resumed_) {
    epoch = start_epoch_;
    step_in_epoch = start_step_;
    loss_sum = start_loss_sum_;
    correct = start_correct_;
    samples = start_samples_;
  }
  sync_state();  // every rank saves (and rank 0 writes) the ranks' average running statistics
  // Each rank's own partial epoch sums, gathered to rank 0 through one sum-reduction.
  std::vector<double> partial(3 * world, 0.0);
  partial[3 * rank] = loss_sum;
  partial[3 * rank + 1] = correct;
  partial[3 * rank + 2] = samples;
  comm_.allreduce(partial, ReduceOp::sum);

  // With ZeRO each rank holds a shard of the optimizer state and writes it to a file of its own
  // inside rank 0's temporary directory, so that no rank ever holds the whole state; meta.json's
  // manifest lets any world size load it (re-sharded on load).
  const std::string name = checkpoint_name(step);
  std::string tmp;
  std::vector<std::string> shard_files;
  nlohmann::json shard_manifest;
  if (zero_) {
    std::vector<double> created{0.0, 0.0};  // rank 0's pid, whether it failed
    std::string create_error;
    if (comm_.is_root()) {
      try {
        tmp = begin_checkpoint(dir, name);
        created[0] = static_cast<double>(::getpid());
      } catch (const std::exception& e) {
        create_error = e.what();
        created[1] = 1.0;
      }
    }
    comm_.allreduce(created, ReduceOp::sum);
    if (created[1] != 0.0)
      throw CheckpointError(comm_.is_root() ? create_error
                                            : fmt::format("trainer: rank 0 could not start checkpoint {} (rank 0's "
                                                          "message says why)", path));
    tmp = checkpoint_temp_path(dir, name, static_cast<int64_t>(created[0]));
    NamedTensors shard;
    for (const auto& [state_name, tensor] : optimizer_.state())
      if (tensor->defined()) shard.emplace_back(state_name, *tensor);
    std::vector<double> failed(world, 0.0);
    std::string write_error;
    if (!shard.empty()) {
      try {
        write_safetensors((std::filesystem::path(tmp) / shard_file_name(rank, world)).string(), shard);
      } catch (const std::exception& e) {
        write_error = fmt::format("rank {}: {}", rank, e.what());
        failed[rank] = 1.0;
      }
    }
    comm_.allreduce(failed, ReduceOp::sum);
    std::string failed_ranks;
    for (size_t r = 0; r < world; ++r)
      if (failed[r] != 0.0) failed_ranks += (failed_ranks.empty() ? "" : ", ") + std::to_string(r);
    if (!failed_ranks.empty()) {
      if (comm_.is_root()) abort_checkpoint(tmp);
      throw CheckpointError(!write_error.empty() ? write_error
                                                 : fmt::format("trainer: rank(s) {} could not write their optimizer "
                                                               "shard of checkpoint {} (their messages say why)",
                                                               failed_ranks, path));
    }
    if (!shard.empty()) {
      nlohmann::json entries = nlohmann::json::array();
      for (size_t r = 0; r < world; ++r) {
        shard_files.push_back(shard_file_name(r, world));
        entries.push_back({{"file", shard_files.back()},
                           {"rank", r},
                           {"offset", zero_->shard_size() * r},
                           {"length", zero_->shard_size()}});
      }
      shard_manifest = {{"world_size", world},
                        {"parameter_count", params_.count()},
                        {"shard_size", zero_->shard_size()},
                        {"files", entries}};
    }
  }

  std::string error;
  if (comm_.is_root()) {
    try {
      nlohmann::json meta;
      meta["axon_version"] = AXON_VERSION;
      meta["global_step"] = step;
      meta["epoch"] = epoch;
      meta["step_in_epoch"] = step_in_epoch;
      nlohmann::json ranks = nlohmann::json::array();
      for (size_t r = 0; r < world; ++r)
        ranks.push_back({{"loss_sum", partial[3 * r]}, {"correct", partial[3 * r + 1]}, {"samples", partial[3 * r + 2]}});
      meta["epoch_partial_sums"] = ranks;
      meta["world_size"] = world;
      meta["batch_size"] = options_.batch_size;
      meta["seed"] = options_.seed;
      meta["shuffle"] = options_.shuffle;
      meta["drop_last"] = options_.drop_last;
      meta["grad_accum"] = options_.grad_accum;
      meta["zero_stage"] = options_.zero_stage;  // informative: any stage (or none) loads it
      if (!shard_manifest.is_null()) meta["optimizer_shards"] = shard_manifest;
      meta["epochs_planned"] = options_.epochs;
      meta["halted"] = state_.halt && state_.preempted == 0;
      meta["train_dataset"] = {{"count", train_count_}, {"label_checksum", fmt::format("{:016x}", train_checksum_)}};
      meta["model_fingerprint"] = fmt::format("{:016x}", layout_fingerprint(params_));
      meta["parameter_count"] = params_.count();
      meta["frozen_parameters"] = params_.frozen_names();
      meta["optimizer"] = {{"name", optimizer_.name()},
                           {"config", optimizer_.config()},
                           {"lr", optimizer_.learning_rate()},
                           {"steps", optimizer_.steps()}};
      nlohmann::json history = nlohmann::json::array();
      for (const EpochResult& e : history_) history.push_back(epoch_to_json(e));
      meta["history"] = history;
      nlohmann::json callbacks = pending_callback_state_;
      for (const auto& c : callbacks_) callbacks[c->name()] = c->state();
      meta["callbacks"] = callbacks;
      std::map<std::string, NamedTensors> files;
      NamedTensors& model = files[kModelFile];
      for (const auto& entry : params_.entries()) model.emplace_back(entry.name, entry.value);
      for (const auto& entry : params_.state_entries()) model.emplace_back(entry.name, entry.value);  // model state
      if (!zero_) {
        NamedTensors opt;
        for (const auto& [state_name, tensor] : optimizer_.state())
          if (tensor->defined()) opt.emplace_back(state_name, *tensor);
        if (!opt.empty()) files[kOptimizerFile] = std::move(opt);
        write_checkpoint(dir, name, files, meta);
      } else {
        commit_checkpoint(dir, name, tmp, files, shard_files, meta);
      }
    } catch (const std::exception& e) {
      error = e.what();
      if (zero_) abort_checkpoint(tmp);
    }
  }
  // Every rank learns whether rank 0 succeeded, so a failed write stops all ranks alike.
  std::vector<double> failed{error.empty() ? 0.0 : 1.0};
  comm_.allreduce(failed, ReduceOp::max);
  if (failed[0] != 0.0)
    throw CheckpointError(comm_.is_root() ? error
                                          : fmt::format("trainer: rank 0 could not write checkpoint {} (rank 0's "
                                                        "message says why)",
                                                        path));
  return path;
}

std::string Trainer::load_checkpoint(const std::string& path) {
  // Each rank verifies and applies on its own; then one all-reduce tells every rank whether all
  // succeeded and loaded the same step, before any collective of training could hang on a rank
  // that threw (or that fell back to an older checkpoint because a file only it reads is bad).
  std::string error, loaded;
  int64_t step = -1;
  std::exception_ptr failure;
  try {
    loaded = load_checkpoint_here(path, step);
  } catch (const std::exception& e) {
    error = e.what();
    failure = std::current_exception();
  }
  std::vector<double> verdict{error.empty() ? 0.0 : 1.0, static_cast<double>(step), -static_cast<double>(step)};
  comm_.allreduce(verdict, ReduceOp::max);
  if (failure) std::rethrow_exception(failure);
  if (verdict[0] != 0.0)
    throw CheckpointError(fmt::format("trainer: rank {} loaded checkpoint {}, but another rank could not load {} "
                                      "(its message says why)", comm_.rank(), loaded, path));
  if (verdict[1] != -verdict[2])
    throw CheckpointError(fmt::format("trainer: the ranks loaded different checkpoints from {} (global steps {} to {}; "
                                      "this rank: {}): a checkpoint file differs between the ranks' views",
                                      path, -verdict[2], verdict[1], loaded));
  return loaded;
}

std::string Trainer::load_checkpoint_here(const std::string& path, int64_t& global_step) {
  // The part of the flat optimizer state this rank steps: all of it, or (ZeRO) its shard. With
  // frozen parameters (skip_frozen; never with ZeRO) the state covers the trainable ones only.
  size_t n = params_.count();
  for (size_t i = 0; i < params_.entries().size(); ++i)
    if (params_.frozen(i)) n -= static_cast<size_t>(params_.entries()[i].value.numel());
  const size_t need_begin = zero_ ? zero_->shard_offset() : 0;
  const size_t need_count = zero_ ? zero_->shard_size() : n;
  const size_t need_end = std::min(n, need_begin + need_count);
  // Of a ZeRO checkpoint's per-rank shard files, only those overlapping that part are parsed.
  auto wanted = [&](const std::string& file, const nlohmann::json& meta) {
    if (file.rfind("optimizer-rank-", 0) != 0) return true;
    try {
      for (const auto& e : meta.at("optimizer_shards").at("files"))
        if (e.at("file") == file) {
          const size_t offset = e.at("offset").get<size_t>(), length = e.at("length").get<size_t>();
          return offset < need_end && need_begin < offset + length;
        }
    } catch (const nlohmann::json::exception&) {
    }
    return true;  // not in a readable manifest: parsed, and the checks below name the problem
  };
  std::vector<std::string> skipped;
  const LoadedCheckpoint ck = find_checkpoint(path, &skipped, wanted);
  if (comm_.is_root())
    for (const std::string& why : skipped) std::fprintf(stderr, "axon: skipped an invalid checkpoint: %s\n", why.c_str());
  const nlohmann::json& meta = ck.meta;
  auto fail = [&](const std::string& what) {
    return std::invalid_argument(fmt::format("trainer: cannot resume from checkpoint {}: {}", ck.path, what));
  };
  try {
    const std::string fingerprint = fmt::format("{:016x}", layout_fingerprint(params_));
    if (meta.at("model_fingerprint").get<std::string>() != fingerprint)
      throw fail(fmt::format("it is for another model (parameter layout {} there, {} here)",
                             meta.at("model_fingerprint").get<std::string>(), fingerprint));
    const nlohmann::json& opt = meta.at("optimizer");
    if (opt.at("name").get<std::string>() != optimizer_.name())
      throw fail(fmt::format("it was written by optimizer {}, this run uses {}", opt.at("name").get<std::string>(),
                             optimizer_.name()));
    const int64_t step_in_epoch = meta.at("step_in_epoch").get<int64_t>();
    const size_t world = static_cast<size_t>(comm_.size());
    if (step_in_epoch > 0) {
      // Mid-epoch, the rest of the epoch's sample order depends on these.
      std::vector<std::string> differ;
      auto same = [&](const char* key, const auto& here) {
        if (meta.at(key) != nlohmann::json(here)) differ.push_back(fmt::format("{} {} there, {} here", key, meta.at(key).dump(), nlohmann::json(here).dump()));
      };
      same("world_size", world);
      same("batch_size", options_.batch_size);
      same("seed", options_.seed);
      same("shuffle", options_.shuffle);
      same("drop_last", options_.drop_last);
      same("grad_accum", options_.grad_accum);
      if (!differ.empty()) {
        std::string text;
        for (const std::string& d : differ) text += (text.empty() ? "" : "; ") + d;
        throw fail(fmt::format("it was saved in the middle of an epoch (step {}), whose remaining batches depend on "
                               "settings that differ: {}",
                               step_in_epoch, text));
      }
    }

    // Parameters, by name and shape.
    const auto model = ck.files.find(kModelFile);
    if (model == ck.files.end()) throw fail(fmt::format("it has no {}", kModelFile));
    std::map<std::string, const Tensor*> saved;
    for (const auto& [name, tensor] : model->second) saved[name] = &tensor;
    for (const auto& entry : params_.entries()) {
      const auto it = saved.find(entry.name);
      if (it == saved.end()) throw fail(fmt::format("{} has no parameter '{}'", kModelFile, entry.name));
      if (it->second->shape() != entry.value.shape() || it->second->dtype() != DType::f32)
        throw fail(fmt::format("parameter '{}' is {} {} there, {} f32 here", entry.name, shape_str(it->second->shape()),
                               dtype_name(it->second->dtype()), shape_str(entry.value.shape())));
    }
    // Model state (batch_norm's running statistics), by name and shape, in the same file.
    for (const auto& entry : params_.state_entries()) {
      const auto it = saved.find(entry.name);
      if (it == saved.end()) throw fail(fmt::format("{} has no model state '{}'", kModelFile, entry.name));
      if (it->second->shape() != entry.value.shape() || it->second->dtype() != entry.value.dtype())
        throw fail(fmt::format("model state '{}' is {} {} there, {} {} here", entry.name, shape_str(it->second->shape()),
                               dtype_name(it->second->dtype()), shape_str(entry.value.shape()),
                               dtype_name(entry.value.dtype())));
    }
    // Frozen parameters decide the optimizer state's layout (the trainable ones, packed).
    const nlohmann::json frozen_here = params_.frozen_names();
    const nlohmann::json frozen_there = meta.value("frozen_parameters", nlohmann::json::array());
    if (frozen_there != frozen_here)
      throw fail(fmt::format("it was saved with frozen parameters {}, this run freezes {}", frozen_there.dump(),
                             frozen_here.dump()));
    // Optimizer state: whole buffers (optimizer.safetensors) or ZeRO shards (per-rank files and
    // meta.json's "optimizer_shards" manifest), cut to this rank's part [need_begin, need_end),
    // zero-padded to need_count, whatever the world size that wrote them.
    auto copy_range = [](const Tensor& src, size_t src_offset, Tensor& dst, size_t dst_offset, size_t count) {
      Tensor::view_of(dst.storage(), dst.offset() + dst_offset, {static_cast<int64_t>(count)}, dst.dtype())
          .copy_from(Tensor::view_of(src.storage(), src.offset() + src_offset, {static_cast<int64_t>(count)}, src.dtype()));
    };
    auto unsigned_field = [&](const nlohmann::json& j, const char* key) {
      if (!j.contains(key) || !j[key].is_number_unsigned())
        throw fail(fmt::format("optimizer_shards entry {} has no valid \"{}\"", j.dump(), key));
      return j[key].get<size_t>();
    };
    std::map<std::string, const Tensor*> whole_state;
    if (const auto o = ck.files.find(kOptimizerFile); o != ck.files.end())
      for (const auto& [name, tensor] : o->second) whole_state[name] = &tensor;
    struct ShardFile {
      std::string file;
      size_t offset, length;
    };
    std::vector<ShardFile> shards;
    if (meta.contains("optimizer_shards")) {
      const nlohmann::json& manifest = meta.at("optimizer_shards");
      if (unsigned_field(manifest, "parameter_count") != n)
        throw fail(fmt::format("its optimizer shards hold the state of {} parameters, this model has {}",
                               manifest["parameter_count"].get<size_t>(), n));
      size_t covered = 0;  // the files must tile [0, n) in order, one per rank, as ZeroSharding wrote them
      std::set<std::string> seen;
      for (const auto& e : manifest.at("files")) {
        ShardFile f{e.at("file").get<std::string>(), unsigned_field(e, "offset"), unsigned_field(e, "length")};
        if (f.offset != covered || f.length > (size_t{1} << 50))
          throw fail(fmt::format("optimizer shard {} starts at element {}, expected {}", f.file, f.offset, covered));
        if (!seen.insert(f.file).second || unsigned_field(e, "rank") != shards.size())
          throw fail(fmt::format("optimizer_shards lists {} twice or out of rank order", f.file));
        if (!meta.at("files").contains(f.file))
          throw fail(fmt::format("optimizer shard {} is not among the files meta.json verifies", f.file));
        covered += f.length;
        shards.push_back(std::move(f));
      }
      if (covered < n) throw fail(fmt::format("its optimizer shards cover {} of {} elements", covered, n));
    }
    std::map<std::string, Tensor> loaded_state;
    for (const auto& [name, tensor] : optimizer_.state()) {
      (void)tensor;
      Tensor part = Tensor::zeros({static_cast<int64_t>(need_count)}, TensorOptions{DType::f32, Device::cpu()});
      if (const auto it = whole_state.find(name); it != whole_state.end()) {
        if (it->second->numel() != static_cast<int64_t>(n) || it->second->dtype() != DType::f32)
          throw fail(fmt::format("optimizer state '{}' holds {} {} values for {} parameters", name, it->second->numel(),
                                 dtype_name(it->second->dtype()), n));
        if (need_end > need_begin) copy_range(*it->second, need_begin, part, 0, need_end - need_begin);
      } else if (!shards.empty()) {
        for (const ShardFile& f : shards) {
          const size_t begin = std::max(f.offset, need_begin), end = std::min(f.offset + f.length, need_end);
          if (begin >= end) continue;
          const auto file = ck.files.find(f.file);
          const Tensor* found = nullptr;
          if (file != ck.files.end())
            for (const auto& [tensor_name, t] : file->second)
              if (tensor_name == name) found = &t;
          if (!found) throw fail(fmt::format("optimizer shard {} has no state '{}'", f.file, name));
          if (found->numel() != static_cast<int64_t>(f.length) || found->dtype() != DType::f32)
            throw fail(fmt::format("optimizer state '{}' in {} holds {} {} values, its manifest entry says {}", name,
                                   f.file, found->numel(), dtype_name(found->dtype()), f.length));
          copy_range(*found, begin - f.offset, part, begin - need_begin, end - begin);
        }
      } else {
        continue;  // not saved (no step taken yet: checked below)
      }
      loaded_state[name] = part;
    }
    const nlohmann::json& sums = meta.at("epoch_partial_sums");
    if (step_in_epoch > 0 && sums.size() != world)
      throw fail(fmt::format("it holds partial sums of {} ranks, this job has {}", sums.size(), world));
    // The position and counters must be consistent with each other before anything is applied.
    const int64_t epoch = meta.at("epoch").get<int64_t>();
    const int64_t steps = opt.at("steps").get<int64_t>();
    const double lr = opt.at("lr").get<double>();
    if (step_in_epoch < 0) throw fail(fmt::format("step_in_epoch is {}", step_in_epoch));
    if (epoch < 0 || epoch != static_cast<int64_t>(meta.at("history").size()))
      throw fail(fmt::format("epoch {} does not follow its history of {} epochs", epoch, meta.at("history").size()));
    if (steps < 0 || steps != meta.at("global_step").get<int64_t>())
      throw fail(fmt::format("optimizer steps {} and global_step {} differ", steps, meta.at("global_step").get<int64_t>()));
    if (!(lr >= 0.0) || !std::isfinite(lr)) throw fail(fmt::format("learning rate {}", lr));
    for (const auto& rank_sums : sums) {
      const double samples = rank_sums.at("samples").get<double>();
      if (!(samples >= 0.0) || !std::isfinite(rank_sums.at("loss_sum").get<double>()) ||
          !(rank_sums.at("correct").get<double>() >= 0.0) || rank_sums.at("correct").get<double>() > samples)
        throw fail(fmt::format("epoch_partial_sums entry {} is inconsistent", rank_sums.dump()));
    }
    if (steps > 0)
      for (const auto& [name, tensor] : optimizer_.state())
        if (!loaded_state.count(name))
          throw fail(fmt::format("it has no optimizer state '{}' although {} steps were taken", name, steps));

    // Everything checked: apply.
    for (const auto& entry : params_.entries()) {
      Tensor dst = entry.value;
      dst.copy_from(saved.at(entry.name)->to(dst.device()));
    }
    for (const auto& entry : params_.state_entries()) {
      Tensor dst = entry.value;
      dst.copy_from(saved.at(entry.name)->to(dst.device()));
    }
    for (const auto& [name, tensor] : optimizer_.state()) {
      const auto it = loaded_state.find(name);
      *tensor = it == loaded_state.end() ? Tensor() : it->second.to(params_.device());
    }
    optimizer_.set_learning_rate(lr);
    optimizer_.set_steps(steps);
    history_.clear();
    state_.history.clear();
    for (const auto& e : meta.at("history")) history_.push_back(epoch_from_json(e));
    for (const EpochResult& e : history_) {
      std::map<std::string, double> m{{"train_loss", e.train_loss}, {"train_accuracy", e.train_accuracy},
                                      {"epoch_seconds", e.train_seconds}};
      if (e.test.loss) m["validation_loss"] = *e.test.loss;
      if (e.test.accuracy) m["validation_accuracy"] = *e.test.accuracy;
      state_.history.push_back(m);
    }
    start_epoch_ = static_cast<int>(epoch);
    resume_halted_ = meta.value("halted", false);
    resume_needs_same_data_ = step_in_epoch > 0 && meta.contains("train_dataset");
    if (resume_needs_same_data_) {
      resume_train_count_ = meta["train_dataset"].at("count").get<uint64_t>();
      resume_train_checksum_ = std::stoull(meta["train_dataset"].at("label_checksum").get<std::string>(), nullptr, 16);
    }
    start_step_ = step_in_epoch;
    const size_t rank = static_cast<size_t>(comm_.rank());
    const nlohmann::json mine = rank < sums.size() ? sums[rank] : nlohmann::json{{"loss_sum", 0.0}, {"correct", 0.0}, {"samples", 0.0}};
    start_loss_sum_ = mine.at("loss_sum").get<double>();
    start_correct_ = mine.at("correct").get<double>();
    start_samples_ = mine.at("samples").get<double>();
    pending_callback_state_ = nlohmann::json::object();
    const nlohmann::json& callbacks = meta.at("callbacks");
    for (const auto& [name, value] : callbacks.items()) pending_callback_state_[name] = value;
    for (const auto& c : callbacks_) {
      if (pending_callback_state_.contains(c->name())) {
        c->load_state(pending_callback_state_[c->name()]);
        pending_callback_state_.erase(c->name());
      }
    }
    state_.global_step = optimizer_.steps();
    global_step = state_.global_step;
    resumed_ = true;
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError(fmt::format("checkpoint {}: meta.json lacks a field or has one of the wrong type ({})",
                                      ck.path, e.what()));
  } catch (const std::out_of_range& e) {
    throw CheckpointError(fmt::format("checkpoint {}: meta.json has a value out of range ({})", ck.path, e.what()));
  }
  return ck.path;
}

}  // namespace axon
