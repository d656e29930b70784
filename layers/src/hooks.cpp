#include "axon/hooks.h"

#include <fmt/format.h>

#include <algorithm>
#include <set>
#include <stdexcept>

#include "axon/autograd.h"
#include "axon/model.h"

namespace axon {

namespace {

std::string list(const std::vector<std::string>& names) {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

}  // namespace

uint64_t Hooks::attach(std::string layer, HookEvent on, HookFn fn, HookMode mode) {
  if (!fn) throw std::invalid_argument(fmt::format("hooks: an empty function was attached to layer '{}'", layer));
  if (layer.empty()) throw std::invalid_argument("hooks: the layer name is empty (use \"*\" for every layer)");
  hooks_.push_back({next_, std::move(layer), on, mode, std::move(fn)});
  return next_++;
}

void Hooks::remove(uint64_t handle) {
  hooks_.erase(std::remove_if(hooks_.begin(), hooks_.end(), [&](const Hook& h) { return h.id == handle; }), hooks_.end());
}

void Hooks::check_layers(const std::vector<std::string>& layer_names) const {
  const std::set<std::string> known(layer_names.begin(), layer_names.end());
  for (const Hook& h : hooks_)
    if (h.layer != "*" && !known.count(h.layer))
      throw std::invalid_argument(fmt::format("hooks: a hook is attached to layer '{}', which the model does not have "
                                              "(its layers: {})", h.layer, list(layer_names)));
}

bool Hooks::applies(const Hook& h, const std::string& layer, HookEvent on, bool training) const {
  if (h.on != on || (h.layer != "*" && h.layer != layer)) return false;
  return h.mode == HookMode::both || (h.mode == HookMode::train) == training;
}

void Hooks::run(const std::string& layer, HookEvent on, bool training, const std::vector<Tensor>& tensors) const {
  for (const Hook& h : hooks_)
    if (applies(h, layer, on, training)) h.fn(HookCall{layer, on, training, tensors});
}

Tensor Hooks::wrap_for_backward(const std::string& layer, bool training, const Tensor& output) const {
  if (!output.defined() || !output.requires_grad() || !grad_enabled()) return output;
  std::vector<HookFn> fns;
  for (const Hook& h : hooks_)
    if (applies(h, layer, HookEvent::backward, training)) fns.push_back(h.fn);
  if (fns.empty()) return output;
  // An identity op whose backward shows the hooks the gradient flowing into this output.
  Tensor alias = Tensor::view_of(output.storage(), output.offset(), output.shape(), output.dtype());
  return record("backward_hook", alias, {output}, [fns = std::move(fns), layer, training](const Tensor& g, GradSlots& grads) {
    const std::vector<Tensor> tensors{g};
    for (const HookFn& fn : fns) fn(HookCall{layer, HookEvent::backward, training, tensors});
    grads.add(0, g);
  });
}

Tensor predict(const Model& model, const Parameters& params, const Tensor& input, const Hooks& hooks) {
  NoGradGuard no_grad;
  ForwardContext ctx;
  ctx.hooks = &hooks;
  return forward(plan(model), params, input, ctx);
}

std::map<std::string, Tensor> capture(const Model& model, const Parameters& params, const Tensor& input,
                                      const std::vector<std::string>& layers) {
  if (layers.empty()) throw std::invalid_argument("capture: no layer names given");
  const ModelPlan p = plan(model);
  std::vector<std::string> names;
  for (const PlannedLayer& l : p.layers) names.push_back(l.name);
  for (const std::string& want : layers)
    if (std::find(names.begin(), names.end(), want) == names.end())
      throw std::invalid_argument(fmt::format("capture: the model has no layer named '{}' (its layers: {})", want, list(names)));
  std::map<std::string, Tensor> out;
  Hooks hooks;
  for (const std::string& want : layers)
    hooks.attach(want, HookEvent::forward, [&out](const HookCall& c) { out[c.layer] = c.tensors.at(0); });
  NoGradGuard no_grad;
  ForwardContext ctx;
  ctx.hooks = &hooks;
  forward(p, params, input, ctx);
  return out;
}

}  // namespace axon
