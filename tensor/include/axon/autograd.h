// Reverse-mode autograd: how an operation records itself, and the no-grad switch.
//
// An operation computes its output eagerly, then calls record(output, inputs, backward). When grad
// mode is on and some input requires grad, a Node is attached to the output holding the inputs and
// the backward closure. Tensor::backward() walks the nodes in reverse topological order.
//
// Backward closures receive a GradSlots: for each input that needs a gradient, a slot that either is
// empty or already holds a partial gradient. Kernels may write their result straight into a slot
// (e.g. a GEMM with beta = 1), which keeps a parameter gradient in its flat buffer without copies.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "axon/tensor.h"

namespace axon {

// The gradient being accumulated for one tensor during a backward pass.
struct GradSlot {
  Tensor value;           // undefined while empty
  bool writable = false;  // true when `value` is ours alone and may be updated in place
};

class GradSlots {
 public:
  explicit GradSlots(std::vector<GradSlot*> slots) : slots_(std::move(slots)) {}

  size_t size() const { return slots_.size(); }
  // Whether input i needs a gradient at all (skip its computation otherwise).
  bool needs(size_t i) const { return slots_.at(i) != nullptr; }
  // Adds g to input i's gradient. g may alias other tensors; it is never written to.
  void add(size_t i, const Tensor& g);
  // Returns a tensor of `shape` (dtype and device from `options`) into which the caller writes
  // (beta == 0) or adds (beta == 1) its gradient for input i. Use for kernels that can accumulate
  // for free, such as GEMM.
  Tensor target(size_t i, const Shape& shape, TensorOptions options, float& beta);

 private:
  std::vector<GradSlot*> slots_;
};

using BackwardFn = std::function<void(const Tensor& grad_output, GradSlots& grads)>;

struct Node {
  const char* name;                  // the op, for error messages ("matmul", "relu", ...)
  std::vector<Tensor> inputs;        // edges to the tensors this output was computed from
  BackwardFn backward;

  Node() = default;
  // Tears a long chain of nodes down iteratively: the default, recursive destruction would
  // overflow the stack for a graph never run backward (say a running loss summed over steps).
  ~Node();
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;
};

// Attaches the autograd node to `output` when grad mode is on and any input requires grad.
// Returns `output` for convenience.
Tensor record(const char* op_name, Tensor output, std::vector<Tensor> inputs, BackwardFn backward);

bool grad_enabled();

// While alive, operations are not recorded (evaluation, optimizer updates).
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

}  // namespace axon
