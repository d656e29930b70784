// Model tools that need the optimizers or the file formats: an optimizer that skips frozen
// parameters, and saving/loading parameters and model state as safetensors files that Python
// (safetensors, PyTorch) reads. Hooks and capturing intermediate outputs: axon/hooks.h.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "axon/checkpoint.h"
#include "axon/model.h"
#include "axon/optimizers.h"

namespace axon {

// ---- freezing ----

// A parameter selector for Parameters::freeze/unfreeze: the parameters of these layers
// ("dense_2" selects "dense_2.kernel" and "dense_2.bias", never "dense_20.kernel"). Throws
// std::invalid_argument naming the layer when `params` has no parameter of one of them.
std::function<bool(const std::string&)> layers_named(const Parameters& params, std::vector<std::string> layers);

// An optimizer that steps only the parameters of `params` that are not frozen now (the marks are
// read here, once; the wrapper remembers which elements of the flat buffer are trainable). Each
// step gathers the trainable elements and their gradients into compact buffers, steps `inner`
// on them and writes the values back, so frozen values stay bit-identical and `inner`'s state
// (moments, ...) covers the trainable elements only: what PyTorch does for parameters with
// requires_grad=False, which its optimizers skip (norm-based optimizers see the trainable
// parameters only). name(), the learning rate and state() are inner's; config() adds the frozen
// names. Not element-wise (no ZeRO) and not capturable (no CUDA graph). The flat buffer stepped
// must have params' layout (std::invalid_argument naming both sizes otherwise).
std::unique_ptr<Optimizer> skip_frozen(const Parameters& params, std::unique_ptr<Optimizer> inner);
// The names skip_frozen() leaves alone when `optimizer` came from it, else empty; for the
// trainer, which refuses frozen parameters with an optimizer that would step them.
const std::vector<std::string>* skipped_parameters(const Optimizer& optimizer);

// ---- safetensors files ----

// Writes every parameter (by name, "dense_2.kernel", f32 or its dtype) and every model state
// entry ("batch_norm_3.mean") as one safetensors file, with metadata {"format": "axon",
// "axon.state": the model state entries' names, comma-separated, "axon.sha256": the SHA-256 of the tensors'
// bytes in file order}. Kernels keep Axon's layout: dense {in, out} (PyTorch's Linear.weight is
// its transpose), conv {k..., in/groups, out} channels last (PyTorch: permute to {out, in, k...}).
// Atomic: written to a temporary file beside `path`, fsynced, renamed over it and the folder
// fsynced, so a crash leaves the old file or the new one. Throws CheckpointError naming the file
// on an I/O error.
void save_parameters(const std::string& path, const Parameters& params);

// What load_parameters found, by name: in the model but not in the file, in the file but not in
// the model, and in both with another shape ("dense_2.kernel: file {3, 4}, model {3, 5}").
struct LoadReport {
  std::vector<std::string> missing, unexpected, mismatched;
  size_t loaded = 0;  // tensors copied
  bool clean() const { return missing.empty() && unexpected.empty() && mismatched.empty(); }
  std::string str() const;  // one line per kind, "missing (2): a, b"; "all N tensors loaded" when clean
};
struct LoadOptions {
  // Strict: any missing, unexpected or mismatched tensor is an error listing them all, and
  // nothing is loaded. Not strict: every tensor present in both with the same shape is loaded,
  // the others are left as they were, and the report says which.
  bool strict = true;
};
// Loads a file written by save_parameters (or any safetensors file of floating tensors named
// like the model's) into `params`, converting f64/bf16 values to params' dtype and device.
// Verifies the file first (read_safetensors' structure checks, then "axon.sha256" when present)
// and throws CheckpointError naming the file and the problem (truncated, altered, not
// safetensors); throws std::invalid_argument naming the file and listing the differences when
// strict and the names or shapes differ.
LoadReport load_parameters(const std::string& path, Parameters& params, LoadOptions options = {});
// The same into fresh parameters of `model` (init(model, seed 0) first, so what a non-strict load
// leaves out keeps its initial values). `report`, when given, receives the report.
Parameters load_parameters(const std::string& path, const Model& model, LoadOptions options = {},
                           LoadReport* report = nullptr);

}  // namespace axon
