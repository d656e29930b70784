// Checkpoints: tensors in safetensors files, the rest in JSON, one directory per checkpoint,
// written atomically and verified on load.
//
// Layout of a checkpoint directory (e.g. checkpoints/step-000000469/):
//   model.safetensors      the parameters (f32 master weights) and the model state (batch_norm's
//                          running statistics, averaged over the ranks), by name
//   optimizer.safetensors  the optimizer's state buffers (exp_avg, ...), when it has any
//   optimizer-rank-00001-of-00004.safetensors
//                          with ZeRO instead: each rank's shard of those buffers, written by that
//                          rank; meta.json's "optimizer_shards" manifest gives each file's rank,
//                          offset and length in the flat buffer, so a checkpoint written at one
//                          world size loads at another (re-sharded on load)
//   meta.json              format and version, the trainer's position (epoch, step, partial epoch
//                          sums), metric history, callback state, model-structure hash, the training
//                          set's size and label checksum, world size, library version, optimizer
//                          config and step count, and for each tensor file its size and SHA-256
//                          (random draws need no saved state: they are seeded per batch)
//
// Writing: everything goes to a hidden temporary directory beside the target, each file is
// fsynced, the directory is fsynced, renamed to its final name, and the parent fsynced: a process
// killed at any point leaves either the complete checkpoint or none (plus a ".tmp-" directory
// that loading ignores and the next save removes). Loading checks meta.json, then each file's size
// and SHA-256, then each safetensors header, and refuses the checkpoint with a CheckpointError
// naming the file and the failed check.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "axon/tensor.h"

namespace axon {

// A checkpoint or safetensors file that cannot be written or read; the message names the file
// and what failed (the size, the checksum, the header, a tensor's dtype or shape, the disk).
class CheckpointError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// Writes `tensors` (any device: copied to the host; dtypes f32, f64, bf16, i32, i64) as a
// safetensors file (https://huggingface.co/docs/safetensors: an 8-byte little-endian header
// length, a JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {...}}, the data).
// Writes `path` itself and fsyncs it (callers wanting atomicity write to a temporary name).
// Throws CheckpointError naming the file on an I/O error (a full disk, a file size limit), and
// std::invalid_argument for duplicate or empty names.
void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata = {});
// Reads a safetensors file into CPU tensors, in file order. Throws CheckpointError naming the
// file for: a file shorter than its header, a header length beyond the file, a header that is
// not JSON or not an object, an unknown dtype, a shape whose size does not match its byte range,
// byte ranges that overlap, leave gaps or run past the end.
NamedTensors read_safetensors(const std::string& path, std::map<std::string, std::string>* metadata = nullptr);

// Writes a checkpoint directory `dir`/`name` atomically (see above). `files` maps file names
// (e.g. "model.safetensors") to their tensors; `meta` becomes meta.json, with "format",
// "format_version" and "files" (sizes and SHA-256) added. An existing checkpoint of that name is
// replaced atomically once the new one is complete (the two directories swap names with
// renameat2(RENAME_EXCHANGE)). Throws CheckpointError naming the directory or
// file on any I/O error; an earlier checkpoint is never touched by a failed save.
void write_checkpoint(const std::string& dir, const std::string& name, const std::map<std::string, NamedTensors>& files,
                      const nlohmann::json& meta);

// A checkpoint written by several processes (ZeRO: each rank writes its own shard of the
// optimizer state, so that no rank ever holds the whole of it), in three steps:
//   1. rank 0: tmp = begin_checkpoint(dir, name), which creates the temporary directory
//      (checkpoint_temp_path(dir, name, rank 0's pid)) after removing dead writers' leftovers;
//   2. every rank writes its files into tmp (write_safetensors fsyncs them);
//   3. rank 0: commit_checkpoint(...) writes its own `files`, hashes the `written_files` the
//      others wrote (which must be visible to it: the directory must be shared), writes meta.json
//      and renames tmp to `name` atomically, as write_checkpoint does. abort_checkpoint(tmp)
//      removes a save that failed on some rank.
// Each throws CheckpointError naming the directory or file.
std::string checkpoint_temp_path(const std::string& dir, const std::string& name, int64_t writer_pid);
std::string begin_checkpoint(const std::string& dir, const std::string& name);
void commit_checkpoint(const std::string& dir, const std::string& name, const std::string& tmp_dir,
                       const std::map<std::string, NamedTensors>& files, const std::vector<std::string>& written_files,
                       const nlohmann::json& meta);
void abort_checkpoint(const std::string& tmp_dir);

struct LoadedCheckpoint {
  std::string path;                             // the checkpoint directory
  nlohmann::json meta;                          // meta.json
  std::map<std::string, NamedTensors> files;    // every tensor file, verified
};
// Which tensor files to parse into LoadedCheckpoint::files, given the file name and meta.json
// (every file is verified by size and SHA-256 either way); empty: all of them.
using FileFilter = std::function<bool(const std::string& file, const nlohmann::json& meta)>;
// Loads and verifies the checkpoint directory `path` (one holding meta.json). Throws
// CheckpointError naming the file and the failed check.
LoadedCheckpoint read_checkpoint(const std::string& path, const FileFilter& parse = {});

// The checkpoint to resume from: `path` itself when it holds a meta.json, else the newest valid
// "step-*" checkpoint inside it (newest by step number). Newer checkpoints that fail verification
// are skipped, each named with its reason in `skipped` (when given). Throws CheckpointError when
// `path` does not exist or holds no valid checkpoint (naming each one tried and why).
LoadedCheckpoint find_checkpoint(const std::string& path, std::vector<std::string>* skipped = nullptr,
                                 const FileFilter& parse = {});

// "step-000000123": the directory name of the checkpoint after global step `step` (zero-padded so
// that names sort like the steps).
std::string checkpoint_name(int64_t step);
// The "step-*" checkpoints in `dir`, oldest first (by step); none when dir does not exist.
std::vector<std::string> list_checkpoints(const std::string& dir);

// Lowercase hex SHA-256 of a byte range.
std::string sha256_hex(const void* data, size_t size);

}  // namespace axon
