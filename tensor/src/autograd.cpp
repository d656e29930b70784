// The backward engine: a topological walk over the recorded nodes.
#include "axon/autograd.h"

#include "axon/backend.h"

#include <fmt/format.h>

#include <algorithm>
#include <stdexcept>
#include <unordered_map>
#include <unordered_set>

namespace axon {

namespace {
thread_local bool g_grad_enabled = true;

void check_grad_shape(const char* op, const Shape& expected, const Shape& got) {
  if (expected != got)
    throw std::logic_error(fmt::format("autograd: backward of '{}' produced a gradient of shape {} for an input of shape {}",
                                       op, shape_str(got), shape_str(expected)));
}

Tensor copy_of(const Tensor& t) {
  Tensor out = Tensor::empty(t.shape(), t.options());
  copy_bytes(t.device(), out.raw_data(), t.device(), t.raw_data(), t.nbytes());
  return out;
}

// dst += src, on their device (the same shape, dtype and device).
void accumulate(Tensor& dst, const Tensor& src, const char* what) {
  if (dst.device() != src.device() || dst.dtype() != src.dtype())
    throw std::logic_error(fmt::format("autograd: {}: a gradient of {} on {} added to one of {} on {}", what,
                                       dtype_name(src.dtype()), src.device().str(), dtype_name(dst.dtype()),
                                       dst.device().str()));
  if (dst.numel() > 0) backend(dst.device()).binary(BinaryOp::add, dst, src, dst);
}
}  // namespace

bool grad_enabled() { return g_grad_enabled; }

NoGradGuard::NoGradGuard() : previous_(g_grad_enabled) { g_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { g_grad_enabled = previous_; }

// ---- GradSlots ----

// Each slot remembers the shape its gradient must have and the op writing to it (for errors).
struct SlotInfo {
  GradSlot slot;
  Shape shape;
};

void GradSlots::add(size_t i, const Tensor& g) {
  GradSlot* slot = slots_.at(i);
  if (!slot) return;
  if (!slot->value.defined()) {
    slot->value = g;
    slot->writable = false;
    return;
  }
  if (slot->value.shape() != g.shape())
    throw std::logic_error(fmt::format("autograd: adding a gradient of shape {} to one of shape {}",
                                       shape_str(g.shape()), shape_str(slot->value.shape())));
  if (!slot->writable) {
    slot->value = copy_of(slot->value);
    slot->writable = true;
  }
  accumulate(slot->value, g, "gradient accumulation");
}

Tensor GradSlots::target(size_t i, const Shape& shape, TensorOptions options, float& beta) {
  GradSlot* slot = slots_.at(i);
  if (!slot) throw std::logic_error("autograd: target() for an input that needs no gradient");
  if (!slot->value.defined()) {
    slot->value = Tensor::empty(shape, options);
    slot->writable = true;
    beta = 0.0f;
    return slot->value;
  }
  if (slot->value.shape() != shape)
    throw std::logic_error(fmt::format("autograd: gradient target of shape {} for one of shape {}", shape_str(shape),
                                       shape_str(slot->value.shape())));
  if (!slot->writable) {
    slot->value = copy_of(slot->value);
    slot->writable = true;
  }
  beta = 1.0f;
  return slot->value;
}

// ---- nodes ----

Node::~Node() {
  std::vector<std::shared_ptr<Node>> orphans;
  // Takes the nodes that would die with these inputs, so they die here, one at a time.
  auto release = [&orphans](Node& node) {
    node.backward = nullptr;  // the closure may hold the inputs too
    for (Tensor& input : node.inputs) {
      TensorImpl* impl = input.impl();
      if (impl && impl->grad_fn && input.impl_ptr().use_count() == 1 && impl->grad_fn.use_count() == 1)
        orphans.push_back(std::move(impl->grad_fn));
    }
    node.inputs.clear();
  };
  release(*this);
  while (!orphans.empty()) {
    std::shared_ptr<Node> node = std::move(orphans.back());
    orphans.pop_back();
    release(*node);
  }  // `node` is destroyed here with nothing left to free recursively
}

// ---- recording ----

Tensor record(const char* op_name, Tensor output, std::vector<Tensor> inputs, BackwardFn backward) {
  if (!g_grad_enabled) return output;
  bool any = std::any_of(inputs.begin(), inputs.end(), [](const Tensor& t) { return t.defined() && t.requires_grad(); });
  if (!any) return output;
  auto node = std::make_shared<Node>();
  node->name = op_name;
  node->inputs = std::move(inputs);
  node->backward = std::move(backward);
  output.impl()->grad_fn = std::move(node);
  output.impl()->requires_grad = true;
  return output;
}

// ---- the engine ----

namespace {

bool needs_grad(const Tensor& t) { return t.defined() && t.requires_grad(); }

// Inputs before the tensors computed from them; also counts, for every tensor, how many
// recorded edges point at it, so we know when its gradient is complete.
// The order holds owning pointers: freeing a node's inputs during backward must not free a tensor
// that is still to be visited.
std::vector<std::shared_ptr<TensorImpl>> topological_order(const std::shared_ptr<TensorImpl>& root,
                                                           std::unordered_map<TensorImpl*, int>& consumers) {
  struct Frame {
    std::shared_ptr<TensorImpl> tensor;
    size_t next_input;
  };
  std::vector<std::shared_ptr<TensorImpl>> order;
  std::unordered_set<TensorImpl*> visited{root.get()};
  std::vector<Frame> stack{{root, 0}};
  while (!stack.empty()) {
    Frame& frame = stack.back();
    Node* node = frame.tensor->grad_fn.get();
    if (node && frame.next_input < node->inputs.size()) {
      const Tensor& input = node->inputs[frame.next_input++];
      if (!needs_grad(input)) continue;
      TensorImpl* child = input.impl();
      ++consumers[child];
      if (visited.insert(child).second) stack.push_back({input.impl_ptr(), 0});  // invalidates `frame`
    } else {
      order.push_back(frame.tensor);
      stack.pop_back();
    }
  }
  return order;
}

// A leaf's gradient is complete: store it and tell the hooks.
void finish_leaf(TensorImpl* leaf, SlotInfo* info) {
  if (info && info->slot.value.defined()) {
    if (!leaf->grad || info->slot.value.impl() != leaf->grad.get()) {
      Tensor g = info->slot.writable ? info->slot.value : copy_of(info->slot.value);
      if (leaf->grad) {
        // A grad set by the user that the slot did not start from: add to it.
        Tensor existing(leaf->grad);
        accumulate(existing, g, "leaf gradient");
      } else {
        leaf->grad = g.impl_ptr();
      }
    }
  } else if (!leaf->grad) {
    leaf->grad = Tensor::zeros(leaf->shape, {leaf->dtype, leaf->storage->device()}).impl_ptr();
  }
  Tensor grad(leaf->grad);
  for (auto& [handle, hook] : leaf->grad_ready_hooks) hook(grad);
}

void run_backward(const Tensor& root, const Tensor& root_grad) {
  if (!root.requires_grad())
    throw std::logic_error(
        "backward: the tensor does not require grad (no input of its computation has requires_grad set, or it was "
        "computed under NoGradGuard)");
  if (root_grad.dtype() != root.dtype() || root_grad.device() != root.device())
    throw std::invalid_argument(fmt::format("backward: output gradient of {} on {} for a tensor of {} on {}",
                                            dtype_name(root_grad.dtype()), root_grad.device().str(),
                                            dtype_name(root.dtype()), root.device().str()));
  if (root_grad.shape() != root.shape())
    throw std::invalid_argument(fmt::format("backward: output gradient of shape {} for a tensor of shape {}",
                                            shape_str(root_grad.shape()), shape_str(root.shape())));

  // Backward closures use ordinary ops; they must not record a graph of their own.
  NoGradGuard no_grad;
  std::unordered_map<TensorImpl*, int> consumers;
  std::vector<std::shared_ptr<TensorImpl>> order = topological_order(root.impl_ptr(), consumers);

  std::unordered_map<TensorImpl*, SlotInfo> slots;
  auto slot_for = [&](TensorImpl* t) -> SlotInfo* {
    auto [it, inserted] = slots.try_emplace(t);
    if (inserted) {
      it->second.shape = t->shape;
      // A leaf's slot starts from its existing gradient, so kernels accumulate straight into it.
      if (!t->grad_fn && t->grad) it->second.slot = GradSlot{Tensor(t->grad), true};
    }
    return &it->second;
  };

  SlotInfo* root_slot = slot_for(root.impl());
  if (!root.impl()->grad_fn) {  // backward() on a leaf itself
    GradSlots(std::vector<GradSlot*>{&root_slot->slot}).add(0, root_grad);
    finish_leaf(root.impl(), root_slot);
    return;
  }
  root_slot->slot = GradSlot{root_grad, false};

  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    TensorImpl* tensor = it->get();
    if (!tensor->grad_fn) continue;  // leaves are finished when their last consumer is done
    Node& node = *tensor->grad_fn;
    if (!node.backward)
      throw std::logic_error(fmt::format(
          "backward: the graph through '{}' was already freed; call backward() once per forward pass", node.name));

    SlotInfo& own = slots.at(tensor);
    std::vector<GradSlot*> input_slots(node.inputs.size(), nullptr);
    std::vector<SlotInfo*> infos(node.inputs.size(), nullptr);
    for (size_t i = 0; i < node.inputs.size(); ++i) {
      if (!needs_grad(node.inputs[i])) continue;
      infos[i] = slot_for(node.inputs[i].impl());
      input_slots[i] = &infos[i]->slot;
    }
    if (own.slot.value.defined()) {
      GradSlots grads(input_slots);
      node.backward(own.slot.value, grads);
      for (size_t i = 0; i < infos.size(); ++i)
        if (infos[i] && infos[i]->slot.value.defined()) check_grad_shape(node.name, infos[i]->shape, infos[i]->slot.value.shape());
    }
    for (size_t i = 0; i < node.inputs.size(); ++i) {
      if (!infos[i]) continue;
      TensorImpl* input = node.inputs[i].impl();
      if (--consumers[input] == 0 && !input->grad_fn) finish_leaf(input, infos[i]);
    }
    // Free what this node saved: intermediate activations go as soon as they are used.
    slots.erase(tensor);
    node.backward = nullptr;
    node.inputs.clear();
  }
}

}  // namespace

void Tensor::backward() const {
  if (numel() != 1)
    throw std::invalid_argument("backward: an output gradient is needed for a non-scalar tensor of shape " +
                                shape_str(shape()));
  run_backward(*this, Tensor::ones(shape(), options()));
}

void Tensor::backward(const Tensor& grad_output) const { run_backward(*this, grad_output); }

}  // namespace axon
